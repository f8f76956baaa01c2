//! Contact events as the core sees them (see `shared/reference/events.md`).
//!
//! Wire formats (protobuf, JSON) are decoded into these types by `deflect-proto`; free-form
//! `attributes` and agent ids are dropped at decoding because no metric may use them.

use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The text of an event field: up to 24 bytes inline, without an allocation of its own (ids,
/// tenants, intents and queue names mostly fit), so that a pending event is one allocation that
/// a processing pass reads in a few cache lines.
pub type Text = compact_str::CompactString;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Text,
    pub tenant: Text,
    pub contact_id: Text,
    pub parent_contact_id: Option<Text>,
    /// Pseudonymous customer key; `None` when the customer is unknown (the journey is then per contact
    /// and re-contact figures report it as unverifiable).
    pub customer_id: Option<Text>,
    pub channel: Channel,
    pub occurred_at: Millis,
    pub intent: Option<Text>,
    pub queue: Option<Text>,
    pub kind: EventKind,
}

impl Event {
    /// The key of the journey this event belongs to: the customer, or the contact when the customer is
    /// unknown (prefixed so the two can never collide).
    pub fn journey_key(&self) -> String {
        let mut key = String::new();
        self.journey_key_into(&mut key);
        key
    }

    /// The Kafka record key of the event on the input topic (`events.md`): the customer, or the
    /// contact when the customer is unknown. All of a journey's events then share a partition.
    pub fn partition_key(&self) -> &str {
        self.customer_id.as_deref().unwrap_or(&self.contact_id)
    }

    /// [`Event::journey_key`] written into `key` (cleared first), reusing its allocation.
    pub fn journey_key_into(&self, key: &mut String) {
        // built by hand: `format!` costs more than the copy (one key per processed event)
        let (prefix, id) = match &self.customer_id {
            Some(c) => ("c:", c),
            None => ("k:", &self.contact_id),
        };
        key.clear();
        key.reserve(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
    }

    /// Total order used to process events deterministically: event time, then lifecycle rank (so a
    /// contact's start sorts before its end at the same millisecond), then event id.
    pub fn order_key(&self) -> (Millis, u8, &str) {
        (self.occurred_at, self.kind.rank(), self.event_id.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    Voice,
    Chat,
    Sms,
    Email,
    Web,
    App,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Voice,
        Channel::Chat,
        Channel::Sms,
        Channel::Email,
        Channel::Web,
        Channel::App,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Web => "web",
            Channel::App => "app",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

string_enum!(Direction { Inbound => "inbound", Outbound => "outbound" });
string_enum!(Initiation {
    Customer => "customer",
    Transfer => "transfer",
    Callback => "callback",
    Proactive => "proactive",
    Api => "api",
});
string_enum!(IvrExitReason {
    SelfServed => "self_served",
    ToQueue => "to_queue",
    ToAgent => "to_agent",
    HangUp => "hang_up",
    Error => "error",
});
string_enum!(AiOutcome {
    Success => "success",
    Failed => "failed",
    Dropped => "dropped",
    Escalated => "escalated",
});
string_enum!(EscalationSource { Ivr => "ivr", AiAgent => "ai_agent", SelfService => "self_service" });
string_enum!(QueueExitReason {
    Answered => "answered",
    Abandoned => "abandoned",
    Callback => "callback",
    FlowOut => "flow_out",
    Transferred => "transferred",
});
string_enum!(DisconnectParty { Customer => "customer", Agent => "agent", System => "system" });

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    ContactStarted {
        direction: Direction,
        initiation: Initiation,
    },
    IntentIdentified {
        intent: Text,
        confidence: f32,
    },
    IvrEntered {
        node: Text,
    },
    IvrMenuSelected {
        node: Text,
        option: Text,
    },
    IvrExited {
        node: Text,
        reason: IvrExitReason,
    },
    SelfServiceViewed {
        item: Text,
    },
    SelfServiceResolved {
        confirmed: bool,
    },
    AiAgentStarted,
    AiAgentEnded {
        outcome: AiOutcome,
        turns: u32,
    },
    EscalationRequested {
        from: EscalationSource,
        reason: Text,
        context_passed: bool,
    },
    QueueEntered {
        queue: Text,
        priority: i32,
    },
    QueueExited {
        reason: QueueExitReason,
    },
    AgentConnected {
        context_received: bool,
    },
    AgentDisconnected {
        talk_ms: Option<u64>,
        hold_ms: Option<u64>,
    },
    AfterContactWorkEnded {
        acw_ms: Option<u64>,
    },
    CallbackRequested {
        callback_id: Text,
    },
    CallbackCompleted {
        callback_id: Text,
    },
    CallbackCanceled {
        callback_id: Text,
    },
    CallbackExpired {
        callback_id: Text,
    },
    ContactEnded {
        party: Option<DisconnectParty>,
        resolved: bool,
    },
    SurveyResponse {
        score: f64,
        scale_min: f64,
        scale_max: f64,
    },
    NotificationSent {
        campaign: Text,
        topic: Text,
    },
}

// `f32`/`f64` payloads have no NaN in practice (the decoder rejects them), so equality is total.
impl Eq for EventKind {}

/// Every event type's wire name (a bounded label set).
pub const EVENT_TYPES: [&str; 22] = [
    "contact_started",
    "intent_identified",
    "ivr_entered",
    "ivr_menu_selected",
    "ivr_exited",
    "self_service_viewed",
    "self_service_resolved",
    "ai_agent_started",
    "ai_agent_ended",
    "escalation_requested",
    "queue_entered",
    "queue_exited",
    "agent_connected",
    "agent_disconnected",
    "after_contact_work_ended",
    "callback_requested",
    "callback_completed",
    "callback_canceled",
    "callback_expired",
    "contact_ended",
    "survey_response",
    "notification_sent",
];

impl EventKind {
    /// Lifecycle rank used to order events that share a millisecond.
    pub fn rank(&self) -> u8 {
        use EventKind::*;
        match self {
            ContactStarted { .. } => 0,
            IntentIdentified { .. } => 1,
            IvrEntered { .. } => 2,
            IvrMenuSelected { .. } => 3,
            SelfServiceViewed { .. } => 4,
            AiAgentStarted => 5,
            SelfServiceResolved { .. } => 6,
            AiAgentEnded { .. } => 7,
            EscalationRequested { .. } => 8,
            IvrExited { .. } => 9,
            QueueEntered { .. } => 10,
            CallbackRequested { .. } => 11,
            QueueExited { .. } => 12,
            AgentConnected { .. } => 13,
            AgentDisconnected { .. } => 14,
            AfterContactWorkEnded { .. } => 15,
            CallbackCompleted { .. } => 16,
            CallbackCanceled { .. } => 17,
            CallbackExpired { .. } => 18,
            ContactEnded { .. } => 20,
            SurveyResponse { .. } => 21,
            NotificationSent { .. } => 22,
        }
    }

    /// The snake_case name used on the wire and in the `type` field of JSON events.
    pub fn type_name(&self) -> &'static str {
        use EventKind::*;
        match self {
            ContactStarted { .. } => "contact_started",
            IntentIdentified { .. } => "intent_identified",
            IvrEntered { .. } => "ivr_entered",
            IvrMenuSelected { .. } => "ivr_menu_selected",
            IvrExited { .. } => "ivr_exited",
            SelfServiceViewed { .. } => "self_service_viewed",
            SelfServiceResolved { .. } => "self_service_resolved",
            AiAgentStarted => "ai_agent_started",
            AiAgentEnded { .. } => "ai_agent_ended",
            EscalationRequested { .. } => "escalation_requested",
            QueueEntered { .. } => "queue_entered",
            QueueExited { .. } => "queue_exited",
            AgentConnected { .. } => "agent_connected",
            AgentDisconnected { .. } => "agent_disconnected",
            AfterContactWorkEnded { .. } => "after_contact_work_ended",
            CallbackRequested { .. } => "callback_requested",
            CallbackCompleted { .. } => "callback_completed",
            CallbackCanceled { .. } => "callback_canceled",
            CallbackExpired { .. } => "callback_expired",
            ContactEnded { .. } => "contact_ended",
            SurveyResponse { .. } => "survey_response",
            NotificationSent { .. } => "notification_sent",
        }
    }
}

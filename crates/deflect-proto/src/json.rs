//! JSON form of contact events: the protobuf field names, one payload object under its type name.

use deflect_core::event::{
    AiOutcome, Channel, Direction, DisconnectParty, EscalationSource, Event, EventKind, Initiation,
    IvrExitReason, QueueExitReason,
};
use serde_json::{json, Map, Value};

use crate::{envelope, survey, DecodeError, Envelope, RejectReason};

/// Every payload name, in protobuf field order.
pub use deflect_core::event::EVENT_TYPES;

const ENVELOPE: [&str; 10] = [
    "event_id",
    "tenant",
    "contact_id",
    "parent_contact_id",
    "customer_id",
    "channel",
    "occurred_at",
    "intent",
    "queue",
    "attributes",
];

fn shape(detail: String) -> DecodeError {
    DecodeError::new(RejectReason::BadJsonShape, detail)
}

/// Typed access to one JSON object's fields, with errors that name the field.
struct Obj<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }
    fn str(&self, name: &str) -> Result<&'a str, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(shape(format!(
                "{} must be a string, got {v}",
                self.field(name)
            ))),
        }
    }
    fn bool(&self, name: &str) -> Result<bool, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(shape(format!(
                "{} must be a boolean, got {v}",
                self.field(name)
            ))),
        }
    }
    fn f64(&self, name: &str) -> Result<Option<f64>, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(shape(format!(
                "{} must be a number, got {v}",
                self.field(name)
            ))),
        }
    }
    fn u64(&self, name: &str) -> Result<Option<u64>, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                DecodeError::new(
                    RejectReason::BadValue,
                    format!(
                        "{} must be a non-negative integer, got {n}",
                        self.field(name)
                    ),
                )
            }),
            Some(v) => Err(shape(format!(
                "{} must be an integer, got {v}",
                self.field(name)
            ))),
        }
    }
    /// An enum given as `inbound` or `DIRECTION_INBOUND`; absent → error naming the field.
    fn enumerated<T>(&self, name: &str, parse: fn(&str) -> Option<T>) -> Result<T, DecodeError> {
        self.opt_enum(name, parse)?
            .ok_or_else(|| DecodeError::missing(&self.field(name)))
    }
    fn opt_enum<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        let s = self.str(name)?;
        if s.is_empty() {
            return Ok(None);
        }
        let lower = s.to_ascii_lowercase();
        parse(&lower)
            .or_else(|| lower.split_once('_').and_then(|(_, rest)| parse(rest)))
            .map(Some)
            .ok_or_else(|| {
                DecodeError::new(
                    RejectReason::BadValue,
                    format!("{}: unknown value {s:?}", self.field(name)),
                )
            })
    }
}

fn occurred_at(v: Option<&Value>) -> Result<Option<i64>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            DecodeError::new(
                RejectReason::BadValue,
                format!("occurred_at must be integer milliseconds, got {n}"),
            )
        }),
        Some(Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map(|t| Some(t.as_millisecond()))
            .map_err(|e| {
                DecodeError::new(RejectReason::BadValue, format!("occurred_at {s:?}: {e}"))
            }),
        Some(v) => Err(shape(format!(
            "occurred_at must be a number or an RFC 3339 string, got {v}"
        ))),
    }
}

pub fn decode_json(bytes: &[u8]) -> Result<Event, DecodeError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new(RejectReason::InvalidJson, e.to_string()))?;
    let Value::Object(map) = v else {
        return Err(shape("an event must be a JSON object".into()));
    };
    let top = Obj {
        path: "",
        map: &map,
    };
    let mut found = map.keys().filter(|k| EVENT_TYPES.contains(&k.as_str()));
    let ty = match (found.next(), found.next()) {
        (Some(t), None) => t.as_str(),
        (Some(a), Some(b)) => return Err(shape(format!("more than one event payload ({a}, {b})"))),
        (None, _) => {
            let unknown = map
                .iter()
                .find(|(k, v)| v.is_object() && !ENVELOPE.contains(&k.as_str()));
            return Err(match unknown {
                Some((k, _)) => DecodeError::new(
                    RejectReason::UnknownEventType,
                    format!("unknown event type {k:?}"),
                ),
                None => DecodeError::new(
                    RejectReason::MissingField,
                    "no event payload (e.g. \"contact_started\": {...})",
                ),
            });
        }
    };
    let empty = Map::new();
    let pmap = match &map[ty] {
        Value::Object(m) => m,
        Value::Null => &empty,
        v => return Err(shape(format!("{ty} must be an object, got {v}"))),
    };
    let p = Obj {
        path: ty,
        map: pmap,
    };
    let kind = match ty {
        "contact_started" => EventKind::ContactStarted {
            direction: p.enumerated("direction", Direction::parse)?,
            initiation: p.enumerated("initiation", Initiation::parse)?,
        },
        "intent_identified" => EventKind::IntentIdentified {
            intent: p.str("intent")?.into(),
            confidence: p.f64("confidence")?.unwrap_or(0.0) as f32,
        },
        "ivr_entered" => EventKind::IvrEntered {
            node: p.str("node")?.into(),
        },
        "ivr_menu_selected" => EventKind::IvrMenuSelected {
            node: p.str("node")?.into(),
            option: p.str("option")?.into(),
        },
        "ivr_exited" => EventKind::IvrExited {
            node: p.str("node")?.into(),
            reason: p.enumerated("reason", IvrExitReason::parse)?,
        },
        "self_service_viewed" => EventKind::SelfServiceViewed {
            item: p.str("item")?.into(),
        },
        "self_service_resolved" => EventKind::SelfServiceResolved {
            confirmed: p.bool("confirmed")?,
        },
        "ai_agent_started" => EventKind::AiAgentStarted,
        "ai_agent_ended" => EventKind::AiAgentEnded {
            outcome: p.enumerated("outcome", AiOutcome::parse)?,
            turns: p.u64("turns")?.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        },
        "escalation_requested" => EventKind::EscalationRequested {
            from: p.enumerated("from", EscalationSource::parse)?,
            reason: p.str("reason")?.into(),
            context_passed: p.bool("context_passed")?,
        },
        "queue_entered" => {
            let q = match p.str("queue")? {
                "" => top.str("queue")?,
                q => q,
            };
            if q.is_empty() {
                return Err(DecodeError::missing("queue_entered.queue"));
            }
            EventKind::QueueEntered {
                queue: q.into(),
                priority: p.f64("priority")?.unwrap_or(0.0) as i32,
            }
        }
        "queue_exited" => EventKind::QueueExited {
            reason: p.enumerated("reason", QueueExitReason::parse)?,
        },
        "agent_connected" => EventKind::AgentConnected {
            context_received: p.bool("context_received")?,
        },
        "agent_disconnected" => EventKind::AgentDisconnected {
            talk_ms: p.u64("talk_ms")?,
            hold_ms: p.u64("hold_ms")?,
        },
        "after_contact_work_ended" => EventKind::AfterContactWorkEnded {
            acw_ms: p.u64("acw_ms")?,
        },
        "callback_requested" => EventKind::CallbackRequested {
            callback_id: p.str("callback_id")?.into(),
        },
        "callback_completed" => EventKind::CallbackCompleted {
            callback_id: p.str("callback_id")?.into(),
        },
        "callback_canceled" => EventKind::CallbackCanceled {
            callback_id: p.str("callback_id")?.into(),
        },
        "callback_expired" => EventKind::CallbackExpired {
            callback_id: p.str("callback_id")?.into(),
        },
        "contact_ended" => EventKind::ContactEnded {
            party: p.opt_enum("party", DisconnectParty::parse)?,
            resolved: p.bool("resolved")?,
        },
        "survey_response" => survey(
            p.f64("score")?
                .ok_or_else(|| DecodeError::missing("survey_response.score"))?,
            p.f64("scale_min")?.unwrap_or(1.0),
            p.f64("scale_max")?.unwrap_or(5.0),
        )?,
        "notification_sent" => EventKind::NotificationSent {
            campaign: p.str("campaign")?.into(),
            topic: p.str("topic")?.into(),
        },
        _ => unreachable!("ty is one of EVENT_TYPES"),
    };
    envelope(
        Envelope {
            event_id: top.str("event_id")?.into(),
            tenant: top.str("tenant")?.into(),
            contact_id: top.str("contact_id")?.into(),
            parent_contact_id: top.str("parent_contact_id")?.into(),
            customer_id: top.str("customer_id")?.into(),
            channel: top.opt_enum("channel", Channel::parse)?,
            occurred_at: occurred_at(map.get("occurred_at"))?,
            intent: top.str("intent")?.into(),
            queue: top.str("queue")?.into(),
        },
        kind,
    )
}

/// Encodes an event as JSON (the inverse of [`decode_json`]).
pub fn encode_json(e: &Event) -> Vec<u8> {
    let payload = match &e.kind {
        EventKind::ContactStarted {
            direction,
            initiation,
        } => json!({"direction": direction.as_str(), "initiation": initiation.as_str()}),
        EventKind::IntentIdentified { intent, confidence } => {
            json!({"intent": intent, "confidence": confidence})
        }
        EventKind::IvrEntered { node } => json!({"node": node}),
        EventKind::IvrMenuSelected { node, option } => json!({"node": node, "option": option}),
        EventKind::IvrExited { node, reason } => json!({"node": node, "reason": reason.as_str()}),
        EventKind::SelfServiceViewed { item } => json!({"item": item}),
        EventKind::SelfServiceResolved { confirmed } => json!({"confirmed": confirmed}),
        EventKind::AiAgentStarted => json!({}),
        EventKind::AiAgentEnded { outcome, turns } => {
            json!({"outcome": outcome.as_str(), "turns": turns})
        }
        EventKind::EscalationRequested {
            from,
            reason,
            context_passed,
        } => json!({"from": from.as_str(), "reason": reason, "context_passed": context_passed}),
        EventKind::QueueEntered { queue, priority } => {
            json!({"queue": queue, "priority": priority})
        }
        EventKind::QueueExited { reason } => json!({"reason": reason.as_str()}),
        EventKind::AgentConnected { context_received } => {
            json!({"context_received": context_received})
        }
        EventKind::AgentDisconnected { talk_ms, hold_ms } => {
            json!({"talk_ms": talk_ms, "hold_ms": hold_ms})
        }
        EventKind::AfterContactWorkEnded { acw_ms } => json!({"acw_ms": acw_ms}),
        EventKind::CallbackRequested { callback_id }
        | EventKind::CallbackCompleted { callback_id }
        | EventKind::CallbackCanceled { callback_id }
        | EventKind::CallbackExpired { callback_id } => json!({"callback_id": callback_id}),
        EventKind::ContactEnded { party, resolved } => {
            json!({"party": party.map(|p| p.as_str()), "resolved": resolved})
        }
        EventKind::SurveyResponse {
            score,
            scale_min,
            scale_max,
        } => json!({"score": score, "scale_min": scale_min, "scale_max": scale_max}),
        EventKind::NotificationSent { campaign, topic } => {
            json!({"campaign": campaign, "topic": topic})
        }
    };
    let mut m = Map::new();
    m.insert("event_id".into(), json!(e.event_id));
    m.insert("tenant".into(), json!(e.tenant));
    m.insert("contact_id".into(), json!(e.contact_id));
    if let Some(p) = &e.parent_contact_id {
        m.insert("parent_contact_id".into(), json!(p));
    }
    if let Some(c) = &e.customer_id {
        m.insert("customer_id".into(), json!(c));
    }
    m.insert("channel".into(), json!(e.channel.as_str()));
    m.insert("occurred_at".into(), json!(e.occurred_at));
    if let Some(i) = &e.intent {
        m.insert("intent".into(), json!(i));
    }
    if let Some(q) = &e.queue {
        m.insert("queue".into(), json!(q));
    }
    m.insert(e.kind.type_name().into(), payload);
    serde_json::to_vec(&Value::Object(m)).expect("a JSON value always serializes")
}

//! The journey of one customer: its open contacts, its recently ended contacts (for surveys), the
//! potential calls and notifications awaiting a re-contact decision. A pure state machine: events
//! and timer firings go in, in event-time order; figures come out through a [`Figures`] sink.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dims::{Dimensions, DimensionsConfig};
use crate::event::{
    AiOutcome, Channel, Direction, Event, EventKind, Initiation, IvrExitReason, Millis,
    QueueExitReason, Text,
};
use crate::metrics::{csat_box, wait_bucket_label, Labels, Metric, Outcome, RECONTACT_WINDOWS};

/// Where figures decided while applying events go. The engine attributes them to the interval of
/// the event (or timer) being processed.
pub trait Figures {
    /// Adds `v` to the series of `metric` with these label values (borrowed: counting an
    /// existing series allocates nothing).
    fn count(&mut self, metric: Metric, labels: &[&str], v: u64);
    /// A cohort figure (re-contact, containment, proactive deflection) decided now about a contact
    /// or notification of instant `origin`. Counted now on the live surface; interval reports
    /// attribute it to the interval of `origin` as well.
    fn cohort(&mut self, metric: Metric, labels: &[&str], origin: Millis) {
        let _ = origin;
        self.count(metric, labels, 1);
    }
    /// A potential call arrived (heat-map volume).
    fn heat_arrival(&mut self);
    /// A queued contact was answered after `wait_ms` (heat-map ASA).
    fn heat_answer(&mut self, wait_ms: i64);
    /// A callback was requested (backlog); `tenant` and `queue` are folded labels.
    fn callback_opened(&mut self, id: &str, at: Millis, tenant: &str, queue: &str) {
        let _ = (id, at, tenant, queue);
    }
    /// A callback was completed, canceled or expired.
    fn callback_closed(&mut self, id: &str) {
        let _ = id;
    }
    /// An event whose order makes no sense for its contact was not applied (see
    /// [`out_of_order`]).
    fn rejected(&mut self, event: &Event, detail: &'static str) {
        let _ = (event, detail);
    }
}

/// Why `kind` makes no sense for the contact `c` as applied so far (such an event touches the
/// contact, keeping it alive, and changes nothing else): an answered contact entering a queue, a
/// queue exit without a queue entry, an agent disconnecting before any agent connected.
pub fn out_of_order(c: &ContactState, kind: &EventKind) -> Option<&'static str> {
    match kind {
        EventKind::QueueEntered { .. } if c.agent_connected => {
            Some("queue_entered after agent_connected")
        }
        EventKind::QueueExited { .. } if !c.queued => Some("queue_exited without queue_entered"),
        EventKind::AgentDisconnected { .. } if !c.agent_connected => {
            Some("agent_disconnected before agent_connected")
        }
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct JourneyConfig {
    pub dims: DimensionsConfig,
    /// A contact with no event for this long ends by timeout (outcome decided then).
    pub contact_timeout_ms: Millis,
    /// How long an ended contact's outcome is kept for surveys that refer to it.
    pub survey_window_ms: Millis,
    /// Service-level threshold T (answered or abandoned within T).
    pub sl_threshold_ms: Millis,
    /// Abandons with a wait shorter than this are short abandons.
    pub short_abandon_ms: Millis,
    /// Count agent answers without a queue in ASA, with a wait of 0.
    pub asa_include_direct: bool,
    /// Intent labels (folded) whose deflection is counted apart.
    pub high_stakes_intents: Vec<String>,
    /// Proactive deflection window W.
    pub proactive_window_ms: Millis,
    /// A requested callback still open after this long leaves the backlog as `lost`.
    pub callback_max_age_ms: Millis,
}

impl JourneyConfig {
    /// The defaults of the reference (T = 20 s, S = 5 s, W = 24 h, 4 h contact timeout).
    pub fn new(dims: DimensionsConfig) -> Self {
        JourneyConfig {
            dims,
            contact_timeout_ms: 4 * HOUR,
            survey_window_ms: 7 * 24 * HOUR,
            sl_threshold_ms: 20_000,
            short_abandon_ms: 5_000,
            asa_include_direct: false,
            high_stakes_intents: Vec::new(),
            proactive_window_ms: 24 * HOUR,
            callback_max_age_ms: 7 * 24 * HOUR,
        }
    }
}

const HOUR: Millis = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    pub dims: Dimensions,
    pub potential: bool,
    pub last_event_at: Millis,
    pub self_service_resolved: bool,
    pub queued: bool,
    pub enqueued_at: Option<Millis>,
    pub agent_connected: bool,
    pub callback_requested: bool,
    pub abandon_signal: bool,
    pub escalated: bool,
    pub automated_step: bool,
    pub context_passed: bool,
    /// Talk + hold + after-contact work reported so far.
    pub handle_ms: u64,
    pub talk_known: bool,
    pub talk_unknown: bool,
    /// The raw intent (proactive deflection matches it against notification topics).
    pub raw_intent: Option<Text>,
}

impl ContactState {
    fn new(cfg: &JourneyConfig, e: &Event) -> Self {
        ContactState {
            dims: Dimensions {
                tenant: cfg.dims.tenant(&e.tenant),
                channel: e.channel,
                intent: cfg.dims.intent(e.intent.as_deref()),
                queue: cfg.dims.queue(e.queue.as_deref()),
            },
            potential: false,
            last_event_at: e.occurred_at,
            self_service_resolved: false,
            queued: false,
            enqueued_at: None,
            agent_connected: false,
            callback_requested: false,
            abandon_signal: false,
            escalated: false,
            automated_step: false,
            context_passed: false,
            handle_ms: 0,
            talk_known: false,
            talk_unknown: false,
            raw_intent: e.intent.clone().filter(|i| !i.is_empty()),
        }
    }

    /// The outcome rule of the reference: assisted if an agent connected; deflected if resolved
    /// without a live agent and never queued or asked for a callback; abandoned if it left without
    /// resolution; otherwise unresolved.
    pub fn outcome(&self) -> Outcome {
        if self.agent_connected {
            Outcome::Assisted
        } else if self.self_service_resolved && !self.queued && !self.callback_requested {
            Outcome::Deflected
        } else if self.abandon_signal {
            Outcome::Abandoned
        } else {
            Outcome::Unresolved
        }
    }

    fn queue_labels(&self) -> [&str; 3] {
        [
            &self.dims.tenant,
            self.dims.channel.as_str(),
            &self.dims.queue,
        ]
    }

    fn contact_labels(&self) -> [&str; 3] {
        [
            &self.dims.tenant,
            self.dims.channel.as_str(),
            &self.dims.intent,
        ]
    }
}

/// A potential call (of a known customer) whose re-contact is not yet decided for every window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub contact_id: Text,
    pub ended_at: Millis,
    /// tenant, channel, intent.
    pub labels: Vec<Text>,
    pub outcome: Outcome,
    /// Bit i set = window `RECONTACT_WINDOWS[i]` still undecided.
    pub pending: u8,
}

/// A proactive notification waiting to learn whether the customer called about its topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationWatch {
    pub sent_at: Millis,
    pub topic: Text,
    /// tenant, channel, topic (folded).
    pub labels: Vec<Text>,
}

/// An ended contact, kept for `survey_window` so that a survey can be split by its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub contact_id: Text,
    pub ended_at: Millis,
    pub outcome: Outcome,
    pub tenant: Text,
    pub channel: Channel,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journey {
    pub known_customer: bool,
    /// Boxed: a B-tree leaf reserves room for eleven values, and most journeys have one contact.
    pub contacts: BTreeMap<Text, Box<ContactState>>,
    pub watches: Vec<Watch>,
    pub notifications: Vec<NotificationWatch>,
    pub ended: Vec<Ended>,
    /// Open callbacks: id → (requested at, tenant label, queue label).
    pub callbacks: BTreeMap<Text, (Millis, Text, Text)>,
}

fn window_ms(i: usize) -> Millis {
    RECONTACT_WINDOWS[i].1 * HOUR
}

/// Stored label values followed by more (on the stack).
fn with<'a, S: AsRef<str>>(labels: &'a [S], more: &[&'a str]) -> Labels<'a> {
    let mut l = Labels::default();
    for s in labels {
        l.push(s.as_ref());
    }
    for s in more {
        l.push(s);
    }
    l
}

impl Journey {
    pub fn new(known_customer: bool) -> Self {
        Journey {
            known_customer,
            ..Default::default()
        }
    }

    /// Nothing left to decide: the journey can be dropped from the state store.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
            && self.watches.is_empty()
            && self.notifications.is_empty()
            && self.ended.is_empty()
            && self.callbacks.is_empty()
    }

    /// The earliest event time at which a timer of this journey fires.
    pub fn next_wake(&self, cfg: &JourneyConfig) -> Option<Millis> {
        // plain loops: a chain of five iterators (one of them nested) cost several times more
        let mut wake = Millis::MAX;
        for c in self.contacts.values() {
            wake = wake.min(c.last_event_at + cfg.contact_timeout_ms);
        }
        for w in &self.watches {
            // the windows grow: a watch's first pending one ends first
            let first = w.pending.trailing_zeros() as usize;
            if first < RECONTACT_WINDOWS.len() {
                wake = wake.min(w.ended_at + window_ms(first));
            }
        }
        for n in &self.notifications {
            wake = wake.min(n.sent_at + cfg.proactive_window_ms);
        }
        for e in &self.ended {
            wake = wake.min(e.ended_at + cfg.survey_window_ms);
        }
        for c in self.callbacks.values() {
            wake = wake.min(c.0 + cfg.callback_max_age_ms);
        }
        (wake != Millis::MAX).then_some(wake)
    }

    /// Applies one event (events arrive in event-time order).
    pub fn apply(&mut self, cfg: &JourneyConfig, e: &Event, out: &mut dyn Figures) {
        let t = e.occurred_at;
        match &e.kind {
            EventKind::SurveyResponse {
                score,
                scale_min,
                scale_max,
            } => {
                let (outcome, tenant, channel) = match self
                    .ended
                    .iter()
                    .rev()
                    .find(|x| x.contact_id == e.contact_id)
                {
                    Some(x) => (x.outcome.as_str(), x.tenant.clone(), x.channel),
                    None => ("unknown", cfg.dims.tenant(&e.tenant), e.channel),
                };
                let labels = [
                    tenant.as_str(),
                    channel.as_str(),
                    outcome,
                    csat_box(*score, *scale_min, *scale_max),
                ];
                out.count(Metric::CsatResponses, &labels, 1);
                return;
            }
            EventKind::NotificationSent { topic, .. } => {
                let labels = vec![
                    cfg.dims.tenant(&e.tenant),
                    Text::const_new(e.channel.as_str()),
                    cfg.dims.intent(Some(topic)),
                ];
                if self.known_customer {
                    self.notifications.push(NotificationWatch {
                        sent_at: t,
                        topic: topic.clone(),
                        labels,
                    });
                } else {
                    out.cohort(Metric::Proactive, &with(&labels, &["unverifiable"]), t);
                }
                return;
            }
            EventKind::CallbackCompleted { callback_id }
            | EventKind::CallbackCanceled { callback_id }
            | EventKind::CallbackExpired { callback_id } => {
                let event = match e.kind {
                    EventKind::CallbackCompleted { .. } => "completed",
                    EventKind::CallbackCanceled { .. } => "canceled",
                    _ => "expired",
                };
                // labelled like its request when the request is known
                let (tenant, queue) = match self.callbacks.remove(callback_id) {
                    Some((_, tenant, queue)) => {
                        out.callback_closed(callback_id);
                        (tenant, queue)
                    }
                    None => (
                        cfg.dims.tenant(&e.tenant),
                        cfg.dims.queue(e.queue.as_deref()),
                    ),
                };
                out.count(
                    Metric::Callbacks,
                    &[tenant.as_str(), queue.as_str(), event],
                    1,
                );
                // the event belongs to a (callback) leg: keep it alive below
            }
            _ => {}
        }
        if let EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        } = e.kind
        {
            self.recontact(e, out);
        }
        let c = self
            .contacts
            .entry(e.contact_id.clone())
            .or_insert_with(|| Box::new(ContactState::new(cfg, e)));
        c.last_event_at = t;
        if let Some(detail) = out_of_order(c, &e.kind) {
            out.rejected(e, detail);
            return;
        }
        let mut intent_known: Option<Text> = None;
        match &e.kind {
            EventKind::ContactStarted {
                direction,
                initiation,
            } => {
                c.potential =
                    *direction == Direction::Inbound && *initiation == Initiation::Customer;
                if c.potential {
                    out.count(Metric::PotentialCalls, &c.contact_labels(), 1);
                    out.heat_arrival();
                    intent_known = c.raw_intent.clone();
                }
            }
            EventKind::IntentIdentified { intent, .. } => {
                c.dims.intent = cfg.dims.intent(Some(intent));
                c.raw_intent = Some(intent.clone()).filter(|i| !i.is_empty());
                if c.potential {
                    intent_known = c.raw_intent.clone();
                }
            }
            EventKind::IvrEntered { node } => {
                c.automated_step = true;
                let node = cfg.dims.ivr_node(node);
                let labels = [c.dims.tenant.as_str(), c.dims.channel.as_str(), &node];
                out.count(Metric::IvrEntries, &labels, 1);
            }
            EventKind::IvrMenuSelected { .. }
            | EventKind::SelfServiceViewed { .. }
            | EventKind::AiAgentStarted => c.automated_step = true,
            EventKind::IvrExited { node, reason } => {
                c.automated_step = true;
                match reason {
                    IvrExitReason::SelfServed => c.self_service_resolved = true,
                    IvrExitReason::HangUp => {
                        c.abandon_signal = true;
                        let node = cfg.dims.ivr_node(node);
                        let labels = [c.dims.tenant.as_str(), c.dims.channel.as_str(), &node];
                        out.count(Metric::IvrDropoffs, &labels, 1);
                    }
                    _ => {}
                }
            }
            EventKind::SelfServiceResolved { .. } => {
                c.automated_step = true;
                c.self_service_resolved = true;
            }
            EventKind::AiAgentEnded { outcome, .. } => {
                c.automated_step = true;
                match outcome {
                    AiOutcome::Success => c.self_service_resolved = true,
                    AiOutcome::Dropped | AiOutcome::Failed => c.abandon_signal = true,
                    AiOutcome::Escalated => c.escalated = true,
                }
            }
            EventKind::EscalationRequested { context_passed, .. } => {
                c.automated_step = true;
                c.escalated = true;
                c.context_passed |= *context_passed;
            }
            EventKind::QueueEntered { queue, .. } => {
                if c.automated_step {
                    c.escalated = true;
                }
                c.dims.queue = cfg.dims.queue(Some(queue));
                c.queued = true;
                c.enqueued_at = Some(t);
                out.count(Metric::QueueEntered, &c.queue_labels(), 1);
            }
            EventKind::QueueExited { reason } => match reason {
                QueueExitReason::Abandoned => {
                    c.abandon_signal = true;
                    if let Some(q) = c.enqueued_at.take() {
                        let wait = t - q;
                        let l = c.queue_labels();
                        out.count(Metric::QueueAbandoned, &l, 1);
                        out.count(Metric::QueueAbandonWaitMs, &l, wait as u64);
                        if wait < cfg.short_abandon_ms {
                            out.count(Metric::QueueAbandonedShort, &l, 1);
                        }
                        if wait <= cfg.sl_threshold_ms {
                            out.count(Metric::QueueAbandonedWithin, &l, 1);
                        }
                    }
                }
                QueueExitReason::Callback => {
                    c.callback_requested = true;
                    queue_callback(cfg, c, t, out);
                }
                _ => {}
            },
            EventKind::AgentConnected { .. } => {
                c.agent_connected = true;
                let wait = match c.enqueued_at.take() {
                    Some(q) => Some(t - q),
                    None if cfg.asa_include_direct && !c.queued => Some(0),
                    None => None,
                };
                if let Some(wait) = wait {
                    let labels = c.queue_labels();
                    out.count(Metric::QueueAnswered, &labels, 1);
                    out.count(Metric::QueueWaitMs, &labels, wait as u64);
                    if wait <= cfg.sl_threshold_ms {
                        out.count(Metric::QueueAnsweredWithin, &labels, 1);
                    }
                    out.count(
                        Metric::QueueWaitBucket,
                        &with(&labels, &[wait_bucket_label(wait)]),
                        1,
                    );
                    out.heat_answer(wait);
                }
            }
            EventKind::AgentDisconnected { talk_ms, hold_ms } => match talk_ms {
                Some(talk) => {
                    c.talk_known = true;
                    c.handle_ms += talk + hold_ms.unwrap_or(0);
                }
                None => c.talk_unknown = true,
            },
            EventKind::AfterContactWorkEnded { acw_ms } => c.handle_ms += acw_ms.unwrap_or(0),
            EventKind::CallbackRequested { callback_id } => {
                c.callback_requested = true;
                queue_callback(cfg, c, t, out);
                let (tenant, queue) = (c.dims.tenant.clone(), c.dims.queue.clone());
                out.callback_opened(callback_id, t, &tenant, &queue);
                out.count(
                    Metric::Callbacks,
                    &[tenant.as_str(), queue.as_str(), "requested"],
                    1,
                );
                // a repeated request with the same id replaces the open one
                self.callbacks
                    .insert(callback_id.clone(), (t, tenant, queue));
            }
            EventKind::ContactEnded { .. } => {
                let c = *self.contacts.remove(&e.contact_id).expect("inserted above");
                self.end_contact(cfg, &e.contact_id, c, t, out);
            }
            EventKind::CallbackCompleted { .. }
            | EventKind::CallbackCanceled { .. }
            | EventKind::CallbackExpired { .. }
            | EventKind::SurveyResponse { .. }
            | EventKind::NotificationSent { .. } => {}
        }
        if let Some(intent) = intent_known {
            self.proactive_call(&intent, t, out);
        }
    }

    /// A potential call about `intent` at `t`: notifications on that topic sent at most W before
    /// it did not deflect it.
    fn proactive_call(&mut self, intent: &str, t: Millis, out: &mut dyn Figures) {
        self.notifications.retain(|n| {
            if n.topic == intent && n.sent_at <= t {
                out.cohort(Metric::Proactive, &with(&n.labels, &["called"]), n.sent_at);
                false
            } else {
                true
            }
        });
    }

    /// A new potential call: every watched potential call that ended at most W before it is
    /// re-contacted for W.
    fn recontact(&mut self, e: &Event, out: &mut dyn Figures) {
        let t = e.occurred_at;
        for w in &mut self.watches {
            if w.contact_id == e.contact_id || t < w.ended_at {
                continue;
            }
            for (i, (name, _)) in RECONTACT_WINDOWS.iter().enumerate() {
                if w.pending & (1 << i) != 0 && t <= w.ended_at + window_ms(i) {
                    w.pending &= !(1 << i);
                    decide(w, name, "recontacted", out);
                }
            }
        }
        self.watches.retain(|w| w.pending != 0);
    }

    fn end_contact(
        &mut self,
        cfg: &JourneyConfig,
        contact_id: &str,
        c: ContactState,
        t: Millis,
        out: &mut dyn Figures,
    ) {
        let outcome = c.outcome();
        self.ended.push(Ended {
            contact_id: contact_id.into(),
            ended_at: t,
            outcome,
            tenant: c.dims.tenant.clone(),
            channel: c.dims.channel,
        });
        if c.automated_step {
            out.count(Metric::AutomatedContacts, &c.contact_labels(), 1);
            if c.escalated {
                let context = if c.context_passed {
                    "passed"
                } else {
                    "missing"
                };
                out.count(
                    Metric::Escalations,
                    &with(&c.contact_labels(), &[context]),
                    1,
                );
            }
        }
        if c.agent_connected {
            if c.talk_known && !c.talk_unknown {
                out.count(Metric::Handled, &c.queue_labels(), 1);
                out.count(Metric::HandleTimeMs, &c.queue_labels(), c.handle_ms);
            } else {
                out.count(Metric::HandleTimeUnknown, &c.queue_labels(), 1);
            }
        }
        if !c.potential {
            return;
        }
        let labels = c.contact_labels();
        out.count(
            Metric::ContactOutcomes,
            &with(&labels, &[outcome.as_str()]),
            1,
        );
        if outcome == Outcome::Deflected
            && cfg.high_stakes_intents.iter().any(|i| *i == c.dims.intent)
        {
            out.count(Metric::HighStakesDeflected, &labels, 1);
        }
        if self.known_customer {
            self.watches.push(Watch {
                contact_id: contact_id.into(),
                ended_at: t,
                labels: labels.map(Text::from).to_vec(),
                outcome,
                pending: (1 << RECONTACT_WINDOWS.len()) - 1,
            });
        } else {
            let l = with(&labels, &[outcome.as_str()]);
            out.cohort(Metric::RecontactUnverifiable, &l, t);
            if outcome == Outcome::Deflected {
                out.cohort(Metric::ContainmentUnverifiable, &labels, t);
            }
        }
    }

    /// Fires every timer due at or before `t`: contacts silent for the contact timeout end,
    /// watches whose window passed without a re-contact are decided, notifications whose window
    /// passed deflected a call, and ended contacts older than the survey window are forgotten.
    pub fn fire(&mut self, cfg: &JourneyConfig, t: Millis, out: &mut dyn Figures) {
        let due: Vec<Text> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.last_event_at + cfg.contact_timeout_ms <= t)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            let c = *self.contacts.remove(&id).expect("listed above");
            let at = c.last_event_at + cfg.contact_timeout_ms;
            self.end_contact(cfg, &id, c, at, out);
        }
        for w in &mut self.watches {
            for (i, (name, _)) in RECONTACT_WINDOWS.iter().enumerate() {
                if w.pending & (1 << i) != 0 && w.ended_at + window_ms(i) <= t {
                    w.pending &= !(1 << i);
                    decide(w, name, "not_recontacted", out);
                }
            }
        }
        self.watches.retain(|w| w.pending != 0);
        self.notifications.retain(|n| {
            if n.sent_at + cfg.proactive_window_ms <= t {
                out.cohort(
                    Metric::Proactive,
                    &with(&n.labels, &["deflected"]),
                    n.sent_at,
                );
                false
            } else {
                true
            }
        });
        self.ended.retain(|e| e.ended_at + cfg.survey_window_ms > t);
        self.callbacks.retain(|id, (at, tenant, queue)| {
            if *at + cfg.callback_max_age_ms <= t {
                out.callback_closed(id);
                out.count(
                    Metric::Callbacks,
                    &[tenant.as_str(), queue.as_str(), "lost"],
                    1,
                );
                false
            } else {
                true
            }
        });
    }
}

/// A queued contact asked for a callback: counted once per queue stay, for the connect variant of
/// the service level.
fn queue_callback(cfg: &JourneyConfig, c: &mut ContactState, t: Millis, out: &mut dyn Figures) {
    if let Some(q) = c.enqueued_at.take() {
        let l = c.queue_labels();
        out.count(Metric::QueueCallbackRequested, &l, 1);
        if t - q <= cfg.sl_threshold_ms {
            out.count(Metric::QueueCallbackWithin, &l, 1);
        }
    }
}

/// Re-contact for one window is decided: the outcome-split figure, and containment for a
/// deflected contact.
fn decide(w: &Watch, window: &str, result: &str, out: &mut dyn Figures) {
    let l = with(&w.labels, &[w.outcome.as_str(), window, result]);
    out.cohort(Metric::Recontact, &l, w.ended_at);
    if w.outcome == Outcome::Deflected {
        let result = if result == "recontacted" {
            "recontacted"
        } else {
            "contained"
        };
        out.cohort(
            Metric::Containment,
            &with(&w.labels, &[window, result]),
            w.ended_at,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Channel;
    use crate::metrics::Counters;

    #[derive(Default)]
    struct Sink(Counters, u64, Vec<i64>);
    impl Figures for Sink {
        fn count(&mut self, m: Metric, l: &[&str], v: u64) {
            self.0.add(m, l.iter().map(|s| s.to_string()).collect(), v)
        }
        fn heat_arrival(&mut self) {
            self.1 += 1
        }
        fn heat_answer(&mut self, w: i64) {
            self.2.push(w)
        }
    }

    fn cfg() -> JourneyConfig {
        JourneyConfig::new(DimensionsConfig::default())
    }

    fn ev(contact: &str, t: Millis, kind: EventKind) -> Event {
        Event {
            event_id: compact_str::format_compact!("{contact}-{t}-{}", kind.rank()),
            tenant: "t".into(),
            contact_id: contact.into(),
            parent_contact_id: None,
            customer_id: Some("cust".into()),
            channel: Channel::Voice,
            occurred_at: t,
            intent: None,
            queue: None,
            kind,
        }
    }

    fn started(contact: &str, t: Millis) -> Event {
        ev(
            contact,
            t,
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
        )
    }
    fn ended(contact: &str, t: Millis) -> Event {
        ev(
            contact,
            t,
            EventKind::ContactEnded {
                party: None,
                resolved: true,
            },
        )
    }

    const H: Millis = 3_600_000;

    #[test]
    fn deflected_then_recontact_within_24h_only_counts_all_windows_recontacted() {
        let cfg = cfg();
        let mut j = Journey::new(true);
        let mut s = Sink::default();
        j.apply(&cfg, &started("a", 0), &mut s);
        j.apply(
            &cfg,
            &ev("a", 10, EventKind::SelfServiceResolved { confirmed: true }),
            &mut s,
        );
        j.apply(&cfg, &ended("a", 20), &mut s);
        assert_eq!(
            s.0.get(
                Metric::ContactOutcomes,
                &["none", "voice", "none", "deflected"]
            ),
            0
        );
        assert_eq!(
            s.0.get(
                Metric::ContactOutcomes,
                &["other", "voice", "none", "deflected"]
            ),
            1
        );
        assert_eq!(j.next_wake(&cfg), Some(20 + 24 * H));
        j.apply(&cfg, &started("b", 20 + 10 * H), &mut s);
        assert_eq!(
            s.0.get(
                Metric::Containment,
                &["other", "voice", "none", "24h", "recontacted"]
            ),
            1
        );
        assert_eq!(
            s.0.get(
                Metric::Containment,
                &["other", "voice", "none", "7d", "recontacted"]
            ),
            1
        );
        assert!(j.watches.is_empty());
    }

    #[test]
    fn recontact_after_24h_is_contained_for_24h_and_recontacted_for_72h() {
        let cfg = cfg();
        let mut j = Journey::new(true);
        let mut s = Sink::default();
        j.apply(&cfg, &started("a", 0), &mut s);
        j.apply(
            &cfg,
            &ev(
                "a",
                1,
                EventKind::AiAgentEnded {
                    outcome: AiOutcome::Success,
                    turns: 3,
                },
            ),
            &mut s,
        );
        j.apply(&cfg, &ended("a", 2), &mut s);
        j.fire(&cfg, 2 + 24 * H, &mut s);
        assert_eq!(
            s.0.get(
                Metric::Containment,
                &["other", "voice", "none", "24h", "contained"]
            ),
            1
        );
        j.apply(&cfg, &started("b", 2 + 30 * H), &mut s);
        assert_eq!(
            s.0.get(
                Metric::Containment,
                &["other", "voice", "none", "72h", "recontacted"]
            ),
            1
        );
        assert_eq!(
            s.0.get(
                Metric::Containment,
                &["other", "voice", "none", "7d", "recontacted"]
            ),
            1
        );
        assert_eq!(s.0.total(Metric::Containment), 3);
    }

    #[test]
    fn queue_wait_and_outcomes() {
        let cfg = cfg();
        let mut j = Journey::new(true);
        let mut s = Sink::default();
        j.apply(&cfg, &started("a", 0), &mut s);
        j.apply(
            &cfg,
            &ev(
                "a",
                5_000,
                EventKind::QueueEntered {
                    queue: "q".into(),
                    priority: 0,
                },
            ),
            &mut s,
        );
        j.apply(
            &cfg,
            &ev(
                "a",
                25_000,
                EventKind::QueueExited {
                    reason: QueueExitReason::Answered,
                },
            ),
            &mut s,
        );
        j.apply(
            &cfg,
            &ev(
                "a",
                25_000,
                EventKind::AgentConnected {
                    context_received: false,
                },
            ),
            &mut s,
        );
        j.apply(&cfg, &ended("a", 90_000), &mut s);
        assert_eq!(s.0.total(Metric::QueueAnswered), 1);
        assert_eq!(s.0.total(Metric::QueueWaitMs), 20_000);
        assert_eq!(
            s.0.get(Metric::QueueWaitBucket, &["other", "voice", "other", "20"]),
            1
        );
        assert_eq!(
            s.0.get(Metric::QueueWaitBucket, &["other", "voice", "other", "10"]),
            0
        );
        assert_eq!(
            s.0.get(
                Metric::ContactOutcomes,
                &["other", "voice", "none", "assisted"]
            ),
            1
        );
        assert_eq!(s.2, vec![20_000]);
    }

    #[test]
    fn silent_contact_times_out_with_its_outcome() {
        let cfg = cfg();
        let mut j = Journey::new(false);
        let mut s = Sink::default();
        j.apply(&cfg, &started("a", 0), &mut s);
        j.apply(
            &cfg,
            &ev(
                "a",
                100,
                EventKind::IvrExited {
                    node: "n".into(),
                    reason: IvrExitReason::SelfServed,
                },
            ),
            &mut s,
        );
        j.fire(&cfg, 4 * H + 99, &mut s);
        assert_eq!(s.0.total(Metric::ContactOutcomes), 0);
        j.fire(&cfg, 4 * H + 100, &mut s);
        assert_eq!(
            s.0.get(
                Metric::ContactOutcomes,
                &["other", "voice", "none", "deflected"]
            ),
            1
        );
        assert_eq!(s.0.total(Metric::ContainmentUnverifiable), 1);
        assert_eq!(s.0.total(Metric::RecontactUnverifiable), 1);
        // the outcome is kept for surveys until the survey window passes
        assert_eq!(j.ended.len(), 1);
        assert_eq!(j.next_wake(&cfg), Some(4 * H + 100 + cfg.survey_window_ms));
        j.fire(&cfg, 4 * H + 100 + cfg.survey_window_ms, &mut s);
        assert!(j.is_empty());
    }

    #[test]
    fn outcome_rules() {
        let cfg = cfg();
        let base = ContactState::new(&cfg, &started("a", 0));
        let mut c = base.clone();
        c.self_service_resolved = true;
        assert_eq!(c.outcome(), Outcome::Deflected);
        c.queued = true;
        assert_eq!(c.outcome(), Outcome::Unresolved);
        c.abandon_signal = true;
        assert_eq!(
            c.outcome(),
            Outcome::Abandoned,
            "abandoned is never deflected"
        );
        c.agent_connected = true;
        assert_eq!(c.outcome(), Outcome::Assisted);
        let mut d = base;
        d.self_service_resolved = true;
        d.callback_requested = true;
        assert_eq!(d.outcome(), Outcome::Unresolved);
    }
}

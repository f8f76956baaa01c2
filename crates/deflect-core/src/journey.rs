//! The journey of one customer: its open contacts and its deflected contacts awaiting a
//! containment decision. A pure state machine: events and timer firings go in, in event-time order;
//! figures come out through a [`Figures`] sink.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dims::{Dimensions, DimensionsConfig};
use crate::event::{
    AiOutcome, Direction, Event, EventKind, Initiation, IvrExitReason, Millis, QueueExitReason,
};
use crate::metrics::{wait_bucket_label, Metric, Outcome, RECONTACT_WINDOWS};

/// Where figures decided while applying events go. The engine attributes them to the interval of
/// the event (or timer) being processed.
pub trait Figures {
    fn count(&mut self, metric: Metric, labels: Vec<String>, v: u64);
    /// A potential call arrived (heat-map volume).
    fn heat_arrival(&mut self);
    /// A queued contact was answered after `wait_ms` (heat-map ASA).
    fn heat_answer(&mut self, wait_ms: i64);
}

#[derive(Clone, Debug)]
pub struct JourneyConfig {
    pub dims: DimensionsConfig,
    /// A contact with no event for this long ends by timeout (outcome decided then).
    pub contact_timeout_ms: Millis,
}

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

    fn queue_labels(&self) -> Vec<String> {
        vec![
            self.dims.tenant.clone(),
            self.dims.channel.as_str().to_string(),
            self.dims.queue.clone(),
        ]
    }

    fn contact_labels(&self) -> Vec<String> {
        vec![
            self.dims.tenant.clone(),
            self.dims.channel.as_str().to_string(),
            self.dims.intent.clone(),
        ]
    }
}

/// A deflected contact whose containment is not yet decided for every window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub contact_id: String,
    pub ended_at: Millis,
    pub labels: Vec<String>,
    /// Bit i set = window `RECONTACT_WINDOWS[i]` still undecided.
    pub pending: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journey {
    pub known_customer: bool,
    pub contacts: BTreeMap<String, ContactState>,
    pub watches: Vec<Watch>,
}

fn window_ms(i: usize) -> Millis {
    RECONTACT_WINDOWS[i].1 * 3_600_000
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
        self.contacts.is_empty() && self.watches.is_empty()
    }

    /// The earliest event time at which a timer of this journey fires.
    pub fn next_wake(&self, cfg: &JourneyConfig) -> Option<Millis> {
        let contacts = self
            .contacts
            .values()
            .map(|c| c.last_event_at + cfg.contact_timeout_ms);
        let watches = self.watches.iter().flat_map(|w| {
            (0..RECONTACT_WINDOWS.len())
                .filter(move |i| w.pending & (1 << i) != 0)
                .map(move |i| w.ended_at + window_ms(i))
        });
        contacts.chain(watches).min()
    }

    /// Applies one event (events arrive in event-time order).
    pub fn apply(&mut self, cfg: &JourneyConfig, e: &Event, out: &mut dyn Figures) {
        let t = e.occurred_at;
        if let EventKind::SurveyResponse { .. } | EventKind::NotificationSent { .. } = e.kind {
            // Neither opens nor changes a contact (CSAT and proactive figures are not derived yet).
            return;
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
            .or_insert_with(|| ContactState::new(cfg, e));
        c.last_event_at = t;
        match &e.kind {
            EventKind::ContactStarted {
                direction,
                initiation,
            } => {
                c.potential =
                    *direction == Direction::Inbound && *initiation == Initiation::Customer;
                if c.potential {
                    out.count(Metric::PotentialCalls, c.contact_labels(), 1);
                    out.heat_arrival();
                }
            }
            EventKind::IntentIdentified { intent, .. } => {
                c.dims.intent = cfg.dims.intent(Some(intent));
            }
            EventKind::IvrEntered { .. }
            | EventKind::IvrMenuSelected { .. }
            | EventKind::SelfServiceViewed { .. }
            | EventKind::AiAgentStarted => c.automated_step = true,
            EventKind::IvrExited { reason, .. } => {
                c.automated_step = true;
                match reason {
                    IvrExitReason::SelfServed => c.self_service_resolved = true,
                    IvrExitReason::HangUp => c.abandon_signal = true,
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
            EventKind::EscalationRequested { .. } => c.escalated = true,
            EventKind::QueueEntered { queue, .. } => {
                if c.automated_step {
                    c.escalated = true;
                }
                c.dims.queue = cfg.dims.queue(Some(queue));
                c.queued = true;
                c.enqueued_at = Some(t);
                out.count(Metric::QueueEntered, c.queue_labels(), 1);
            }
            EventKind::QueueExited { reason } => match reason {
                QueueExitReason::Abandoned => {
                    c.abandon_signal = true;
                    if let Some(q) = c.enqueued_at.take() {
                        out.count(Metric::QueueAbandoned, c.queue_labels(), 1);
                        out.count(Metric::QueueAbandonWaitMs, c.queue_labels(), (t - q) as u64);
                    }
                }
                QueueExitReason::Callback => c.callback_requested = true,
                _ => {}
            },
            EventKind::AgentConnected { .. } => {
                c.agent_connected = true;
                if let Some(q) = c.enqueued_at.take() {
                    let wait = t - q;
                    let labels = c.queue_labels();
                    out.count(Metric::QueueAnswered, labels.clone(), 1);
                    out.count(Metric::QueueWaitMs, labels.clone(), wait as u64);
                    let mut l = labels;
                    l.push(wait_bucket_label(wait).to_string());
                    out.count(Metric::QueueWaitBucket, l, 1);
                    out.heat_answer(wait);
                }
            }
            EventKind::CallbackRequested { .. } => c.callback_requested = true,
            EventKind::ContactEnded { .. } => {
                let c = self.contacts.remove(&e.contact_id).expect("inserted above");
                self.end_contact(&e.contact_id, c, t, out);
            }
            EventKind::AgentDisconnected { .. }
            | EventKind::AfterContactWorkEnded { .. }
            | EventKind::CallbackCompleted { .. }
            | EventKind::CallbackCanceled { .. }
            | EventKind::CallbackExpired { .. }
            | EventKind::SurveyResponse { .. }
            | EventKind::NotificationSent { .. } => {}
        }
    }

    /// A new potential call: every watched deflected contact that ended at most W before it is
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
                    let mut l = w.labels.clone();
                    l.push(name.to_string());
                    l.push("recontacted".to_string());
                    out.count(Metric::Containment, l, 1);
                }
            }
        }
        self.watches.retain(|w| w.pending != 0);
    }

    fn end_contact(&mut self, contact_id: &str, c: ContactState, t: Millis, out: &mut dyn Figures) {
        if !c.potential {
            return;
        }
        let outcome = c.outcome();
        let mut l = c.contact_labels();
        l.push(outcome.as_str().to_string());
        out.count(Metric::ContactOutcomes, l, 1);
        if outcome == Outcome::Deflected {
            if self.known_customer {
                self.watches.push(Watch {
                    contact_id: contact_id.to_string(),
                    ended_at: t,
                    labels: c.contact_labels(),
                    pending: (1 << RECONTACT_WINDOWS.len()) - 1,
                });
            } else {
                out.count(Metric::ContainmentUnverifiable, c.contact_labels(), 1);
            }
        }
    }

    /// Fires every timer due at or before `t`: contacts silent for the contact timeout end, and
    /// watches whose window passed without a re-contact are contained.
    pub fn fire(&mut self, cfg: &JourneyConfig, t: Millis, out: &mut dyn Figures) {
        let due: Vec<String> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.last_event_at + cfg.contact_timeout_ms <= t)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            let c = self.contacts.remove(&id).expect("listed above");
            let at = c.last_event_at + cfg.contact_timeout_ms;
            self.end_contact(&id, c, at, out);
        }
        for w in &mut self.watches {
            for (i, (name, _)) in RECONTACT_WINDOWS.iter().enumerate() {
                if w.pending & (1 << i) != 0 && w.ended_at + window_ms(i) <= t {
                    w.pending &= !(1 << i);
                    let mut l = w.labels.clone();
                    l.push(name.to_string());
                    l.push("contained".to_string());
                    out.count(Metric::Containment, l, 1);
                }
            }
        }
        self.watches.retain(|w| w.pending != 0);
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
        fn count(&mut self, m: Metric, l: Vec<String>, v: u64) {
            self.0.add(m, l, v)
        }
        fn heat_arrival(&mut self) {
            self.1 += 1
        }
        fn heat_answer(&mut self, w: i64) {
            self.2.push(w)
        }
    }

    fn cfg() -> JourneyConfig {
        JourneyConfig {
            dims: DimensionsConfig::default(),
            contact_timeout_ms: 4 * 3_600_000,
        }
    }

    fn ev(contact: &str, t: Millis, kind: EventKind) -> Event {
        Event {
            event_id: format!("{contact}-{t}-{}", kind.rank()),
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

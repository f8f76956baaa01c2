//! Synthetic contact-center traffic, seeded and deterministic.
//!
//! Arrivals follow a daily and weekly curve in the site's local time; each contact follows a path
//! by channel and intent: IVR with self-service, hang-up or transfer to a queue (voice); an AI agent
//! that resolves, drops, fails or escalates with or without context (chat, web, app, sms); queues
//! with exponential waits against exponential patience (abandons, callback requests and callback
//! legs); agent talk, hold and after-contact work; CSAT surveys after some contacts; proactive
//! notifications; and customers who come back, sooner and more often after an abandon than after a
//! resolution. A small share of events is delivered out of order (within the jitter).
//!
//! Every contact draws from its own RNG seeded by (seed, contact number), so the output does not
//! depend on how the time range is chunked into `until` calls.

use std::collections::BTreeMap;

use deflect_core::event::{
    AiOutcome, Channel, Direction, DisconnectParty, EscalationSource, Event, EventKind, Initiation,
    IvrExitReason, Millis, QueueExitReason,
};
use deflect_core::time::IntervalSpec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Poisson};

pub const TENANTS: [&str; 2] = ["acme", "globex"];
pub const INTENTS: [&str; 7] = [
    "balance",
    "address_change",
    "card_lost",
    "billing",
    "dispute",
    "tech_support",
    "loan",
];
pub const QUEUES: [&str; 5] = ["cards", "billing", "general", "disputes", "tech"];

const HOUR_SHAPE: [f64; 24] = [
    0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.5, 1.0, 1.6, 2.0, 2.1, 2.0, 1.8, 1.9, 2.0, 1.9, 1.7, 1.4,
    1.1, 0.9, 0.7, 0.5, 0.3, 0.2,
];
const WEEKDAY_SHAPE: [f64; 7] = [1.2, 1.1, 1.0, 1.0, 0.9, 0.5, 0.3];

#[derive(Clone, Debug)]
pub struct GenParams {
    pub seed: u64,
    /// Event time of the first arrival minute (UTC ms).
    pub start_ms: Millis,
    pub customers: u32,
    /// Mean potential calls per hour over a week.
    pub contacts_per_hour: f64,
    pub time_zone: String,
    /// Share of contacts without a customer id.
    pub unknown_customer_share: f64,
    /// Largest delivery delay of an out-of-order event.
    pub jitter_ms: Millis,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            seed: 1,
            start_ms: 1_700_438_400_000, // 2023-11-20T00:00:00Z, a Monday
            customers: 200_000,
            contacts_per_hour: 600.0,
            time_zone: "UTC".into(),
            unknown_customer_share: 0.05,
            jitter_ms: 20_000,
        }
    }
}

#[derive(Clone, Debug)]
struct Arrival {
    customer: Option<u32>,
    /// For callback legs: the contact that asked for it.
    callback_of: Option<String>,
}

pub struct Generator {
    p: GenParams,
    spec: IntervalSpec,
    shape_norm: f64,
    /// Arrival minutes generated so far: `[start, generated_until)`.
    generated_until: Millis,
    arrivals: BTreeMap<(Millis, u64), Arrival>,
    /// Generated events by (delivery time, sequence).
    out: BTreeMap<(Millis, u64, u32), Event>,
    delivered_until: Millis,
}

fn mix(a: u64, b: u64) -> u64 {
    // splitmix64 of the pair: independent, reproducible streams per contact
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen::<f64>() * total;
    for (v, w) in items {
        if x < *w {
            return v;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

fn exp(rng: &mut ChaCha8Rng, mean_s: f64) -> Millis {
    (Exp::new(1.0 / mean_s).expect("positive rate").sample(rng) * 1000.0) as Millis
}

impl Generator {
    pub fn new(p: GenParams) -> Result<Self, deflect_core::time::TimeError> {
        let spec = IntervalSpec::new(&p.time_zone, 60)?;
        let mean_hour: f64 = HOUR_SHAPE.iter().sum::<f64>() / 24.0;
        let mean_day: f64 = WEEKDAY_SHAPE.iter().sum::<f64>() / 7.0;
        Ok(Generator {
            generated_until: p.start_ms,
            delivered_until: p.start_ms,
            spec,
            shape_norm: mean_hour * mean_day,
            p,
            arrivals: BTreeMap::new(),
            out: BTreeMap::new(),
        })
    }

    /// All events delivered before `t` (event time plus delivery jitter), in delivery order.
    pub fn until(&mut self, t: Millis) -> Vec<Event> {
        let mut minute_rng_seed;
        while self.generated_until < t {
            let m = self.generated_until;
            minute_rng_seed = mix(self.p.seed, m as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(minute_rng_seed);
            let lh = self.spec.local_hour(m);
            let shape = HOUR_SHAPE[usize::from(lh.hour)] * WEEKDAY_SHAPE[usize::from(lh.weekday)]
                / self.shape_norm;
            let lambda = self.p.contacts_per_hour / 60.0 * shape;
            let n = if lambda > 0.0 {
                Poisson::new(lambda).expect("positive").sample(&mut rng) as u64
            } else {
                0
            };
            for i in 0..n {
                let at = m + rng.gen_range(0..60_000);
                let customer = (rng.gen::<f64>() >= self.p.unknown_customer_share)
                    .then(|| rng.gen_range(0..self.p.customers.max(1)));
                self.arrivals.insert(
                    (at, ((m / 60_000) as u64) << 16 | i),
                    Arrival {
                        customer,
                        callback_of: None,
                    },
                );
            }
            // a few proactive notifications
            if rng.gen::<f64>() < self.p.contacts_per_hour / 60.0 * 0.02 {
                let customer = rng.gen_range(0..self.p.customers.max(1));
                let id = format!("n{:x}", mix(self.p.seed, m as u64 ^ 0x5EED));
                let topic = INTENTS[rng.gen_range(0..INTENTS.len())];
                let e = self.event(
                    &id,
                    Some(customer),
                    Channel::Sms,
                    m + 1_000,
                    0,
                    None,
                    EventKind::NotificationSent {
                        campaign: "outage-notice".into(),
                        topic: topic.into(),
                    },
                );
                self.out
                    .insert((m + 1_000, mix(id.len() as u64, m as u64), 0), e);
            }
            self.generated_until = m + 60_000;
        }
        while let Some((&(at, id), _)) = self.arrivals.iter().next() {
            if at >= t {
                break;
            }
            let a = self.arrivals.remove(&(at, id)).expect("present");
            self.simulate(at, id, a);
        }
        let rest = self.out.split_off(&(t, 0, 0));
        let ready = std::mem::replace(&mut self.out, rest);
        self.delivered_until = t;
        ready.into_values().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        contact: &str,
        customer: Option<u32>,
        channel: Channel,
        at: Millis,
        seq: u32,
        intent: Option<&str>,
        kind: EventKind,
    ) -> Event {
        Event {
            event_id: format!("{contact}-{seq}").into(),
            tenant: customer
                .map_or(
                    TENANTS[0],
                    |c| if c % 5 == 0 { TENANTS[1] } else { TENANTS[0] },
                )
                .into(),
            contact_id: contact.into(),
            parent_contact_id: None,
            customer_id: customer.map(|c| format!("u{c}").into()),
            channel,
            occurred_at: at,
            intent: intent.map(Into::into),
            queue: None,
            kind,
        }
    }

    fn simulate(&mut self, t0: Millis, id: u64, a: Arrival) {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.p.seed, id));
        let contact = format!("c{id:x}");
        let mut evs: Vec<Event> = Vec::new();
        let mut seq = 0u32;
        let mut push = |g: &Generator,
                        evs: &mut Vec<Event>,
                        at: Millis,
                        ch: Channel,
                        intent: Option<&str>,
                        kind: EventKind| {
            let mut e = g.event(&contact, a.customer, ch, at, seq, intent, kind);
            e.parent_contact_id = a.callback_of.as_deref().map(Into::into);
            seq += 1;
            evs.push(e);
        };

        if let Some(parent) = &a.callback_of {
            // the callback leg: the bank calls back; it is not a potential call
            let intent = INTENTS[rng.gen_range(0..INTENTS.len())];
            push(
                self,
                &mut evs,
                t0,
                Channel::Voice,
                Some(intent),
                EventKind::ContactStarted {
                    direction: Direction::Outbound,
                    initiation: Initiation::Callback,
                },
            );
            let t1 = t0 + exp(&mut rng, 20.0);
            push(
                self,
                &mut evs,
                t1,
                Channel::Voice,
                Some(intent),
                EventKind::AgentConnected {
                    context_received: true,
                },
            );
            let t2 = t1 + exp(&mut rng, 200.0) + 30_000;
            push(
                self,
                &mut evs,
                t2,
                Channel::Voice,
                Some(intent),
                EventKind::AgentDisconnected {
                    talk_ms: Some((t2 - t1) as u64),
                    hold_ms: Some(0),
                },
            );
            push(
                self,
                &mut evs,
                t2,
                Channel::Voice,
                Some(intent),
                EventKind::CallbackCompleted {
                    callback_id: format!("cb-{parent}").into(),
                },
            );
            push(
                self,
                &mut evs,
                t2,
                Channel::Voice,
                Some(intent),
                EventKind::ContactEnded {
                    party: Some(DisconnectParty::Agent),
                    resolved: true,
                },
            );
            self.deliver(evs, &mut rng);
            return;
        }

        let channel = *pick(
            &mut rng,
            &[
                (Channel::Voice, 0.55),
                (Channel::Chat, 0.15),
                (Channel::Web, 0.12),
                (Channel::App, 0.12),
                (Channel::Sms, 0.03),
                (Channel::Email, 0.03),
            ],
        );
        let intent = *pick(
            &mut rng,
            &[
                ("balance", 0.22),
                ("address_change", 0.1),
                ("card_lost", 0.15),
                ("billing", 0.2),
                ("dispute", 0.08),
                ("tech_support", 0.15),
                ("loan", 0.1),
            ],
        );
        let self_serve_p = match intent {
            "balance" => 0.65,
            "address_change" => 0.5,
            "card_lost" => 0.4,
            "tech_support" => 0.35,
            "billing" => 0.3,
            "loan" => 0.15,
            _ => 0.1,
        };
        let queue = match intent {
            "card_lost" => "cards",
            "billing" | "balance" => "billing",
            "dispute" => "disputes",
            "tech_support" => "tech",
            _ => "general",
        };
        push(
            self,
            &mut evs,
            t0,
            channel,
            None,
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
        );
        let mut t = t0;
        let mut escalated_with_context = false;
        // 0 = deflected, 1 = abandoned, 2 = queue
        let path;
        if channel == Channel::Voice {
            push(
                self,
                &mut evs,
                t,
                channel,
                None,
                EventKind::IvrEntered {
                    node: "main".into(),
                },
            );
            t += 8_000;
            push(
                self,
                &mut evs,
                t,
                channel,
                Some(intent),
                EventKind::IntentIdentified {
                    intent: intent.into(),
                    confidence: 0.9,
                },
            );
            t += 2_000;
            push(
                self,
                &mut evs,
                t,
                channel,
                Some(intent),
                EventKind::IvrMenuSelected {
                    node: "main".into(),
                    option: intent.into(),
                },
            );
            let r: f64 = rng.gen();
            if r < self_serve_p * 0.6 {
                t += 60_000 + rng.gen_range(0..120_000);
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::IvrExited {
                        node: intent.into(),
                        reason: IvrExitReason::SelfServed,
                    },
                );
                path = 0;
            } else if r < self_serve_p * 0.6 + 0.05 {
                t += 20_000 + rng.gen_range(0..40_000);
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::IvrExited {
                        node: "main".into(),
                        reason: IvrExitReason::HangUp,
                    },
                );
                path = 1;
            } else {
                t += 5_000;
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::IvrExited {
                        node: "main".into(),
                        reason: IvrExitReason::ToQueue,
                    },
                );
                path = 2;
            }
        } else if channel == Channel::Email {
            path = 2;
        } else {
            if matches!(channel, Channel::Web | Channel::App) && rng.gen::<f64>() < 0.5 {
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    None,
                    EventKind::SelfServiceViewed {
                        item: format!("kb-{intent}").into(),
                    },
                );
            }
            t += 2_000;
            push(self, &mut evs, t, channel, None, EventKind::AiAgentStarted);
            t += 3_000;
            push(
                self,
                &mut evs,
                t,
                channel,
                Some(intent),
                EventKind::IntentIdentified {
                    intent: intent.into(),
                    confidence: 0.8,
                },
            );
            t += 60_000 + rng.gen_range(0..240_000);
            let r: f64 = rng.gen();
            let turns = rng.gen_range(2..20);
            if r < self_serve_p {
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::AiAgentEnded {
                        outcome: AiOutcome::Success,
                        turns,
                    },
                );
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::SelfServiceResolved {
                        confirmed: rng.gen::<f64>() < 0.7,
                    },
                );
                path = 0;
            } else if r < self_serve_p + 0.15 {
                let outcome = if rng.gen::<f64>() < 0.7 {
                    AiOutcome::Dropped
                } else {
                    AiOutcome::Failed
                };
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::AiAgentEnded { outcome, turns },
                );
                path = 1;
            } else {
                escalated_with_context = rng.gen::<f64>() < 0.7;
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::EscalationRequested {
                        from: EscalationSource::AiAgent,
                        reason: "customer_request".into(),
                        context_passed: escalated_with_context,
                    },
                );
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::AiAgentEnded {
                        outcome: AiOutcome::Escalated,
                        turns,
                    },
                );
                path = 2;
            }
        }

        let outcome_deflected;
        let mut abandoned = path == 1;
        let mut callback = false;
        if path == 2 {
            t += 1_000;
            push(
                self,
                &mut evs,
                t,
                channel,
                Some(intent),
                EventKind::QueueEntered {
                    queue: queue.into(),
                    priority: 0,
                },
            );
            let hour_load = HOUR_SHAPE[usize::from(self.spec.local_hour(t).hour)];
            let wait = exp(&mut rng, 25.0 + 35.0 * hour_load);
            let patience = exp(&mut rng, 240.0);
            if patience < wait {
                t += patience;
                if rng.gen::<f64>() < 0.15 {
                    callback = true;
                    push(
                        self,
                        &mut evs,
                        t,
                        channel,
                        Some(intent),
                        EventKind::QueueExited {
                            reason: QueueExitReason::Callback,
                        },
                    );
                    push(
                        self,
                        &mut evs,
                        t,
                        channel,
                        Some(intent),
                        EventKind::CallbackRequested {
                            callback_id: format!("cb-{contact}").into(),
                        },
                    );
                    let leg_at = t + 600_000 + rng.gen_range(0..3_000_000);
                    self.arrivals.insert(
                        (leg_at, mix(id, 0xCA11_BAC4) | 1 << 63),
                        Arrival {
                            customer: a.customer,
                            callback_of: Some(contact.clone()),
                        },
                    );
                } else {
                    abandoned = true;
                    push(
                        self,
                        &mut evs,
                        t,
                        channel,
                        Some(intent),
                        EventKind::QueueExited {
                            reason: QueueExitReason::Abandoned,
                        },
                    );
                }
            } else {
                t += wait;
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::QueueExited {
                        reason: QueueExitReason::Answered,
                    },
                );
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::AgentConnected {
                        context_received: escalated_with_context,
                    },
                );
                let talk = exp(&mut rng, 240.0) + 30_000;
                let hold = if rng.gen::<f64>() < 0.3 {
                    exp(&mut rng, 40.0)
                } else {
                    0
                };
                t += talk + hold;
                push(
                    self,
                    &mut evs,
                    t,
                    channel,
                    Some(intent),
                    EventKind::AgentDisconnected {
                        talk_ms: Some(talk as u64),
                        hold_ms: Some(hold as u64),
                    },
                );
                push(
                    self,
                    &mut evs,
                    t + 30_000 + rng.gen_range(0..60_000),
                    channel,
                    Some(intent),
                    EventKind::AfterContactWorkEnded {
                        acw_ms: Some(45_000),
                    },
                );
            }
            outcome_deflected = false;
        } else {
            outcome_deflected = path == 0;
        }
        t += 2_000;
        // a few contacts never send contact_ended: their outcome is decided by the contact timeout
        if rng.gen::<f64>() >= 0.02 {
            let party = if abandoned {
                DisconnectParty::Customer
            } else {
                DisconnectParty::System
            };
            push(
                self,
                &mut evs,
                t,
                channel,
                Some(intent),
                EventKind::ContactEnded {
                    party: Some(party),
                    resolved: outcome_deflected || (!abandoned && !callback),
                },
            );
        }
        if rng.gen::<f64>() < 0.3 && !abandoned {
            let top = if outcome_deflected { 0.72 } else { 0.8 };
            let score = if rng.gen::<f64>() < top {
                rng.gen_range(4..=5)
            } else {
                rng.gen_range(1..=3)
            };
            push(
                self,
                &mut evs,
                t + 60_000 + rng.gen_range(0..540_000),
                channel,
                Some(intent),
                EventKind::SurveyResponse {
                    score: f64::from(score),
                    scale_min: 1.0,
                    scale_max: 5.0,
                },
            );
        }
        // customers come back
        let (p_back, mean_delay_s) = if abandoned {
            (0.5, 1_200.0)
        } else if outcome_deflected {
            (0.2, 36_000.0)
        } else {
            (0.08, 108_000.0)
        };
        if a.customer.is_some() && rng.gen::<f64>() < p_back {
            let back = t + exp(&mut rng, mean_delay_s) + 60_000;
            self.arrivals.insert(
                (back, mix(id, 0xBAC4) & !(1 << 63)),
                Arrival {
                    customer: a.customer,
                    callback_of: None,
                },
            );
        }
        self.deliver(evs, &mut rng);
    }

    fn deliver(&mut self, evs: Vec<Event>, rng: &mut ChaCha8Rng) {
        for (i, e) in evs.into_iter().enumerate() {
            let delay = if rng.gen::<f64>() < 0.1 && self.p.jitter_ms > 0 {
                rng.gen_range(0..self.p.jitter_ms)
            } else {
                0
            };
            let at = (e.occurred_at + delay).max(self.delivered_until);
            self.out.insert(
                (
                    at,
                    mix(
                        e.occurred_at as u64,
                        e.contact_id.len() as u64 ^ rng.gen::<u64>(),
                    ),
                    i as u32,
                ),
                e,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_independent_of_chunking() {
        let p = GenParams {
            contacts_per_hour: 300.0,
            ..Default::default()
        };
        let day = 86_400_000;
        let mut a = Generator::new(p.clone()).unwrap();
        let whole = a.until(p.start_ms + day);
        let mut b = Generator::new(p.clone()).unwrap();
        let mut chunked = Vec::new();
        for h in 1..=24 {
            chunked.extend(b.until(p.start_ms + h * 3_600_000));
        }
        assert!(whole.len() > 3_000, "{}", whole.len());
        assert_eq!(whole.len(), chunked.len());
        let mut x: Vec<_> = whole.iter().map(|e| e.event_id.clone()).collect();
        let mut y: Vec<_> = chunked.iter().map(|e| e.event_id.clone()).collect();
        x.sort();
        y.sort();
        assert_eq!(x, y);
        // every kind of event the pipeline consumes is present
        for ty in [
            "contact_started",
            "ivr_exited",
            "ai_agent_ended",
            "queue_entered",
            "agent_connected",
            "callback_requested",
            "survey_response",
            "notification_sent",
            "escalation_requested",
        ] {
            assert!(whole.iter().any(|e| e.kind.type_name() == ty), "no {ty}");
        }
        // ids are unique
        let n = x.len();
        x.dedup();
        assert_eq!(x.len(), n);
    }
}

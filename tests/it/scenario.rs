//! A hand-built scenario whose figures were worked out by hand (see the table in each assertion),
//! produced into the mock cluster over two partitions, consumed by the pipeline in this process,
//! and checked on `/metrics` scraped over HTTP.

use deflect::produce::{EventProducer, WireFormat};
use deflect::RunOptions;
use deflect_core::event::*;
use deflect_kafka::EmbeddedBroker;

use crate::support::*;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
/// Monday 2024-01-08 09:00:00 UTC.
const T: i64 = 1_704_704_400_000;

struct B {
    events: Vec<(i32, Event)>,
}

impl B {
    fn ev(
        &mut self,
        part: i32,
        contact: &str,
        customer: Option<&str>,
        ch: Channel,
        at: i64,
        kind: EventKind,
    ) {
        let n = self.events.len();
        self.events.push((
            part,
            Event {
                event_id: format!("{contact}-{n}").into(),
                tenant: "acme".into(),
                contact_id: contact.into(),
                parent_contact_id: None,
                customer_id: customer.map(Into::into),
                channel: ch,
                occurred_at: at,
                intent: Some("billing".into()),
                queue: None,
                kind,
            },
        ));
    }
    fn start(&mut self, p: i32, c: &str, u: Option<&str>, ch: Channel, at: i64) {
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
        );
    }
    fn end(&mut self, p: i32, c: &str, u: Option<&str>, ch: Channel, at: i64) {
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::ContactEnded {
                party: Some(DisconnectParty::Customer),
                resolved: true,
            },
        );
    }
    fn queue(&mut self, p: i32, c: &str, u: Option<&str>, ch: Channel, at: i64) {
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::QueueEntered {
                queue: "cards".into(),
                priority: 0,
            },
        );
    }
    fn answer(&mut self, p: i32, c: &str, u: Option<&str>, ch: Channel, at: i64) {
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::QueueExited {
                reason: QueueExitReason::Answered,
            },
        );
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::AgentConnected {
                context_received: true,
            },
        );
    }
    fn self_served(&mut self, p: i32, c: &str, u: Option<&str>, at: i64) {
        self.ev(
            p,
            c,
            u,
            Channel::Voice,
            at,
            EventKind::IvrExited {
                node: "main".into(),
                reason: IvrExitReason::SelfServed,
            },
        );
    }
    fn ai(&mut self, p: i32, c: &str, u: Option<&str>, ch: Channel, at: i64, outcome: AiOutcome) {
        self.ev(p, c, u, ch, at - MIN, EventKind::AiAgentStarted);
        self.ev(
            p,
            c,
            u,
            ch,
            at,
            EventKind::AiAgentEnded { outcome, turns: 4 },
        );
    }
}

/// The scenario. Partition 0 holds u1, u3, u5(unknown), u7, u10, u12; partition 1 holds u2, u4, u6, u8.
fn scenario() -> (Vec<(i32, Event)>, (i32, Event)) {
    let mut b = B { events: Vec::new() };
    let (v, chat, web) = (Channel::Voice, Channel::Chat, Channel::Web);
    // C1 (u1): voice, IVR self-served, deflected at 09:03; u1 is back at 19:00 (C1b)
    b.start(0, "c1", Some("u1"), v, T);
    b.self_served(0, "c1", Some("u1"), T + 2 * MIN);
    b.end(0, "c1", Some("u1"), v, T + 3 * MIN);
    // C1b (u1): chat, AI success at 19:05, deflected; u1 never comes back
    b.start(0, "c1b", Some("u1"), chat, T + 10 * H);
    b.ai(
        0,
        "c1b",
        Some("u1"),
        chat,
        T + 10 * H + 4 * MIN,
        AiOutcome::Success,
    );
    b.end(0, "c1b", Some("u1"), chat, T + 10 * H + 5 * MIN);
    // C2 (u2): chat, AI success, deflected at 09:06; u2 is back 29h54m later (C2b)
    b.start(1, "c2", Some("u2"), chat, T + MIN);
    b.ai(1, "c2", Some("u2"), chat, T + 5 * MIN, AiOutcome::Success);
    b.end(1, "c2", Some("u2"), chat, T + 6 * MIN);
    // C2b (u2): Tuesday 15:00, voice, queued 15:01, answered after 40 s, assisted
    let t2 = T + 30 * H;
    b.start(1, "c2b", Some("u2"), v, t2);
    b.queue(1, "c2b", Some("u2"), v, t2 + MIN);
    b.answer(1, "c2b", Some("u2"), v, t2 + MIN + 40_000);
    b.end(1, "c2b", Some("u2"), v, t2 + 10 * MIN);
    // C3 (u3): voice, queued 09:10:00, answered 09:10:20 (20 s), assisted
    b.start(0, "c3", Some("u3"), v, T + 9 * MIN);
    b.queue(0, "c3", Some("u3"), v, T + 10 * MIN);
    b.answer(0, "c3", Some("u3"), v, T + 10 * MIN + 20_000);
    b.end(0, "c3", Some("u3"), v, T + 20 * MIN);
    // C4 (u4): voice, queued 09:12:00, abandoned after 90 s
    b.start(1, "c4", Some("u4"), v, T + 11 * MIN);
    b.queue(1, "c4", Some("u4"), v, T + 12 * MIN);
    b.ev(
        1,
        "c4",
        Some("u4"),
        v,
        T + 13 * MIN + 30_000,
        EventKind::QueueExited {
            reason: QueueExitReason::Abandoned,
        },
    );
    b.end(1, "c4", Some("u4"), v, T + 13 * MIN + 30_000);
    // C5 (no customer id): web self-service resolved, deflected but unverifiable
    b.start(0, "c5", None, web, T + 13 * MIN);
    b.ev(
        0,
        "c5",
        None,
        web,
        T + 14 * MIN,
        EventKind::SelfServiceResolved { confirmed: true },
    );
    b.end(0, "c5", None, web, T + 14 * MIN + 30_000);
    // C6 (u6): chat, AI dropped, abandoned
    b.start(1, "c6", Some("u6"), chat, T + 20 * MIN);
    b.ai(1, "c6", Some("u6"), chat, T + 22 * MIN, AiOutcome::Dropped);
    b.end(1, "c6", Some("u6"), chat, T + 22 * MIN);
    // C7 (u7): across an hour boundary: started 09:58, queued 09:59:50, answered 10:00:30 (40 s)
    b.start(0, "c7", Some("u7"), v, T + 58 * MIN);
    b.queue(0, "c7", Some("u7"), v, T + 59 * MIN + 50_000);
    b.answer(0, "c7", Some("u7"), v, T + H + 30_000);
    b.end(0, "c7", Some("u7"), v, T + H + 10 * MIN);
    // C8 (u8): self-served 09:30-09:32, delivered out of order (end, exit, start)
    b.end(1, "c8", Some("u8"), v, T + 32 * MIN);
    b.self_served(1, "c8", Some("u8"), T + 31 * MIN);
    b.start(1, "c8", Some("u8"), v, T + 30 * MIN);
    // C9 (u3): a transfer leg of C3, not a potential call: queued 09:20, answered after 60 s
    b.ev(
        0,
        "c9",
        Some("u3"),
        v,
        T + 20 * MIN,
        EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Transfer,
        },
    );
    b.queue(0, "c9", Some("u3"), v, T + 20 * MIN);
    b.answer(0, "c9", Some("u3"), v, T + 21 * MIN);
    b.end(0, "c9", Some("u3"), v, T + 30 * MIN);
    // C10 (u10): self-served at 10:01, never sends contact_ended: deflected by the 4 h timeout at 14:01
    b.start(0, "c10", Some("u10"), v, T + H);
    b.self_served(0, "c10", Some("u10"), T + H + MIN);
    // C12 (u12): chat 09:38, AI escalates with context, queued 09:40, answered after 60 s
    b.start(0, "c12", Some("u12"), chat, T + 38 * MIN);
    b.ev(
        0,
        "c12",
        Some("u12"),
        chat,
        T + 39 * MIN,
        EventKind::EscalationRequested {
            from: EscalationSource::AiAgent,
            reason: "asked".into(),
            context_passed: true,
        },
    );
    b.queue(0, "c12", Some("u12"), chat, T + 40 * MIN);
    b.answer(0, "c12", Some("u12"), chat, T + 41 * MIN);
    b.end(0, "c12", Some("u12"), chat, T + 50 * MIN);

    // deliver in event-time order per partition, but keep C8's reversed order
    let mut evs = b.events;
    let c8: Vec<_> = evs
        .iter()
        .filter(|(_, e)| e.contact_id == "c8")
        .cloned()
        .collect();
    evs.retain(|(_, e)| e.contact_id != "c8");
    evs.sort_by_key(|(_, e)| e.occurred_at);
    let at = evs
        .iter()
        .position(|(_, e)| e.occurred_at > T + 33 * MIN)
        .unwrap();
    evs.splice(at..at, c8);
    // a re-delivered duplicate of C3's agent_connected, right after the original
    let dup_at = evs
        .iter()
        .position(|(_, e)| {
            e.contact_id == "c3" && matches!(e.kind, EventKind::AgentConnected { .. })
        })
        .unwrap();
    let dup = evs[dup_at].clone();
    evs.insert(dup_at + 1, dup);
    // a late event: a contact that started at 09:05, delivered after partition 0 reached 19:00
    let late = (
        0,
        Event {
            event_id: "c11-0".into(),
            contact_id: "c11".into(),
            customer_id: Some("u11".into()),
            occurred_at: T + 5 * MIN,
            ..evs[0].1.clone()
        },
    );
    (evs, late)
}

#[test]
fn hand_computed_scenario_on_metrics_endpoint() {
    let topic = "scenario";
    let broker = EmbeddedBroker::start(&[(topic, 2)]).unwrap();
    let (events, late) = scenario();
    let mut p = EventProducer::new(&broker.settings(), topic, WireFormat::Protobuf).unwrap();
    for (part, e) in &events {
        p.send_to(*part, e).unwrap();
    }
    p.send_to(late.0, &late.1).unwrap();
    p.flush().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(broker.bootstrap_servers(), topic, dir.path(), "scenario");
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let summary = svc.wait_pipeline().unwrap();
    assert_eq!(summary.records, events.len() as u64 + 1);

    let (status, body) = http_get(svc.addr(), "/metrics");
    assert_eq!(status, 200);
    let m = parse_metrics(&body, "deflect_");
    let s = |name: &str, labels: &[(&str, &str)]| sum(&m, name, labels);

    // potential calls: c1 c1b c2 c2b c3 c4 c5 c6 c7 c8 c10 c12 (c9 is a transfer, c11 is late)
    assert_eq!(s("deflect_potential_calls_total", &[]), 12.0);
    // outcomes: deflected c1 c1b c2 c5 c8 c10; assisted c2b c3 c7 c12; abandoned c4 c6
    assert_eq!(
        s(
            "deflect_contact_outcomes_total",
            &[("outcome", "deflected")]
        ),
        6.0
    );
    assert_eq!(
        s("deflect_contact_outcomes_total", &[("outcome", "assisted")]),
        4.0
    );
    assert_eq!(
        s(
            "deflect_contact_outcomes_total",
            &[("outcome", "abandoned")]
        ),
        2.0
    );
    assert_eq!(
        s(
            "deflect_contact_outcomes_total",
            &[("outcome", "unresolved")]
        ),
        0.0
    );
    assert_eq!(
        s(
            "deflect_contact_outcomes_total",
            &[("outcome", "deflected"), ("channel", "voice")]
        ),
        3.0
    );
    assert_eq!(s("deflect_containment_unverifiable_total", &[]), 1.0);
    // containment: c1 re-contacted (c1b 9h57m later) in every window; c2 back after 29h54m:
    // contained for 24h, re-contacted for 72h and 7d; c1b, c8, c10 contained everywhere
    let c = |w: &str, r: &str| s("deflect_containment_total", &[("window", w), ("result", r)]);
    assert_eq!((c("24h", "contained"), c("24h", "recontacted")), (4.0, 1.0));
    assert_eq!((c("72h", "contained"), c("72h", "recontacted")), (3.0, 2.0));
    assert_eq!((c("7d", "contained"), c("7d", "recontacted")), (3.0, 2.0));
    // queues: entered c2b c3 c4 c7 c9 c12; answered c2b 40s, c3 20s, c7 40s, c9 60s, c12 60s
    assert_eq!(s("deflect_queue_entered_total", &[]), 6.0);
    assert_eq!(s("deflect_queue_answered_total", &[]), 5.0);
    assert_eq!(
        s("deflect_queue_answered_wait_milliseconds_total", &[]),
        220_000.0
    );
    assert_eq!(s("deflect_queue_abandoned_total", &[]), 1.0);
    assert_eq!(
        s("deflect_queue_abandoned_wait_milliseconds_total", &[]),
        90_000.0
    );
    assert_eq!(
        s(
            "deflect_queue_answered_wait_seconds_bucket",
            &[("le", "10")]
        ),
        0.0
    );
    assert_eq!(
        s(
            "deflect_queue_answered_wait_seconds_bucket",
            &[("le", "20")]
        ),
        1.0
    );
    assert_eq!(
        s(
            "deflect_queue_answered_wait_seconds_bucket",
            &[("le", "30")]
        ),
        1.0
    );
    assert_eq!(
        s(
            "deflect_queue_answered_wait_seconds_bucket",
            &[("le", "60")]
        ),
        5.0
    );
    assert_eq!(
        s(
            "deflect_queue_answered_wait_seconds_bucket",
            &[("le", "+Inf")]
        ),
        5.0
    );
    // dimensions are folded: no intents/queues configured -> "other"; channel is bounded
    assert_eq!(s("deflect_queue_entered_total", &[("queue", "other")]), 6.0);
    // heat map (UTC): Monday 9h has 9 arrivals and 3 answers (c3 20s, c9 60s, c12 60s);
    // c7 was queued at 09:59:50 but answered at 10:00:30, so its 40 s count in Monday 10h
    let hm = |n: &str, wd: &str, h: &str| s(n, &[("weekday", wd), ("hour", h)]);
    assert_eq!(hm("deflect_heatmap_arrivals", "mon", "9"), 9.0);
    assert_eq!(hm("deflect_heatmap_answered", "mon", "9"), 3.0);
    assert_eq!(
        hm("deflect_heatmap_answered_wait_milliseconds", "mon", "9"),
        140_000.0
    );
    assert_eq!(hm("deflect_heatmap_arrivals", "mon", "10"), 1.0);
    assert_eq!(
        hm("deflect_heatmap_answered_wait_milliseconds", "mon", "10"),
        40_000.0
    );
    assert_eq!(
        hm("deflect_heatmap_answered_wait_milliseconds", "tue", "15"),
        40_000.0
    );
    // days observed are per partition; both partitions ran to the last 7-day timer
    // (Monday 2024-01-15 19:05), so Monday 9h was observed on the 8th and the 15th
    assert_eq!(
        m["deflect_heatmap_days_observed{hour=\"9\",partition=\"0\",weekday=\"mon\"}"],
        2.0
    );
    assert_eq!(
        m["deflect_heatmap_days_observed{hour=\"15\",partition=\"0\",weekday=\"tue\"}"],
        1.0
    );
    // what happened to every record
    assert_eq!(s("deflect_events_total", &[("result", "duplicate")]), 1.0);
    assert_eq!(s("deflect_events_total", &[("result", "late")]), 1.0);
    assert_eq!(
        s("deflect_events_total", &[("result", "accepted")]),
        events.len() as f64 - 1.0
    );

    let (status, _) = http_get(svc.addr(), "/healthz");
    assert_eq!(status, 200);
    svc.shutdown().unwrap();
}

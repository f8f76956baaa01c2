//! The streaming engine equals the oracle, exactly, for every interval and metric; and the oracle
//! itself agrees with hand-computed figures.

use std::collections::BTreeMap;
use std::sync::Arc;

use deflect_core::dims::DimensionsConfig;
use deflect_core::engine::{EngineConfig, Ingest, NoStore, PartitionEngine};
use deflect_core::event::*;
use deflect_core::journey::JourneyConfig;
use deflect_core::metrics::Metric;
use deflect_core::time::IntervalSpec;
use proptest::prelude::*;

use super::*;

const MIN: Millis = 60_000;
const H: Millis = 60 * MIN;
const TZ: &str = "Europe/London";

fn journey_cfg() -> JourneyConfig {
    let mut c = JourneyConfig::new(DimensionsConfig {
        tenants: vec!["acme".into()],
        intents: vec!["billing".into(), "card".into(), "dispute".into()],
        queues: vec!["q1".into()],
        ivr_nodes: vec!["main".into(), "pay".into()],
    });
    c.high_stakes_intents = vec!["dispute".into()];
    // short windows so that random scenarios of a few days exercise every decision
    c.contact_timeout_ms = 2 * H;
    c.survey_window_ms = 6 * H;
    c.proactive_window_ms = 12 * H;
    c.callback_max_age_ms = 20 * H;
    c
}

fn engine_cfg(minutes: u32, j: JourneyConfig) -> Arc<EngineConfig> {
    Arc::new(EngineConfig {
        intervals: IntervalSpec::new(TZ, minutes).unwrap(),
        grace_ms: 5 * MIN,
        idle_timeout_ms: i64::MAX / 4,
        heatmap_days: 28,
        heatmap_by_interval: false,
        journey: j,
    })
}

/// Runs the engine over `deliveries` split across `parts` partitions (by journey key), closing
/// intervals every `every` records, then to the end; returns the closed intervals merged.
fn stream(
    cfg: Arc<EngineConfig>,
    deliveries: &[Event],
    parts: usize,
    every: usize,
) -> BTreeMap<Millis, Figures> {
    stream_reports(cfg, deliveries, parts, every).0
}

/// [`stream`], plus the cohort reports of every partition merged by (interval, revision).
fn stream_reports(
    cfg: Arc<EngineConfig>,
    deliveries: &[Event],
    parts: usize,
    every: usize,
) -> (BTreeMap<Millis, Figures>, BTreeMap<(Millis, u32), Counters>) {
    use deflect_core::engine::ReportPart;
    let mut es: Vec<PartitionEngine> = (0..parts)
        .map(|_| PartitionEngine::new(cfg.clone()))
        .collect();
    let mut offsets = vec![0i64; parts];
    let mut closed = Vec::new();
    for (i, e) in deliveries.iter().enumerate() {
        let p = e.journey_key().bytes().map(usize::from).sum::<usize>() % parts;
        let r = es[p].ingest(offsets[p], e.clone(), 0);
        assert_ne!(r, Ingest::Late, "delivered within the grace period: {e:?}");
        offsets[p] += 1;
        if every > 0 && i % every == 0 {
            closed.extend(es[p].advance(0, &mut NoStore));
        }
    }
    let mut cohorts: BTreeMap<(Millis, u32), Counters> = BTreeMap::new();
    let mut figures = Counters::default();
    for e in &mut es {
        closed.extend(e.finalize(&mut NoStore));
        assert_eq!(e.pending_len(), 0);
        assert_eq!(
            e.cohorts_len(),
            0,
            "every cohort reached its final revision"
        );
        let mut last: BTreeMap<Millis, u32> = BTreeMap::new();
        for r in e.take_reports() {
            match r.part {
                ReportPart::Figures => figures.merge(&r.counters),
                ReportPart::Cohort => {
                    // revisions come in increasing order (an empty one is not written), the
                    // last one final
                    assert!(!r.counters.is_empty());
                    let prev = last.insert(r.interval.start, r.revision);
                    assert!(prev.is_none_or(|p| p < r.revision));
                    assert_eq!(
                        r.is_final,
                        r.revision as usize == horizons(&cfg.journey).len()
                    );
                    assert_eq!(r.horizons_final.len(), r.revision as usize);
                    if !r.counters.is_empty() {
                        cohorts
                            .entry((r.interval.start, r.revision))
                            .or_default()
                            .merge(&r.counters);
                    }
                }
            }
        }
    }
    let mut out: BTreeMap<Millis, Figures> = BTreeMap::new();
    for c in closed {
        let f = out.entry(c.interval.start).or_default();
        f.counters.merge(&c.counters);
        f.heat.arrivals += c.heat.arrivals;
        f.heat.answered += c.heat.answered;
        f.heat.wait_ms += c.heat.wait_ms;
    }
    out.retain(|_, f| *f != Figures::default());
    let all = out.values().fold(Counters::default(), |mut a, f| {
        a.merge(&f.counters);
        a
    });
    assert_eq!(
        figures, all,
        "figures reports carry the closed intervals' figures"
    );
    (out, cohorts)
}

fn oracle(minutes: u32, j: &JourneyConfig, events: &[Event]) -> BTreeMap<Millis, Figures> {
    let mut r = compute(j, TZ, minutes, events).intervals;
    r.retain(|_, f| *f != Figures::default());
    r
}

// ---------- random scenarios

fn arb_step() -> impl Strategy<Value = EventKind> {
    let s = |s: &str| deflect_core::event::Text::from(s);
    prop_oneof![
        prop::sample::select(vec!["billing", "card", "dispute", "moving", ""]).prop_map(move |i| {
            EventKind::IntentIdentified {
                intent: s(i),
                confidence: 0.9,
            }
        }),
        prop::sample::select(vec!["main", "pay", "x"])
            .prop_map(move |n| EventKind::IvrEntered { node: s(n) }),
        prop::sample::select(vec!["main", "x"]).prop_map(move |n| EventKind::IvrMenuSelected {
            node: s(n),
            option: s("1")
        }),
        (
            prop::sample::select(vec!["main", "pay"]),
            prop::sample::select(IvrExitReason::ALL.to_vec())
        )
            .prop_map(move |(n, reason)| EventKind::IvrExited { node: s(n), reason }),
        Just(EventKind::SelfServiceViewed { item: s("kb-1") }),
        any::<bool>().prop_map(|confirmed| EventKind::SelfServiceResolved { confirmed }),
        Just(EventKind::AiAgentStarted),
        prop::sample::select(AiOutcome::ALL.to_vec())
            .prop_map(|outcome| EventKind::AiAgentEnded { outcome, turns: 2 }),
        any::<bool>().prop_map(move |context_passed| EventKind::EscalationRequested {
            from: EscalationSource::AiAgent,
            reason: s("r"),
            context_passed
        }),
        prop::sample::select(vec!["q1", "q2"]).prop_map(move |q| EventKind::QueueEntered {
            queue: s(q),
            priority: 0
        }),
        prop::sample::select(QueueExitReason::ALL.to_vec())
            .prop_map(|reason| EventKind::QueueExited { reason }),
        Just(EventKind::AgentConnected {
            context_received: true
        }),
        (
            prop::option::weighted(0.8, 0u64..600_000),
            prop::option::of(0u64..60_000)
        )
            .prop_map(|(talk_ms, hold_ms)| EventKind::AgentDisconnected { talk_ms, hold_ms }),
        prop::option::of(0u64..120_000)
            .prop_map(|acw_ms| EventKind::AfterContactWorkEnded { acw_ms }),
        (0u8..3).prop_map(move |i| EventKind::CallbackRequested {
            callback_id: format!("cb{i}").into()
        }),
        (0u8..3, 0u8..3).prop_map(|(i, k)| {
            let callback_id = format!("cb{i}");
            match k {
                0 => EventKind::CallbackCompleted {
                    callback_id: callback_id.into(),
                },
                1 => EventKind::CallbackCanceled {
                    callback_id: callback_id.into(),
                },
                _ => EventKind::CallbackExpired {
                    callback_id: callback_id.into(),
                },
            }
        }),
    ]
}

/// Offsets of a contact's steps from its start, on coarse grids so that ties with thresholds
/// (short abandon, service level, windows) happen; some past the contact timeout.
fn arb_offset() -> impl Strategy<Value = Millis> {
    prop_oneof![
        4 => (0..40i64).prop_map(|m| m * MIN),
        4 => (0..480i64).prop_map(|k| k * 5_000),
        1 => (100..200i64).prop_map(|m| m * MIN),
    ]
}

/// One contact: (customer, start offset, channel, initiation, intent at start, steps, ends,
/// survey after the end, notification before the start).
#[allow(clippy::type_complexity)]
fn arb_contact() -> impl Strategy<
    Value = (
        u8,
        Millis,
        Channel,
        Initiation,
        Option<&'static str>,
        Vec<(Millis, EventKind)>,
        bool,
        Option<(Millis, u8, u8, u8)>,
        Option<(Millis, &'static str)>,
    ),
> {
    (
        0u8..6,
        (0..(3 * 24 * 4i64)).prop_map(|q| q * 15 * MIN),
        prop::sample::select(vec![Channel::Voice, Channel::Chat, Channel::App]),
        prop::sample::select(vec![
            Initiation::Customer,
            Initiation::Customer,
            Initiation::Customer,
            Initiation::Transfer,
            Initiation::Callback,
        ]),
        prop::option::of(prop::sample::select(vec!["billing", "dispute", "other-x"])),
        prop::collection::vec((arb_offset(), arb_step()), 0..7),
        prop::bool::weighted(0.8),
        prop::option::weighted(
            0.3,
            (
                (0..16i64).prop_map(|k| k * 30 * MIN),
                1u8..6,
                0u8..2,
                0u8..11,
            ),
        ),
        prop::option::weighted(
            0.15,
            (
                (0..56i64).prop_map(|k| k * 15 * MIN),
                prop::sample::select(vec!["billing", "dispute"]),
            ),
        ),
    )
}

fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(arb_contact(), 1..50).prop_map(|contacts| {
        let base = 1_711_756_800_000; // 2024-03-30T00:00Z, a day before London's DST change
        let mut out = Vec::new();
        for (i, (cust, start, ch, init, intent, mut steps, ends, survey, notif)) in
            contacts.into_iter().enumerate()
        {
            steps.sort_by_key(|s| s.0);
            let customer = (cust > 0).then(|| format!("u{cust}"));
            let mk = |j: usize, t: Millis, kind: EventKind| Event {
                event_id: format!("e{i}-{j}").into(),
                tenant: if i % 7 == 0 {
                    "zeta".into()
                } else {
                    "acme".into()
                },
                contact_id: format!("c{i}").into(),
                parent_contact_id: None,
                customer_id: customer.as_deref().map(Into::into),
                channel: ch,
                occurred_at: base + t,
                intent: intent.map(Into::into),
                queue: (i % 3 == 0).then(|| "q1".into()),
                kind,
            };
            out.push(mk(
                0,
                start,
                EventKind::ContactStarted {
                    direction: Direction::Inbound,
                    initiation: init,
                },
            ));
            let mut last = start;
            for (j, (off, kind)) in steps.into_iter().enumerate() {
                last = start + off;
                out.push(mk(j + 1, last, kind));
            }
            if ends {
                last += MIN;
                out.push(mk(
                    100,
                    last,
                    EventKind::ContactEnded {
                        party: None,
                        resolved: true,
                    },
                ));
            }
            if let Some((after, score, scale, _)) = survey {
                let (min, max) = if scale == 0 { (1.0, 5.0) } else { (0.0, 10.0) };
                let score = f64::from(score) * if scale == 0 { 1.0 } else { 2.0 };
                out.push(mk(
                    101,
                    last + after,
                    EventKind::SurveyResponse {
                        score: score.clamp(min, max),
                        scale_min: min,
                        scale_max: max,
                    },
                ));
            }
            if let Some((before, topic)) = notif {
                out.push(mk(
                    102,
                    (start - before).max(0),
                    EventKind::NotificationSent {
                        campaign: "c".into(),
                        topic: topic.into(),
                    },
                ));
            }
        }
        out
    })
}

proptest! {
    // 256 cases, or PROPTEST_CASES for a longer run
    #![proptest_config(ProptestConfig::default())]

    /// Random scenarios of every event type across London's 2024 DST change, delivered out of
    /// order within the grace period (with duplicates), split across partitions and closed at
    /// random moments: every interval's every figure equals the oracle's.
    #[test]
    fn streaming_equals_the_batch_oracle(
        events in arb_events(),
        delays in prop::collection::vec(0..(4 * MIN), 64),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        parts in 1usize..4,
        every in 0usize..9,
        minutes in prop::sample::select(vec![15u32, 30, 60]),
        direct in any::<bool>(),
    ) {
        let mut j = journey_cfg();
        j.asa_include_direct = direct;
        let expected = oracle(minutes, &j, &events);
        let mut deliveries: Vec<(Millis, usize, Event)> = events
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, e)| (e.occurred_at + delays[i % delays.len()], i, e))
            .collect();
        for (k, d) in dups.iter().enumerate() {
            let e = events[d.index(events.len())].clone();
            deliveries.push((e.occurred_at + delays[k % delays.len()] / 2, usize::MAX - k, e));
        }
        deliveries.sort_by_key(|(t, i, _)| (*t, *i));
        let deliveries: Vec<Event> = deliveries.into_iter().map(|(_, _, e)| e).collect();
        let expected_cohorts = compute(&j, TZ, minutes, &events).cohorts;
        let (got, cohorts) = stream_reports(engine_cfg(minutes, j), &deliveries, parts, every);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(cohorts, expected_cohorts);
    }
}

// ---------- the oracle against figures worked out by hand

fn ev(id: &str, cust: Option<&str>, contact: &str, t: Millis, kind: EventKind) -> Event {
    Event {
        event_id: id.into(),
        tenant: "acme".into(),
        contact_id: contact.into(),
        parent_contact_id: None,
        customer_id: cust.map(Into::into),
        channel: Channel::Voice,
        occurred_at: t,
        intent: None,
        queue: None,
        kind,
    }
}

fn start() -> EventKind {
    EventKind::ContactStarted {
        direction: Direction::Inbound,
        initiation: Initiation::Customer,
    }
}
fn end() -> EventKind {
    EventKind::ContactEnded {
        party: None,
        resolved: true,
    }
}

#[test]
fn oracle_matches_a_hand_computed_day() {
    // 2024-01-08 (London = UTC), 15-minute intervals from 09:00.
    let t0 = 1_704_704_400_000;
    let u = Some("u");
    let events = vec![
        // c1: deflected by the IVR at 09:05, dispute (high stakes)
        ev("1a", u, "c1", t0, start()),
        ev(
            "1b",
            u,
            "c1",
            t0 + MIN,
            EventKind::IntentIdentified {
                intent: "dispute".into(),
                confidence: 1.0,
            },
        ),
        ev(
            "1c",
            u,
            "c1",
            t0 + 2 * MIN,
            EventKind::IvrEntered {
                node: "main".into(),
            },
        ),
        ev(
            "1d",
            u,
            "c1",
            t0 + 4 * MIN,
            EventKind::IvrExited {
                node: "main".into(),
                reason: IvrExitReason::SelfServed,
            },
        ),
        ev("1e", u, "c1", t0 + 5 * MIN, end()),
        // survey on c1 at 09:20, 4 of 5 → deflected, top2
        ev(
            "1f",
            u,
            "c1",
            t0 + 20 * MIN,
            EventKind::SurveyResponse {
                score: 4.0,
                scale_min: 1.0,
                scale_max: 5.0,
            },
        ),
        // c2: the same customer comes back at 10:00 (re-contact of c1 within 24 h), queues 30 s,
        // is answered, talks 100 s, holds 20 s, 40 s of after-contact work
        ev("2a", u, "c2", t0 + 60 * MIN, start()),
        ev(
            "2b",
            u,
            "c2",
            t0 + 60 * MIN + 1000,
            EventKind::IvrEntered { node: "pay".into() },
        ),
        ev(
            "2c",
            u,
            "c2",
            t0 + 61 * MIN,
            EventKind::EscalationRequested {
                from: EscalationSource::Ivr,
                reason: "r".into(),
                context_passed: true,
            },
        ),
        ev(
            "2d",
            u,
            "c2",
            t0 + 61 * MIN,
            EventKind::QueueEntered {
                queue: "q1".into(),
                priority: 0,
            },
        ),
        ev(
            "2e",
            u,
            "c2",
            t0 + 61 * MIN + 30_000,
            EventKind::AgentConnected {
                context_received: true,
            },
        ),
        ev(
            "2f",
            u,
            "c2",
            t0 + 64 * MIN,
            EventKind::AgentDisconnected {
                talk_ms: Some(100_000),
                hold_ms: Some(20_000),
            },
        ),
        ev(
            "2g",
            u,
            "c2",
            t0 + 65 * MIN,
            EventKind::AfterContactWorkEnded {
                acw_ms: Some(40_000),
            },
        ),
        ev("2h", u, "c2", t0 + 65 * MIN, end()),
        // c3: unknown customer, queues at 09:10 and abandons after 3 s (a short abandon)
        ev("3a", None, "c3", t0 + 10 * MIN, start()),
        ev(
            "3b",
            None,
            "c3",
            t0 + 10 * MIN,
            EventKind::QueueEntered {
                queue: "q1".into(),
                priority: 0,
            },
        ),
        ev(
            "3c",
            None,
            "c3",
            t0 + 10 * MIN + 3000,
            EventKind::QueueExited {
                reason: QueueExitReason::Abandoned,
            },
        ),
        ev("3d", None, "c3", t0 + 11 * MIN, end()),
    ];
    let j = journey_cfg();
    let r = compute(&j, TZ, 15, &events).intervals;
    let at = |k: i64| &r[&(t0 + k * 15 * MIN)].counters;
    fn acme_voice(i: &str) -> [&str; 3] {
        ["acme", "voice", i]
    }
    // 09:00–09:15: two potential calls, c1 deflected (dispute), c3 queued and abandoned
    assert_eq!(at(0).get(Metric::PotentialCalls, &acme_voice("none")), 2);
    assert_eq!(
        at(0).get(
            Metric::ContactOutcomes,
            &["acme", "voice", "dispute", "deflected"]
        ),
        1
    );
    assert_eq!(
        at(0).get(
            Metric::ContactOutcomes,
            &["acme", "voice", "none", "abandoned"]
        ),
        1
    );
    assert_eq!(at(0).total(Metric::HighStakesDeflected), 1);
    assert_eq!(at(0).get(Metric::IvrEntries, &["acme", "voice", "main"]), 1);
    assert_eq!(at(0).total(Metric::QueueAbandoned), 1);
    assert_eq!(at(0).total(Metric::QueueAbandonWaitMs), 3000);
    assert_eq!(at(0).total(Metric::QueueAbandonedShort), 1);
    assert_eq!(at(0).total(Metric::QueueAbandonedWithin), 1);
    assert_eq!(
        at(0).get(
            Metric::RecontactUnverifiable,
            &["acme", "voice", "none", "abandoned"]
        ),
        1
    );
    assert_eq!(
        at(0).get(Metric::AutomatedContacts, &acme_voice("dispute")),
        1
    );
    assert_eq!(at(0).total(Metric::Escalations), 0);
    // 09:15–09:30: the survey
    assert_eq!(
        at(1).get(
            Metric::CsatResponses,
            &["acme", "voice", "deflected", "top2"]
        ),
        1
    );
    // 10:00–10:15: c2 arrives (re-contact of c1 for all three windows), is answered within 20 s? no: 30 s
    assert_eq!(at(4).total(Metric::PotentialCalls), 1);
    for w in ["24h", "72h", "7d"] {
        assert_eq!(
            at(4).get(
                Metric::Containment,
                &["acme", "voice", "dispute", w, "recontacted"]
            ),
            1
        );
        assert_eq!(
            at(4).get(
                Metric::Recontact,
                &["acme", "voice", "dispute", "deflected", w, "recontacted"]
            ),
            1
        );
    }
    assert_eq!(at(4).total(Metric::QueueAnswered), 1);
    assert_eq!(at(4).total(Metric::QueueWaitMs), 30_000);
    assert_eq!(at(4).total(Metric::QueueAnsweredWithin), 0);
    assert_eq!(
        at(4).get(Metric::QueueWaitBucket, &["acme", "voice", "q1", "30"]),
        1
    );
    assert_eq!(at(4).get(Metric::IvrEntries, &["acme", "voice", "pay"]), 1);
    // c2 ends at 10:05: assisted, escalated with context, handled in 160 s
    assert_eq!(
        at(4).get(
            Metric::ContactOutcomes,
            &["acme", "voice", "none", "assisted"]
        ),
        1
    );
    assert_eq!(
        at(4).get(Metric::Escalations, &["acme", "voice", "none", "passed"]),
        1
    );
    assert_eq!(at(4).get(Metric::Handled, &["acme", "voice", "q1"]), 1);
    assert_eq!(
        at(4).get(Metric::HandleTimeMs, &["acme", "voice", "q1"]),
        160_000
    );
    // c2 itself is not re-contacted: decided at its end + W
    let c2_end = t0 + 65 * MIN;
    let day = interval_start(&jiff::tz::TimeZone::get(TZ).unwrap(), 15, c2_end + 24 * H);
    assert_eq!(
        r[&day].counters.get(
            Metric::Recontact,
            &[
                "acme",
                "voice",
                "none",
                "assisted",
                "24h",
                "not_recontacted"
            ]
        ),
        1
    );
    // and the heat map: 3 arrivals, one answer after 30 s
    let heat: HeatCell = r.values().fold(HeatCell::default(), |mut a, f| {
        a.arrivals += f.heat.arrivals;
        a.answered += f.heat.answered;
        a.wait_ms += f.heat.wait_ms;
        a
    });
    assert_eq!((heat.arrivals, heat.answered, heat.wait_ms), (3, 1, 30_000));
    // and the engine agrees
    let got = stream(engine_cfg(15, j.clone()), &events, 2, 3);
    assert_eq!(got, oracle(15, &j, &events));
}

#[test]
fn intervals_follow_local_time_across_dst() {
    let tz = jiff::tz::TimeZone::get("Asia/Jerusalem").unwrap();
    // 1999-04-02 02:00 local became 03:00 (UTC+3 from 00:00Z)
    let t = 923_011_200_000; // 1999-04-02T00:00Z
    assert_eq!(interval_start(&tz, 60, t + 10 * MIN), t);
    assert_eq!(interval_start(&tz, 15, t + 20 * MIN), t + 15 * MIN);
    let spec = IntervalSpec::new("Asia/Jerusalem", 30).unwrap();
    for k in -200..200 {
        let x = t + k * 7 * MIN + 13_000;
        assert_eq!(spec.interval_of(x).start, interval_start(&tz, 30, x), "{x}");
    }
    // Lord Howe's half-hour DST cuts hourly intervals at the change (1993-10-30T15:30Z forward,
    // 1994-03-05T15:00Z back)
    let tz = jiff::tz::TimeZone::get("Australia/Lord_Howe").unwrap();
    let spec = IntervalSpec::new("Australia/Lord_Howe", 60).unwrap();
    for t in [751_995_000_000i64, 762_879_600_000] {
        for k in -100..100 {
            let x = t + k * 7 * MIN + 13_000;
            assert_eq!(spec.interval_of(x).start, interval_start(&tz, 60, x), "{x}");
        }
    }
    assert_eq!(
        interval_start(&tz, 60, 751_995_000_000 + MIN),
        751_995_000_000
    );
}

#[test]
fn thresholds_are_inclusive_where_the_reference_says_so() {
    let t0 = 1_704_704_400_000; // 2024-01-08T09:00Z
    let j = journey_cfg();
    let q = |id: &str, c: &str, t: Millis, kind: EventKind| ev(id, Some("u"), c, t, kind);
    let events = vec![
        // abandon after exactly S = 5 s: not short, within T
        q("a1", "a", t0, start()),
        q(
            "a2",
            "a",
            t0,
            EventKind::QueueEntered {
                queue: "q1".into(),
                priority: 0,
            },
        ),
        q(
            "a3",
            "a",
            t0 + 5_000,
            EventKind::QueueExited {
                reason: QueueExitReason::Abandoned,
            },
        ),
        q("a4", "a", t0 + 6_000, end()),
        // answered after exactly T = 20 s: within the service level; asks for a callback
        q("b1", "b", t0, start()),
        q(
            "b2",
            "b",
            t0,
            EventKind::QueueEntered {
                queue: "q1".into(),
                priority: 0,
            },
        ),
        q(
            "b3",
            "b",
            t0 + 20_000,
            EventKind::AgentConnected {
                context_received: false,
            },
        ),
        q(
            "b4",
            "b",
            t0 + 30_000,
            EventKind::CallbackRequested {
                callback_id: "k".into(),
            },
        ),
        q("b5", "b", t0 + 40_000, end()),
        // the callback completes exactly at its maximum age: completed, not lost
        q(
            "c1",
            "c",
            t0 + 30_000 + j.callback_max_age_ms,
            EventKind::CallbackCompleted {
                callback_id: "k".into(),
            },
        ),
        // a notification, and a call on its topic exactly W later: called
        q(
            "n1",
            "n",
            t0 + H,
            EventKind::NotificationSent {
                campaign: "x".into(),
                topic: "billing".into(),
            },
        ),
        Event {
            intent: Some("billing".into()),
            ..q("d1", "d", t0 + H + j.proactive_window_ms, start())
        },
    ];
    let r = compute(&j, TZ, 15, &events).intervals;
    let all = r.values().fold(Counters::default(), |mut a, f| {
        a.merge(&f.counters);
        a
    });
    assert_eq!(all.total(Metric::QueueAbandoned), 1);
    assert_eq!(all.total(Metric::QueueAbandonedShort), 0);
    assert_eq!(all.total(Metric::QueueAbandonedWithin), 1);
    assert_eq!(all.total(Metric::QueueAnsweredWithin), 1);
    assert_eq!(all.get(Metric::Callbacks, &["acme", "q1", "requested"]), 1);
    assert_eq!(all.get(Metric::Callbacks, &["acme", "q1", "completed"]), 1);
    assert_eq!(all.get(Metric::Callbacks, &["acme", "q1", "lost"]), 0);
    assert_eq!(
        all.get(Metric::Proactive, &["acme", "voice", "billing", "called"]),
        1
    );
    assert_eq!(
        all.get(
            Metric::Proactive,
            &["acme", "voice", "billing", "deflected"]
        ),
        0
    );
    let mut delivered = events.clone();
    delivered.sort_by_key(|e| e.occurred_at);
    let got = stream(engine_cfg(15, j.clone()), &delivered, 1, 1);
    assert_eq!(got, oracle(15, &j, &events));
}

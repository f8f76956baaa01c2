//! Interval reports on the output topic: they carry exactly the batch oracle's figures (every
//! interval, every cohort revision), replaying the same input yields byte-identical reports, and
//! events that arrive after their interval closed go to the late-events topic.

use std::collections::BTreeMap;

use deflect::produce::{EventProducer, WireFormat};
use deflect::RunOptions;
use deflect_core::metrics::{Counters, Metric};
use deflect_kafka::EmbeddedBroker;

use crate::support::*;

/// The series of a report as counters.
fn counters(r: &deflect_proto::pb::IntervalReport) -> Counters {
    let mut c = Counters::default();
    for s in &r.series {
        let m = *Metric::ALL
            .iter()
            .find(|m| m.name() == s.metric)
            .expect("known metric");
        c.add(
            m,
            s.labels.iter().map(|l| l.value.clone()).collect(),
            s.value,
        );
    }
    c
}

#[test]
fn reports_equal_the_oracle_and_replay_byte_identically() {
    let (input, out_a, out_b) = ("rep-input", "rep-out-a", "rep-out-b");
    // 8 partitions keep each well under the mock cluster's ~5 MiB retention
    let broker = EmbeddedBroker::start(&[(input, 8), (out_a, 1), (out_b, 1)]).unwrap();
    // ten days: re-contacts within 7 days, surveys, callbacks and notifications all decided
    let events = traffic(60.0, 500, 5, 10 * 86_400_000);
    assert!(events.len() > 50_000, "{} events", events.len());
    let mut p = EventProducer::new(&broker.settings(), input, WireFormat::Protobuf).unwrap();
    for e in &events {
        p.send(e).unwrap();
    }
    p.flush().unwrap();

    let run = |out: &str, group: &str, max_batch: usize| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(broker.bootstrap_servers(), input, dir.path(), group);
        cfg.kafka.output_topic = out.into();
        cfg.pipeline.max_batch = max_batch;
        let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
        svc.wait_pipeline().unwrap();
        let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_events_total");
        eprintln!("{group}: {:?}", without_partition(&m));
        svc.shutdown().unwrap();
        let mut recs: Vec<(String, Vec<u8>)> = read_all(&broker, out)
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        recs.sort();
        recs
    };
    // two runs with different batching: the same reports, byte for byte
    let a = run(out_a, "rep-a", 5000);
    let b = run(out_b, "rep-b", 400);
    assert!(a.len() > 500, "{} reports", a.len());
    assert_eq!(a.len(), b.len());
    assert!(a == b, "replaying the same input gave different reports");

    // merged over partitions, the reports carry exactly the oracle's figures
    let oracle = oracle(&events);
    let mut figures: BTreeMap<i64, Counters> = BTreeMap::new();
    let mut cohorts: BTreeMap<(i64, u32), Counters> = BTreeMap::new();
    let mut finals = 0;
    for (key, bytes) in &a {
        let r = deflect_proto::report::decode_protobuf(bytes).unwrap();
        assert!(
            key.contains(&format!("/{}/p{}", r.part, r.partition)),
            "{key}"
        );
        let c = counters(&r);
        match r.part.as_str() {
            "figures" => {
                assert!(r.r#final && r.revision == 0);
                figures.entry(r.interval_start_ms).or_default().merge(&c);
            }
            "cohort" => {
                finals += usize::from(r.r#final);
                assert_eq!(r.r#final, r.revision == 3, "three horizons: 24h, 72h, 7d");
                if !c.is_empty() {
                    cohorts
                        .entry((r.interval_start_ms, r.revision))
                        .or_default()
                        .merge(&c);
                }
            }
            other => panic!("unknown part {other}"),
        }
    }
    figures.retain(|_, c| !c.is_empty());
    let expected: BTreeMap<i64, Counters> = oracle
        .intervals
        .iter()
        .filter(|(_, f)| !f.counters.is_empty())
        .map(|(k, f)| (*k, f.counters.clone()))
        .collect();
    assert_eq!(figures.len(), expected.len());
    assert!(
        figures == expected,
        "figures reports differ from the oracle"
    );
    assert!(
        cohorts == oracle.cohorts,
        "cohort reports differ from the oracle"
    );
    assert!(finals > 100, "{finals} final cohort reports");
    let contained: u64 = oracle
        .cohorts
        .iter()
        .filter(|((_, rev), _)| *rev == 3)
        .map(|(_, c)| c.get(Metric::Containment, &[]))
        .sum();
    assert!(
        contained > 100,
        "the scenario decides containment ({contained})"
    );
}

/// A batch that spans more than a horizon (a replay, catching up) holds two revisions of one
/// cohort report. The broker fails every other produce request here, and each report is a
/// request of its own: still, every key's revisions land in the order they were made, so a
/// compacted topic keeps the last (before 2026-11-28's twelfth session, both went out in one
/// flush, and a retried earlier revision could land after the later one).
#[test]
fn report_revisions_land_in_order_through_produce_errors() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (input, out) = ("order-input", "order-out");
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(input, 2, 1).unwrap();
    cluster.create_topic(out, 1, 1).unwrap();
    let settings = deflect_kafka::ClientSettings::new(cluster.bootstrap_servers());
    let events = traffic(30.0, 300, 12, 9 * 86_400_000);
    send_all(&settings, input, &events);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.bootstrap_servers(), input, dir.path(), "order");
    cfg.kafka.output_topic = out.into();
    // one batch spans days of event time: revisions 0 to 3 of an interval in one batch
    cfg.pipeline.max_batch = 50_000;
    // hours: fewer reports, all within the mock cluster's ~5 MiB a partition keeps
    cfg.site.interval_minutes = 60;
    // a request per report, retried soon
    let props = [
        ("linger.ms", "0"),
        ("batch.num.messages", "1"),
        ("retry.backoff.ms", "5"),
        ("retry.backoff.max.ms", "5"),
    ];
    for (k, v) in props {
        cfg.kafka.properties.insert(k.into(), v.into());
    }
    let fail = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
    let pass = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let pattern: Vec<_> = (0..4_000)
        .map(|i| if i % 2 == 0 { fail } else { pass })
        .collect();
    cluster.request_errors(RDKafkaApiKey::Produce, &pattern);
    let m = run_to_eof(cfg);
    let reported = sum(&m, "deflect_reports_total", &[]);

    let recs = read_all_from(&settings, out, 1);
    eprintln!("{} reports, {} records", reported, recs.len());
    // each report delivered (a retry may write one twice, next to itself)
    let mut revisions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (key, bytes, _) in &recs {
        let r = deflect_proto::report::decode_protobuf(bytes).unwrap();
        revisions.entry(key.clone()).or_default().push(r.revision);
    }
    let mut distinct = 0;
    let mut several = 0;
    for (key, revs) in &mut revisions {
        assert!(revs.is_sorted(), "{key}: revisions landed as {revs:?}");
        revs.dedup();
        distinct += revs.len();
        several += usize::from(revs.len() > 1);
    }
    assert_eq!(distinct as f64, reported);
    assert!(several > 100, "{several} reports with several revisions");
}

#[test]
fn late_events_go_to_the_late_topic_and_are_counted() {
    let (input, late) = ("late-input", "late-out");
    let broker = EmbeddedBroker::start(&[(input, 1), (late, 1)]).unwrap();
    let t0: i64 = 1_704_704_400_000; // 2024-01-08T09:00Z
    let ev = |id: &str, t: i64, kind: &str| json_event(id, &format!("c-{id}"), t, kind);
    let start = r#""contact_started":{"direction":"inbound","initiation":"customer"}"#;
    let survey = r#""survey_response":{"score":5,"scale_min":1,"scale_max":5}"#;
    let mut p = EventProducer::new(&broker.settings(), input, WireFormat::Json).unwrap();
    p.send_record(Some(b"u1"), ev("a", t0, start).as_bytes())
        .unwrap();
    // two hours later: the watermark closes 09:00 (grace 5 minutes)
    p.send_record(Some(b"u1"), ev("b", t0 + 7_200_000, start).as_bytes())
        .unwrap();
    // then a survey for 09:01 arrives: its interval is closed
    p.send_record(Some(b"u1"), ev("c", t0 + 60_000, survey).as_bytes())
        .unwrap();
    p.flush().unwrap();

    // in one poll (and one chunk) with the records before it, and alone in its batch: late the
    // same way, against the same bound (10:55 minus the grace period falls in 10:45–11:00)
    for max_batch in [deflect::Config::default().pipeline.max_batch, 1] {
        late_survey(
            &broker,
            input,
            late,
            max_batch,
            t0,
            &ev("c", t0 + 60_000, survey),
        );
    }
}

fn late_survey(
    broker: &EmbeddedBroker,
    input: &str,
    late: &str,
    max_batch: usize,
    t0: i64,
    survey: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let group = format!("late-{max_batch}");
    let mut cfg = config(broker.bootstrap_servers(), input, dir.path(), &group);
    cfg.kafka.late_topic = late.into();
    cfg.pipeline.max_batch = max_batch;
    let m = run_to_eof(cfg);

    assert_eq!(
        sum(
            &m,
            "deflect_late_events_total",
            &[("type", "survey_response")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "deflect_late_events_total", &[]), 1.0);
    assert_eq!(sum(&m, "deflect_events_total", &[("result", "late")]), 1.0);
    assert_eq!(sum(&m, "deflect_csat_responses_total", &[]), 0.0);
    let recs = read_all(broker, late);
    // the late topic holds this run's record after the earlier runs'
    let (key, payload, headers) = recs.last().unwrap();
    assert_eq!(key, "u1");
    assert_eq!(payload.as_slice(), survey.as_bytes());
    assert_eq!(headers["deflect.reason"], "late");
    assert_eq!(headers["deflect.event_type"], "survey_response");
    assert_eq!(headers["deflect.source.topic"], input);
    assert_eq!(headers["deflect.source.offset"], "2");
    let closed: i64 = headers["deflect.closed_until_ms"].parse().unwrap();
    assert_eq!(closed, t0 + 6_300_000, "max_batch {max_batch}");
}

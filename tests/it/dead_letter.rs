//! Bad input: every record that cannot be used goes to the dead-letter topic with its original bytes
//! and the reason, is counted by reason, and the partition keeps moving.

use std::collections::BTreeMap;
use std::time::Duration;

use deflect::produce::{EventProducer, WireFormat};
use deflect::RunOptions;
use deflect_kafka::{EmbeddedBroker, Header, Headers, Message, OwnedHeaders};
use rdkafka::error::KafkaError;

use crate::support::*;

const GOOD: &str = r#"{"event_id":"ok-1","tenant":"acme","contact_id":"c1","customer_id":"u1","channel":"voice","occurred_at":1704704400000,"contact_started":{"direction":"inbound","initiation":"customer"}}"#;

/// (key, payload, expected reject reason or `None` for a good record)
type Case<'a> = (Option<&'a [u8]>, Vec<u8>, Option<&'a str>);

fn good_with(id: &str, occurred_at: i64) -> String {
    GOOD.replace("ok-1", id)
        .replace("1704704400000", &occurred_at.to_string())
}

#[test]
fn every_bad_record_is_dead_lettered_with_its_reason() {
    let (topic, dlq) = ("dl-input", "dl-dead");
    let broker = EmbeddedBroker::start(&[(topic, 1), (dlq, 1)]).unwrap();
    let big = format!("{}{}", " ".repeat(5000), good_with("big", 1704704400000));
    let cases: Vec<Case> = vec![
        (Some(b"u1"), GOOD.as_bytes().to_vec(), None),
        (
            Some(b"u1"),
            b"\xff\xfe\x00 not an event".to_vec(),
            Some("not_protobuf_or_json"),
        ),
        (Some(b"u1"), b"{not json".to_vec(), Some("invalid_json")),
        (
            Some(b"u1"),
            br#"{"event_id":"e","contact_started":[1]}"#.to_vec(),
            Some("bad_json_shape"),
        ),
        (
            Some(b"u1"),
            good_with("x1", 1704704400000)
                .replace("contact_started", "teleported")
                .into_bytes(),
            Some("unknown_event_type"),
        ),
        (
            Some(b"u1"),
            good_with("x2", 1704704400000)
                .replace(r#""tenant":"acme","#, "")
                .into_bytes(),
            Some("missing_field"),
        ),
        (
            Some(b"u1"),
            good_with("x3", 1704704400000)
                .replace(r#""voice""#, r#""fax""#)
                .into_bytes(),
            Some("bad_value"),
        ),
        (Some(b"u1"), Vec::new(), Some("empty_record")),
        (Some(b"u1"), big.into_bytes(), Some("oversized")),
        (
            None,
            good_with("x4", 1704704400000).into_bytes(),
            Some("missing_key"),
        ),
        (
            Some(b""),
            good_with("x5", 1704704400000).into_bytes(),
            Some("missing_key"),
        ),
        (
            Some(b"u1"),
            good_with("x6", 315532800000).into_bytes(),
            Some("timestamp_out_of_bounds"),
        ),
        (
            Some(b"u1"),
            good_with("x7", 4102444800000).into_bytes(),
            Some("timestamp_out_of_bounds"),
        ),
        (
            Some(b"u1"),
            good_with("ok-2", 1704704460000).into_bytes(),
            None,
        ),
    ];
    // the producer's own headers (one with a null value) go with a dead letter
    let theirs = || {
        OwnedHeaders::new()
            .insert(Header {
                key: "trace-id",
                value: Some("t-42"),
            })
            .insert(Header::<&str> {
                key: "no-value",
                value: None,
            })
    };
    let mut p = deflect_kafka::OutputProducer::new(&broker.settings()).unwrap();
    for (i, (key, payload, _)) in cases.iter().enumerate() {
        let headers = (i % 2 == 1).then(theirs);
        p.send(topic, *key, payload, headers, None).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "dl");
    cfg.kafka.dead_letter_topic = dlq.into();
    cfg.limits.max_record_bytes = 4096;
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let summary = svc.wait_pipeline().unwrap();
    assert_eq!(
        summary.records,
        cases.len() as u64,
        "the partition kept moving"
    );
    let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
    svc.shutdown().unwrap();

    // the counters
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, _, reason) in &cases {
        if let Some(r) = reason {
            *expected.entry(r).or_default() += 1.0;
        }
    }
    for (reason, n) in &expected {
        assert_eq!(
            sum(&m, "deflect_events_rejected_total", &[("reason", reason)]),
            *n,
            "{reason}"
        );
    }
    assert_eq!(sum(&m, "deflect_events_rejected_total", &[]), 12.0);
    assert_eq!(
        sum(&m, "deflect_events_total", &[("result", "accepted")]),
        2.0
    );
    assert_eq!(sum(&m, "deflect_potential_calls_total", &[]), 2.0);

    // the dead letters: original bytes, reason and source in headers, in input order
    let reader = deflect_kafka::reader(&broker.settings(), dlq, 1).unwrap();
    let mut got = Vec::new();
    loop {
        match reader.poll(Duration::from_secs(10)) {
            Some(Ok(msg)) => {
                let h: BTreeMap<String, String> = msg
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.push((msg.payload().unwrap_or_default().to_vec(), h));
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => break,
            Some(Err(e)) => panic!("{e}"),
        }
    }
    let bad: Vec<(usize, &Case)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.2.is_some())
        .collect();
    assert_eq!(got.len(), bad.len());
    for ((offset, (_, payload, reason)), (dl_payload, headers)) in bad.iter().zip(&got) {
        assert_eq!(dl_payload, payload, "original bytes kept");
        assert_eq!(headers["deflect.reason"], reason.unwrap());
        assert_eq!(headers["deflect.source.topic"], topic);
        assert_eq!(headers["deflect.source.partition"], "0");
        assert_eq!(headers["deflect.source.offset"], offset.to_string());
        assert!(!headers["deflect.detail"].is_empty());
        if offset % 2 == 1 {
            assert_eq!(headers["trace-id"], "t-42");
            assert_eq!(headers["no-value"], "");
            assert_eq!(headers.len(), 7, "{headers:?}");
        } else {
            assert_eq!(headers.len(), 5, "{headers:?}");
        }
    }
}

#[test]
fn events_out_of_journey_order_are_dead_lettered_when_their_interval_closes() {
    let (topic, dlq) = ("jo-input", "jo-dead");
    let broker = EmbeddedBroker::start(&[(topic, 1), (dlq, 1)]).unwrap();
    let t0: i64 = 1_704_704_400_000;
    let ev = json_event;
    let start = r#""contact_started":{"direction":"inbound","initiation":"customer"}"#;
    let answered = r#""agent_connected":{"context_received":false}"#;
    let queued = r#""queue_entered":{"queue":"cards","priority":0}"#;
    let left = r#""queue_exited":{"reason":"abandoned"}"#;
    let end = r#""contact_ended":{"resolved":true}"#;
    let records = [
        // answered, then queued: the queue entry makes no sense
        ev("a1", "c1", t0, start),
        ev("a2", "c1", t0 + 10_000, answered),
        ev("a3", "c1", t0 + 20_000, queued),
        ev("a4", "c1", t0 + 60_000, end),
        // a queue exit without a queue entry
        ev("b1", "c2", t0, start),
        ev("b2", "c2", t0 + 5_000, left),
        ev("b3", "c2", t0 + 9_000, end),
    ];
    let mut p = EventProducer::new(&broker.settings(), topic, WireFormat::Json).unwrap();
    for r in &records {
        p.send_record(Some(b"u1"), r.as_bytes()).unwrap();
    }
    p.flush().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "jo");
    cfg.kafka.dead_letter_topic = dlq.into();
    let m = run_to_eof(cfg);

    assert_eq!(
        sum(
            &m,
            "deflect_events_rejected_total",
            &[("reason", "journey_order")]
        ),
        2.0
    );
    // not applied: no queue entry, no abandon; the first contact is assisted
    assert_eq!(sum(&m, "deflect_queue_entered_total", &[]), 0.0);
    assert_eq!(sum(&m, "deflect_queue_abandoned_total", &[]), 0.0);
    assert_eq!(
        sum(
            &m,
            "deflect_contact_outcomes_total",
            &[("outcome", "assisted")]
        ),
        1.0
    );
    let got = read_all(&broker, dlq);
    assert_eq!(got.len(), 2);
    let mut ids = Vec::new();
    for (key, payload, headers) in &got {
        assert_eq!(key, "u1");
        assert_eq!(headers["deflect.reason"], "journey_order");
        assert_eq!(headers["deflect.source.topic"], topic);
        assert_eq!(headers["deflect.source.partition"], "0");
        let e = deflect_proto::decode_protobuf(payload).expect("the event, re-encoded");
        assert_eq!(headers["deflect.event_id"], e.event_id);
        ids.push((e.event_id.to_string(), headers["deflect.detail"].clone()));
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            (
                "a3".to_string(),
                "queue_entered after agent_connected".to_string()
            ),
            (
                "b2".to_string(),
                "queue_exited without queue_entered".to_string()
            ),
        ]
    );
}

/// A broker with one bad record on topic `{name}-input` (one partition), and a configuration
/// (group `name`, `properties` added) written to a file, whose dead-letter topic `{name}-dead`
/// the broker does not have.
fn bad_record_and_a_missing_dead_letter_topic(
    name: &str,
    properties: &[(&str, &str)],
) -> (EmbeddedBroker, tempfile::TempDir, std::path::PathBuf) {
    let topic = format!("{name}-input");
    let broker = EmbeddedBroker::start(&[(&topic, 1)]).unwrap();
    let mut producer = deflect_kafka::OutputProducer::new(&broker.settings()).unwrap();
    producer
        .send(&topic, Some(b"u1"), b"{not json", None, None)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        broker.bootstrap_servers(),
        &topic,
        &dir.path().join("state"),
        name,
    );
    cfg.kafka.dead_letter_topic = format!("{name}-dead");
    for (k, v) in properties {
        cfg.kafka.properties.insert(k.to_string(), v.to_string());
    }
    let cfg_path = dir.path().join("deflect.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    (broker, dir, cfg_path)
}

/// A dead-letter topic missing from the cluster is named at start-up (the brokers may still
/// create it on first write, as the mock cluster does: the run then ends well).
#[test]
fn a_missing_output_topic_is_named_at_start() {
    let (_broker, _dir, cfg_path) = bad_record_and_a_missing_dead_letter_topic("dl-missing", &[]);
    let out = std::process::Command::new(deflect_bin())
        .args(["run", "--exit-at-eof", "--config"])
        .arg(&cfg_path)
        .env("DEFLECT_LOG", "warn")
        .env("DEFLECT_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "WARN" && l["target"] == "deflect::pipeline")
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert_eq!(warnings[0]["fields"]["key"], "kafka.dead_letter_topic");
    assert_eq!(warnings[0]["fields"]["topic"], "dl-missing-dead");
}

/// Records keyed by something other than their event's customer (the contact without one) are
/// counted on a topic of several partitions, where they can split a journey; on one partition
/// keys do not matter and nothing is counted.
#[test]
fn records_keyed_by_something_else_than_the_customer_are_counted() {
    use deflect::generate::{GenParams, Generator};
    let params = GenParams {
        contacts_per_hour: 200.0,
        customers: 100,
        seed: 17,
        unknown_customer_share: 0.2,
        ..Default::default()
    };
    let events = Generator::new(params.clone())
        .unwrap()
        .until(params.start_ms + 2 * 3_600_000);
    // every third event keyed by its contact, a fifth of those with no customer (then correct)
    let key = |i: usize, e: &deflect_core::Event| {
        if i.is_multiple_of(3) {
            e.contact_id.to_string()
        } else {
            e.partition_key().to_string()
        }
    };
    let expected = (events.iter().enumerate())
        .filter(|(i, e)| i.is_multiple_of(3) && e.customer_id.is_some())
        .count();
    assert!(expected > 100, "{expected}");
    assert!(events.iter().any(|e| e.customer_id.is_none()));
    for partitions in [3, 1] {
        let topic = format!("keys-{partitions}");
        let broker = EmbeddedBroker::start(&[(&topic, partitions)]).unwrap();
        let mut p = EventProducer::new(&broker.settings(), &topic, WireFormat::Protobuf).unwrap();
        for (i, e) in events.iter().enumerate() {
            p.send_raw(key(i, e).as_bytes(), &WireFormat::Protobuf.encode(e))
                .unwrap();
        }
        p.flush().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = run_to_eof(config(
            broker.bootstrap_servers(),
            &topic,
            dir.path(),
            "keys",
        ));
        let counted = sum(&m, "deflect_records_mis_keyed_total", &[]);
        let want = if partitions > 1 { expected } else { 0 };
        assert_eq!(counted, want as f64, "{partitions} partitions");
    }
}

/// A dead letter that cannot be delivered (its topic is missing and the brokers do not create
/// topics on first write) stops the pipeline with one error line, and no offset passes the
/// record: it is read again once the topic exists.
#[test]
fn an_undeliverable_dead_letter_stops_the_pipeline_before_its_offset() {
    // every client asks the brokers not to create topics (the mock cluster would)
    let (broker, _dir, cfg_path) = bad_record_and_a_missing_dead_letter_topic(
        "dl-undeliverable",
        &[("allow.auto.create.topics", "false")],
    );
    let topic = "dl-undeliverable-input";
    let out = std::process::Command::new(deflect_bin())
        .args(["run", "--exit-at-eof", "--config"])
        .arg(&cfg_path)
        .env("DEFLECT_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "deflect: error: cannot deliver dead letters, late events or reports: delivery failed: \
         Message production error: UnknownTopicOrPartition (Broker: Unknown topic or partition) \
         (topic \"dl-undeliverable-dead\")"
    );
    let committed = committed_offsets(broker.bootstrap_servers(), topic, "dl-undeliverable", 1);
    assert_eq!(committed, [0], "committed past the record");
}

/// Records too large for the dead-letter producer (librdkafka's `message.max.bytes`, 1,000,000
/// by default, counts the key and headers too) are dead-lettered with their payload cut to fit and
/// its original length in a header, and the partition keeps moving: one larger than
/// `limits.max_record_bytes` (oversized), and one under it whose headers would not fit.
#[test]
fn records_too_large_to_forward_whole_are_dead_lettered_cut() {
    let (topic, dlq) = ("dl-large-input", "dl-large-dead");
    let broker = EmbeddedBroker::start(&[(topic, 1), (dlq, 1)]).unwrap();
    let oversized = vec![b'x'; 1_500_000];
    let mut just_under = b"\xff\xfe\x00 not an event".to_vec();
    just_under.resize(999_990, b'y');
    let mut settings = broker.settings();
    settings
        .properties
        .insert("message.max.bytes".into(), "4000000".into());
    let mut p = deflect_kafka::OutputProducer::new(&settings).unwrap();
    p.send(topic, Some(b"u1"), &oversized, None, None).unwrap();
    p.send(topic, Some(b"u1"), &just_under, None, None).unwrap();
    p.send(topic, Some(b"u1"), GOOD.as_bytes(), None, None)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "dl-large");
    cfg.kafka.dead_letter_topic = dlq.into();
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let summary = svc.wait_pipeline().unwrap();
    assert_eq!(summary.records, 3, "the partition kept moving");
    let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
    svc.shutdown().unwrap();
    assert_eq!(
        sum(
            &m,
            "deflect_events_rejected_total",
            &[("reason", "oversized")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "deflect_events_rejected_total",
            &[("reason", "not_protobuf_or_json")]
        ),
        1.0
    );
    assert_eq!(
        sum(&m, "deflect_events_total", &[("result", "accepted")]),
        1.0
    );

    let got = read_all(&broker, dlq);
    assert_eq!(got.len(), 2);
    for ((key, payload, headers), (original, offset)) in
        got.iter().zip([(&oversized, "0"), (&just_under, "1")])
    {
        assert_eq!(key, "u1");
        assert_eq!(headers["deflect.source.offset"], offset);
        assert_eq!(headers["deflect.payload_bytes"], original.len().to_string());
        // cut to fit the producer's limit with its key and headers, a prefix of the original
        assert!(
            payload.len() < 1_000_000 && payload.len() > 990_000,
            "{}",
            payload.len()
        );
        assert_eq!(payload[..], original[..payload.len()]);
    }
}

//! Input written by Confluent Schema Registry serializers: records framed with the magic byte,
//! the schema id and (protobuf) the message-index path are read as the events they frame, mixed
//! with unframed ones in one topic; broken frames are dead-lettered with their reason.

use deflect::RunOptions;
use deflect_core::metrics::Metric;
use deflect_kafka::EmbeddedBroker;
use deflect_proto::schema_registry_frame as framed;

use crate::support::*;

#[test]
fn schema_registry_framed_records_are_read() {
    let (topic, dlq) = ("sr-input", "sr-dead");
    let broker = EmbeddedBroker::start(&[(topic, 3), (dlq, 1)]).unwrap();
    let events = traffic(300.0, 2_000, 17, 12 * 3_600_000);
    let oracle = batch_oracle(&events);
    assert!(oracle.total(Metric::PotentialCalls) > 1_000);

    // every record one of five ways: protobuf framed with the path's short form, its long form
    // and a nested path, JSON Schema's framing, and unframed protobuf
    let mut settings = broker.settings();
    (settings.properties).insert("max.in.flight.requests.per.connection".into(), "1".into());
    let mut p = deflect_kafka::OutputProducer::new(&settings).unwrap();
    let mut ways = [0usize; 5];
    for (i, e) in events.iter().enumerate() {
        let pb = deflect_proto::encode_protobuf(e);
        let schema = 100 + (i % 3) as u32;
        let payload = match i % 5 {
            0 => framed(schema, &[0], &pb),
            1 => framed(schema, &[2, 0], &pb),
            2 => framed(schema, &[4, 0, 6], &pb),
            3 => framed(schema, b"", &deflect_proto::encode_json(e)),
            _ => pb,
        };
        ways[i % 5] += 1;
        let key = e.partition_key();
        p.send(topic, Some(key.as_bytes()), &payload, None, None)
            .unwrap();
    }
    // broken frames, keyed like a customer so that only their bytes are wrong
    let pb = deflect_proto::encode_protobuf(&events[0]);
    let broken: [(Vec<u8>, &str); 3] = [
        (vec![0, 0, 1], "not_protobuf_or_json"),
        (framed(7, &[1], &pb), "not_protobuf_or_json"),
        (framed(7, &[0], b"\x0a"), "not_protobuf_or_json"),
    ];
    for (payload, _) in &broken {
        p.send(topic, Some(b"u-broken"), payload, None, None)
            .unwrap();
    }
    p.flush(std::time::Duration::from_secs(10)).unwrap();
    assert!(ways.iter().all(|&n| n > 1_000), "{ways:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "sr");
    cfg.kafka.dead_letter_topic = dlq.into();
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    svc.wait_pipeline().unwrap();
    let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
    svc.shutdown().unwrap();

    assert_eq!(
        sum(&m, "deflect_events_total", &[("result", "accepted")]),
        events.len() as f64
    );
    assert_eq!(
        sum(
            &m,
            "deflect_events_rejected_total",
            &[("reason", "not_protobuf_or_json")]
        ),
        broken.len() as f64
    );
    assert_eq!(sum(&m, "deflect_events_rejected_total", &[]), 3.0);
    let compared = assert_figures_match(&without_partition(&m), &oracle);
    assert!(compared > 100, "{compared} series compared");

    // the broken ones in the dead-letter topic, bytes as they came, the schema id in the detail
    // when the header is whole
    let got = read_all(&broker, dlq);
    assert_eq!(got.len(), broken.len());
    for ((payload, reason), (_, dl, headers)) in broken.iter().zip(&got) {
        assert_eq!(dl, payload);
        assert_eq!(&headers["deflect.reason"], reason);
    }
    assert!(got[0].2["deflect.detail"].contains("5 bytes of header"));
    for (_, _, headers) in &got[1..] {
        assert!(
            headers["deflect.detail"].starts_with("Schema Registry schema id 7: "),
            "{headers:?}"
        );
    }
}

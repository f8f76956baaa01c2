//! `deflect generate` as a user runs it, in its own process against a broker (the mock cluster,
//! over TCP): the topic holds exactly the events of the seeded generator, in order, keyed by
//! customer (or contact), in protobuf or JSON as asked, framed for a Schema Registry if asked.

use std::process::{Command, Stdio};

use deflect::generate::{GenParams, Generator};
use deflect_kafka::EmbeddedBroker;
use deflect_proto::Format;

use crate::support::*;

#[test]
fn generate_writes_the_seeded_traffic_to_the_topic() {
    let topics = [
        ("gen-pb", "protobuf", Format::Protobuf, &[][..]),
        ("gen-json", "json", Format::Json, &[]),
        // framed as Schema Registry serializers frame them: magic byte, schema id 42, and for
        // protobuf the message-index path of the schema's first message
        (
            "gen-sr-pb",
            "registry-protobuf",
            Format::Protobuf,
            &[0, 0, 0, 0, 42, 0],
        ),
        (
            "gen-sr-json",
            "registry-json",
            Format::Json,
            &[0, 0, 0, 0, 42, b'{'],
        ),
    ];
    let broker = EmbeddedBroker::start(&topics.map(|(topic, ..)| (topic, 1))).unwrap();
    let start = "2024-03-04T06:00:00Z";
    // what the command should write: the same generator, in this process
    let expected = Generator::new(GenParams {
        seed: 7,
        start_ms: start.parse::<jiff::Timestamp>().unwrap().as_millisecond(),
        customers: 5_000,
        contacts_per_hour: 400.0,
        time_zone: "Europe/London".into(),
        ..Default::default()
    })
    .unwrap()
    .until(start.parse::<jiff::Timestamp>().unwrap().as_millisecond() + 3 * 3_600_000);
    assert!(expected.len() > 3_000, "{} events", expected.len());

    for (topic, arg, format, prefix) in topics {
        let status = Command::new(deflect_bin())
            .args([
                "generate",
                "--brokers",
                broker.bootstrap_servers(),
                "--topic",
                topic,
            ])
            .args(["--rate", "400", "--duration", "3h", "--start", start])
            .args([
                "--customers",
                "5000",
                "--seed",
                "7",
                "--time-zone",
                "Europe/London",
            ])
            .args(["--format", arg, "--schema-id", "42"])
            // a producer property (`-X`), as for a secured cluster
            .args(["-X", "compression.type=zstd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "deflect generate --format {arg}: {status}"
        );
        let records = read_all(&broker, topic);
        assert_eq!(records.len(), expected.len(), "{topic}");
        for (i, ((key, payload, _), e)) in records.iter().zip(&expected).enumerate() {
            assert_eq!(key, e.partition_key(), "{topic} record {i}");
            assert!(payload.starts_with(prefix), "{topic} record {i}");
            let got = deflect_proto::decode(payload, format).unwrap();
            assert_eq!(&got, e, "{topic} record {i}");
        }
    }
    // `-X` reaches the producer: a value librdkafka refuses is named
    let out = Command::new(deflect_bin())
        .args(["generate", "--brokers", broker.bootstrap_servers()])
        .args(["--topic", "gen-pb", "--duration", "1h"])
        .args(["-X", "compression.type=bogus"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("compression.type") && stderr.contains("bogus"),
        "{stderr}"
    );
}

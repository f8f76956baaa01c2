//! Input compressed by its producers: every codec Kafka has (gzip, snappy, lz4, zstd) is read,
//! and the figures are the batch oracle's (the mock cluster keeps the producers' compressed
//! batches as they came).

use deflect::generate::{GenParams, Generator};
use deflect_core::metrics::Metric;
use deflect_kafka::{ClientSettings, EmbeddedBroker};

use crate::support::*;

#[test]
fn input_compressed_with_each_codec_is_read() {
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let topics: Vec<String> = codecs.iter().map(|c| format!("codec-{c}")).collect();
    let broker =
        EmbeddedBroker::start(&topics.iter().map(|t| (t.as_str(), 2)).collect::<Vec<_>>()).unwrap();
    let params = GenParams {
        contacts_per_hour: 300.0,
        customers: 2_000,
        seed: 5,
        ..Default::default()
    };
    let events = Generator::new(params.clone())
        .unwrap()
        .until(params.start_ms + 12 * 3_600_000);
    let potential = batch_oracle(&events).total(Metric::PotentialCalls);
    assert!(potential > 1_000, "{potential}");

    for (codec, topic) in codecs.iter().zip(&topics) {
        let mut settings = ClientSettings::new(broker.bootstrap_servers());
        settings
            .properties
            .insert("compression.type".into(), (*codec).into());
        send_all(&settings, topic, &events);
        let dir = tempfile::tempdir().unwrap();
        let m = run_to_eof(config(broker.bootstrap_servers(), topic, dir.path(), topic));
        assert_eq!(
            sum(&m, "deflect_events_total", &[("result", "accepted")]),
            events.len() as f64,
            "{codec}"
        );
        assert_eq!(
            sum(&m, "deflect_events_rejected_total", &[]),
            0.0,
            "{codec}"
        );
        assert_eq!(
            sum(&m, Metric::PotentialCalls.name(), &[]),
            potential as f64,
            "{codec}"
        );
    }
}

//! Stop the pipeline mid-stream, start it again on the same state directory: the final figures
//! equal those of an uninterrupted run over the same input.

use std::time::{Duration, Instant};

use deflect::generate::{GenParams, Generator};
use deflect::produce::{EventProducer, WireFormat};
use deflect::RunOptions;
use deflect_kafka::EmbeddedBroker;

use crate::support::*;

const BUSINESS: [&str; 2] = ["deflect_", "deflect_heatmap_"];

fn business(text: &str) -> std::collections::BTreeMap<String, f64> {
    let all = parse_metrics(text, BUSINESS[0]);
    let names: Vec<&str> = deflect_core::metrics::Metric::ALL
        .iter()
        .map(|m| m.name())
        .collect();
    all.into_iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap();
            names.contains(&name) || name.starts_with(BUSINESS[1])
        })
        .collect()
}

#[test]
fn restart_mid_stream_gives_identical_figures() {
    let topic = "restart";
    let broker = EmbeddedBroker::start(&[(topic, 4)]).unwrap();
    let params = GenParams {
        contacts_per_hour: 300.0,
        customers: 400,
        seed: 7,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let events = g.until(params.start_ms + 18 * 3_600_000);
    let mut p = EventProducer::new(&broker.settings(), topic, WireFormat::Protobuf).unwrap();
    for e in &events {
        p.send(e).unwrap();
    }
    p.flush().unwrap();
    let n = events.len() as u64;
    assert!(n > 20_000, "{n} events");

    // uninterrupted
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = deflect::Service::start(
        config(broker.bootstrap_servers(), topic, a_dir.path(), "a"),
        RunOptions { exit_at_eof: true },
    )
    .unwrap();
    assert_eq!(a.wait_pipeline().unwrap().records, n);
    let expected = business(&http_get(a.addr(), "/metrics").1);
    a.shutdown().unwrap();

    // stopped after about a third, in small batches so the stop lands mid-stream
    let b_dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, b_dir.path(), "b");
    cfg.pipeline.max_batch = 200;
    let b1 = deflect::Service::start(cfg.clone(), RunOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = parse_metrics(&b1.render(), "deflect_events_total");
        let seen: f64 = m.values().sum();
        if seen >= n as f64 / 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "pipeline made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = b1.shutdown().unwrap();
    assert!(
        first.records > 0 && first.records < n,
        "stopped at {} of {n}",
        first.records
    );
    // run again on the same state, to the end
    let mut b2 = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let second = b2.wait_pipeline().unwrap();
    let got = business(&http_get(b2.addr(), "/metrics").1);
    b2.shutdown().unwrap();
    eprintln!(
        "restart: first run consumed {} records, second {} (of {n})",
        first.records, second.records
    );

    assert!(sum(&expected, "deflect_potential_calls_total", &[]) > 1_000.0);
    assert!(
        sum(
            &expected,
            "deflect_containment_total",
            &[("result", "contained")]
        ) > 100.0
    );
    assert!(
        sum(
            &expected,
            "deflect_queue_answered_wait_milliseconds_total",
            &[]
        ) > 0.0
    );
    // partitions may be numbered alike; compare per series without the partition label too
    assert_eq!(without_partition(&got), without_partition(&expected));
    assert_eq!(got, expected);
}

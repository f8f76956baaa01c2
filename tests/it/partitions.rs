//! Partitions assigned by configuration (`kafka.partitions`): instances that split a topic's
//! partitions between them, each with its own state directory, without joining the group (no
//! rebalance moves a partition away from its state).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deflect::RunOptions;
use deflect_kafka::EmbeddedBroker;

use crate::support::*;

/// Waits until `svc` accepted at least `n` events, then stops it (the next start resumes from
/// its state).
fn stop_after(svc: deflect::Service, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = parse_metrics(&svc.render(), "deflect_events_total");
        if sum(&m, "deflect_events_total", &[("result", "accepted")]) >= n {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {m:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    svc.shutdown().unwrap();
}

/// The partitions that series of `m` are labelled with.
fn partitions_of(m: &BTreeMap<String, f64>) -> BTreeSet<String> {
    m.keys()
        .filter_map(|k| k.split("partition=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Two instances under one `group_id`, partitions [0, 2] (`kafka.partitions`) and [1, 3]
/// (`kafka.instances = 2`, `instance_index = 1`) of a 4-partition topic,
/// each with its own state directory: each is stopped midway and started again, both running
/// at once. Each reads its partitions only; together they read every record once, their figures
/// summed equal the batch oracle's, and the group's committed offsets end at every partition's
/// end.
#[test]
fn two_instances_split_the_partitions_by_configuration() {
    let topic = "static-split";
    let parts = 4;
    let broker = EmbeddedBroker::start(&[(topic, parts)]).unwrap();
    let events = traffic(400.0, 2_000, 14, 12 * 3_600_000);
    send_all(&broker.settings(), topic, &events);
    let n = events.len() as f64;
    let bootstrap = broker.bootstrap_servers();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let owned = [vec![0, 2], vec![1, 3]];
    let config = |i: usize| {
        let mut c = config(bootstrap, topic, dirs[i].path(), "static-split");
        if i == 0 {
            c.kafka.partitions = owned[i].clone();
        } else {
            // the second instance's share by number: partitions 1 and 3 of 4
            c.kafka.instances = 2;
            c.kafka.instance_index = 1;
        }
        c.pipeline.max_batch = 200;
        c
    };

    // both start, and stop with about half of their share read
    let first: Vec<_> = (0..2)
        .map(|i| deflect::Service::start(config(i), RunOptions::default()).unwrap())
        .collect();
    for svc in first {
        stop_after(svc, n / 4.0);
    }
    let midway = committed_offsets(bootstrap, topic, "static-split", parts);
    let ends = log_ends(bootstrap, topic, parts);
    assert!(
        midway.iter().zip(&ends).all(|(m, e)| *m > 0 && m < e),
        "stopped midway: committed {midway:?} of {ends:?}"
    );

    // both again, to the end of their partitions
    let eof = RunOptions { exit_at_eof: true };
    let second: Vec<_> = (0..2)
        .map(|i| deflect::Service::start(config(i), eof).unwrap())
        .collect();
    let mut figures = Vec::new();
    for mut svc in second {
        svc.wait_pipeline().unwrap();
        figures.push(parse_metrics(&svc.render(), "deflect_"));
        svc.shutdown().unwrap();
    }
    let mut total = BTreeMap::new();
    for (i, m) in figures.iter().enumerate() {
        let labels: BTreeSet<String> = owned[i].iter().map(|p| p.to_string()).collect();
        assert_eq!(
            partitions_of(m),
            labels,
            "instance {i} reads its partitions only"
        );
        assert_eq!(sum(m, "deflect_assigned_partitions", &[]), 2.0);
        assert_eq!(sum(m, "deflect_records_missed_total", &[]), 0.0);
        for (k, v) in without_partition(m) {
            *total.entry(k).or_insert(0.0) += v;
        }
    }
    assert_eq!(
        sum(&total, "deflect_events_total", &[("result", "accepted")]),
        n
    );
    assert_eq!(
        sum(&total, "deflect_events_total", &[("result", "duplicate")]),
        0.0
    );
    let compared = assert_figures_match(&total, &batch_oracle(&events));
    assert!(compared > 50, "compared {compared} series");
    assert_eq!(
        committed_offsets(bootstrap, topic, "static-split", parts),
        ends
    );
}

/// A listed partition the topic does not have, or an instance whose share is empty, stops the
/// pipeline at its start with an error naming the key and the topic's partitions.
#[test]
fn a_partition_the_topic_lacks_is_refused() {
    let topic = "static-missing";
    let broker = EmbeddedBroker::start(&[(topic, 2)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // the error the pipeline stops with, under `set`'s configuration
    let start_error = |set: &dyn Fn(&mut deflect::Config)| {
        let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), topic);
        set(&mut cfg);
        let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
        let e = svc.wait_pipeline().unwrap_err().to_string();
        let _ = svc.shutdown();
        e
    };
    let e = start_error(&|c| c.kafka.partitions = vec![1, 2]);
    assert!(
        e.contains(
            "config key kafka.partitions: partition 2 is not in topic \"static-missing\", which \
             has 2 (0 to 1)"
        ),
        "{e}"
    );
    let e = start_error(&|c| {
        c.kafka.instances = 3;
        c.kafka.instance_index = 2;
    });
    assert!(
        e.contains(
            "config key kafka.instance_index: instance 2 of 3 has no partition of topic \
             \"static-missing\", which has 2: run at most 2 instances"
        ),
        "{e}"
    );
}

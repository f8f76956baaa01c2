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
    wait_accepted(&svc, n);
    svc.shutdown().unwrap();
}

/// Waits until `svc` accepted at least `n` events.
fn wait_accepted(svc: &deflect::Service, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = parse_metrics(&svc.render(), "deflect_events_total");
        if sum(&m, "deflect_events_total", &[("result", "accepted")]) >= n {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {m:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
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
    assert_read_once_to_the_oracle(&total, &events);
    assert_eq!(
        committed_offsets(bootstrap, topic, "static-split", parts),
        ends
    );
}

/// `deflect state ARGS…` as its own process: (exit code, stdout, stderr).
fn state_cmd(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let args: Vec<&std::ffi::OsStr> = std::iter::once("state".as_ref())
        .chain(args.iter().copied())
        .collect();
    run_deflect(&args, &[])
}

/// Figures summed over every partition (`total`) of a run of all of `events`: each accepted
/// once, the batch oracle's series by series.
fn assert_read_once_to_the_oracle(total: &BTreeMap<String, f64>, events: &[deflect_core::Event]) {
    let accepted = sum(total, "deflect_events_total", &[("result", "accepted")]);
    assert_eq!(accepted, events.len() as f64);
    assert_eq!(
        sum(total, "deflect_events_total", &[("result", "duplicate")]),
        0.0
    );
    let compared = assert_figures_match(total, &batch_oracle(events));
    assert!(compared > 50, "compared {compared} series");
}

/// Scaling from two instances to one: both read about half of their share (`kafka.instances =
/// 2`) and stop; `deflect state export` writes the second one's partitions to a file, `deflect
/// state import` puts them into the first one's state directory and `deflect state drop` removes
/// them from the second's; the first, started again with `kafka.instances = 1`, reads every
/// partition to its end. Nothing is missed or read twice, and the figures are the batch
/// oracle's. A copy of the first directory started the same way without the import misses the
/// second instance's records (what the hand-off prevents).
#[test]
fn scaling_down_moves_the_state_with_its_partitions() {
    let topic = "static-scale";
    let parts = 4;
    let broker = EmbeddedBroker::start(&[(topic, parts)]).unwrap();
    let events = traffic(400.0, 2_000, 15, 12 * 3_600_000);
    send_all(&broker.settings(), topic, &events);
    let n = events.len() as f64;
    let bootstrap = broker.bootstrap_servers();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |dir: &std::path::Path, instances: u32, index: u32| {
        let mut c = config(bootstrap, topic, dir, "static-scale");
        c.kafka.instances = instances;
        c.kafka.instance_index = index;
        c.pipeline.max_batch = 200;
        c
    };
    let first: Vec<_> = (0..2)
        .map(|i| {
            deflect::Service::start(config(dirs[i].path(), 2, i as u32), RunOptions::default())
                .unwrap()
        })
        .collect();
    // a running instance's directory is refused (once it has opened it: it read something)
    wait_accepted(&first[0], 1.0);
    let (code, _, err) = state_cmd(&["list".as_ref(), dirs[0].path().as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is open in another process")
            && err.contains("stop the deflect that runs on it first"),
        "{err}"
    );
    for svc in first {
        stop_after(svc, n / 4.0);
    }
    let ends = log_ends(bootstrap, topic, parts);
    let midway = committed_offsets(bootstrap, topic, "static-scale", parts);
    assert!(
        midway.iter().zip(&ends).all(|(m, e)| *m > 0 && m < e),
        "stopped midway: committed {midway:?} of {ends:?}"
    );
    // the control: the first directory as it is before the import
    let control = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(dirs[0].path().join("."))
        .arg(control.path())
        .status()
        .unwrap();
    assert!(copied.success());

    let (d0, d1) = (dirs[0].path().as_os_str(), dirs[1].path().as_os_str());
    let file = dirs[1].path().join("moved.state");
    let (code, out, err) = state_cmd(&[
        "export".as_ref(),
        d1,
        "-p".as_ref(),
        "1,3".as_ref(),
        "--out".as_ref(),
        file.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("exported partition 1: ") && out.contains("exported partition 3: "),
        "{out}"
    );
    let (code, out, err) = state_cmd(&["import".as_ref(), d0, file.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported partition 3: "), "{out}");
    // a second import is refused: the partitions are held now
    let (code, _, err) = state_cmd(&["import".as_ref(), d0, file.as_os_str()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already holds partitions [1, 3]: import with --replace"),
        "{err}"
    );
    let (code, _, err) = state_cmd(&["drop".as_ref(), d1, "--partitions".as_ref(), "1,3".as_ref()]);
    assert_eq!(code, 0, "{err}");
    let (_, listed, _) = state_cmd(&["list".as_ref(), d1]);
    assert!(listed.contains("(no partition)"), "{listed}");
    let (_, listed, _) = state_cmd(&["list".as_ref(), d0]);
    let held: Vec<&str> = (listed.lines().skip(1))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(held, ["0", "1", "2", "3"], "{listed}");

    // one instance reads every partition to its end, from the moved state
    let m = run_to_eof(config(dirs[0].path(), 1, 0));
    assert_eq!(partitions_of(&m).len(), 4);
    assert_eq!(sum(&m, "deflect_records_missed_total", &[]), 0.0);
    let total = without_partition(&m);
    assert_read_once_to_the_oracle(&total, &events);
    assert_eq!(
        committed_offsets(bootstrap, topic, "static-scale", parts),
        ends
    );

    // without the import, partitions 1 and 3 start with no state at the offsets the second
    // instance committed: the records it read are missed
    commit_offsets(bootstrap, topic, "static-scale", &midway);
    let m = run_to_eof(config(control.path(), 1, 0));
    assert_eq!(
        sum(&m, "deflect_records_missed_total", &[]),
        (midway[1] + midway[3]) as f64
    );
    assert!(sum(&m, "deflect_events_total", &[("result", "accepted")]) < n);
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

/// An instance assigned its partitions by configuration whose offset commits Kafka refuses
/// (injected `GROUP_AUTHORIZATION_FAILED` answers, as a group with members would answer
/// `UNKNOWN_MEMBER_ID`): it counts them in `deflect_offset_commit_failures_total` while it runs,
/// and a restart resumes from its stored state although nothing was committed: every record read
/// again is skipped as already applied or replayed as pending, and the figures are the batch
/// oracle's.
#[test]
fn refused_offset_commits_are_counted() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    test_log();
    let topic = "static-refused";
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(topic, 2, 1).unwrap();
    let settings = deflect_kafka::ClientSettings::new(cluster.bootstrap_servers());
    let events = traffic(300.0, 500, 15, 6 * 3_600_000);
    let (first, second) = events.split_at(events.len() / 2);
    send_all(&settings, topic, first);
    let n = events.len() as f64;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.bootstrap_servers(), topic, dir.path(), topic);
    cfg.kafka.partitions = vec![0, 1];
    cfg.pipeline.max_batch = 500;
    // every commit of the test refused
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 10_000],
    );

    // running: the refusals of its asynchronous commits are counted (at the 10 s refresh); it
    // commits at most once a second, after a batch is written: the second half comes later
    let svc = deflect::Service::start(cfg.clone(), RunOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = |svc: &deflect::Service| {
        let m = parse_metrics(&svc.render(), "deflect_");
        let accepted = sum(&m, "deflect_events_total", &[("result", "accepted")]);
        (
            accepted,
            sum(&m, "deflect_offset_commit_failures_total", &[]),
        )
    };
    while read(&svc).0 < first.len() as f64 {
        assert!(Instant::now() < deadline, "the first half was not read");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    send_all(&settings, topic, second);
    loop {
        let (accepted, failures) = read(&svc);
        if accepted == n && failures > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} of {n} events, {failures} commit failures counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    svc.shutdown().unwrap();
    let bootstrap = cluster.bootstrap_servers();
    assert_eq!(committed_offsets(&bootstrap, topic, topic, 2), [0, 0]);

    // again: read from the beginning (nothing committed), resumed from the state
    let m = run_to_eof(cfg);
    // every record read again: applied to the state (skipped) or pending in it (replayed)
    let skipped = sum(&m, "deflect_records_already_applied_total", &[]);
    assert_eq!(skipped + sum(&m, "deflect_records_replayed_total", &[]), n);
    assert!(skipped > 0.0);
    assert_eq!(sum(&m, "deflect_records_missed_total", &[]), 0.0);
    // its final commit, refused too
    assert!(sum(&m, "deflect_offset_commit_failures_total", &[]) >= 1.0);
    assert_figures_match(&without_partition(&m), &batch_oracle(&events));
}

//! Stop the pipeline mid-stream, start it again on the same state directory: the final figures
//! equal those of an uninterrupted run over the same input.

use std::time::{Duration, Instant};

use deflect::generate::{GenParams, Generator};
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

/// `hours` of generated traffic (300 potential calls an hour) from `customers` customers.
fn traffic(seed: u64, customers: u32, hours: i64) -> Vec<deflect_core::Event> {
    let params = GenParams {
        contacts_per_hour: 300.0,
        customers,
        seed,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    g.until(params.start_ms + hours * 3_600_000)
}

#[test]
fn restart_mid_stream_gives_identical_figures() {
    let topic = "restart";
    let broker = EmbeddedBroker::start(&[(topic, 4)]).unwrap();
    let events = traffic(7, 400, 18);
    let n = events.len() as u64;
    assert!(n > 20_000, "{n} events");
    // two thirds of the input exist while the first run reads: however late the stop lands
    // (a loaded machine), it stops before the end
    let (head, tail) = events.split_at(events.len() * 2 / 3);
    send_all(&broker.settings(), topic, head);

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
        first.records > 0 && first.records <= head.len() as u64,
        "stopped at {} of {n}",
        first.records
    );
    send_all(&broker.settings(), topic, tail);

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
    // run again on the same state, to the end
    let mut b2 = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let second = b2.wait_pipeline().unwrap();
    let got = business(&http_get(b2.addr(), "/metrics").1);
    // it read from the offsets it committed itself: nothing its state needed was skipped; the
    // generator keys every record by its customer
    assert_eq!(missed(&b2), 0.0);
    let keys = parse_metrics(&b2.render(), "deflect_records_mis_keyed_total");
    assert_eq!(sum(&keys, "deflect_records_mis_keyed_total", &[]), 0.0);
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

fn missed(svc: &deflect::Service) -> f64 {
    sum(
        &parse_metrics(&svc.render(), "deflect_records_missed_total"),
        "deflect_records_missed_total",
        &[],
    )
}

/// Two instances taking turns in one group, each with its own state directory (state hand-off is
/// not implemented): each start counts exactly the records its state needed and the group's
/// committed offsets skipped, as Kafka reports them.
///
/// The input is produced in three parts and each turn reads one part to its end, so a turn's
/// reading is bounded by what exists (until 2026-11-28 each turn was stopped once it had read a
/// third of one production: under load the first could read nearly everything before it was
/// stopped, and the second turn then waited in vain for a third).
#[test]
fn records_the_state_missed_are_counted() {
    let topic = "turns";
    let parts = 4;
    let broker = EmbeddedBroker::start(&[(topic, parts)]).unwrap();
    let events = traffic(9, 400, 9);
    let third = events.len() / 3;
    let bootstrap = broker.bootstrap_servers();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| {
        let mut c = config(bootstrap, topic, dir, "turns");
        c.pipeline.max_batch = 200;
        c
    };
    // runs `svc` until it has read every record in the log from where it started, then stops it
    let read_to_end = |svc: deflect::Service, from: &[i64], who: &str| {
        let ends = log_ends(bootstrap, topic, parts);
        let want: i64 = ends.iter().zip(from).map(|(e, f)| e - f).sum();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let read = sum(
                &parse_metrics(&svc.render(), "deflect_events_total"),
                "deflect_events_total",
                &[],
            );
            if read >= want as f64 {
                assert_eq!(read, want as f64, "{who} read more than the log held");
                break;
            }
            assert!(Instant::now() < deadline, "{who} read {read} of {want}");
            std::thread::sleep(Duration::from_millis(5));
        }
        svc.shutdown().unwrap();
    };

    // A reads the first part; the log starts at 0 (nothing deleted)
    send_all(&broker.settings(), topic, &events[..third]);
    let a = deflect::Service::start(config(a_dir.path()), RunOptions::default()).unwrap();
    read_to_end(a, &[0; 4], "A");
    let after_a = committed_offsets(bootstrap, topic, "turns", parts);
    assert!(after_a.iter().all(|&o| o > 0), "{after_a:?}");

    // B, a new state directory in the same group, starts at A's committed offsets: the records
    // before them are in A's state only
    send_all(&broker.settings(), topic, &events[third..2 * third]);
    let b = deflect::Service::start(config(b_dir.path()), RunOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while missed(&b) < after_a.iter().sum::<i64>() as f64 {
        assert!(Instant::now() < deadline, "B counted {} missed", missed(&b));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(missed(&b), after_a.iter().sum::<i64>() as f64);
    read_to_end(b, &after_a, "B");
    let after_b = committed_offsets(bootstrap, topic, "turns", parts);

    // A again, on its own state: the group's offsets are B's, past A's state
    send_all(&broker.settings(), topic, &events[2 * third..]);
    let mut a2 =
        deflect::Service::start(config(a_dir.path()), RunOptions { exit_at_eof: true }).unwrap();
    a2.wait_pipeline().unwrap();
    let expected: i64 = after_a
        .iter()
        .zip(&after_b)
        .map(|(a, b)| (b - a).max(0))
        .sum();
    assert!(expected > 0, "B consumed nothing: {after_a:?} {after_b:?}");
    assert_eq!(missed(&a2), expected as f64);
    a2.shutdown().unwrap();
}

/// An instance with a new state directory in a group that consumed everything reads nothing: it
/// must leave the group's committed offsets where they are (it committed its partitions' resume
/// offset, 0, before 2026-11-27's tenth session: the next start read every partition again).
#[test]
fn a_partition_not_read_keeps_its_committed_offset() {
    let topic = "unread";
    let parts = 3;
    let broker = EmbeddedBroker::start(&[(topic, parts)]).unwrap();
    let events = traffic(11, 200, 3);
    send_all(&broker.settings(), topic, &events);
    let bootstrap = broker.bootstrap_servers();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let eof = RunOptions { exit_at_eof: true };
    let a = run_to_eof(config(bootstrap, topic, a_dir.path(), "unread"));
    assert_eq!(
        sum(&a, "deflect_events_total", &[]),
        events.len() as f64,
        "A read everything"
    );
    let after_a = committed_offsets(bootstrap, topic, "unread", parts);
    let per_partition = log_ends(bootstrap, topic, parts);
    assert_eq!(
        after_a, per_partition,
        "A committed the end of every partition"
    );

    let mut b =
        deflect::Service::start(config(bootstrap, topic, b_dir.path(), "unread"), eof).unwrap();
    assert_eq!(b.wait_pipeline().unwrap().records, 0);
    b.shutdown().unwrap();
    assert_eq!(
        committed_offsets(bootstrap, topic, "unread", parts),
        after_a
    );

    // running on, it reports no lag: its reading starts at the group's offsets, at the end (the
    // lag counted from offset 0, the whole partition, before 2026-11-27's tenth session)
    let c_dir = tempfile::tempdir().unwrap();
    let c = deflect::Service::start(
        config(bootstrap, topic, c_dir.path(), "unread"),
        RunOptions::default(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let lag = loop {
        let lag = parse_metrics(&c.render(), "deflect_consumer_lag");
        if lag.len() == parts as usize {
            break lag;
        }
        assert!(Instant::now() < deadline, "lag of {} partitions", lag.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(lag.values().all(|v| *v == 0.0), "{lag:?}");
    c.shutdown().unwrap();
    assert_eq!(
        committed_offsets(bootstrap, topic, "unread", parts),
        after_a
    );
}

/// The state of a topic that was recreated (a new broker here) with fewer records than the state
/// read: the pipeline stops with an error naming the partition, instead of taking the new
/// records for ones already counted and skipping them.
#[test]
fn a_recreated_shorter_topic_is_an_error() {
    let topic = "recreated";
    let events = traffic(13, 200, 3);
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedBroker::start(&[(topic, 1)]).unwrap();
    send_all(&first.settings(), topic, &events);
    run_to_eof(config(
        first.bootstrap_servers(),
        topic,
        dir.path(),
        "recreated",
    ));
    drop(first);

    let second = EmbeddedBroker::start(&[(topic, 1)]).unwrap();
    send_all(&second.settings(), topic, &events[..events.len() / 3]);
    let cfg = config(second.bootstrap_servers(), topic, dir.path(), "recreated");
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let err = format!("{:#}", svc.wait_pipeline().unwrap_err());
    let expected = format!(
        "the stored state of partition 0 of {topic} was read to offset {}, but the partition \
         now ends at {}: the topic was recreated or truncated",
        events.len(),
        events.len() / 3
    );
    assert!(err.contains(&expected), "{err}");
    let _ = svc.shutdown();
}

/// A topic deleted and created again that already holds more records than the state had read
/// (or a state directory pointed at another cluster) cannot be told by its offsets: the last
/// record the state read is read again, and another record at its offset is an error. Before
/// 2026-11-28's thirteenth session the first records of the new log were skipped as already
/// counted, silently.
#[test]
fn a_recreated_longer_topic_is_an_error() {
    let topic = "recreated-longer";
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedBroker::start(&[(topic, 2)]).unwrap();
    send_all(&first.settings(), topic, &traffic(13, 200, 3));
    let cfg = |b: &EmbeddedBroker| config(b.bootstrap_servers(), topic, dir.path(), "longer");
    run_to_eof(cfg(&first));
    // the same log again: checked, and nothing to do
    run_to_eof(cfg(&first));
    drop(first);

    // other traffic, three times as long: every partition ends past the state's offsets
    let second = EmbeddedBroker::start(&[(topic, 2)]).unwrap();
    send_all(&second.settings(), topic, &traffic(14, 200, 9));
    let mut svc = deflect::Service::start(cfg(&second), RunOptions { exit_at_eof: true }).unwrap();
    let err = format!("{:#}", svc.wait_pipeline().unwrap_err());
    assert!(
        err.contains(&format!(
            "of partition 0 of {topic} is not the one the stored state read there: the topic was \
             deleted and created again, or the state directory belongs to another cluster or topic"
        )),
        "{err}"
    );
    let _ = svc.shutdown();
}

/// What a check of a restored partition's log finds at an offset: the record there with its
/// fingerprint, the end of the log, or (past the end) the log's first record.
#[test]
fn records_are_read_again_at_their_offsets() {
    let topic = "read-again";
    let broker = EmbeddedBroker::start(&[(topic, 2)]).unwrap();
    let settings = broker.settings();
    let events = traffic(15, 50, 1);
    send_all(&settings, topic, &events);
    // partition 0's records in offset order, and how many partition 1 holds
    let first = read_all_from(&settings, topic, 1);
    let ends = [
        first.len() as i64,
        (read_all_from(&settings, topic, 2).len() - first.len()) as i64,
    ];
    assert!(ends.iter().all(|e| *e > 2), "{ends:?}");
    let (key, value, _) = &first[1];
    let found = deflect_kafka::records_at(
        &settings,
        topic,
        &[(0, 1), (1, ends[1])],
        Duration::from_secs(10),
    )
    .unwrap();
    let fingerprint = deflect_kafka::fingerprint(Some(key.as_bytes()), Some(value));
    assert_eq!(found[&0], deflect_kafka::At::Record(fingerprint));
    assert_eq!(found[&1], deflect_kafka::At::End);
    let past = deflect_kafka::records_at(
        &settings,
        topic,
        &[(1, ends[1] + 5)],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(past[&1], deflect_kafka::At::Elsewhere(0));
}

/// A state directory built with one interval length is refused with another (its intervals,
/// heat map and cohorts follow the first), naming both; the first settings still start.
#[test]
fn a_state_directory_is_refused_when_its_interval_settings_change() {
    let topic = "settings";
    let broker = EmbeddedBroker::start(&[(topic, 1)]).unwrap();
    send_all(&broker.settings(), topic, &traffic(19, 100, 2));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(broker.bootstrap_servers(), topic, dir.path(), "settings");
    run_to_eof(cfg.clone());

    let mut hourly = cfg.clone();
    hourly.site.interval_minutes = 60;
    let err = match deflect::Service::start(hourly, RunOptions { exit_at_eof: true }) {
        Err(e) => format!("{e:#}"),
        Ok(mut svc) => {
            let e = format!("{:#}", svc.wait_pipeline().unwrap_err());
            let _ = svc.shutdown();
            e
        }
    };
    assert!(
        err.contains(
            "was built with site.time_zone=UTC site.interval_minutes=15 heatmap.cell=hour, the \
             configuration says site.time_zone=UTC site.interval_minutes=60 heatmap.cell=hour"
        ),
        "{err}"
    );
    run_to_eof(cfg);
}

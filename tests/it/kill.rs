//! Crash safety: a broker in its own process, 200,000 events, and the pipeline in its own process
//! killed with SIGKILL at random moments and restarted each time. At the end every business figure
//! equals a batch computation over the same events (one engine, sorted input, no store, no Kafka).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deflect::generate::{GenParams, Generator};
use deflect::RunOptions;
use deflect_core::metrics::Counters;
use deflect_core::metrics::Metric;
use deflect_kafka::ClientSettings;

use crate::support::*;

/// `deflect run --exit-at-eof` in its own process, output discarded.
fn run_command(cfg: &std::path::Path) -> Command {
    let mut c = Command::new(deflect_bin());
    c.args(["run", "--exit-at-eof", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The broker of a test: by default `deflect broker` (librdkafka's mock cluster) in its own
/// process; with `DEFLECT_TEST_BROKERS` set, those brokers (Tansu, or any Kafka), on which the
/// test creates its topic and uses group ids of its own, unique to the run.
struct Broker {
    child: Option<Child>,
    bootstrap: String,
    /// The test's topic on this broker.
    topic: String,
    /// Appended to group ids (empty on the test's own broker).
    suffix: String,
}

impl Broker {
    fn start(topic: &str, partitions: i32) -> Broker {
        if let Ok(bootstrap) = std::env::var("DEFLECT_TEST_BROKERS") {
            return Broker::external(bootstrap, topic, partitions);
        }
        let mut child = Command::new(deflect_bin())
            .arg("broker")
            .arg("--topic")
            .arg(format!("{topic}:{partitions}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .expect("broker prints its address")
            .to_string();
        Broker {
            child: Some(child),
            bootstrap,
            topic: topic.to_string(),
            suffix: String::new(),
        }
    }

    /// The topic `{topic}-{unique}` created on brokers of the user's.
    fn external(bootstrap: String, topic: &str, partitions: i32) -> Broker {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let topic = format!("{topic}-{unique}");
        let admin: AdminClient<_> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let created = block_on(admin.create_topics([&new], &opts)).expect("create topic");
        for r in created {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        eprintln!("external brokers {bootstrap}: topic {topic}");
        Broker {
            child: None,
            bootstrap,
            topic,
            suffix: format!("-{unique}"),
        }
    }

    /// A consumer group id of this test on this broker.
    fn group(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }
}

/// Runs a future to completion on this thread (the admin client's calls are futures; its work
/// runs on librdkafka's threads).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tiny deterministic generator of kill moments (no extra dependency).
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_ten_times_then_exact_figures() {
    let broker = Broker::start("kill-input", 12);
    let topic = broker.topic.as_str();
    let params = GenParams {
        contacts_per_hour: 1_500.0,
        customers: 30_000,
        seed: 11,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let mut events = Vec::new();
    let mut t = params.start_ms;
    while events.len() < 200_000 {
        t += 3_600_000;
        events.extend(g.until(t));
    }
    events.truncate(200_000);
    produce(&broker, topic, &events);

    let oracle = batch_oracle(&events);

    let dir = tempfile::tempdir().unwrap();
    let (cfg, cfg_path) = pipeline_config(&broker, topic, dir.path(), "kill", 1000);

    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    // a kill comes up to `window` ms after the assignment; while nothing is durable yet the
    // window doubles at each kill (up to 10 s): on the mock cluster the first batches are
    // durable within 200 ms, but a broker that takes seconds to send the first records after an
    // assignment (Tansu) would otherwise only ever be killed at start-up
    let mut window = 200u64;
    let mut kills = Vec::new();
    // warnings of records a restarted run's state needed and Kafka's reading skipped: a
    // committed offset ahead of the durable state would show there
    let missing = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    while kills.len() < 10 {
        // each kill comes a random moment after the run was assigned its partitions (it logs
        // that), so that it interrupts processing with events pending, not a start-up (joining
        // the group takes longer than fixed waits of a few seconds did)
        let mut child = run_command(&cfg_path)
            .env("DEFLECT_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, assigned) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let missing = missing.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("partitions assigned") {
                    let _ = tx.send(());
                }
                if line.contains("their events are missing") {
                    missing.lock().unwrap().push(line);
                }
            }
        });
        let spawned = Instant::now();
        let mut exited = None;
        let mut deadline = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            match deadline {
                Some(d) if Instant::now() >= d => break,
                Some(_) => {}
                None if assigned.try_recv().is_ok() => {
                    deadline =
                        Some(Instant::now() + Duration::from_millis(next_rand(&mut rng) % window));
                }
                None => assert!(
                    spawned.elapsed() < Duration::from_secs(60),
                    "no partitions assigned within a minute"
                ),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let wait = spawned.elapsed();
        match exited {
            Some(status) => {
                // finished before the kill: nothing left to kill
                assert!(status.success(), "deflect run failed: {status}");
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let durable: i64 = stored_offsets(&cfg, 12).iter().map(|o| o.0).sum();
                kills.push((wait.as_millis(), durable));
                if durable == 0 {
                    window = (window * 2).min(10_000);
                }
            }
        }
    }
    // (ms after start, records durable) at each kill: some kills interrupted the input's
    // processing after state was written (with events pending in it), not only start-ups
    eprintln!("kill test: SIGKILLs at {kills:?}");
    assert!(
        kills
            .iter()
            .any(|(_, durable)| *durable > 0 && *durable < events.len() as i64),
        "no kill came while the input was being processed"
    );
    // run to the end
    let out = run_command(&cfg_path)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut missing = missing.lock().unwrap().clone();
    missing.extend(
        (stderr.lines())
            .filter(|l| l.contains("their events are missing"))
            .map(str::to_string),
    );
    assert!(missing.is_empty(), "{missing:#?}");
    eprintln!("kill test: {:.1} s in all", started.elapsed().as_secs_f64());
    assert_state_matches(cfg, &oracle);
    assert!(
        kills.len() >= 10,
        "only {} kills happened before the input was consumed",
        kills.len()
    );
}

/// Per partition of the first `partitions`, the offset stored with the durable state and the
/// resume offset (0 and 0 for a partition without state).
fn stored_offsets(cfg: &deflect::Config, partitions: i32) -> Vec<(i64, i64)> {
    let store =
        deflect_store::Store::open(&cfg.state.dir, deflect_store::StoreOptions::default()).unwrap();
    (0..partitions)
        .map(|p| {
            store.load_partition(p).unwrap().map_or((0, 0), |r| {
                (r.snapshot.next_offset, r.snapshot.resume_offset)
            })
        })
        .collect()
}

/// Reads the figures the state holds through the pipeline's own /metrics and compares every business
/// counter with the oracle's.
fn assert_state_matches(cfg: deflect::Config, oracle: &Counters) {
    // read the figures the state holds, through the pipeline's own /metrics
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    svc.wait_pipeline().unwrap();
    let m = without_partition(&parse_metrics(
        &http_get(svc.addr(), "/metrics").1,
        "deflect_",
    ));
    svc.shutdown().unwrap();

    let compared = assert_figures_match(&m, oracle);
    assert!(compared > 50, "compared {compared} series");
    assert!(oracle.total(Metric::PotentialCalls) > 10_000);
}

/// SIGTERM: the pipeline finishes the batch in hand, writes it, commits and exits 0 within a bounded
/// time; a restart then completes to exactly the oracle's figures.
#[test]
fn sigterm_exits_cleanly_and_loses_nothing() {
    let (broker, oracle) = one_day_on_a_broker("term-input", 5);
    let topic = broker.topic.as_str();

    let dir = tempfile::tempdir().unwrap();
    let (cfg, cfg_path) = pipeline_config(&broker, topic, dir.path(), "term", 500);

    // without --exit-at-eof: it would run forever
    let mut child = Command::new(deflect_bin())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (status, took) = stop(&mut child, "TERM", Duration::from_secs(15));
    eprintln!("sigterm: exited {status} after {} ms", took.as_millis());
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let status = run_command(&cfg_path).status().unwrap();
    assert!(status.success());
    assert_state_matches(cfg, &oracle);
}

/// A state store that cannot take more (RLIMIT_FSIZE on the process: writes past 4 MiB per file
/// fail with EFBIG, as on a full disk): the process exits non-zero with one line naming the state
/// write, Kafka holds no committed offset beyond the durable state, and a restart without the limit
/// completes to exactly the oracle's figures.
#[test]
fn full_disk_exits_cleanly_and_resumes_exactly() {
    use std::os::unix::process::CommandExt;
    let (broker, oracle) = one_day_on_a_broker("full-input", 9);
    let topic = broker.topic.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, cfg_path) = pipeline_config(&broker, topic, dir.path(), "full", 500);

    let mut cmd = run_command(&cfg_path);
    cmd.stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 20,
                rlim_max: 4 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // a write past the limit then fails with EFBIG instead of killing the process
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "deflect run should fail on a full disk"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("deflect: error:"))
        .collect();
    eprintln!("full disk: exit {} with {:?}", out.status, errors);
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("state") && errors[0].contains("File too large"),
        "{}",
        errors[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Kafka's committed offsets never pass where the durable state must be read again (its
    // resume offset: pending events are read again from Kafka)
    let stored_offsets = stored_offsets(&cfg, 8);
    let committed = committed_offsets(&broker.bootstrap, topic, &broker.group("full"), 8);
    let mut stored_total = 0;
    for (p, (&(stored, resume), &c)) in stored_offsets.iter().zip(&committed).enumerate() {
        stored_total += stored;
        assert!(resume <= stored);
        assert!(
            c <= resume,
            "partition {p}: committed {c} > resume offset {resume}"
        );
    }
    assert!(
        stored_total < log_ends(&broker.bootstrap, topic, 8).iter().sum(),
        "the disk filled before the end of the input"
    );

    // a healthy disk: the restart resumes from the stored offsets and completes exactly
    let status = run_command(&cfg_path).status().unwrap();
    assert!(status.success());
    assert_state_matches(cfg, &oracle);
}

/// A broker process with `topic` (8 partitions keep each under the mock cluster's ~5 MiB
/// retention) holding one day of generated traffic, and the oracle's figures for it.
fn one_day_on_a_broker(topic: &str, seed: u64) -> (Broker, Counters) {
    let broker = Broker::start(topic, 8);
    let params = GenParams {
        contacts_per_hour: 1_000.0,
        customers: 20_000,
        seed,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let events = g.until(params.start_ms + 24 * 3_600_000);
    produce(&broker, &broker.topic, &events);
    (broker, batch_oracle(&events))
}

/// Records in `topic` (sum of the partitions' high watermarks).
fn produce(broker: &Broker, topic: &str, events: &[deflect_core::Event]) {
    let mut settings = ClientSettings::new(broker.bootstrap.clone());
    // librdkafka properties of the test's producer, `key=value,…` (external brokers only: Tansu
    // 0.6.0 needs `batch.num.messages=1`, see the README)
    let props = std::env::var("DEFLECT_TEST_PRODUCER").unwrap_or_default();
    for kv in props
        .split(',')
        .filter(|kv| broker.child.is_none() && !kv.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .expect("DEFLECT_TEST_PRODUCER: key=value,…");
        settings.properties.insert(k.to_string(), v.to_string());
    }
    send_all(&settings, topic, events);
}

/// Produces `events` to `topic` as protobuf, and waits until every one is delivered.
/// A config for a pipeline process (short group session so restarts rejoin quickly), written to
/// `dir/deflect.toml`.
fn pipeline_config(
    broker: &Broker,
    topic: &str,
    dir: &std::path::Path,
    group: &str,
    max_batch: usize,
) -> (deflect::Config, PathBuf) {
    let mut cfg = config(
        &broker.bootstrap,
        topic,
        &dir.join("state"),
        &broker.group(group),
    );
    cfg.pipeline.max_batch = max_batch;
    let props = &mut cfg.kafka.properties;
    props.insert("session.timeout.ms".into(), "3000".into());
    props.insert("heartbeat.interval.ms".into(), "500".into());
    let path = dir.join("deflect.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    (cfg, path)
}

/// Start-up failures give one error line naming the cause and a non-zero exit, not a backtrace:
/// a state directory that cannot be created, and brokers that do not answer.
#[test]
fn unusable_state_dir_and_unreachable_broker_give_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = |args: &[&str], envs: &[(&str, String)]| {
        let mut c = Command::new(deflect_bin());
        c.arg("run").args(args).stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let errors: Vec<String> = stderr
            .lines()
            .filter(|l| l.starts_with("deflect: error:"))
            .map(str::to_string)
            .collect();
        assert!(!out.status.success());
        assert!(
            !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
            "{stderr}"
        );
        assert_eq!(errors.len(), 1, "{stderr}");
        errors[0].clone()
    };
    let state = run(
        &[],
        &[
            (
                "DEFLECT__STATE__DIR",
                file.join("state").display().to_string(),
            ),
            ("DEFLECT__HTTP__LISTEN", "127.0.0.1:0".into()),
        ],
    );
    assert!(state.contains("cannot create state directory"), "{state}");
    let broker = run(
        &[],
        &[
            (
                "DEFLECT__STATE__DIR",
                dir.path().join("s").display().to_string(),
            ),
            ("DEFLECT__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1".into()),
            ("DEFLECT__HTTP__LISTEN", "127.0.0.1:0".into()),
        ],
    );
    // the cause librdkafka ran into, not only the metadata request's code
    assert!(
        broker.contains("cannot read topic")
            && broker.contains("127.0.0.1:1")
            && broker.contains("Connection refused"),
        "{broker}"
    );
    // TLS towards a plaintext listener (the security settings of `kafka.properties` apply to
    // the start-up check too: it connected in plaintext before 2026-11-28, and the pipeline then
    // waited for partitions forever)
    let plain = deflect_kafka::EmbeddedBroker::start(&[("tls-input", 1)]).unwrap();
    let mut cfg = config(
        plain.bootstrap_servers(),
        "tls-input",
        &dir.path().join("tls"),
        "tls",
    );
    cfg.kafka
        .properties
        .insert("security.protocol".into(), "SSL".into());
    let path = dir.path().join("tls.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let tls = run(&["--config", path.to_str().unwrap()], &[]);
    // `SSL handshake failed: …`, or `… Disconnected: connection reset by peer (after 0ms in
    // state SSL_HANDSHAKE)` when the listener's reset comes first (CI, 2026-11-28)
    assert!(
        tls.contains("cannot read topic")
            && (tls.contains("SSL handshake failed") || tls.contains("SSL_HANDSHAKE")),
        "{tls}"
    );
    eprintln!("start-up errors:\n  {state}\n  {broker}\n  {tls}");
}

/// A replay (`--exit-at-eof`) waiting for a partition whose leader does not answer says so every
/// ten seconds, naming that partition and only it; once the leader answers again the replay reads
/// to the end and exits 0, every record read.
#[test]
fn replay_names_the_partition_it_waits_for() {
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    let topic = "stall-input";
    let group = "stall";
    // two brokers: partition 0 led by broker 1 (also the group's coordinator), partition 1 by 2
    let cluster = MockCluster::new(2).unwrap();
    cluster.create_topic(topic, 2, 1).unwrap();
    cluster.partition_leader(topic, 0, Some(1)).unwrap();
    cluster.partition_leader(topic, 1, Some(2)).unwrap();
    cluster
        .coordinator(MockCoordinator::Group(group.into()), 1)
        .unwrap();
    let params = GenParams {
        contacts_per_hour: 300.0,
        customers: 3_000,
        seed: 4,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let events = g.until(params.start_ms + 6 * 3_600_000);
    send_all(
        &ClientSettings::new(cluster.bootstrap_servers()),
        topic,
        &events,
    );
    cluster.broker_down(2).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &cluster.bootstrap_servers(),
        topic,
        &dir.path().join("state"),
        group,
    );
    let cfg_path = dir.path().join("deflect.toml");
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let mut child = run_command(&cfg_path)
        .env("DEFLECT_LOG", "warn")
        .env("DEFLECT_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let started = Instant::now();
    let warning = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("no warning about the partition waited for within a minute");
        if line.contains("not at their end yet") {
            break line;
        }
    };
    eprintln!(
        "stall: warned after {} ms: {warning}",
        started.elapsed().as_millis()
    );
    let warning: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(warning["level"], "WARN");
    // partition 0 is at its end; partition 1 has had no fetch answer
    assert_eq!(
        warning["fields"]["partitions"], "1 (read to unknown, ends at unknown)",
        "{warning}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the replay ended");

    cluster.broker_up(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no end within a minute of the leader's return"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let read: i64 = stored_offsets(&cfg, 2).iter().map(|o| o.0).sum();
    assert_eq!(read, events.len() as i64);
}

/// Broker failures while a live pipeline runs (three brokers of librdkafka's mock cluster in this
/// process, the pipeline in this process too): every partition's leader moved, a broker down for
/// 35 s, the group's coordinator down for longer than the session (the member loses its
/// partitions and joins again), and retriable errors on fetches, produce requests and offset
/// commits. The pipeline keeps running, reads every record exactly once into its durable state,
/// delivers its interval reports, and its figures equal the oracle's.
///
/// Ignored from the eleventh session (a stall: 2 of 14 runs ended with a
/// partition's last 1,424 of 140,618 events not read two minutes after the failures, all 8
/// partitions assigned) to 2026-11-28's fourteenth session, after 65 runs in a row without one
/// (15 of them, three at once, on this code). It prints the lag of every partition if it stalls;
/// `DEFLECT_TEST_LOG=debug` logs the pipeline.
#[test]
fn broker_failures_lose_nothing() {
    broker_failures(true);
}

/// [`broker_failures_lose_nothing`] without the coordinator outage and the injected errors:
/// every leader moved, a broker that leads input and report partitions down for 35 s (deflect
/// stopped 30 s into it before 2026-11-28).
#[test]
fn an_output_broker_down_for_35_s_loses_nothing() {
    broker_failures(false);
}

fn broker_failures(all: bool) {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    test_log();
    let topic = "outage-input";
    let reports = "outage-reports";
    let late = "outage-late";
    let group = "outage";
    let partitions = 8;
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(topic, partitions, 3).unwrap();
    cluster.create_topic(reports, 3, 3).unwrap();
    cluster.create_topic(late, 1, 3).unwrap();
    let lead = |shift: i32| {
        for p in 0..partitions {
            cluster
                .partition_leader(topic, p, Some((p + shift) % 3 + 1))
                .unwrap();
        }
        for p in 0..3 {
            cluster
                .partition_leader(reports, p, Some((p + shift + 1) % 3 + 1))
                .unwrap();
        }
    };
    lead(0);
    let settings = ClientSettings::new(cluster.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = reporting_config(&cluster, topic, reports, group, dir.path());
    cfg.kafka.late_topic = late.into();
    cfg.pipeline.max_batch = 2_000;
    let props = &mut cfg.kafka.properties;
    props.insert("session.timeout.ms".into(), "3000".into());
    props.insert("heartbeat.interval.ms".into(), "500".into());
    let svc = deflect::Service::start(cfg.clone(), RunOptions { exit_at_eof: false }).unwrap();

    let params = GenParams {
        contacts_per_hour: 400.0,
        customers: 20_000,
        seed: 21,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let mut events = Vec::new();
    // produces the next four hours of traffic while the pipeline runs
    let mut chunk = |events: &mut Vec<deflect_core::Event>, i: i64| {
        let next = g.until(params.start_ms + (i + 1) * 4 * 3_600_000);
        send_all(&settings, topic, &next);
        events.extend(next);
    };
    let alive = |svc: &deflect::Service, after: &str| {
        assert!(
            !svc.pipeline_finished(),
            "the pipeline stopped after {after}"
        );
    };
    let started = Instant::now();

    // events counted late, if any: where they are in their partitions' logs
    let grace = cfg.watermark.grace;
    let explain = || explain_late(&settings, topic, late, partitions, grace);

    chunk(&mut events, 0);
    caught_up(
        &svc,
        partitions,
        events.len(),
        "the first records",
        &explain,
    );
    chunk(&mut events, 1);
    // every leader moves to another broker (fetches, produce requests answered NOT_LEADER)
    lead(1);
    std::thread::sleep(Duration::from_secs(2));
    alive(&svc, "the leaders moved");
    chunk(&mut events, 2);
    // a broker down for longer than 30 s (deflect stopped there before 2026-11-28): the
    // partitions it leads, of the input and of the reports, stall until it is back
    cluster.broker_down(3).unwrap();
    // meanwhile the pipeline says what it waits for (alert `DeflectOutputUndelivered`)
    let mut undelivered = 0.0f64;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(35) {
        let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
        undelivered = undelivered.max(sum(&m, "deflect_output_undelivered_records", &[]));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(undelivered > 0.0, "no undelivered records shown");
    cluster.broker_up(3).unwrap();
    alive(&svc, "a broker was down");
    chunk(&mut events, 3);
    if all {
        // the coordinator down for longer than the session: the member loses its partitions
        cluster.broker_down(1).unwrap();
        std::thread::sleep(Duration::from_secs(8));
        cluster.broker_up(1).unwrap();
        alive(&svc, "the coordinator was down");
        chunk(&mut events, 4);
        // retriable errors on the requests deflect makes
        let not_leader = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
        cluster.request_errors(RDKafkaApiKey::Fetch, &[not_leader; 3]);
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
        );
        cluster.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 3],
        );
        chunk(&mut events, 5);
    }
    lead(2);
    let at_catch_up = caught_up(&svc, partitions, events.len(), "the failures", &explain);
    // the event counters are exported by the workers that advanced the last batch, the reports
    // counted by the loop once it sent them (after waiting for any earlier revision of theirs to
    // be delivered, leaders moving): the figures are compared once the pipeline is quiet
    let m = settled(&svc, "the failures");
    alive(&svc, "the failures");
    eprintln!(
        "broker failures: {} events, caught up {:.1} s after the start; {} reports counted \
         then, {} once settled",
        events.len(),
        started.elapsed().as_secs_f64(),
        sum(&at_catch_up, "deflect_reports_total", &[]),
        sum(&m, "deflect_reports_total", &[]),
    );
    assert_eq!(sum(&m, "deflect_records_missed_total", &[]), 0.0);
    assert_eq!(sum(&m, "deflect_output_undelivered_records", &[]), 0.0);
    // every interval report delivered: once, or again byte for byte (a produce request that a
    // broker going down wrote without answering is sent again)
    let reported = sum(&m, "deflect_reports_total", &[]);
    assert!(reported > 0.0);
    let mut delivered = std::collections::BTreeMap::new();
    let records = read_all_from(&settings, reports, 3);
    eprintln!("{} report records, {reported} reports", records.len());
    for (key, bytes, _) in records {
        let revision = deflect_proto::report::decode_protobuf(&bytes)
            .unwrap()
            .revision;
        let first = delivered
            .entry((key.clone(), revision))
            .or_insert_with(|| bytes.clone());
        assert!(
            *first == bytes,
            "two reports {key:?} revision {revision} differ"
        );
    }
    // more in the topic than counted: a report sent after the figures were taken; fewer: lost
    assert_eq!(
        delivered.len() as f64,
        reported,
        "distinct reports in {reports} against deflect_reports_total"
    );
    svc.shutdown().unwrap();

    // the live pipeline read every record: its durable state is at the end of every partition
    let stored: Vec<i64> = stored_offsets(&cfg, partitions)
        .iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(
        stored,
        log_ends(&cluster.bootstrap_servers(), topic, partitions)
    );
    assert_state_matches(cfg, &batch_oracle(&events));
}

/// Waits (up to two minutes) until `partitions` partitions are assigned and `events` events
/// were accepted (`deflect_events_total` is kept with the state: a record read again after a
/// partition came back is not counted twice); returns the `/metrics` series then.
fn caught_up(
    svc: &deflect::Service,
    partitions: i32,
    events: usize,
    after: &str,
    explain: &dyn Fn(),
) -> std::collections::BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
        let accepted = sum(&m, "deflect_events_total", &[("result", "accepted")]);
        let assigned = sum(&m, "deflect_assigned_partitions", &[]);
        if accepted == events as f64 && assigned == f64::from(partitions) {
            return m;
        }
        if Instant::now() >= deadline {
            // where it stands, per partition
            for (k, v) in m.iter().filter(|(k, _)| {
                [
                    "_lag{",
                    // every result: a record written twice while its first copy was pending
                    // would be a duplicate, a record behind the closed intervals late
                    "deflect_events_total{",
                    "_pending_events{",
                    "undelivered",
                ]
                .iter()
                .any(|s| k.contains(s))
            }) {
                eprintln!("{after}: {k} {v}");
            }
            explain();
        }
        assert!(
            Instant::now() < deadline && !svc.pipeline_finished(),
            "not caught up two minutes after {after}: {accepted} of {events} events accepted, \
             {assigned} partitions assigned"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prints, for each partition with events counted late (forwarded to `late`), its first late
/// record against the largest event time at a lower offset of its log: more than the grace period
/// later means the log itself holds them out of order (a producer's retry landing a batch behind a
/// later one, for example); less means that the partition's watermark passed them without such an
/// event before them (idleness, or a fault of the pipeline).
fn explain_late(
    settings: &ClientSettings,
    topic: &str,
    late: &str,
    partitions: i32,
    grace: Duration,
) {
    use rdkafka::Message;
    let forwarded = read_all_from(settings, late, 1);
    eprintln!("{} events forwarded as late", forwarded.len());
    let mut first: std::collections::BTreeMap<i32, (i64, String, usize)> = Default::default();
    for (_, _, h) in &forwarded {
        let (Some(p), Some(o)) = (
            h.get("deflect.source.partition")
                .and_then(|v| v.parse().ok()),
            h.get("deflect.source.offset")
                .and_then(|v| v.parse::<i64>().ok()),
        ) else {
            continue;
        };
        let closed = h
            .get("deflect.closed_until_ms")
            .cloned()
            .unwrap_or_default();
        let e = first.entry(p).or_insert((o, closed.clone(), 0));
        if o < e.0 {
            (e.0, e.1) = (o, closed);
        }
        e.2 += 1;
    }
    for (p, (offset, closed_until, n)) in first {
        let reader = deflect_kafka::reader(settings, topic, partitions).unwrap();
        let (mut max_before, mut at, mut time) = (i64::MIN, -1, None);
        let mut ended = 0;
        while ended < partitions && time.is_none() {
            match reader.poll(Duration::from_secs(10)) {
                Some(Ok(m)) if m.partition() == p => {
                    let bytes = m.payload().unwrap_or_default();
                    let t = deflect_proto::decode(bytes, deflect_proto::Format::Protobuf)
                        .map_or(i64::MIN, |e| e.occurred_at);
                    if m.offset() == offset {
                        time = Some(t);
                    } else if t > max_before {
                        (max_before, at) = (t, m.offset());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
                _ => break,
            }
        }
        let ahead = time.map(|t| max_before - t);
        eprintln!(
            "partition {p}: {n} late, the first at offset {offset} (event time {time:?}, closed \
             until {closed_until}); the latest event before it in the log: {max_before} at offset \
             {at}, {ahead:?} ms later than it (grace {} ms): {}",
            grace.as_millis(),
            match ahead {
                Some(a) if a > grace.as_millis() as i64 => "the log is out of order",
                Some(_) => "no event before it explains it (idleness, or a fault)",
                None => "not found in the log",
            }
        );
    }
}

/// Waits (up to a minute) until the pipeline is quiet: nothing left undelivered, and neither a
/// batch finished nor a report counted over three scrapes half a second apart; returns the
/// `/metrics` series then.
fn settled(svc: &deflect::Service, after: &str) -> std::collections::BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let moving = |m: &std::collections::BTreeMap<String, f64>| {
        (
            sum(m, "deflect_batch_records_count", &[]),
            sum(m, "deflect_reports_total", &[]),
        )
    };
    let mut last = None;
    let mut same = 0;
    loop {
        let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
        let now = moving(&m);
        let quiet = sum(&m, "deflect_output_undelivered_records", &[]) == 0.0;
        same = if quiet && last == Some(now) {
            same + 1
        } else {
            0
        };
        if same == 2 {
            return m;
        }
        last = Some(now);
        assert!(
            Instant::now() < deadline && !svc.pipeline_finished(),
            "still busy a minute after {after}: batches and reports {now:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A shutdown while interval reports cannot be delivered (the leader of their topic down) does
/// not wait for librdkafka's delivery timeout (300 s): it stops within seconds, says so, writes
/// nothing of the batch and commits no offset past the stored state; once the broker is back, a
/// restart completes to the oracle's figures.
#[test]
fn a_shutdown_does_not_wait_for_undeliverable_reports() {
    use rdkafka::mocking::MockCluster;
    let (topic, reports, group) = ("stuck-input", "stuck-reports", "stuck");
    let cluster = MockCluster::new(2).unwrap();
    // 8 partitions keep each under the mock cluster's ~5 MiB retention
    let partitions = 8;
    cluster.create_topic(topic, partitions, 1).unwrap();
    cluster.create_topic(reports, 1, 1).unwrap();
    for p in 0..partitions {
        cluster.partition_leader(topic, p, Some(1)).unwrap();
    }
    cluster.partition_leader(reports, 0, Some(2)).unwrap();
    let settings = ClientSettings::new(cluster.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let cfg = reporting_config(&cluster, topic, reports, group, dir.path());
    let params = GenParams {
        contacts_per_hour: 1_200.0,
        customers: 20_000,
        seed: 8,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let mut events = g.until(params.start_ms + 6 * 3_600_000);
    send_all(&settings, topic, &events);
    let svc = deflect::Service::start(cfg.clone(), RunOptions { exit_at_eof: false }).unwrap();
    let m = caught_up(&svc, partitions, events.len(), "the first records", &|| ());
    assert!(sum(&m, "deflect_reports_total", &[]) > 0.0);

    // the reports' leader goes away; the next closings' reports cannot be delivered
    cluster.broker_down(2).unwrap();
    let more = g.until(params.start_ms + 12 * 3_600_000);
    send_all(&settings, topic, &more);
    events.extend(more);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!svc.pipeline_finished());
    let asked = Instant::now();
    let err = svc.shutdown().unwrap_err();
    let took = asked.elapsed();
    eprintln!("shutdown while reports were undeliverable: {took:?}: {err:#}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(format!("{err:#}").contains("not delivered yet"), "{err:#}");
    let stored = stored_offsets(&cfg, partitions);
    let committed = committed_offsets(&cluster.bootstrap_servers(), topic, group, partitions);
    for (p, (&(_, resume), &c)) in stored.iter().zip(&committed).enumerate() {
        assert!(
            c <= resume,
            "partition {p}: committed {c} > resume offset {resume}"
        );
    }

    cluster.broker_up(2).unwrap();
    assert_state_matches(cfg, &batch_oracle(&events));
}

/// A live pipeline's configuration for `topic` on `cluster` (group `group`, coordinated by broker
/// 1), its interval reports sent to `reports`, its state under `dir`.
fn reporting_config(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    reports: &str,
    group: &str,
    dir: &std::path::Path,
) -> deflect::Config {
    use rdkafka::mocking::MockCoordinator;
    cluster
        .coordinator(MockCoordinator::Group(group.into()), 1)
        .unwrap();
    let mut cfg = config(
        &cluster.bootstrap_servers(),
        topic,
        &dir.join("state"),
        group,
    );
    cfg.kafka.output_topic = reports.into();
    cfg
}

/// A partition whose leader is down is not idle: its records wait in Kafka (or in producers), so
/// its intervals stay open however long the outage lasts, and the events written during it are
/// counted when the leader is back, not late. One partition led by a broker that goes down for
/// 12 s, with a 2 s idle timeout and no grace period: an event at 09:14:50, the outage, then an
/// event at 09:14:55. Before 2026-11-28's sixteenth session the silence counted as idleness: the
/// watermark moved 12 s on with the wall clock, closed 09:00–09:15, and the second event was late.
#[test]
fn a_partition_whose_leader_is_down_is_not_idle() {
    use deflect::produce::{EventProducer, WireFormat};
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    test_log();
    let (topic, group) = ("leaderless-input", "leaderless");
    let cluster = MockCluster::new(2).unwrap();
    cluster.create_topic(topic, 1, 2).unwrap();
    cluster.partition_leader(topic, 0, Some(2)).unwrap();
    cluster
        .coordinator(MockCoordinator::Group(group.into()), 1)
        .unwrap();
    let settings = ClientSettings::new(cluster.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.bootstrap_servers(), topic, dir.path(), group);
    cfg.watermark.idle_timeout = Duration::from_secs(2);
    cfg.watermark.grace = Duration::ZERO;
    // the consumer's statistics, which say whether a leader is up, every half second (5 s by
    // default, against the default idle timeout of a minute)
    (cfg.kafka.properties).insert("statistics.interval.ms".into(), "500".into());
    let t0: i64 = 1_704_704_400_000; // 2024-01-08T09:00Z
    let start = r#""contact_started":{"direction":"inbound","initiation":"customer"}"#;
    let send = |id: &str, t: i64| {
        let mut p = EventProducer::new(&settings, topic, WireFormat::Json).unwrap();
        let e = json_event(id, &format!("c-{id}"), t, start);
        p.send_record(Some(b"u1"), e.as_bytes()).unwrap();
        p.flush().unwrap();
    };
    let svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: false }).unwrap();
    // a series' sum over `/metrics`, as Prometheus would scrape it
    let series = |name: &str, labels: &[(&str, &str)]| {
        sum(
            &parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_"),
            name,
            labels,
        )
    };
    let events = |result: &str| series("deflect_events_total", &[("result", result)]);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what} within a minute");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    send("a", t0 + 890_000);
    wait_for("the first event accepted", &|| events("accepted") == 1.0);
    cluster.broker_down(2).unwrap();
    let unreachable = || series("deflect_unreachable_partitions", &[]);
    wait_for("the partition shown unreachable", &|| unreachable() == 1.0);
    std::thread::sleep(Duration::from_secs(12));
    cluster.broker_up(2).unwrap();
    wait_for("the partition shown reachable", &|| unreachable() == 0.0);
    send("b", t0 + 895_000);
    wait_for("the second event read", &|| {
        events("accepted") + events("late") == 2.0
    });
    assert_eq!(events("late"), 0.0, "the second event was counted late");
    // once the leader is up and the partition silent, idleness closes 09:00–09:15 with both
    wait_for("both contacts counted as potential calls", &|| {
        series("deflect_potential_calls_total", &[]) == 2.0
    });
    svc.shutdown().unwrap();
}

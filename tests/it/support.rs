use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use deflect::Config;
use deflect_kafka::{EmbeddedBroker, Headers, Message};
use rdkafka::error::KafkaError;

/// GET over plain HTTP/1.1; returns (status, body). Panics when there is no answer.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`], with no server listening (yet) or a broken answer as an error.
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let status = (head.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    // axum answers small bodies without chunking; decode chunked bodies anyway
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Parses Prometheus text into `series → value`, where series is `name{sorted labels}`, keeping
/// only names starting with `prefix`.
pub fn parse_metrics(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut ls: Vec<&str> = labels.split(',').filter(|s| !s.is_empty()).collect();
        ls.sort();
        out.insert(
            format!("{name}{{{}}}", ls.join(",")),
            value.parse().unwrap(),
        );
    }
    out
}

/// Sum of a metric over the series whose labels include every `label="value"` given.
pub fn sum(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| {
            labels
                .iter()
                .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Same sum over every partition, with the `partition` label removed.
pub fn without_partition(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let (name, labels) = k.split_once('{').unwrap();
        let ls: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.starts_with("partition=") && !l.is_empty())
            .collect();
        *out.entry(format!("{name}{{{}}}", ls.join(",")))
            .or_insert(0.0) += v;
    }
    out
}

pub fn config(bootstrap: &str, topic: &str, state: &Path, group: &str) -> Config {
    let mut c = Config::default();
    c.kafka.bootstrap_servers = bootstrap.to_string();
    c.kafka.input_topic = topic.to_string();
    c.kafka.group_id = group.to_string();
    c.kafka.dead_letter_topic = String::new();
    c.kafka.late_topic = String::new();
    c.kafka.output_topic = String::new();
    c.state.dir = state.to_path_buf();
    c.http.listen = "127.0.0.1:0".into();
    c
}

/// Every record of `topic` (one partition): (key, payload, headers).
pub fn read_all(
    broker: &EmbeddedBroker,
    topic: &str,
) -> Vec<(String, Vec<u8>, BTreeMap<String, String>)> {
    read_all_from(&broker.settings(), topic, 1)
}

/// [`read_all`] from any brokers, of the first `partitions` partitions (in partition order
/// only within each).
pub fn read_all_from(
    settings: &deflect_kafka::ClientSettings,
    topic: &str,
    partitions: i32,
) -> Vec<(String, Vec<u8>, BTreeMap<String, String>)> {
    let reader = deflect_kafka::reader(settings, topic, partitions).unwrap();
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < partitions {
        match reader.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_string(), v.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                ));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => panic!("timed out reading {topic}"),
        }
    }
    out
}

/// A JSON event of customer `u1` on voice for tenant acme; `payload` is `"type":{...}`.
pub fn json_event(id: &str, contact: &str, t: i64, payload: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","tenant":"acme","contact_id":"{contact}","customer_id":"u1","channel":"voice","occurred_at":{t},{payload}}}"#
    )
}

/// Runs the pipeline in this process to the end of its input and returns its `/metrics` series
/// starting with `deflect_`.
pub fn run_to_eof(cfg: Config) -> BTreeMap<String, f64> {
    let mut svc = deflect::Service::start(cfg, deflect::RunOptions { exit_at_eof: true }).unwrap();
    svc.wait_pipeline().unwrap();
    let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
    svc.shutdown().unwrap();
    m
}

/// `deflect ARGS…` as its own process, with `env` added: (exit code, stdout, stderr).
pub fn run_deflect<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = Command::new(deflect_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `deflect` binary of this build (run as its own process).
pub fn deflect_bin() -> PathBuf {
    // target/<profile>/deps/it-… -> target/<profile>/deflect
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("deflect");
    assert!(
        bin.exists(),
        "build the deflect binary first ({})",
        bin.display()
    );
    bin
}

/// Sends `signal` (`TERM`, `INT`) to `child` and waits for it to exit, failing the test if it
/// takes longer than `within`. Returns the exit status and how long it took.
pub fn stop(child: &mut Child, signal: &str, within: Duration) -> (ExitStatus, Duration) {
    let sent = Instant::now();
    let kill = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, sent.elapsed());
        }
        assert!(
            sent.elapsed() < within,
            "deflect did not exit within {within:?} of SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produces `events` to `topic` as protobuf, in order, and waits until every one is delivered.
///
/// One produce request in flight per broker: a producer that is not idempotent (deflect's is not,
/// see the README) may land a retried batch behind the next one. Once (2026-11-28, two runs of
/// the whole suite at once) `kill::broker_failures_lose_nothing`, which injects produce errors,
/// counted 790 events of one partition late with every event read; such a reorder would explain
/// it, but two attempts to provoke one (errors injected while 54 k events were produced) kept the
/// order, so the cause is not proven: that test now prints where its late events sit in their log.
pub fn send_all(
    settings: &deflect_kafka::ClientSettings,
    topic: &str,
    events: &[deflect_core::Event],
) {
    use deflect::produce::{EventProducer, WireFormat};
    let mut settings = settings.clone();
    (settings.properties).insert("max.in.flight.requests.per.connection".into(), "1".into());
    let mut p = EventProducer::new(&settings, topic, WireFormat::Protobuf).unwrap();
    for e in events {
        p.send(e).unwrap();
    }
    p.flush().unwrap();
}

/// A consumer of `group` that joins nothing: for reading and committing the group's offsets.
fn group_client(bootstrap: &str, group: &str) -> rdkafka::consumer::BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap()
}

/// The group's committed offset of each of the first `partitions` partitions of `topic` (0
/// when none is committed).
pub fn committed_offsets(bootstrap: &str, topic: &str, group: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::Consumer;
    let consumer = group_client(bootstrap, group);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| {
            let o = c.find_partition(topic, p).and_then(|e| e.offset().to_raw());
            o.filter(|o| *o >= 0).unwrap_or(0)
        })
        .collect()
}

/// Commits `offsets` (one per partition, from 0) for `group`, as a consumer outside the group.
pub fn commit_offsets(bootstrap: &str, topic: &str, group: &str, offsets: &[i64]) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let consumer = group_client(bootstrap, group);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// The end (high watermark) of each of the first `partitions` partitions of `topic`.
pub fn log_ends(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// The batch oracle (`deflect-oracle`, no streaming machinery) over `events`, with the default
/// configuration's definitions, zone and intervals.
pub fn oracle(events: &[deflect_core::Event]) -> deflect_oracle::Report {
    let cfg = Config::default();
    deflect_oracle::compute(
        &cfg.engine().journey,
        &cfg.site.time_zone,
        cfg.site.interval_minutes,
        events,
    )
}

/// Every figure of the oracle summed over its intervals, as Prometheus sees them after the end
/// of the input.
pub fn batch_oracle(events: &[deflect_core::Event]) -> deflect_core::metrics::Counters {
    let mut totals = deflect_core::metrics::Counters::default();
    for f in oracle(events).intervals.values() {
        totals.merge(&f.counters);
    }
    totals
}

/// With `DEFLECT_TEST_LOG` set (a filter such as `debug` or `info,deflect_kafka=debug`), the
/// in-process pipelines of a test log to stderr: for tests that fail rarely, looped with
/// `--nocapture`.
pub fn test_log() {
    if let Ok(filter) = std::env::var("DEFLECT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// `span_ms` of generated traffic from the generator's default start, as `deflect generate`
/// makes it with these parameters.
pub fn traffic(
    contacts_per_hour: f64,
    customers: u32,
    seed: u64,
    span_ms: i64,
) -> Vec<deflect_core::Event> {
    let params = deflect::generate::GenParams {
        contacts_per_hour,
        customers,
        seed,
        ..Default::default()
    };
    let mut g = deflect::generate::Generator::new(params.clone()).unwrap();
    g.until(params.start_ms + span_ms)
}

/// The lines of a child's output (`stdout` or `stderr` taken from it), read on a thread of
/// their own so that the child never blocks on a full pipe; the channel closes at its end.
pub fn lines_of(output: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Compares every business series of `m` (summed over partitions, [`without_partition`]) with
/// the oracle's figures, and each metric's total; returns how many series it compared.
pub fn assert_figures_match(
    m: &BTreeMap<String, f64>,
    oracle: &deflect_core::metrics::Counters,
) -> usize {
    use deflect_core::metrics::Metric;
    let mut compared = 0;
    for (k, v) in &oracle.0 {
        if k.metric == Metric::QueueWaitBucket {
            continue; // cumulative on /metrics; checked through +Inf below
        }
        let mut labels: Vec<String> = k
            .metric
            .labels()
            .iter()
            .zip(k.labels.iter())
            .map(|(l, v)| format!("{l}=\"{v}\""))
            .collect();
        labels.sort();
        let series = format!("{}{{{}}}", k.metric.name(), labels.join(","));
        assert_eq!(m.get(&series).copied(), Some(*v as f64), "{series}");
        compared += 1;
    }
    for metric in Metric::ALL
        .iter()
        .filter(|m| **m != Metric::QueueWaitBucket)
    {
        assert_eq!(
            sum(m, metric.name(), &[]),
            oracle.total(*metric) as f64,
            "{}",
            metric.name()
        );
    }
    assert_eq!(
        sum(m, Metric::QueueWaitBucket.name(), &[("le", "+Inf")]),
        oracle.total(Metric::QueueAnswered) as f64
    );
    compared
}

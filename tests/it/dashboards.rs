//! The operations package on a real Prometheus: a `prometheus` server on loopback scrapes a running
//! deflect (nine days of generated traffic through the mock cluster), loads the rules of
//! `deploy/prometheus/`, and every PromQL expression of the Grafana dashboard and of the rules is
//! run through Prometheus's HTTP API. Dashboard panels and recording rules must return data; alert
//! expressions must parse and every series they name must exist.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deflect::generate::{GenParams, Generator, INTENTS, QUEUES, TENANTS};
use deflect::produce::{EventProducer, WireFormat};
use deflect::RunOptions;
use deflect_kafka::EmbeddedBroker;
use serde_json::Value;

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from Prometheus's API as JSON.
fn api(port: u16, path: &str) -> Value {
    try_api(port, path).unwrap_or_else(|e| panic!("{e}"))
}

/// [`api`], with no Prometheus listening (yet) or an answer that is not JSON as an error.
fn try_api(port: u16, path: &str) -> Result<Value, String> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = try_http_get(addr, path).map_err(|e| format!("GET {path}: {e}"))?;
    serde_json::from_str(&body)
        .map_err(|e| format!("{path}: not JSON ({e}), status {status}: {body}"))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs an instant query; `Err` with Prometheus's message when it does not parse or fails.
fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let v = try_api(port, &format!("/api/v1/query?query={}", urlencode(expr)))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// [`query`] for an expression that must return data: an empty answer is asked again for up to
/// 10 s before it counts. A scrape that fails (it times out after the 1 s scrape interval on a
/// loaded machine) marks every series of the target stale until the next one succeeds, so one
/// expression of the ~80 checked came back empty once (2026-11-28, with a benchmark running
/// beside the tests); the retry prints the target's state when it happens.
fn query_data(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let t0 = Instant::now();
    loop {
        let r = query(port, expr)?;
        if !r.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return Ok(r);
        }
        let target = try_api(port, "/api/v1/targets").map(|t| {
            let t = &t["data"]["activeTargets"][0];
            format!(
                "health {}, last scrape {} s, error {:?}",
                t["health"], t["lastScrapeDuration"], t["lastError"]
            )
        });
        eprintln!("empty, asked again: {expr} (target: {target:?})");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every PromQL expression of the dashboard, with its variables set to "all".
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/deflect.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let expr = ["$tenant", "$channel", "$queue", "$intent"]
                .iter()
                .fold(expr.to_string(), |e, v| e.replace(v, ".*"));
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric, label) → the series it reads
            let metric = q
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap();
            out.push((format!("variable {}", v["name"]), metric.to_string()));
        }
    }
    out
}

#[test]
fn dashboard_and_rules_work_on_a_real_prometheus() {
    let Some(prom_bin) = which("prometheus") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("skipping: prometheus is not installed (run scripts/setup.sh)");
        return;
    };
    let topic = "ops-input";
    let defaults = deflect::Config::default();
    let broker = EmbeddedBroker::start(&[
        (topic, 12),
        (defaults.kafka.late_topic.as_str(), 1),
        (defaults.kafka.output_topic.as_str(), 1),
    ])
    .unwrap();
    // the site's afternoon, whenever the test runs: the last intervals closed have demand, so
    // the staffing series exist (at the site's night they are rightly empty)
    let zone = afternoon_zone(now());
    let params = GenParams {
        contacts_per_hour: 150.0,
        customers: 3_000,
        seed: 3,
        start_ms: (now() - 9 * 86_400_000) / 3_600_000 * 3_600_000,
        time_zone: zone.clone(),
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let events = g.until(now() - 600_000);
    let mut p = EventProducer::new(&broker.settings(), topic, WireFormat::Protobuf).unwrap();
    for e in &events {
        p.send(e).unwrap();
    }
    p.flush().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "ops");
    cfg.kafka.late_topic = defaults.kafka.late_topic.clone();
    cfg.kafka.output_topic = defaults.kafka.output_topic.clone();
    cfg.dimensions.tenants = TENANTS.iter().map(|s| s.to_string()).collect();
    cfg.dimensions.intents = INTENTS.iter().map(|s| s.to_string()).collect();
    cfg.dimensions.queues = QUEUES.iter().map(|s| s.to_string()).collect();
    cfg.dimensions.ivr_nodes = vec!["main".into(), "balance".into(), "cards".into()];
    cfg.journey.high_stakes_intents = vec![INTENTS[0].to_string()];
    cfg.watermark.idle_timeout = Duration::from_secs(1);
    cfg.site.time_zone = zone;
    let svc = deflect::Service::start(cfg, RunOptions::default()).unwrap();
    let addr = svc.addr();
    // consumed, intervals closed, and the 10 s refresh (staffing, lag) done. The lag reaches 0
    // although the last minutes' events are still pending (Kafka's committed offsets trail them)
    let t0 = Instant::now();
    loop {
        let m = parse_metrics(&http_get(addr, "/metrics").1, "deflect_");
        let accepted = sum(&m, "deflect_events_total", &[("result", "accepted")]);
        let lag_series = m
            .keys()
            .filter(|k| k.starts_with("deflect_consumer_lag"))
            .count();
        let lag = sum(&m, "deflect_consumer_lag", &[]);
        let pending = sum(&m, "deflect_pending_events", &[]);
        if accepted as usize >= events.len()
            && sum(&m, "deflect_staffing_required_agents", &[]) > 0.0
            && lag_series == 12
            && lag == 0.0
            && pending > 0.0
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "deflect did not consume the traffic ({accepted} of {}, lag {lag} over {lag_series} \
             partitions, {pending} pending)",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // a real Prometheus scraping deflect every second, with deflect's rules loaded
    let pdir = tempfile::tempdir().unwrap();
    let rules = repo().join("deploy/prometheus/deflect-rules.yml");
    let conf = pdir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: deflect\n    static_configs:\n      - targets: ['{addr}']\n",
            rules.canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Prometheus(
        Command::new(prom_bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // ready, scraping, and enough samples for increase() over any range
    let t0 = Instant::now();
    let mut first_up: Option<Instant> = None;
    loop {
        // an error until Prometheus listens
        let ok = query(port, "up{job=\"deflect\"} == 1").is_ok_and(|r| !r.is_empty());
        if ok && first_up.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(6) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "prometheus never scraped deflect"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for (title, expr) in dashboard_exprs() {
        checked += 1;
        match query_data(port, &expr) {
            Ok(r) if r.is_empty() => failures.push(format!("dashboard {title:?}: empty: {expr}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("dashboard {title:?}: {e}: {expr}")),
        }
    }
    // the rules as Prometheus loaded them
    let loaded = api(port, "/api/v1/rules");
    let groups = loaded["data"]["groups"].as_array().unwrap();
    let mut records = 0;
    let mut alerts = 0;
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let expr = rule["query"].as_str().unwrap();
        let name = rule["name"].as_str().unwrap();
        checked += 1;
        if rule["type"] == "recording" {
            let result = query_data(port, expr);
            records += 1;
            match result {
                Ok(r) if r.is_empty() => failures.push(format!("rule {name}: empty: {expr}")),
                Ok(_) => {}
                Err(e) => failures.push(format!("rule {name}: {e}")),
            }
        } else {
            alerts += 1;
            // an alert's expression is rightly empty while it does not fire
            if let Err(e) = query(port, expr) {
                failures.push(format!("alert {name}: {e}"));
            }
            // every series the alert reads exists
            for metric in metric_names(expr) {
                match query_data(port, &format!("count({{__name__=\"{metric}\"}})")) {
                    Ok(r) if !r.is_empty() => {}
                    _ => failures.push(format!("alert {name}: no series {metric}")),
                }
            }
        }
    }
    svc.shutdown().unwrap();
    eprintln!("checked {checked} expressions ({records} recording rules, {alerts} alerts)");
    assert!(
        records >= 15 && alerts >= 10,
        "{records} records, {alerts} alerts loaded"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The metric names an expression reads (`deflect_…` and `up`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let is_start = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if is_start && bytes[i].is_ascii_alphabetic() {
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_alphanumeric() || bytes[j] == '_' || bytes[j] == ':')
            {
                j += 1;
            }
            let w: String = bytes[i..j].iter().collect();
            if (w.starts_with("deflect_") || w == "up") && bytes.get(j) != Some(&'(') {
                out.insert(w);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

fn now() -> i64 {
    deflect::pipeline::now_ms()
}

/// A fixed-offset zone in which `at` is 14:xx local time (`Etc/GMT-N` is UTC+N).
fn afternoon_zone(at: i64) -> String {
    let utc_hour = at.rem_euclid(86_400_000) / 3_600_000;
    let offset = (14 - utc_hour + 12).rem_euclid(24) - 12;
    match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

#[test]
fn afternoon_zone_is_the_afternoon() {
    for h in 0..24 {
        let at = 1_795_000_000_000 / 86_400_000 * 86_400_000 + h * 3_600_000 + 1_234_567;
        let zone = afternoon_zone(at);
        let tz = jiff::tz::TimeZone::get(&zone).unwrap();
        let local = jiff::Timestamp::from_millisecond(at).unwrap().to_zoned(tz);
        assert_eq!(local.hour(), 14, "{zone} at utc hour {h}");
    }
}

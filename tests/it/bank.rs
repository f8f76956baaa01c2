//! The 1999 Anonymous Bank calls (real data) replayed through the broker and the pipeline, checked
//! against figures computed here directly from the files and against the data README's table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deflect::produce::{EventProducer, WireFormat};
use deflect::replay::{self, Adapter};
use deflect::RunOptions;
use deflect_kafka::EmbeddedBroker;

use crate::support::*;

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/anonymous-bank-1999");
    if d.join("01_January.txt.gz").exists() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must have the bank data at {}",
        d.display()
    );
    eprintln!("skipped: the Anonymous Bank data is not at {}", d.display());
    None
}

/// Independent figures straight from the file, with the data README's rules.
#[derive(Debug, Default, PartialEq)]
struct FileFigures {
    records: u64,
    phantom: u64,
    negative_ivr: u64,
    valid: u64,
    callback_legs: u64,
    queued: u64,
    abandoned_in_queue: u64,
    answered_in_queue: u64,
    wait_seconds_of_answered: u64,
}

fn from_file(text: &str) -> FileFigures {
    let mut f = FileFigures::default();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        f.records += 1;
        if c[12] == "PHANTOM" {
            f.phantom += 1;
            continue;
        }
        if c[8].parse::<i64>().unwrap() < 0 {
            f.negative_ivr += 1;
            continue;
        }
        f.valid += 1;
        if c[4] == "TT" {
            f.callback_legs += 1;
        }
        if c[9] != "0:00:00" {
            f.queued += 1;
            if c[12] == "AGENT" {
                f.answered_in_queue += 1;
                f.wait_seconds_of_answered += c[11].parse::<u64>().unwrap();
            } else {
                f.abandoned_in_queue += 1;
            }
        }
    }
    f
}

fn month(dir: &std::path::Path, file: &str, readme: (u64, u64, u64, u64, u64, f64, f64)) {
    let path = dir.join(file);
    let text = replay::read_text(&path).unwrap();
    let f = from_file(&text);
    let (valid, tt, queued, abandoned, answered, asa, abandonment) = readme;
    // the file agrees with the README's table
    assert_eq!(
        (
            f.valid,
            f.callback_legs,
            f.queued,
            f.abandoned_in_queue,
            f.answered_in_queue
        ),
        (valid, tt, queued, abandoned, answered),
        "{file}"
    );
    assert_eq!(
        format!(
            "{:.2}",
            f.wait_seconds_of_answered as f64 / f.answered_in_queue as f64
        ),
        format!("{asa:.2}")
    );

    let converted =
        replay::convert_files(&replay::anonymous_bank::AnonymousBank, &[&path]).unwrap();
    assert_eq!(converted.records, f.valid);
    per_interval(&text, &converted.events, file);
    assert_eq!(
        converted.skipped.get("phantom").copied().unwrap_or(0),
        f.phantom
    );
    assert_eq!(
        converted
            .skipped
            .get("negative_ivr_time")
            .copied()
            .unwrap_or(0),
        f.negative_ivr
    );

    let topic = "bank";
    // the mock cluster keeps about 5 MiB per partition: spread the month wide
    let broker = EmbeddedBroker::start(&[(topic, 16)]).unwrap();
    let mut p = EventProducer::new(&broker.settings(), topic, WireFormat::Protobuf).unwrap();
    for e in &converted.events {
        p.send(e).unwrap();
    }
    p.flush().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.bootstrap_servers(), topic, dir.path(), "bank");
    cfg.site.time_zone = replay::anonymous_bank::AnonymousBank
        .time_zone()
        .unwrap()
        .into();
    cfg.dimensions.queues = ["PS", "PE", "IN", "NE", "NW", "TT", "AA"]
        .map(String::from)
        .to_vec();
    let mut svc = deflect::Service::start(cfg, RunOptions { exit_at_eof: true }).unwrap();
    let summary = svc.wait_pipeline().unwrap();
    assert_eq!(summary.records, converted.events.len() as u64);
    let m = parse_metrics(&http_get(svc.addr(), "/metrics").1, "deflect_");
    svc.shutdown().unwrap();
    let s = |n: &str, l: &[(&str, &str)]| sum(&m, n, l) as u64;

    assert_eq!(s("deflect_events_total", &[("result", "late")]), 0);
    assert_eq!(
        s("deflect_potential_calls_total", &[]),
        f.valid - f.callback_legs,
        "{file}: potential calls = valid - callback legs"
    );
    assert_eq!(
        s("deflect_queue_entered_total", &[]),
        f.queued,
        "{file}: queued"
    );
    assert_eq!(
        s("deflect_queue_abandoned_total", &[]),
        f.abandoned_in_queue,
        "{file}: abandoned in queue"
    );
    assert_eq!(
        s("deflect_queue_answered_total", &[]),
        f.answered_in_queue,
        "{file}: answered in queue"
    );
    assert_eq!(
        s("deflect_queue_answered_wait_milliseconds_total", &[]),
        f.wait_seconds_of_answered * 1000,
        "{file}: waits"
    );
    let asa_ms = s("deflect_queue_answered_wait_milliseconds_total", &[]) as f64
        / s("deflect_queue_answered_total", &[]) as f64;
    assert_eq!(
        format!("{:.2}", asa_ms / 1000.0),
        format!("{asa:.2}"),
        "{file}: ASA"
    );
    let ab = 100.0 * s("deflect_queue_abandoned_total", &[]) as f64
        / s("deflect_queue_entered_total", &[]) as f64;
    assert_eq!(
        format!("{ab:.2}"),
        format!("{abandonment:.2}"),
        "{file}: abandonment %"
    );
    // per queue, the pipeline agrees with the file
    let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        if c[12] != "PHANTOM" && c[8].parse::<i64>().unwrap() >= 0 && c[9] != "0:00:00" {
            *per_queue.entry(c[4].to_string()).or_default() += 1;
        }
    }
    for (q, n) in per_queue {
        assert_eq!(
            s("deflect_queue_entered_total", &[("queue", &q)]),
            n,
            "{file}: queue {q}"
        );
    }
    eprintln!(
        "{file}: {} calls, {} events, figures match",
        f.valid,
        converted.events.len()
    );
    eprintln!("{file} heat map\n{}", heatmap_table(&m));
}

/// Weekday × hour in local time: mean potential calls per observed day, and ASA (Σ wait / Σ answered).
fn heatmap_table(m: &BTreeMap<String, f64>) -> String {
    let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let mut out = format!(
        "| hour | {} |\n|---|---|---|---|---|---|---|---|\n",
        days.join(" | ")
    );
    for h in 6..24 {
        let hs = h.to_string();
        out.push_str(&format!("| {h:02} |"));
        for d in days {
            let l = [("weekday", d), ("hour", hs.as_str())];
            let arrivals = sum(m, "deflect_heatmap_arrivals", &l);
            let observed = m
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("deflect_heatmap_days_observed{")
                        && k.contains(&format!("hour=\"{h}\""))
                        && k.contains(&format!("weekday=\"{d}\""))
                })
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            let wait = sum(m, "deflect_heatmap_answered_wait_milliseconds", &l);
            let answered = sum(m, "deflect_heatmap_answered", &l);
            if observed == 0.0 || arrivals == 0.0 {
                out.push_str(" · |");
            } else if answered == 0.0 {
                out.push_str(&format!(" {:.0} |", arrivals / observed));
            } else {
                out.push_str(&format!(
                    " {:.0} / {:.0} s |",
                    arrivals / observed,
                    wait / answered / 1000.0
                ));
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn anonymous_bank_january_and_february_match_the_data() {
    let Some(dir) = data_dir() else { return };
    // valid calls, TT legs, queued, abandoned in queue, answered in queue, ASA s, abandonment %
    month(
        &dir,
        "01_January.txt.gz",
        (31_327, 927, 16_654, 3_090, 13_564, 69.67, 18.55),
    );
    month(
        &dir,
        "02_February.txt.gz",
        (33_043, 1_047, 18_035, 3_961, 14_074, 78.54, 21.96),
    );
}

/// Per 15-minute local interval: (calls, queued, answered in queue, wait ms of those answers,
/// abandoned in queue), attributed to the interval in which each happened (calls at IVR entry, TT
/// callback legs excluded; queue entry; answer and abandon at `q_start + q_time`).
type IntervalFigures = BTreeMap<String, (u64, u64, u64, u64, u64)>;

/// Straight from the file, with local clock arithmetic (no time zone library, no engine).
fn intervals_from_file(text: &str) -> IntervalFigures {
    fn secs(clock: &str) -> i64 {
        let p: Vec<i64> = clock.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600 + p[1] * 60 + p[2]
    }
    fn key(date: jiff::civil::Date, mut sec: i64) -> String {
        let mut d = date;
        while sec >= 86_400 {
            sec -= 86_400;
            d = d.tomorrow().unwrap();
        }
        let quarter = sec / 900 * 900;
        format!("{d}T{:02}:{:02}", quarter / 3600, quarter % 3600 / 60)
    }
    let mut out = IntervalFigures::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        if c[12] == "PHANTOM" || c[8].parse::<i64>().unwrap() < 0 {
            continue;
        }
        let date = jiff::civil::Date::new(
            1900 + c[5][..2].parse::<i16>().unwrap(),
            c[5][2..4].parse().unwrap(),
            c[5][4..].parse().unwrap(),
        )
        .unwrap();
        let entry = secs(c[6]);
        if c[4] != "TT" {
            out.entry(key(date, entry)).or_default().0 += 1;
        }
        if c[9] == "0:00:00" {
            continue;
        }
        let mut q = secs(c[9]);
        if q < entry - 3600 {
            q += 86_400; // queued after midnight
        }
        let wait: i64 = c[11].parse().unwrap();
        out.entry(key(date, q)).or_default().1 += 1;
        let e = out.entry(key(date, q + wait)).or_default();
        if c[12] == "AGENT" {
            e.2 += 1;
            e.3 += wait as u64 * 1000;
        } else {
            e.4 += 1;
        }
    }
    out
}

/// The same figures from the engine's closed intervals over the replayed events.
fn per_interval(text: &str, events: &[deflect_core::Event], file: &str) {
    use deflect_core::metrics::Metric;
    let mut cfg = deflect::Config::default();
    cfg.site.time_zone = replay::anonymous_bank::TIME_ZONE.into();
    let engine_cfg = std::sync::Arc::new(cfg.engine());
    let mut e = deflect_core::engine::PartitionEngine::new(engine_cfg.clone());
    for (i, ev) in events.iter().enumerate() {
        e.ingest(i as i64, ev.clone(), 0);
    }
    let mut got = IntervalFigures::new();
    for c in e.finalize(&mut deflect_core::engine::NoStore) {
        let local = engine_cfg.intervals.format_local(c.interval.start);
        let f = (
            c.counters.total(Metric::PotentialCalls),
            c.counters.total(Metric::QueueEntered),
            c.counters.total(Metric::QueueAnswered),
            c.counters.total(Metric::QueueWaitMs),
            c.counters.total(Metric::QueueAbandoned),
        );
        if f != (0, 0, 0, 0, 0) {
            got.insert(local[..16].to_string(), f);
        }
    }
    let expected = intervals_from_file(text);
    for (k, v) in &expected {
        assert_eq!(
            got.get(k),
            Some(v),
            "{file}: interval {k} (calls, queued, answered, wait ms, abandoned)"
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{file}: intervals with queue activity"
    );
    eprintln!("{file}: {} intervals match", expected.len());
}

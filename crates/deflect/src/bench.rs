//! `deflect bench`: produce N synthetic events, then read them in the same run with (a) a raw
//! consumer that only touches each payload and (b) the full pipeline (decode, journeys, RocksDB
//! batches, offsets, interval closing), and print both rates and their ratio.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use deflect_kafka::{ClientSettings, EmbeddedBroker, Seen};
use rdkafka::error::KafkaError;
use rdkafka::Message;

use crate::config::Config;
use crate::generate::{GenParams, Generator};
use crate::pipeline::{RunOptions, Stamp};
use crate::produce::{EventProducer, WireFormat};
use crate::service::Service;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Events to produce.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Partitions of the benchmark topic (embedded broker).
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Use these brokers instead of the embedded one (the topic must exist).
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, default_value = "deflect-bench")]
    pub topic: String,
    /// The pipeline's `pipeline.max_batch` (records per poll cycle and RocksDB batch); the
    /// default is the configuration's.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Measure the raw consumer and the pipeline this many times, alternately, on the events
    /// produced once, and print every run and the medians (one run's ratio moves by a tenth
    /// with the machine's other load).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// The topic the pipeline sends its interval reports to, as `deflect run` does by default
    /// (created on the embedded broker, with one partition; on other brokers it must exist).
    /// Empty: no reports, as the benchmark ran until 2026-11-28.
    #[arg(long, default_value = "deflect-bench-reports")]
    pub reports_topic: String,
    /// Also measure the floor: what any pipeline keeping journeys in RocksDB does with a record
    /// here at the least (read in batches, decode, one RocksDB put per journey and batch, on
    /// the pipeline's threads), without journeys, windows, timers or intervals.
    #[arg(long)]
    pub floor: bool,
}

pub struct BenchResult {
    pub events: u64,
    /// The raw consumer reading in batches, as the pipeline reads (the ratio's denominator).
    pub raw_per_sec: f64,
    /// rust-rdkafka's poll loop, one record per call (the raw consumer before the eighth
    /// session), for comparison with earlier figures.
    pub raw_poll_per_sec: f64,
    /// Records over the time from the first record to the last one durable (state and offsets
    /// written, intervals closed as the watermark allows).
    pub pipeline_per_sec: f64,
    /// Records over the time from the first record until everything is closed, the re-contact
    /// timers that reach up to 7 days past the last event included.
    pub pipeline_to_end_per_sec: f64,
    /// CPU time of the process per record (every thread, the embedded broker's included), over
    /// the same spans as the rates: steadier than rates on a shared machine.
    pub raw_cpu_per_record: Duration,
    pub raw_poll_cpu_per_record: Duration,
    pub pipeline_cpu_per_record: Duration,
    /// The floor (`--floor`): records per second and CPU per record.
    pub floor: Option<(f64, Duration)>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let runs = measure(&args)?;
    if runs.len() > 1 {
        for (i, r) in runs.iter().enumerate() {
            println!(
                "run {:<3} raw {:>9.0} /s  raw poll loop {:>9.0} /s  pipeline {:>9.0} /s  \
                 ratio {:.3} (poll loop {:.3})  cpu per record raw {:.2} us, poll loop {:.2} us, \
                 pipeline {:.2} us",
                i + 1,
                r.raw_per_sec,
                r.raw_poll_per_sec,
                r.pipeline_per_sec,
                r.ratio(),
                r.ratio_poll(),
                r.raw_cpu_per_record.as_secs_f64() * 1e6,
                r.raw_poll_cpu_per_record.as_secs_f64() * 1e6,
                r.pipeline_cpu_per_record.as_secs_f64() * 1e6,
            );
            if let Some((rate, cpu)) = r.floor {
                println!(
                    "        floor {rate:>9.0} /s  ratio {:.3}  cpu per record {:.2} us",
                    rate / r.raw_per_sec,
                    cpu.as_secs_f64() * 1e6
                );
            }
        }
        for (label, f) in [
            (
                "ratio per run    ",
                BenchResult::ratio as fn(&BenchResult) -> f64,
            ),
            ("  with poll loop ", BenchResult::ratio_poll),
        ] {
            let ratios: Vec<f64> = runs.iter().map(f).collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "{label} median {:.3}, from {lo:.3} to {hi:.3} over {} runs",
                median(&ratios),
                runs.len()
            );
        }
        println!("(the lines below are medians)");
    }
    print_result(&BenchResult::median(&runs));
    Ok(())
}

fn print_result(r: &BenchResult) {
    println!("events            {}", r.events);
    // the affinity mask's size (`taskset`), as the pipeline's worker pool sizes itself
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cores             {cores:>12} (the pipeline works partitions on a thread per core, the \
         raw consumer reads on one: the ratio depends on the cores, see the README)"
    );
    println!(
        "raw consumer      {:>12.0} events/s (batch reads, as the pipeline reads)",
        r.raw_per_sec
    );
    println!(
        "raw poll loop     {:>12.0} events/s (rust-rdkafka's poll, a record per call: the raw \
         consumer before 2026-11-27's eighth session)",
        r.raw_poll_per_sec
    );
    println!(
        "deflect pipeline  {:>12.0} events/s (first record to the last one durable)",
        r.pipeline_per_sec
    );
    println!(
        "ratio             {:>12.2} (pipeline / raw); against the poll loop {:.2}",
        r.ratio(),
        r.ratio_poll()
    );
    println!(
        "to the very end   {:>12.0} events/s (also closing every remaining interval and timer, \
         up to 7 days past the last event): ratio {:.2}",
        r.pipeline_to_end_per_sec,
        r.pipeline_to_end_per_sec / r.raw_per_sec
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "cpu per record    raw {:.2} us, poll loop {:.2} us, pipeline {:.2} us (process CPU, \
         every thread): {:.1} x",
        us(r.raw_cpu_per_record),
        us(r.raw_poll_cpu_per_record),
        us(r.pipeline_cpu_per_record),
        us(r.pipeline_cpu_per_record) / us(r.raw_cpu_per_record)
    );
    if let Some((rate, cpu)) = r.floor {
        println!(
            "floor             {rate:>12.0} events/s (decode, one RocksDB put per journey and \
             batch, nothing else): ratio {:.2}, cpu per record {:.2} us",
            rate / r.raw_per_sec,
            us(cpu)
        );
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl BenchResult {
    pub fn ratio(&self) -> f64 {
        self.pipeline_per_sec / self.raw_per_sec
    }

    pub fn ratio_poll(&self) -> f64 {
        self.pipeline_per_sec / self.raw_poll_per_sec
    }

    /// Each figure's median over `runs` (so the ratio printed from it is the ratio of the
    /// median rates; the median of the runs' own ratios is printed apart).
    fn median(runs: &[BenchResult]) -> BenchResult {
        let m = |f: fn(&BenchResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let d = |f: fn(&BenchResult) -> Duration| {
            Duration::from_secs_f64(median(
                &runs.iter().map(|r| f(r).as_secs_f64()).collect::<Vec<_>>(),
            ))
        };
        BenchResult {
            events: runs.first().map_or(0, |r| r.events),
            raw_per_sec: m(|r| r.raw_per_sec),
            raw_poll_per_sec: m(|r| r.raw_poll_per_sec),
            pipeline_per_sec: m(|r| r.pipeline_per_sec),
            pipeline_to_end_per_sec: m(|r| r.pipeline_to_end_per_sec),
            raw_cpu_per_record: d(|r| r.raw_cpu_per_record),
            raw_poll_cpu_per_record: d(|r| r.raw_poll_cpu_per_record),
            pipeline_cpu_per_record: d(|r| r.pipeline_cpu_per_record),
            floor: runs.iter().all(|r| r.floor.is_some()).then(|| {
                (
                    m(|r| r.floor.map_or(0.0, |f| f.0)),
                    d(|r| r.floor.map_or(Duration::ZERO, |f| f.1)),
                )
            }),
        }
    }
}

/// Produces the events once, then measures the raw consumer and the pipeline `args.runs` times,
/// alternately.
pub fn measure(args: &BenchArgs) -> Result<Vec<BenchResult>> {
    let broker;
    let settings = match &args.brokers {
        Some(b) => ClientSettings::new(b.clone()),
        None => {
            let mut topics = vec![(args.topic.as_str(), args.partitions)];
            if !args.reports_topic.is_empty() {
                topics.push((args.reports_topic.as_str(), 1));
            }
            broker = EmbeddedBroker::start(&topics)?;
            broker.settings()
        }
    };
    let partitions =
        deflect_kafka::partition_count(&settings, &args.topic, Duration::from_secs(10))?;
    let mut g = Generator::new(GenParams {
        contacts_per_hour: 2_000.0,
        customers: 50_000,
        ..Default::default()
    })?;
    let mut p = EventProducer::new(&settings, &args.topic, WireFormat::Protobuf)?;
    let mut t = GenParams::default().start_ms;
    while p.sent < args.events {
        t += 3_600_000;
        for e in g.until(t) {
            if p.sent == args.events {
                break;
            }
            p.send(&e)?;
        }
    }
    p.flush()?;
    let n = p.sent;
    (0..args.runs)
        .map(|run| measure_once(args, &settings, partitions, n, run))
        .collect()
}

/// One raw consumer run and one pipeline run over the `n` records of the topic.
fn measure_once(
    args: &BenchArgs,
    settings: &ClientSettings,
    partitions: i32,
    n: u64,
    run: u32,
) -> Result<BenchResult> {
    // (a) raw consumers: every record fetched and its payload touched, read in batches as the
    // pipeline reads, and by rust-rdkafka's poll loop
    // (in turns: the one measured second ran a little slower)
    let batch = || raw_batch_reads(settings, &args.topic, partitions, n);
    let poll = || raw_poll_loop(settings, &args.topic, partitions, n);
    let ((raw, raw_cpu), (raw_poll, raw_poll_cpu)) = if run.is_multiple_of(2) {
        (batch()?, poll()?)
    } else {
        let p = poll()?;
        (batch()?, p)
    };

    // (b) the full pipeline, to the end of the input, every interval closed
    let dir = tempfile_dir()?;
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = settings.bootstrap_servers.clone();
    cfg.kafka.input_topic = args.topic.clone();
    cfg.kafka.group_id = format!("deflect-bench-{}-{run}", std::process::id());
    cfg.kafka.dead_letter_topic = String::new();
    cfg.kafka.late_topic = String::new();
    cfg.kafka.output_topic = args.reports_topic.clone();
    cfg.state.dir = dir.clone();
    cfg.http.listen = "127.0.0.1:0".into();
    if let Some(n) = args.max_batch {
        cfg.pipeline.max_batch = n;
    }
    let mut svc = Service::start(cfg, RunOptions { exit_at_eof: true })?;
    let summary = svc.wait_pipeline()?;
    // both rates run from the first record to the last (joining a group is not throughput)
    let (records_busy, full, records_cpu) =
        (summary.records_busy, summary.busy, summary.records_cpu);
    svc.shutdown()?;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        summary.records == n,
        "pipeline consumed {} of {n} records",
        summary.records
    );
    Ok(BenchResult {
        events: n,
        raw_per_sec: n as f64 / raw.as_secs_f64(),
        raw_poll_per_sec: n as f64 / raw_poll.as_secs_f64(),
        raw_poll_cpu_per_record: raw_poll_cpu / n as u32,
        pipeline_per_sec: n as f64 / records_busy.as_secs_f64(),
        pipeline_to_end_per_sec: n as f64 / full.as_secs_f64(),
        raw_cpu_per_record: raw_cpu / n as u32,
        pipeline_cpu_per_record: records_cpu / n as u32,
        floor: match args.floor {
            true => {
                let max_batch = args
                    .max_batch
                    .unwrap_or(Config::default().pipeline.max_batch);
                let (wall, cpu) = floor_reads(settings, &args.topic, partitions, n, max_batch)?;
                Some((n as f64 / wall.as_secs_f64(), cpu / n as u32))
            }
            false => None,
        },
    })
}

/// The floor (`--floor`): what any pipeline that keeps its journeys in RocksDB does with a
/// record here at the least, through deflect's own reader, decoder and store with the
/// pipeline's settings. It reads batches of up to `max_batch` records as the pipeline does;
/// each partition's records are decoded on a pool of a thread per core (as the pipeline's
/// partition tasks), the last payload of each journey key is kept, and a writer thread writes
/// each batch while the next one is read and decoded: one put per journey and batch, in key
/// order, and a snapshot per partition, in one RocksDB write. Nothing else: no pending events,
/// journeys, timers, intervals, series or reports. Returns the time and process CPU from the
/// first record to the last one written.
fn floor_reads(
    settings: &ClientSettings,
    topic: &str,
    partitions: i32,
    n: u64,
    max_batch: usize,
) -> Result<(Duration, Duration)> {
    use deflect_core::engine::StateChanges;
    use std::collections::HashMap;
    let cfg = Config::default();
    let format = cfg.input_format();
    let dir = tempfile_dir()?;
    let store = deflect_store::Store::open(&dir, cfg.store_options())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    let reader = deflect_kafka::BatchReader::new(settings, topic, partitions)?;
    let (mut seen, mut eof, mut started) = (0u64, 0i32, None);
    let mut records = Vec::with_capacity(max_batch);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(i32, StateChanges)>>(1);
    let written = std::thread::scope(|s| -> Result<()> {
        let writer = s.spawn(|| -> Result<()> {
            for parts in rx {
                let mut b = store.batch();
                for (p, ch) in &parts {
                    b.partition_encoded(*p, &p.to_be_bytes(), ch);
                }
                b.commit()?;
            }
            Ok(())
        });
        while seen < n && eof < partitions {
            let mut waited = false;
            while records.len() < max_batch && eof < partitions {
                let eof_before = eof;
                let mut note = |s| match s {
                    Seen::Records(_) => {
                        started.get_or_insert_with(Stamp::now);
                    }
                    Seen::End(_) => eof += 1,
                };
                let wait = Duration::from_millis(if records.is_empty() { 5_000 } else { 0 });
                let room = max_batch - records.len();
                let got = reader.read(&mut records, room, wait, &mut note);
                if got == 0 && eof == eof_before {
                    waited = records.is_empty();
                    break;
                }
            }
            if waited {
                // nothing for 5 s
                break;
            }
            seen += records.len() as u64;
            let mut by_partition: HashMap<i32, Vec<usize>> = HashMap::new();
            for (i, r) in records.iter().enumerate() {
                by_partition.entry(r.partition()).or_default().push(i);
            }
            let recs = &records;
            let parts: Vec<(i32, StateChanges)> = pool.install(|| {
                use rayon::prelude::*;
                let parts: Vec<_> = by_partition.into_iter().collect();
                parts
                    .into_par_iter()
                    .map(|(p, idx)| {
                        let mut last: HashMap<String, &[u8]> = HashMap::new();
                        let mut key = String::new();
                        for i in idx {
                            let Some(payload) = recs[i].payload() else {
                                continue;
                            };
                            if let Ok(e) = deflect_proto::decode(payload, format) {
                                key.clear();
                                e.journey_key_into(&mut key);
                                match last.get_mut(key.as_str()) {
                                    Some(v) => *v = payload,
                                    None => {
                                        last.insert(key.clone(), payload);
                                    }
                                }
                            }
                        }
                        let mut journeys: Vec<_> = (last.into_iter())
                            .map(|(k, v)| (k.into(), Some(v.to_vec())))
                            .collect();
                        journeys.sort_unstable_by(|a: &(std::sync::Arc<str>, _), b| a.0.cmp(&b.0));
                        let ch = StateChanges {
                            journeys,
                            ..Default::default()
                        };
                        (p, ch)
                    })
                    .collect()
            });
            records.clear();
            if tx.send(parts).is_err() {
                // the writer failed: its error is returned below
                break;
            }
        }
        drop(tx);
        writer.join().expect("floor writer panicked")
    });
    let end = Stamp::now();
    drop(records);
    drop(reader);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    written?;
    anyhow::ensure!(seen == n, "floor saw {seen} of {n} records");
    Ok(end.since(started.unwrap_or(end)))
}

/// The raw consumer: reads the topic in batches (`rd_kafka_consume_batch_queue`, as the
/// pipeline does) and touches each payload. Returns the time and process CPU from the first
/// record to the last.
fn raw_batch_reads(
    settings: &ClientSettings,
    topic: &str,
    partitions: i32,
    n: u64,
) -> Result<(Duration, Duration)> {
    let reader = deflect_kafka::BatchReader::new(settings, topic, partitions)?;
    let mut started = None;
    let (mut seen, mut bytes, mut eof) = (0u64, 0u64, 0i32);
    let mut records = Vec::with_capacity(4096);
    while seen < n && eof < partitions {
        let eof_before = eof;
        let mut note = |s| match s {
            Seen::Records(_) => {
                started.get_or_insert_with(Stamp::now);
            }
            Seen::End(_) => eof += 1,
        };
        let got = reader.read(&mut records, 4096, Duration::from_secs(5), &mut note);
        if got == 0 && eof == eof_before {
            // nothing for 5 s
            break;
        }
        seen += got as u64;
        bytes += (records.drain(..))
            .map(|r| r.payload().map_or(0, |b| b.len() as u64))
            .sum::<u64>();
    }
    let end = Stamp::now();
    drop(records);
    drop(reader);
    anyhow::ensure!(
        seen == n,
        "raw consumer saw {seen} of {n} records ({bytes} bytes)"
    );
    Ok(end.since(started.unwrap_or(end)))
}

/// The raw consumer of the sessions before the eighth: rust-rdkafka's `BaseConsumer::poll`, one
/// record per call.
fn raw_poll_loop(
    settings: &ClientSettings,
    topic: &str,
    partitions: i32,
    n: u64,
) -> Result<(Duration, Duration)> {
    let reader = deflect_kafka::reader(settings, topic, partitions)?;
    let mut started = Stamp::now();
    let (mut seen, mut bytes, mut eof) = (0u64, 0u64, 0i32);
    while seen < n && eof < partitions {
        match reader.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                if seen == 0 {
                    started = Stamp::now();
                }
                seen += 1;
                bytes += m.payload().map_or(0, |b| b.len() as u64);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => return Err(e).context("raw consumer (poll loop)"),
            None => break,
        }
    }
    let end = Stamp::now();
    drop(reader);
    anyhow::ensure!(
        seen == n,
        "raw consumer (poll loop) saw {seen} of {n} records ({bytes} bytes)"
    );
    Ok(end.since(started))
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "deflect-bench-{}-{}",
        std::process::id(),
        crate::pipeline::now_ms()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(raw: f64, pipeline: f64, cpu_us: u64) -> BenchResult {
        BenchResult {
            events: 10,
            raw_per_sec: raw,
            raw_poll_per_sec: raw / 2.0,
            pipeline_per_sec: pipeline,
            pipeline_to_end_per_sec: pipeline / 4.0,
            raw_cpu_per_record: Duration::from_micros(1),
            raw_poll_cpu_per_record: Duration::from_micros(2),
            pipeline_cpu_per_record: Duration::from_micros(cpu_us),
            floor: None,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn medians_are_taken_figure_by_figure() {
        let runs = [
            result(100.0, 60.0, 3),
            result(200.0, 50.0, 2),
            result(150.0, 40.0, 4),
        ];
        let m = BenchResult::median(&runs);
        assert_eq!((m.raw_per_sec, m.pipeline_per_sec), (150.0, 50.0));
        assert_eq!(m.raw_poll_per_sec, 75.0);
        assert!((m.ratio_poll() - 50.0 / 75.0).abs() < 1e-12);
        assert_eq!(m.pipeline_to_end_per_sec, 12.5);
        assert_eq!(m.pipeline_cpu_per_record, Duration::from_micros(3));
        // the runs' own ratios: 0.6, 0.25 and 0.2667; their median is not the medians' ratio
        let ratios: Vec<f64> = runs.iter().map(BenchResult::ratio).collect();
        assert!((median(&ratios) - 40.0 / 150.0).abs() < 1e-12);
        assert!((m.ratio() - 50.0 / 150.0).abs() < 1e-12);
    }
}

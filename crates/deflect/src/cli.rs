//! Command line: `run`, `demo`, `generate`, `bench`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use deflect_kafka::ClientSettings;

use crate::config::Config;
use crate::generate::{GenParams, Generator, INTENTS, QUEUES, TENANTS};
use crate::pipeline::{now_ms, RunOptions};
use crate::produce::{EventProducer, WireFormat};
use crate::service::Service;

#[derive(Parser, Debug)]
#[command(
    name = "deflect",
    version,
    about = "Contact-center call deflection analytics on Kafka"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DEFLECT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Protobuf,
    Json,
    /// Protobuf framed as Confluent's Schema Registry serializer frames it (`--schema-id`).
    RegistryProtobuf,
    /// JSON framed as Confluent's JSON Schema serializer frames it (`--schema-id`).
    RegistryJson,
}

/// How `generate` and `replay` encode the records they write.
#[derive(clap::Args, Debug)]
struct OutputFormat {
    #[arg(long, value_enum, default_value_t = FormatArg::Protobuf)]
    format: FormatArg,
    /// The schema id in each record's frame, with `--format registry-protobuf` or
    /// `registry-json` (the id the subject's schema has in your registry).
    #[arg(long, default_value_t = 1)]
    schema_id: u32,
}

impl OutputFormat {
    fn wire(&self) -> WireFormat {
        match self.format {
            FormatArg::Protobuf => WireFormat::Protobuf,
            FormatArg::Json => WireFormat::Json,
            FormatArg::RegistryProtobuf => WireFormat::RegistryProtobuf(self.schema_id),
            FormatArg::RegistryJson => WireFormat::RegistryJson(self.schema_id),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Erlang C / Erlang A staffing for one interval's demand.
    Staffing(crate::staffing::StaffingArgs),
    /// A state directory's partitions; move partitions' state to another instance's directory
    /// (export, import, drop), with no deflect running on either.
    #[command(subcommand)]
    State(crate::state::StateCommand),
    /// Run the pipeline against Kafka brokers.
    Run {
        /// TOML configuration (every key optional; `DEFLECT__SECTION__KEY` overrides).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop when every assigned partition is consumed to its end, after closing every
        /// interval (replays).
        #[arg(long)]
        exit_at_eof: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { file: Option<PathBuf> },
    /// Write synthetic contact-center traffic to a topic.
    Generate {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value = "contact-events")]
        topic: String,
        /// Mean potential calls per hour (event time) over a week.
        #[arg(long, default_value_t = 600.0)]
        rate: f64,
        /// Event-time span to generate (e.g. `2days`, `6h`).
        #[arg(long, default_value = "1day", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// First event time (RFC 3339); default: now minus the duration.
        #[arg(long)]
        start: Option<jiff::Timestamp>,
        #[arg(long, default_value_t = 200_000)]
        customers: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        #[command(flatten)]
        format: OutputFormat,
        /// A librdkafka property of the producer, `KEY=VALUE` (repeatable): `security.protocol`,
        /// `sasl.*`, `ssl.*`, `compression.type`… as in `kafka.properties`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    /// Embedded broker + synthetic traffic + the pipeline, with live /metrics.
    Demo {
        #[arg(long, default_value = "127.0.0.1:9898")]
        listen: String,
        /// Days of history written before live traffic starts.
        #[arg(long, default_value_t = 2)]
        history_days: u32,
        /// Event time runs this many times faster than the wall clock after the history.
        #[arg(long, default_value_t = 60)]
        speed: u32,
        #[arg(long, default_value_t = 600.0)]
        rate: f64,
        /// State directory (default: a fresh temporary directory, removed when the demo stops).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Raw consumer vs full pipeline on the same topic, in one run.
    Bench(crate::bench::BenchArgs),
    /// Peak memory of the state path with many distinct customers (no Kafka).
    BenchState(crate::bench_state::BenchStateArgs),
    /// Host librdkafka's mock Kafka cluster in this process (tests and local experiments); prints
    /// `bootstrap=HOST:PORT` and serves until stdin closes or a signal arrives.
    Broker {
        /// Topics to create, as NAME:PARTITIONS.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
    },
    /// Turn real contact-center data into contact events, sorted by event time, and produce them.
    Replay {
        /// Source format: `anonymous-bank` (the 1999 bank calls, plain or gzip) or `connect-ctr`
        /// (Amazon Connect contact records: JSON lines, arrays or back-to-back objects).
        source: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value = "contact-events")]
        topic: String,
        #[command(flatten)]
        format: OutputFormat,
        /// A librdkafka property of the producer, `KEY=VALUE` (repeatable): `security.protocol`,
        /// `sasl.*`, `ssl.*`, `compression.type`… as in `kafka.properties`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
}

/// `KEY=VALUE` of `-X`.
fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Brokers and `-X` properties as client settings.
fn client_settings(brokers: String, properties: Vec<(String, String)>) -> ClientSettings {
    let mut s = ClientSettings::new(brokers);
    s.properties.extend(properties);
    s
}

pub fn main() -> ExitCode {
    // before the allocator has anything worth a huge page
    let huge_pages = crate::os::disable_transparent_huge_pages();
    let purge_delay_ms = crate::os::delay_allocator_purges();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    tracing::debug!(?huge_pages, purge_delay_ms, "allocator settings");
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deflect: error: {}", crate::error_line(&e));
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(f: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEFLECT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match f {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

fn dispatch(c: Command) -> Result<()> {
    match c {
        Command::Run {
            config,
            exit_at_eof,
        } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            run_until_signal(cfg, RunOptions { exit_at_eof }, None)
        }
        Command::CheckConfig { file } => {
            let cfg = Config::load(file.as_deref(), std::env::vars())?;
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Generate {
            brokers,
            topic,
            rate,
            duration,
            start,
            customers,
            seed,
            time_zone,
            format,
            properties,
        } => {
            let dur = duration.as_millis() as i64;
            let start_ms = start.map_or(now_ms() - dur, |t| t.as_millisecond());
            let mut g = Generator::new(GenParams {
                seed,
                start_ms,
                customers,
                contacts_per_hour: rate,
                time_zone,
                ..Default::default()
            })?;
            let settings = client_settings(brokers, properties);
            let mut p = EventProducer::new(&settings, &topic, format.wire())?;
            let t0 = Instant::now();
            let mut t = start_ms;
            while t < start_ms + dur {
                t = (t + 3_600_000).min(start_ms + dur);
                for e in g.until(t) {
                    p.send(&e)?;
                }
            }
            p.flush()?;
            tracing::info!(events = p.sent, topic = %topic, seconds = t0.elapsed().as_secs_f64(), "generated");
            Ok(())
        }
        Command::Demo {
            listen,
            history_days,
            speed,
            rate,
            state_dir,
        } => demo(listen, history_days, speed, rate, state_dir),
        Command::Bench(args) => crate::bench::run(args),
        Command::BenchState(args) => crate::bench_state::run(args),
        Command::Staffing(args) => {
            print!("{}", crate::staffing::report(&args)?);
            Ok(())
        }
        Command::State(c) => {
            print!("{}", crate::state::run(&c)?);
            Ok(())
        }
        Command::Broker { topics } => broker(&topics),
        Command::Replay {
            source,
            files,
            brokers,
            topic,
            format,
            properties,
        } => replay(
            &source,
            &files,
            client_settings(brokers, properties),
            &topic,
            format.wire(),
        ),
    }
}

/// Runs until SIGINT/SIGTERM (finishing the batch in hand, flushing and committing) or, with
/// `exit_at_eof`, the end of the input.
fn run_until_signal(
    cfg: Config,
    opts: RunOptions,
    extra_stop: Option<Arc<AtomicBool>>,
) -> Result<()> {
    let mut svc = Service::start(cfg, opts)?;
    tracing::info!(metrics = %format!("http://{}/metrics", svc.addr()), "serving");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .context("cannot install signal handler")?;
    while !stop.load(Ordering::Relaxed)
        && !svc.pipeline_finished()
        && !extra_stop
            .as_ref()
            .is_some_and(|x| x.load(Ordering::Relaxed))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    if svc.pipeline_finished() {
        let r = svc.wait_pipeline();
        svc.shutdown()?;
        return r.map(|_| ());
    }
    tracing::info!("stopping");
    svc.shutdown().map(|_| ())
}

fn demo(
    listen: String,
    history_days: u32,
    speed: u32,
    rate: f64,
    state_dir: Option<PathBuf>,
) -> Result<()> {
    let topic = "contact-events";
    let defaults = Config::default();
    let broker = deflect_kafka::EmbeddedBroker::start(&[
        (topic, 4),
        (defaults.kafka.dead_letter_topic.as_str(), 1),
        (defaults.kafka.late_topic.as_str(), 1),
        (defaults.kafka.output_topic.as_str(), 4),
    ])
    .context("cannot start the embedded broker")?;
    // without --state-dir, the state lives as long as the embedded broker it refers to: in a
    // directory of its own, removed when the demo stops
    let temporary = state_dir.is_none();
    let dir = state_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("deflect-demo-{}", std::process::id()))
    });
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = broker.bootstrap_servers().to_string();
    cfg.kafka.input_topic = topic.into();
    cfg.state.dir = dir.clone();
    cfg.http.listen = listen;
    cfg.dimensions.tenants = TENANTS.iter().map(|s| s.to_string()).collect();
    cfg.dimensions.intents = INTENTS.iter().map(|s| s.to_string()).collect();
    cfg.dimensions.queues = QUEUES.iter().map(|s| s.to_string()).collect();
    cfg.validate()?;

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let settings = broker.settings();
    let history = i64::from(history_days) * 86_400_000;
    let start = (now_ms() - history) / 3_600_000 * 3_600_000;
    let generator = std::thread::Builder::new()
        .name("demo-traffic".into())
        .spawn(move || -> Result<()> {
            let mut g = Generator::new(GenParams {
                start_ms: start,
                contacts_per_hour: rate,
                ..Default::default()
            })?;
            let mut p = EventProducer::new(&settings, topic, WireFormat::Protobuf)?;
            let mut t = start;
            let live_from = start + history;
            while t < live_from && !s.load(Ordering::Relaxed) {
                t += 600_000;
                for e in g.until(t) {
                    p.send(&e)?;
                }
            }
            p.flush()?;
            tracing::info!(events = p.sent, "history written; live traffic follows");
            let wall0 = Instant::now();
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let target = live_from + wall0.elapsed().as_millis() as i64 * i64::from(speed);
                for e in g.until(target) {
                    p.send(&e)?;
                }
            }
            p.flush()
        })?;
    println!(
        "deflect demo: embedded Kafka broker at {}",
        broker.bootstrap_servers()
    );
    println!("deflect demo: state in {}", dir.display());
    println!(
        "deflect demo: metrics at http://{}/metrics  (also /healthz, /readyz); Ctrl-C stops",
        cfg.http.listen
    );
    let r = run_until_signal(cfg, RunOptions::default(), None);
    stop.store(true, Ordering::Relaxed);
    let g = generator
        .join()
        .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
    if temporary {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the demo's state");
        }
    }
    r.and(g)
}

fn replay(
    source: &str,
    files: &[PathBuf],
    settings: ClientSettings,
    topic: &str,
    format: WireFormat,
) -> Result<()> {
    let adapter = crate::replay::adapter(source).with_context(|| {
        format!("unknown replay source {source:?} (known: anonymous-bank, connect-ctr)")
    })?;
    let converted = crate::replay::convert_files(adapter.as_ref(), files)?;
    let mut p = EventProducer::new(&settings, topic, format)?;
    let bar = indicatif::ProgressBar::new(converted.events.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .expect("valid template"),
    );
    for (i, e) in converted.events.iter().enumerate() {
        p.send(e)?;
        if i % 1000 == 0 {
            bar.set_position(i as u64);
        }
    }
    p.flush()?;
    bar.finish_and_clear();
    println!(
        "replayed {} records as {} events to {topic}",
        converted.records,
        converted.events.len()
    );
    for (reason, n) in &converted.skipped {
        println!("skipped {n} records: {reason}");
    }
    if let Some(tz) = adapter.time_zone() {
        println!("run the pipeline with site.time_zone = {tz:?}");
    }
    Ok(())
}

fn broker(topics: &[String]) -> Result<()> {
    let parsed: Vec<(String, i32)> = topics
        .iter()
        .map(|t| {
            let (name, n) = t
                .rsplit_once(':')
                .with_context(|| format!("--topic {t:?}: expected NAME:PARTITIONS"))?;
            let n: i32 = n
                .parse()
                .with_context(|| format!("--topic {t:?}: partitions must be a number"))?;
            Ok((name.to_string(), n))
        })
        .collect::<Result<_>>()?;
    let refs: Vec<(&str, i32)> = parsed.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let b = deflect_kafka::EmbeddedBroker::start(&refs).context("cannot start the mock cluster")?;
    println!("bootstrap={}", b.bootstrap_servers());
    use std::io::Write;
    std::io::stdout().flush()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .context("cannot install signal handler")?;
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        s.store(true, Ordering::Relaxed);
    });
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

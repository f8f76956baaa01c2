//! End to end, in one run: N events produced into the embedded broker, then read by a raw consumer
//! and by the full pipeline; prints both rates and the ratio (`DEFLECT_BENCH_EVENTS` sets N).

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let events = std::env::var("DEFLECT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let args = deflect::bench::BenchArgs {
        events,
        partitions: 8,
        brokers: None,
        topic: "deflect-bench".into(),
        max_batch: None,
    };
    if let Err(e) = deflect::bench::run(args) {
        eprintln!("bench failed: {e:#}");
        std::process::exit(1);
    }
}

//! End to end, in one run: N events produced into the embedded broker, then read by a raw consumer
//! and by the full pipeline; prints both rates and the ratio (`DEFLECT_BENCH_EVENTS` sets N).
//! `DEFLECT_BENCH_FLOOR` set: also the floor, as `deflect bench --floor`.

// as in the binary (`crates/deflect/src/main.rs` and `cli::main`)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    deflect::os::disable_transparent_huge_pages();
    deflect::os::delay_allocator_purges();
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
        runs: 1,
        reports_topic: "deflect-bench-reports".into(),
        floor: std::env::var_os("DEFLECT_BENCH_FLOOR").is_some(),
    };
    if let Err(e) = deflect::bench::run(args) {
        eprintln!("bench failed: {e:#}");
        std::process::exit(1);
    }
}

//! The criterion engine workload, run once: compare instruction counts of two builds with
//! `valgrind --tool=cachegrind --cache-sim=no $CARGO_TARGET_DIR/release/examples/engine_once`.

// the allocator of the `deflect` binary, so that the counts are the binary's
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let events = deflect_benches::engine_events();
    let n = events.len();
    let series = deflect_benches::run_engine(&deflect_benches::engine_config(), events, |_, _| {});
    println!("{n} events, {series} counter series");
}

//! The criterion engine workload, run once: compare instruction counts of two builds with
//! `valgrind --tool=cachegrind --cache-sim=no $CARGO_TARGET_DIR/release/examples/engine_once`.

fn main() {
    let events = deflect_benches::engine_events();
    let n = events.len();
    let series = deflect_benches::run_engine(&deflect_benches::engine_config(), events);
    println!("{n} events, {series} counter series");
}

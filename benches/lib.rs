//! The workloads the benchmarks share. `benches/engine.rs` times the core engine with criterion;
//! `examples/engine_once.rs` runs the same workload once, for instruction counts under
//! `valgrind --tool=cachegrind` (stable on a shared, noisy machine where timings drift).

use std::sync::Arc;

use deflect::generate::{GenParams, Generator};
use deflect_core::engine::{EngineConfig, NoStore, PartitionEngine, StateChanges};
use deflect_core::journey::JourneyConfig;
use deflect_core::time::IntervalSpec;
use deflect_core::Event;

/// Twelve hours of synthetic traffic (2,000 contacts per hour, 20,000 customers).
pub fn engine_events() -> Vec<Event> {
    let params = GenParams {
        contacts_per_hour: 2_000.0,
        customers: 20_000,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).expect("valid generator parameters");
    g.until(params.start_ms + 12 * 3_600_000)
}

pub fn engine_config() -> Arc<EngineConfig> {
    Arc::new(EngineConfig {
        intervals: IntervalSpec::new("Europe/London", 15).expect("valid zone"),
        grace_ms: 300_000,
        idle_timeout_ms: i64::MAX / 4,
        heatmap_days: 28,
        heatmap_by_interval: false,
        journey: JourneyConfig::new(Default::default()),
    })
}

/// Ingests `events` in order, advancing and taking the state changes every 1,000 events (handed
/// to `on_batch` with the engine), then closes everything. Returns the number of counter series
/// (so nothing is optimised away).
pub fn run_engine(
    cfg: &Arc<EngineConfig>,
    events: Vec<Event>,
    mut on_batch: impl FnMut(&PartitionEngine, StateChanges),
) -> usize {
    let mut e = PartitionEngine::new(cfg.clone());
    for (i, ev) in events.into_iter().enumerate() {
        e.ingest(i as i64, ev, 0);
        if i % 1000 == 999 {
            e.advance(0, &mut NoStore);
            let ch = e.take_changes(usize::MAX);
            on_batch(&e, ch);
        }
    }
    e.finalize(&mut NoStore);
    e.totals().0.len()
}

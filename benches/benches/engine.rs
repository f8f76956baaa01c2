//! The core engine alone: ingest synthetic traffic, advance watermarks, close intervals, fire
//! timers. No Kafka, no RocksDB: the ceiling the pipeline can reach.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use deflect::generate::{GenParams, Generator};
use deflect_core::engine::{EngineConfig, NoStore, PartitionEngine};
use deflect_core::journey::JourneyConfig;
use deflect_core::time::IntervalSpec;

fn engine(c: &mut Criterion) {
    let params = GenParams {
        contacts_per_hour: 2_000.0,
        customers: 20_000,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).unwrap();
    let events = g.until(params.start_ms + 12 * 3_600_000);
    let cfg = Arc::new(EngineConfig {
        intervals: IntervalSpec::new("Europe/London", 15).unwrap(),
        grace_ms: 300_000,
        idle_timeout_ms: i64::MAX / 4,
        heatmap_days: 28,
        heatmap_by_interval: false,
        journey: JourneyConfig::new(Default::default()),
    });
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("ingest_advance_finalize", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                let mut e = PartitionEngine::new(cfg.clone());
                for (i, ev) in evs.into_iter().enumerate() {
                    e.ingest(i as i64, ev, 0);
                    if i % 1000 == 999 {
                        e.advance(0, &mut NoStore);
                        let _ = e.take_changes(usize::MAX);
                    }
                }
                e.finalize(&mut NoStore);
                e.totals().0.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode_protobuf", |b| {
        let encoded: Vec<Vec<u8>> = events.iter().map(deflect_proto_encode).collect();
        b.iter(|| {
            encoded
                .iter()
                .filter(|bytes| deflect_proto_decode(bytes))
                .count()
        })
    });
    group.finish();
}

fn deflect_proto_encode(e: &deflect_core::Event) -> Vec<u8> {
    deflect::produce::WireFormat::Protobuf.encode(e)
}

fn deflect_proto_decode(b: &[u8]) -> bool {
    deflect::produce::decode(b).is_ok()
}

criterion_group!(benches, engine);
criterion_main!(benches);

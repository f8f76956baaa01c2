//! The core engine alone: ingest synthetic traffic, advance watermarks, close intervals, fire
//! timers. No Kafka, no RocksDB: the ceiling the pipeline can reach.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn engine(c: &mut Criterion) {
    let events = deflect_benches::engine_events();
    let cfg = deflect_benches::engine_config();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("ingest_advance_finalize", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| deflect_benches::run_engine(&cfg, evs, |_, _| {}),
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

//! The engine workload's events encoded as protobuf, then decoded once each: compare instruction
//! counts of two builds with `valgrind --tool=cachegrind --cache-sim=no
//! $CARGO_TARGET_DIR/release/examples/decode_once` (encoding and generation are counted too, and
//! are the same in both).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let records: Vec<Vec<u8>> = deflect_benches::engine_events()
        .iter()
        .map(deflect_proto::encode_protobuf)
        .collect();
    let mut ids = 0usize;
    for r in &records {
        let e = deflect_proto::decode_protobuf(r).expect("the generator's events decode");
        ids += e.event_id.len();
    }
    println!(
        "{} records decoded ({ids} bytes of event ids)",
        records.len()
    );
}

//! What moving a partition's state costs (`deflect state export` / `import`): builds a real
//! store from the engine on synthetic traffic (one partition, its state as a live pipeline leaves
//! it mid-stream), then times reading every key of the partition once (`deflect state list`), its
//! export to a file and the import of that file into an empty store, and prints the latter two
//! against the first. `cargo run --release -p deflect-benches --example handoff_once --
//! [CONTACTS_PER_HOUR] [HOURS]` (default 20,000 contacts an hour over 24 hours, a million
//! customers).

use std::time::Instant;

use deflect::generate::{GenParams, Generator};
use deflect_store::{Store, StoreOptions};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<f64>().expect("a number"));
    let per_hour = args.next().unwrap_or(20_000.0);
    let hours = args.next().unwrap_or(24.0) as i64;
    let params = GenParams {
        contacts_per_hour: per_hour,
        customers: 1_000_000,
        ..Default::default()
    };
    let mut g = Generator::new(params.clone()).expect("valid generator parameters");
    let events = g.until(params.start_ms + hours * 3_600_000);
    let n = events.len();

    let dir = tempfile::tempdir().expect("temporary directory");
    let src = Store::open(&dir.path().join("src"), StoreOptions::default()).expect("store");
    deflect_benches::run_engine(&deflect_benches::engine_config(), events, |e, ch| {
        let mut b = src.batch();
        b.partition(0, e.snapshot(), &ch);
        b.commit().expect("write");
    });

    // every key read once (`deflect state list`): what any move has to do at least
    let t = Instant::now();
    let held = src.partitions().expect("partitions");
    let scan = t.elapsed();
    let journeys = held.first().map_or(0, |h| h.size.journeys);

    let file = dir.path().join("p0.state");
    let t = Instant::now();
    let moved = src.export(&[0], &file).expect("export");
    let export = t.elapsed();
    let dst = Store::open(&dir.path().join("dst"), StoreOptions::default()).expect("store");
    let t = Instant::now();
    dst.import(&file, false).expect("import");
    let import = t.elapsed();
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    assert_eq!(
        dst.partitions().expect("partitions"),
        held,
        "moved as it was"
    );

    println!(
        "{n} events, {journeys} journeys stored, {} keys ({} bytes), file {size} bytes",
        moved[0].size.keys, moved[0].size.bytes
    );
    println!(
        "list {:.3} s, export {:.3} s ({:.1} x list), import {:.3} s ({:.1} x list)",
        scan.as_secs_f64(),
        export.as_secs_f64(),
        export.as_secs_f64() / scan.as_secs_f64(),
        import.as_secs_f64(),
        import.as_secs_f64() / scan.as_secs_f64()
    );
}

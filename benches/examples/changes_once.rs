//! What the engine hands to the store on the criterion workload, by kind: how many journeys,
//! timers and cohorts each batch of 1,000 events writes and how many bytes (the writer's
//! work is roughly one memtable insert per put or delete). `cargo run --release -p
//! deflect-benches --example changes_once`.

#[derive(Default)]
struct Tally {
    batches: usize,
    journey_puts: usize,
    journey_deletes: usize,
    journey_bytes: usize,
    timer_puts: usize,
    timer_deletes: usize,
    timer_range_deletes: usize,
    cohort_writes: usize,
    cohort_bytes: usize,
}

fn main() {
    let events = deflect_benches::engine_events();
    let n = events.len();
    let (mut t, mut snapshot) = (Tally::default(), 0);
    deflect_benches::run_engine(&deflect_benches::engine_config(), events, |e, ch| {
        t.batches += 1;
        for (k, v) in &ch.journeys {
            match v {
                Some(v) => {
                    t.journey_puts += 1;
                    t.journey_bytes += k.len() + v.len();
                }
                None => t.journey_deletes += 1,
            }
        }
        t.timer_puts += ch.timers_put.len();
        t.timer_deletes += ch.timers_del.len();
        t.timer_range_deletes += usize::from(ch.timers_fired_before.is_some());
        t.cohort_writes += ch.cohorts.len();
        t.cohort_bytes += (ch.cohorts.iter())
            .map(|c| c.1.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        snapshot = deflect_core::codec::encode(e.snapshot()).len();
    });
    println!("{n} events in {} batches", t.batches);
    println!(
        "journeys  {} puts ({} bytes), {} deletes",
        t.journey_puts, t.journey_bytes, t.journey_deletes
    );
    println!(
        "timers    {} puts, {} deletes, {} range deletes (of fired timers)",
        t.timer_puts, t.timer_deletes, t.timer_range_deletes
    );
    println!(
        "cohorts   {} writes ({} bytes)",
        t.cohort_writes, t.cohort_bytes
    );
    println!("snapshot  {snapshot} bytes at the last batch, rewritten with every batch");
}

use deflect_core::engine::{NoStore, PartitionEngine};
fn main() {
    let events = deflect_benches::engine_events();
    let n = events.len();
    let cfg = deflect_benches::engine_config();
    let mut e = PartitionEngine::new(cfg.clone());
    let mut jdel = 0;
    let mut bdel = 0;
    let (mut j, mut jb, mut tp, mut td, mut bb, mut co, mut cob, mut batches) =
        (0, 0, 0, 0, 0, 0, 0, 0);
    for (i, ev) in events.into_iter().enumerate() {
        e.ingest(i as i64, ev, 0);
        if i % 1000 == 999 {
            e.advance(0, &mut NoStore);
            let ch = e.take_changes(usize::MAX);
            batches += 1;
            j += ch.journeys.len();
            jdel += ch.journeys.iter().filter(|x| x.1.is_none()).count();
            bdel += ch.pending_blobs_del.len();
            jb += ch
                .journeys
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>();
            tp += ch.timers_put.len();
            td += ch.timers_del.len();
            bb += ch
                .pending_blobs_put
                .iter()
                .map(|b| b.1.len())
                .sum::<usize>();
            co += ch.cohorts.len();
            cob += ch
                .cohorts
                .iter()
                .map(|c| c.1.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>();
        }
    }
    let snap = deflect_core::codec::encode(e.snapshot());
    println!("journey deletes {jdel}, blob deletes {bdel}");
    println!("{n} events {batches} batches: journeys {j} ({jb} B), timers put {tp} del {td}, blob {bb} B, cohorts {co} ({cob} B), snapshot {} B", snap.len());
}

//! `deflect bench-state`: memory of the state path with many distinct customers.
//!
//! N distinct customers, one contact each (start, IVR, then deflected or queued and answered, end),
//! spread over days of event time, go through the pipeline's state path exactly as `deflect run`
//! drives it: partition engines, journey loads from RocksDB, one WriteBatch per poll of records,
//! intervals closed by the watermark, the journey cache trimmed to `state.journey_cache_entries`.
//! Kafka is left out (librdkafka's own buffers are a separate, configured overhead). It reports the
//! peak resident set size against the configured budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use deflect_core::engine::PartitionEngine;
use deflect_core::event::{Channel, Direction, Event, EventKind, Initiation, IvrExitReason};
use deflect_store::Store;

use crate::config::Config;

#[derive(Args, Debug, Clone)]
pub struct BenchStateArgs {
    /// Distinct customers (one contact each).
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    /// Partitions (engines) the customers are spread over.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Days of event time the contacts are spread over.
    #[arg(long, default_value_t = 10)]
    pub days: u64,
    /// Records per batch (one RocksDB write); the default is `pipeline.max_batch`'s.
    #[arg(long, default_value_t = crate::config::PipelineConfig::default().max_batch)]
    pub batch: usize,
    /// Decoded journeys kept per partition between batches (`state.journey_cache_entries`).
    #[arg(long, default_value_t = 10_000)]
    pub journey_cache_entries: usize,
    /// Shared block cache, MiB (`state.block_cache_mb`).
    #[arg(long, default_value_t = 128)]
    pub block_cache_mb: usize,
    /// Memtable cap, MiB (`state.write_buffer_mb`).
    #[arg(long, default_value_t = 64)]
    pub write_buffer_mb: usize,
}

/// Peak and current resident set size of this process, bytes (Linux).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The events of customer `i`'s one contact, starting at `t`.
fn contact(i: u64, t: i64) -> Vec<Event> {
    let ev = |k: u64, dt: i64, kind: EventKind| Event {
        event_id: format!("s{i}-{k}").into(),
        tenant: "acme".into(),
        contact_id: format!("k{i}").into(),
        parent_contact_id: None,
        customer_id: Some(format!("cust-{i:08}").into()),
        channel: Channel::Voice,
        occurred_at: t + dt,
        intent: None,
        queue: None,
        kind,
    };
    let mut v = vec![
        ev(
            0,
            0,
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
        ),
        ev(
            1,
            2_000,
            EventKind::IvrEntered {
                node: "main".into(),
            },
        ),
    ];
    if i.is_multiple_of(3) {
        v.push(ev(
            2,
            60_000,
            EventKind::QueueEntered {
                queue: "cards".into(),
                priority: 0,
            },
        ));
        v.push(ev(
            3,
            90_000,
            EventKind::AgentConnected {
                context_received: true,
            },
        ));
    } else {
        v.push(ev(
            2,
            60_000,
            EventKind::IvrExited {
                node: "main".into(),
                reason: IvrExitReason::SelfServed,
            },
        ));
    }
    v.push(ev(
        9,
        240_000,
        EventKind::ContactEnded {
            party: None,
            resolved: true,
        },
    ));
    v
}

pub fn run(args: BenchStateArgs) -> Result<()> {
    let mut cfg = Config::default();
    cfg.state.journey_cache_entries = args.journey_cache_entries;
    cfg.state.block_cache_mb = args.block_cache_mb;
    cfg.state.write_buffer_mb = args.write_buffer_mb;
    let engine_cfg = Arc::new(cfg.engine());
    let dir = std::env::temp_dir().join(format!("deflect-bench-state-{}", std::process::id()));
    // `state.sync_writes` is off by default, as `deflect run`'s
    let store =
        Store::open(&dir, cfg.store_options()).context("cannot open the benchmark state store")?;
    let (_, rss_start) = rss();
    let parts = args.partitions.max(1);
    let mut engines: BTreeMap<i32, PartitionEngine> = (0..parts as i32)
        .map(|p| (p, PartitionEngine::new(engine_cfg.clone())))
        .collect();
    let mut offsets = vec![0i64; parts as usize];
    let start_ms: i64 = 1_704_067_200_000; // 2024-01-01T00:00Z
    let span = args.days as i64 * 86_400_000;
    let step = span / args.customers.max(1) as i64;
    let started = Instant::now();
    let mut events = 0u64;
    // contacts in start order; each contact's events are delivered together (within 4 minutes)
    let mut batch = Vec::with_capacity(args.batch);
    let flush = |batch: &mut Vec<Event>,
                 engines: &mut BTreeMap<i32, PartitionEngine>,
                 offsets: &mut Vec<i64>|
     -> Result<()> {
        for e in batch.drain(..) {
            let p =
                (fxhash(e.customer_id.as_deref().unwrap_or_default()) % u64::from(parts)) as i32;
            let o = offsets[p as usize];
            offsets[p as usize] += 1;
            engines.get_mut(&p).expect("engine").ingest(o, e, 0);
        }
        let mut wb = store.batch();
        for (p, e) in engines.iter_mut() {
            let mut reader = store.journeys(*p);
            e.advance(0, &mut reader);
            reader.into_result()?;
            let _ = e.take_reports();
            let _ = e.take_rejected();
            let ch = e.take_changes(cfg.state.journey_cache_entries);
            wb.partition(*p, e.snapshot(), &ch);
        }
        wb.commit()?;
        Ok(())
    };
    for i in 0..args.customers {
        for e in contact(i, start_ms + i as i64 * step) {
            batch.push(e);
            events += 1;
        }
        if batch.len() >= args.batch {
            flush(&mut batch, &mut engines, &mut offsets)?;
        }
        if i.is_multiple_of(100_000) {
            let (_, now) = rss();
            tracing::info!(customers = i, rss_mib = now >> 20, "bench-state progress");
        }
    }
    flush(&mut batch, &mut engines, &mut offsets)?;
    // the end of the input: everything closes, one slice at a time, written as `deflect run`
    // writes it
    for (p, e) in engines.iter_mut() {
        loop {
            let mut reader = store.journeys(*p);
            let more = e.finalize_step(&mut reader).is_some();
            reader.into_result()?;
            let _ = e.take_reports();
            let _ = e.take_rejected();
            let ch = e.take_changes(cfg.state.journey_cache_entries);
            let mut wb = store.batch();
            wb.partition(*p, e.snapshot(), &ch);
            wb.commit()?;
            if !more {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (peak, _) = rss();
    let budget = ((cfg.state.block_cache_mb + cfg.state.write_buffer_mb) as u64) << 20;
    let potential: u64 = engines
        .values()
        .map(|e| {
            e.totals()
                .total(deflect_core::metrics::Metric::PotentialCalls)
        })
        .sum();
    let live = store.live_size_bytes();
    let cache_used = store.block_cache_usage_bytes();
    let readers = store.table_readers_bytes();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        potential == args.customers,
        "{potential} potential calls counted for {} customers",
        args.customers
    );
    println!("customers              {}", args.customers);
    println!(
        "events                 {events} in {secs:.1} s ({:.0}/s)",
        events as f64 / secs
    );
    println!("partitions             {parts}");
    println!(
        "journey cache          {} entries per partition",
        args.journey_cache_entries
    );
    println!("state on disk (live)   {} MiB", live >> 20);
    println!(
        "RocksDB cache in use   {} MiB at the end (memtables charged to it included)",
        cache_used >> 20
    );
    println!(
        "RocksDB table readers  {} MiB outside the cache",
        readers >> 20
    );
    println!("RSS before             {} MiB", rss_start >> 20);
    println!("peak RSS               {} MiB", peak >> 20);
    println!(
        "RocksDB budget         {} MiB (block cache {} + write buffers {})",
        budget >> 20,
        cfg.state.block_cache_mb,
        cfg.state.write_buffer_mb
    );
    println!(
        "peak RSS - budget      {} MiB (journey cache, pending events, process)",
        (peak.saturating_sub(budget)) >> 20
    );
    Ok(())
}

/// A stable hash of the key (the benchmark's stand-in for Kafka's key partitioner).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

//! The consuming loop: one dedicated thread polls Kafka and hands each poll's records to the
//! partition engines (tasks on a pool of one thread per core), then polls the next poll's records
//! while they work. Everything a poll produced (state and consumed offsets of every partition) is
//! written in one RocksDB batch by a writer thread while the next poll is decoded, ingested and
//! advanced (an advance waits for that write before it reads what the write may change), and
//! offsets are committed to Kafka only after it. RocksDB and librdkafka calls never run on an
//! async worker thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use deflect_core::engine::{
    ClosedInterval, EngineConfig, ExpectedStart, Ingest, PartitionEngine, StateChanges,
};
use deflect_core::event::Millis;
use deflect_core::watermark::instance_watermark;
use deflect_kafka::{
    Assignment, At, GroupConsumer, Header, OutputProducer, OwnedHeaders, Record, Seen,
};
use deflect_store::{RecordMark, Store};

use crate::config::Config;
use crate::os::process_cpu;
use crate::telemetry;

/// How long a start (or an assignment) waits for Kafka to return the last records the restored
/// partitions' states read, to check their logs against them.
const LOG_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Liveness and readiness, shared with the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    pub assigned: AtomicUsize,
    pub restored: AtomicBool,
    /// Wall-clock ms of the last completed loop iteration.
    pub last_loop_ms: AtomicI64,
    pub records: AtomicI64,
    /// Instance watermark (event-time ms; `i64::MIN` before the first event).
    pub watermark_ms: AtomicI64,
    /// Wall-clock ms when the instance watermark last moved forward.
    pub watermark_moved_ms: AtomicI64,
    /// Longest the watermark may stand still before the instance reports not ready (ms; 0 = no
    /// limit).
    pub watermark_stall_ms: AtomicI64,
}

/// Why an instance is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    NoPartitions,
    Restoring,
    LoopStalled,
    WatermarkStalled,
}

impl NotReady {
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::NoPartitions => "no partitions assigned",
            NotReady::Restoring => "restoring partition state",
            NotReady::LoopStalled => "the consuming loop has not run for 30 s",
            NotReady::WatermarkStalled => {
                "the watermark has not advanced for http.ready_watermark_stall"
            }
        }
    }
}

impl Health {
    /// Ready: partitions assigned, their state restored, the loop running, and the watermark
    /// advancing (an idle partition's watermark advances with the wall clock, so a quiet night
    /// still counts as advancing; an instance that never saw an event is not held back).
    pub fn check(&self, now_ms: i64) -> Result<(), NotReady> {
        if self.assigned.load(Ordering::Relaxed) == 0 {
            return Err(NotReady::NoPartitions);
        }
        if !self.restored.load(Ordering::Relaxed) {
            return Err(NotReady::Restoring);
        }
        if now_ms - self.last_loop_ms.load(Ordering::Relaxed) >= 30_000 {
            return Err(NotReady::LoopStalled);
        }
        let stall = self.watermark_stall_ms.load(Ordering::Relaxed);
        let seen = self.watermark_ms.load(Ordering::Relaxed) != i64::MIN;
        let moved = self.watermark_moved_ms.load(Ordering::Relaxed);
        if stall > 0 && seen && now_ms - moved >= stall {
            return Err(NotReady::WatermarkStalled);
        }
        Ok(())
    }

    pub fn ready(&self, now_ms: i64) -> bool {
        self.check(now_ms).is_ok()
    }

    /// Records the instance watermark seen at wall-clock `now_ms`.
    pub fn watermark(&self, wm: Option<i64>, now_ms: i64) {
        let Some(wm) = wm else { return };
        if self.watermark_ms.fetch_max(wm, Ordering::Relaxed) < wm {
            self.watermark_moved_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn readiness_follows_assignment_restore_loop_and_watermark() {
        let h = Health {
            watermark_ms: AtomicI64::new(i64::MIN),
            watermark_stall_ms: AtomicI64::new(600_000),
            ..Default::default()
        };
        assert_eq!(h.check(0), Err(NotReady::NoPartitions));
        h.assigned.store(2, Ordering::Relaxed);
        assert_eq!(h.check(0), Err(NotReady::Restoring));
        h.restored.store(true, Ordering::Relaxed);
        h.last_loop_ms.store(1_000, Ordering::Relaxed);
        assert_eq!(h.check(2_000), Ok(()), "no event yet: nothing to hold back");
        assert_eq!(h.check(40_000), Err(NotReady::LoopStalled));
        h.last_loop_ms.store(1_000_000, Ordering::Relaxed);
        h.watermark(Some(5_000), 1_000);
        assert_eq!(h.check(1_000_000), Err(NotReady::WatermarkStalled));
        h.watermark(Some(5_000), 900_000); // the same watermark is not progress
        assert_eq!(h.check(1_000_000), Err(NotReady::WatermarkStalled));
        h.watermark(Some(6_000), 900_000);
        assert_eq!(h.check(1_000_000), Ok(()));
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop once every assigned partition reached its end, after closing every interval and
    /// firing every timer (replays and tests). The state is final afterwards.
    pub exit_at_eof: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub records: u64,
    pub rejected: u64,
    pub partitions: usize,
    /// From the first record returned by the consumer to the end of the run (excludes joining
    /// the group; includes closing everything left at the end of the input).
    pub busy: Duration,
    /// From the first record returned by the consumer until the batch holding the last record
    /// was durable (state and offsets written).
    pub records_busy: Duration,
    /// CPU time of the whole process (every thread, an in-process broker's included) over
    /// `records_busy` and over `busy`.
    pub records_cpu: Duration,
    pub cpu: Duration,
}

/// A wall-clock instant with the CPU time the process had used by then.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub at: Instant,
    pub cpu: Duration,
}

impl Stamp {
    pub fn now() -> Self {
        Stamp {
            at: Instant::now(),
            cpu: process_cpu(),
        }
    }

    /// Wall time and process CPU time from `start` to this stamp.
    pub fn since(self, start: Stamp) -> (Duration, Duration) {
        (self.at - start.at, self.cpu.saturating_sub(start.cpu))
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Loop<'a> {
    cfg: &'a Config,
    /// Set to stop (a signal, the service's shutdown).
    cancel: &'a AtomicBool,
    /// Every partition is at the end of the input and closing what is left (`exit_at_eof`).
    finalizing: bool,
    engine_cfg: Arc<EngineConfig>,
    store: Arc<Store>,
    writer: Writer,
    poller: Poller<'a>,
    /// Records polled while the partitions worked on the previous ones: the start of the next
    /// batch.
    ahead: Vec<Record<'a>>,
    /// The last batch's vector, emptied: the next poll ahead fills it (a new one grew by
    /// doubling to the batch's size every time, in freshly mapped memory).
    spare: Vec<Record<'a>>,
    /// Dead letters, late events and interval reports (`None` when every output is disabled).
    out: Option<OutputProducer>,
    engines: BTreeMap<i32, Part>,
    assigned: BTreeSet<i32>,
    health: &'a Health,
    summary: Summary,
    phases: Phases,
    staffing: crate::staffing::StaffingTracker,
    /// Advances partitions in parallel (one thread per core, kept for the whole run).
    workers: rayon::ThreadPool,
    recorder: Recorder<'a>,
    /// Whether records' keys are checked against their events' journeys (the input topic has
    /// more than one partition), and whether a mismatch was warned about.
    check_keys: bool,
    key_warned: bool,
    /// The partitions whose log was checked against their stored state.
    logs_checked: BTreeSet<i32>,
    /// The partitions whose leader was unreachable at the consumer's last statistics report:
    /// their silence is not idleness.
    unreachable: BTreeSet<i32>,
}

/// Where the loop's time goes (logged when the pipeline stops).
#[derive(Debug, Default)]
struct Phases {
    /// Polling before the partitions start (the batch's first records, or what was not polled
    /// ahead), and polling ahead while they work.
    consume: Duration,
    poll_ahead: Duration,
    /// The partition tasks: wall time, and their summed time ingesting, waiting for the previous
    /// batch's write, and advancing (the sums are at most the wall time times the workers).
    work: Duration,
    ingest_busy: Duration,
    wait_write_busy: Duration,
    advance_busy: Duration,
    /// Forwarding dead letters, late events and reports, and handing the batch to the writer.
    hand_off: Duration,
}

/// Where the pipeline's metrics go: its own recorder (not the global one, so that several
/// pipelines can run in one process), used by the loop's thread and by the partition workers.
pub type Recorder<'a> = &'a (dyn metrics::Recorder + Sync);

/// Runs the pipeline on the calling thread until `cancel` is set (or, with `exit_at_eof`, the
/// input is exhausted). Metrics go to `recorder`.
pub fn run(
    cfg: &Config,
    cancel: &AtomicBool,
    health: &Health,
    opts: RunOptions,
    recorder: Recorder<'_>,
) -> Result<Summary> {
    metrics::with_local_recorder(recorder, || run_loop(cfg, cancel, health, opts, recorder))
}

fn run_loop(
    cfg: &Config,
    cancel: &AtomicBool,
    health: &Health,
    opts: RunOptions,
    recorder: Recorder<'_>,
) -> Result<Summary> {
    telemetry::describe();
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("cannot create state directory {}", cfg.state.dir.display()))?;
    let store =
        Store::open(&cfg.state.dir, cfg.store_options()).context("cannot open state store")?;
    store.check_settings(&cfg.state_settings())?;
    let store = Arc::new(store);
    let settings = cfg.client_settings();
    // fail fast, with one clear line, when the brokers cannot be reached or the topic is missing
    let input_partitions =
        deflect_kafka::partition_count(&settings, &cfg.kafka.input_topic, Duration::from_secs(20))
            .with_context(|| {
                format!(
                    "cannot read topic {:?} from Kafka at {}",
                    cfg.kafka.input_topic, cfg.kafka.bootstrap_servers
                )
            })?;
    let partitions = cfg.kafka.static_partitions(input_partitions)?;
    // the topics records are written to: a missing one fails only when a record goes there,
    // unless the brokers create topics on first write
    for (key, topic) in [
        ("kafka.dead_letter_topic", &cfg.kafka.dead_letter_topic),
        ("kafka.late_topic", &cfg.kafka.late_topic),
        ("kafka.output_topic", &cfg.kafka.output_topic),
    ] {
        if topic.is_empty() {
            continue;
        }
        if let Err(e) = deflect_kafka::partition_count(&settings, topic, Duration::from_secs(5)) {
            tracing::warn!(
                key,
                topic = %topic,
                error = %e,
                "an output topic is not in the cluster's metadata: writing to it will fail (and \
                 stop the pipeline) unless the brokers create topics on first write; create it, \
                 or set the key to \"\" to turn that output off"
            );
        }
    }
    let consumer = GroupConsumer::new(
        &settings,
        &cfg.kafka.group_id,
        &cfg.kafka.input_topic,
        opts.exit_at_eof,
        &partitions,
    )
    .context("cannot create Kafka consumer")?;
    let consumer = &consumer;
    let k = &cfg.kafka;
    let out =
        if k.dead_letter_topic.is_empty() && k.late_topic.is_empty() && k.output_topic.is_empty() {
            None
        } else {
            Some(OutputProducer::new(&settings).context("cannot create Kafka producer")?)
        };
    tracing::info!(
        topic = %cfg.kafka.input_topic,
        group = %cfg.kafka.group_id,
        partitions = ?partitions,
        state = %cfg.state.dir.display(),
        time_zone = %cfg.site.time_zone,
        interval_minutes = cfg.site.interval_minutes,
        "pipeline started"
    );
    let mut l = Loop {
        cfg,
        cancel,
        engine_cfg: Arc::new(cfg.engine()),
        finalizing: false,
        writer: Writer::start(store.clone())?,
        store,
        poller: Poller {
            consumer,
            max_batch: cfg.pipeline.max_batch,
            eof: BTreeSet::new(),
            first_record: None,
            empty_polls: 0,
            empty_poll_time: Duration::ZERO,
            last_record: Instant::now(),
            stall_warned: None,
        },
        ahead: Vec::new(),
        spare: Vec::new(),
        out,
        engines: BTreeMap::new(),
        assigned: BTreeSet::new(),
        health,
        summary: Summary::default(),
        phases: Phases::default(),
        staffing: Default::default(),
        check_keys: input_partitions > 1,
        key_warned: false,
        logs_checked: BTreeSet::new(),
        unreachable: BTreeSet::new(),
        workers: rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("deflect-work-{i}"))
            .build()
            .context("cannot start the partition worker threads")?,
        recorder,
    };
    let mut last_refresh = Instant::now();
    loop {
        l.apply_assignments()?;
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let finished = l.step(opts)?;
        if last_refresh.elapsed() >= Duration::from_secs(10) {
            l.refresh();
            last_refresh = Instant::now();
        }
        health.last_loop_ms.store(now_ms(), Ordering::Relaxed);
        if finished {
            l.refresh();
            break;
        }
    }
    l.writer.wait(consumer)?;
    if let Err(e) = consumer.commit_sync(&l.resume_offsets()) {
        tracing::warn!(error = %e, "final offset commit failed; the state store keeps the offsets");
    }
    telemetry::commit_failures(consumer.commit_failures());
    l.summary.partitions = l.engines.len();
    if let Some(first) = l.poller.first_record {
        (l.summary.busy, l.summary.cpu) = Stamp::now().since(first);
        if let Some(last) = l.writer.last_record_durable {
            (l.summary.records_busy, l.summary.records_cpu) = last.since(first);
        }
    }
    tracing::info!(
        records = l.summary.records,
        rejected = l.summary.rejected,
        consume_s = l.phases.consume.as_secs_f64(),
        poll_ahead_s = l.phases.poll_ahead.as_secs_f64(),
        empty_polls = l.poller.empty_polls,
        empty_poll_s = l.poller.empty_poll_time.as_secs_f64(),
        work_s = l.phases.work.as_secs_f64(),
        ingest_busy_s = l.phases.ingest_busy.as_secs_f64(),
        wait_write_busy_s = l.phases.wait_write_busy.as_secs_f64(),
        advance_busy_s = l.phases.advance_busy.as_secs_f64(),
        cpu_s = l.summary.cpu.as_secs_f64(),
        write_s = l.writer.busy.as_secs_f64(),
        write_ops = l.writer.ops,
        hand_off_s = l.phases.hand_off.as_secs_f64(),
        "pipeline stopped"
    );
    Ok(l.summary)
}

impl Loop<'_> {
    /// What Kafka is told is consumed: where a restart must read each partition again (pending
    /// events are not stored). A partition with nothing stored and no record read yet is left
    /// out: its resume offset (0) would move the group's committed offset back to the log's
    /// beginning.
    fn resume_offsets(&self) -> Vec<(i32, i64)> {
        (self.engines.iter())
            .filter(|(_, e)| e.engine.expected_start() != Some(ExpectedStart::LogStart))
            .map(|(p, e)| (*p, e.engine.resume_offset()))
            .collect()
    }

    /// Loads partition `p`'s state; returns it with the last record the state read, if stored.
    fn load(&self, p: i32) -> Result<(Part, Option<RecordMark>)> {
        let (engine, mark) = match self
            .store
            .load_partition(p)
            .with_context(|| format!("cannot restore state of partition {p}"))?
        {
            Some(r) => {
                tracing::info!(
                    partition = p,
                    next_offset = r.snapshot.next_offset,
                    resume_offset = r.snapshot.resume_offset,
                    timers = r.snapshot.live_timers,
                    "partition state restored"
                );
                let engine =
                    PartitionEngine::restore(self.engine_cfg.clone(), r.snapshot, r.cohorts);
                (engine, r.last_record)
            }
            None => (PartitionEngine::new(self.engine_cfg.clone()), None),
        };
        telemetry::full_refresh(p, &engine);
        let part = Part {
            engine,
            exported: Default::default(),
        };
        Ok((part, mark))
    }

    /// Loads the state of the partitions in `ps` that have no engine yet, then checks their
    /// logs against it (once per partition and process).
    fn load_all(&mut self, ps: impl IntoIterator<Item = i32>) -> Result<()> {
        let mut marks = Vec::new();
        for p in ps {
            if self.engines.contains_key(&p) {
                continue;
            }
            let (part, mark) = self.load(p)?;
            self.engines.insert(p, part);
            if let (Some(m), true) = (mark, self.logs_checked.insert(p)) {
                marks.push((p, m));
            }
        }
        self.check_logs(&marks)
    }

    /// Reads again, from Kafka, the last record each partition's stored state read: another
    /// record at its offset means that the log is not the one the state was built from (the
    /// topic was deleted and created again, or the state directory belongs to another cluster
    /// or topic), whose records would be skipped as already counted: an error. A record no
    /// longer there (retention, compaction, a shorter log) or no answer in time leaves the
    /// partition unchecked (a shorter log is an error of its own, at its first record).
    fn check_logs(&self, marks: &[(i32, RecordMark)]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let topic = &self.cfg.kafka.input_topic;
        let at: Vec<(i32, i64)> = marks.iter().map(|(p, m)| (*p, m.offset)).collect();
        let settings = self.cfg.client_settings();
        let found = deflect_kafka::records_at(&settings, topic, &at, LOG_CHECK_TIMEOUT)
            .context("cannot read the records the stored state last read")?;
        for (p, m) in marks {
            let (p, offset) = (*p, m.offset);
            match found.get(&p).copied().unwrap_or(At::Unknown) {
                At::Record(f) if f == m.fingerprint => {
                    tracing::debug!(partition = p, offset, "log matches the stored state")
                }
                At::Record(_) => anyhow::bail!(
                    "the record at offset {offset} of partition {p} of {topic} is not the one \
                     the stored state read there: the topic was deleted and created again, or \
                     the state directory belongs to another cluster or topic, and its records \
                     would be skipped as already counted. Start with an empty state directory \
                     (and, to read the topic from its beginning, a new kafka.group_id)"
                ),
                At::Elsewhere(first) if first > offset => tracing::info!(
                    partition = p,
                    offset,
                    first_offset = first,
                    "the last record the stored state read is no longer in kafka (retention, \
                     compaction); the log is not checked against the state"
                ),
                // the offset is past the log's end: reading restarted at its beginning
                At::Elsewhere(_) | At::End => tracing::debug!(
                    partition = p,
                    offset,
                    "the log ends before the last record the stored state read"
                ),
                At::Unknown => tracing::warn!(
                    partition = p,
                    offset,
                    timeout_s = LOG_CHECK_TIMEOUT.as_secs(),
                    "the last record the stored state read could not be read again in time; the \
                     log is not checked against the state"
                ),
            }
        }
        Ok(())
    }

    fn apply_assignments(&mut self) -> Result<()> {
        let changed = self.poller.consumer.take_assignments();
        if !changed.is_empty() {
            // a partition's state is loaded from, or left in, the store: complete the write
            self.writer.wait(self.poller.consumer)?;
        }
        for a in changed {
            match a {
                Assignment::Assigned(ps) => {
                    self.health.restored.store(false, Ordering::Relaxed);
                    self.assigned.extend(&ps);
                    self.load_all(ps)?;
                }
                Assignment::Revoked(ps) => {
                    // Everything applied from these partitions was written by the last batch;
                    // records polled ahead are the next owner's to read (from the committed
                    // offset), or this instance's again if they come back.
                    self.ahead.retain(|m| !ps.contains(&m.partition()));
                    for p in ps {
                        self.assigned.remove(&p);
                        self.engines.remove(&p);
                        self.poller.eof.remove(&p);
                        // revoked: this instance has nothing left to read of it (the series
                        // leaves after the recorder's idle timeout)
                        telemetry::lag(p, 0);
                    }
                }
            }
        }
        self.health
            .assigned
            .store(self.assigned.len(), Ordering::Relaxed);
        telemetry::assigned(self.assigned.len());
        self.health.restored.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One poll batch: consume, advance, persist, commit. Returns true when `exit_at_eof` is done.
    fn step(&mut self, opts: RunOptions) -> Result<bool> {
        let started = Instant::now();
        let format = self.cfg.input_format();
        let now = now_ms();
        // the records polled ahead, and whatever else is there (waiting for a first record only
        // when there is none)
        let mut msgs = std::mem::take(&mut self.ahead);
        let wait = if self.finalizing || !msgs.is_empty() {
            Duration::ZERO
        } else {
            self.cfg.pipeline.poll_timeout
        };
        self.poller.poll(&mut msgs, Until::Drained(wait));
        let n = msgs.len();
        self.summary.records += n as u64;
        let t_consumed = Instant::now();
        self.phases.consume += t_consumed - started;

        let at_eof = opts.exit_at_eof
            && !self.assigned.is_empty()
            && self.assigned.iter().all(|p| self.poller.eof.contains(p));
        if opts.exit_at_eof && !at_eof && n == 0 {
            self.poller.warn_if_stalled(&self.assigned);
        }
        // at the end of the input every partition closes everything, one bounded step (slices of
        // event time) per loop step, so that each step's state is written (and the journey cache
        // trimmed) in between
        let mut finished = at_eof;
        self.finalizing = at_eof;
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, m) in msgs.iter().enumerate() {
            by_partition.entry(m.partition()).or_default().push(i);
        }
        self.load_all(by_partition.keys().copied())?;
        for (p, records) in &by_partition {
            let engine = &self.engines[p].engine;
            if let Some(start) = engine.expected_start() {
                let first = msgs[records[0]].offset();
                check_start(self.poller.consumer, *p, first, start, engine.next_offset())?;
            }
        }
        let unreachable = self.poller.consumer.unreachable_partitions();
        if unreachable != self.unreachable {
            let (now_out, before) = (self.owned(&unreachable), self.owned(&self.unreachable));
            if now_out != before {
                tracing::info!(
                    partitions = ?now_out,
                    "partitions whose leader is unreachable: their silence is not idleness, \
                     their intervals stay open"
                );
                telemetry::unreachable(now_out.len());
            }
            self.unreachable = unreachable;
        }
        let input = Input {
            msgs: &msgs,
            by_partition,
            unreachable: &self.unreachable,
            limits: &self.cfg.limits,
            format,
            now,
            at_eof,
            keep_cached: self.cfg.state.journey_cache_entries,
            check_keys: self.check_keys,
        };
        // Decoding and ingesting read no state: they overlap the write of the previous batch.
        // Advancing overlaps it too (timer reads included: the engine lays that write's timers
        // over them), until it reads journeys the engine cannot tell apart from that write's
        // (its cache was trimmed), or the first timer ahead when finalizing: then it waits.
        let in_flight = self.writer.finished();
        // Meanwhile this thread polls the next batch's records (the partitions' threads are
        // busy; waiting here left a core idle for the poll's part of every batch).
        let mut ahead = std::mem::take(&mut self.spare);
        let poller = &mut self.poller;
        let mut poll_ahead = Duration::ZERO;
        let done = on_partitions(
            &mut self.engines,
            &self.workers,
            |p, e| work(p, e, &self.store, &in_flight, &input, self.recorder),
            |work_done| {
                let t = Instant::now();
                poller.poll(&mut ahead, Until::WorkDone(work_done));
                poll_ahead = t.elapsed();
            },
        )?;
        self.ahead = ahead;
        self.phases.poll_ahead += poll_ahead;
        let t_worked = Instant::now();
        // the previous batch's outcome: a failed write stops here, before anything this batch
        // produced leaves the process
        self.writer.wait(self.poller.consumer)?;
        let t_written = Instant::now();
        let mut busy = [Duration::ZERO; 3];
        let (mut ingested, mut advanced) = (Vec::new(), Vec::new());
        for (i, a, d) in done {
            ingested.push(i);
            advanced.push(a);
            for (sum, d) in busy.iter_mut().zip(d) {
                *sum += d;
            }
        }
        let [ingest_busy, wait_write_busy, advance_busy] = busy;
        self.phases.work += t_worked - t_consumed;
        self.phases.ingest_busy += ingest_busy;
        self.phases.wait_write_busy += wait_write_busy;
        self.phases.advance_busy += advance_busy;
        let (mut skipped, mut replayed) = (0u64, 0u64);
        for a in &ingested {
            skipped += a.skipped;
            replayed += a.replayed;
            for (i, dropped) in &a.dropped {
                let msg = &msgs[*i];
                match dropped {
                    Dropped::Late { kind, closed_until } => {
                        telemetry::late(kind);
                        let topic = &self.cfg.kafka.late_topic;
                        if let (Some(out), false) = (&mut self.out, topic.is_empty()) {
                            let closed = closed_until.to_string();
                            let extra = [
                                ("deflect.event_type", *kind),
                                ("deflect.closed_until_ms", &closed),
                            ];
                            forward(
                                out,
                                topic,
                                &self.cfg.kafka.input_topic,
                                msg,
                                "late",
                                "interval already closed",
                                &extra,
                            )?;
                        }
                    }
                    Dropped::Rejected(err) => {
                        self.summary.rejected += 1;
                        telemetry::rejected(err.reason.as_str());
                        tracing::debug!(
                            partition = a.partition,
                            offset = msg.offset(),
                            reason = err.reason.as_str(),
                            "record rejected"
                        );
                        let topic = &self.cfg.kafka.dead_letter_topic;
                        if let (Some(out), false) = (&mut self.out, topic.is_empty()) {
                            forward(
                                out,
                                topic,
                                &self.cfg.kafka.input_topic,
                                msg,
                                err.reason.as_str(),
                                &err.detail,
                                &[],
                            )?;
                        }
                    }
                }
            }
        }
        if skipped > 0 {
            telemetry::already_applied(skipped);
        }
        let mis_keyed: u64 = ingested.iter().map(|a| a.mis_keyed).sum();
        if mis_keyed > 0 {
            telemetry::mis_keyed(mis_keyed);
            if let (false, Some(i)) = (
                self.key_warned,
                ingested.iter().find_map(|a| a.first_mis_keyed),
            ) {
                self.key_warned = true;
                tracing::warn!(
                    partition = msgs[i].partition(),
                    offset = msgs[i].offset(),
                    "a record's key is not its event's customer_id (contact_id without one): a \
                     customer's events may be spread over partitions, each with a journey of its \
                     own, and re-contacts between them are not seen; key the input by customer \
                     (deflect_records_mis_keyed_total counts them; warned once per process)"
                );
            }
        }
        if replayed > 0 {
            telemetry::replayed(replayed);
        }
        let mut changes = Vec::new();
        // the report keys sent since the last delivery
        let mut report_keys = std::collections::HashSet::new();
        for a in advanced {
            let p = a.partition;
            finished &= !a.more;
            self.staffing.add(&a.closed);
            changes.extend(a.write);
            for (ev, detail) in a.rejected {
                self.summary.rejected += 1;
                telemetry::rejected(deflect_proto::RejectReason::JourneyOrder.as_str());
                let topic = &self.cfg.kafka.dead_letter_topic;
                if let (Some(out), false) = (&mut self.out, topic.is_empty()) {
                    dead_letter_event(out, topic, &self.cfg.kafka.input_topic, p, &ev, detail)?;
                }
            }
            let topic = &self.cfg.kafka.output_topic;
            if let (Some(out), false) = (&mut self.out, topic.is_empty()) {
                let json = self.cfg.kafka.output_format == "json";
                for r in &a.reports {
                    let m = deflect_proto::report::to_message(r, p, &self.engine_cfg.intervals);
                    let bytes = if json {
                        deflect_proto::report::encode_json(&m)
                    } else {
                        deflect_proto::report::encode_protobuf(&m)
                    };
                    let key = deflect_proto::report::key(r, p);
                    // A batch that spans more than a horizon (catching up) holds two revisions
                    // of one report: the earlier one is delivered before the later one is sent,
                    // so that a retry cannot put it last (a compacted topic keeps the last).
                    if report_keys.contains(&key) {
                        deliver(out, self.cancel)?;
                        report_keys.clear();
                    }
                    report_keys.insert(key.clone());
                    out.send(topic, Some(key.as_bytes()), &bytes, None, None)
                        .context("cannot send interval report")?;
                }
            }
            telemetry::reports(&a.reports);
        }
        // the partitions that consumed, closed or finalized something
        if !changes.is_empty() {
            if let Some(out) = &mut self.out {
                // dead letters, late events and reports must be durable before the offsets and
                // state that skip past them
                deliver(out, self.cancel)?;
            }
            let offsets = self.resume_offsets();
            self.writer.submit(changes, offsets, n)?;
        }
        let t_submitted = Instant::now();
        self.phases.hand_off += t_submitted - t_worked;
        tracing::trace!(
            records = n,
            consume_us = (t_consumed - started).as_micros() as u64,
            work_us = (t_worked - t_consumed).as_micros() as u64,
            ingest_busy_us = ingest_busy.as_micros() as u64,
            wait_write_busy_us = wait_write_busy.as_micros() as u64,
            advance_busy_us = advance_busy.as_micros() as u64,
            hand_off_us = (t_submitted - t_worked).as_micros() as u64,
            wait_writer_us = (t_written - t_worked).as_micros() as u64,
            "batch"
        );
        if n > 0 {
            telemetry::batch(started.elapsed().as_secs_f64(), n);
            self.health.records.fetch_add(n as i64, Ordering::Relaxed);
        }
        msgs.clear();
        self.spare = msgs;
        Ok(finished)
    }

    /// The partitions of `set` this instance owns.
    fn owned(&self, set: &BTreeSet<i32>) -> Vec<i32> {
        set.intersection(&self.assigned).copied().collect()
    }

    fn refresh(&mut self) {
        let t0 = Instant::now();
        telemetry::unreachable(self.owned(&self.unreachable).len());
        for (p, e) in &self.engines {
            telemetry::full_refresh(*p, &e.engine);
        }
        telemetry::keep_process_counters();
        telemetry::commit_failures(self.poller.consumer.commit_failures());
        let t1 = t0.elapsed();
        // records not read yet, those a restart reads again included (Kafka's committed offset
        // trails by the pending events)
        let consumer = self.poller.consumer;
        for (p, end) in consumer.end_offsets() {
            let (true, Some(part)) = (self.assigned.contains(&p), self.engines.get(&p)) else {
                continue;
            };
            // with nothing stored and nothing read, reading starts at the group's offset (it
            // does not move until a record is read: nothing is committed before)
            let read_to = match part.engine.expected_start() {
                Some(ExpectedStart::LogStart) => consumer.reading_start(p),
                _ => Some(part.engine.read_to()),
            };
            if let Some(r) = read_to {
                telemetry::lag(p, (end - r).max(0));
            }
        }
        let wm = instance_watermark(
            self.engines.values().map(|e| e.engine.watermark_state()),
            now_ms(),
            self.engine_cfg.idle_timeout_ms,
        );
        self.health.watermark(wm, now_ms());
        telemetry::instance(self.assigned.len(), wm, self.store.live_size_bytes());
        let (stopped, delayed) = self.store.write_stall();
        telemetry::rocksdb_stalls(stopped, delayed);
        let closed_until = self
            .assigned
            .iter()
            .map(|p| self.engines.get(p).and_then(|e| e.engine.frontier()))
            .collect::<Option<Vec<i64>>>()
            .and_then(|f| f.into_iter().min());
        if let Some(until) = closed_until {
            let rows = self.staffing.compute(
                until,
                self.engine_cfg.intervals.len_ms(),
                self.cfg.service.level_threshold.as_secs_f64(),
                self.cfg.staffing.target,
                self.cfg.staffing.shrinkage,
            );
            telemetry::staffing(&rows);
        }
        tracing::trace!(
            engines_us = t1.as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "metrics refreshed"
        );
    }
}

/// Waits until everything sent is delivered: as long as librdkafka retries (brokers
/// restarting, leaders moving), then fails on the first record it gave up on. A shutdown
/// meanwhile stops the wait and the pipeline, without writing the batch or committing past it:
/// its records are read again at the next start.
fn deliver(out: &mut OutputProducer, cancel: &AtomicBool) -> Result<()> {
    let timeout = out.delivery_timeout() + Duration::from_secs(10);
    let flushed = out.flush_unless(timeout, cancel, &mut |n| {
        telemetry::undelivered(n);
    });
    telemetry::undelivered(0);
    match flushed {
        Err(deflect_kafka::Error::Canceled(n)) => anyhow::bail!(
            "stopped while {n} dead letters, late events or reports were not delivered yet: \
             their batch was not written, and is read again at the next start"
        ),
        r => r.context("cannot deliver dead letters, late events or reports"),
    }
}

/// Forwards a consumed record unchanged (bytes, key, headers) to `topic`, with headers saying why
/// and where it came from: `deflect.reason`, `deflect.detail`, `deflect.source.{topic,partition,offset}`
/// and any `extra`.
fn forward(
    out: &mut OutputProducer,
    topic: &str,
    source_topic: &str,
    msg: &Record<'_>,
    reason: &str,
    detail: &str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let mut headers = OwnedHeaders::new();
    let mut header_bytes = 0;
    for (key, value) in msg.headers() {
        header_bytes += HEADER_OVERHEAD + key.len() + value.map_or(0, <[u8]>::len);
        headers = headers.insert(Header { key, value });
    }
    let ours = [
        ("deflect.reason", reason),
        ("deflect.detail", detail),
        ("deflect.source.topic", source_topic),
        ("deflect.source.partition", partition.as_str()),
        ("deflect.source.offset", offset.as_str()),
    ];
    for (key, value) in ours.iter().chain(extra) {
        header_bytes += HEADER_OVERHEAD + key.len() + value.len();
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let (payload, key) = (msg.payload().unwrap_or_default(), msg.key());
    let (payload, key, headers) = fit(out.max_message_bytes(), payload, key, headers, header_bytes);
    out.send(topic, key, payload, Some(headers), None)
        .with_context(|| format!("cannot forward a record to topic {topic:?}"))
}

/// Serialized size of a record header besides its key and value (librdkafka writes two varints).
const HEADER_OVERHEAD: usize = 10;
/// Longest key a forwarded record keeps whole.
const MAX_FORWARDED_KEY: usize = 4096;

/// The key and payload of a record forwarded under `max` bytes (librdkafka refuses a record whose
/// payload, key and headers are larger than its `message.max.bytes`, and a record it refuses would
/// stop the partition at every start): a longer key, then a longer payload is cut to fit, and its
/// original length goes in a header (`deflect.key_bytes`, `deflect.payload_bytes`). The whole
/// record stays in its source topic at its offset for as long as Kafka keeps it.
fn fit<'a>(
    max: usize,
    payload: &'a [u8],
    key: Option<&'a [u8]>,
    mut headers: OwnedHeaders,
    header_bytes: usize,
) -> (&'a [u8], Option<&'a [u8]>, OwnedHeaders) {
    // room for the two headers this may add (a length has at most 20 digits)
    let added = HEADER_OVERHEAD + "deflect.payload_bytes".len() + 20;
    let header_bytes = header_bytes + 2 * added;
    let mut key = key;
    if let Some(k) = key.filter(|k| k.len() > MAX_FORWARDED_KEY) {
        if k.len() + payload.len() + header_bytes > max {
            headers = headers.insert(Header {
                key: "deflect.key_bytes",
                value: Some(&k.len().to_string()),
            });
            key = Some(&k[..MAX_FORWARDED_KEY]);
        }
    }
    let room = max.saturating_sub(header_bytes + key.map_or(0, <[u8]>::len));
    if payload.len() <= room {
        return (payload, key, headers);
    }
    let headers = headers.insert(Header {
        key: "deflect.payload_bytes",
        value: Some(&payload.len().to_string()),
    });
    (&payload[..room], key, headers)
}

/// Dead-letters an event rejected when its interval closed (its record was consumed earlier, so
/// its original bytes are gone): the event re-encoded as protobuf, keyed like the input, with the
/// reason, detail, source topic and partition, and its event id.
fn dead_letter_event(
    out: &mut OutputProducer,
    topic: &str,
    source_topic: &str,
    partition: i32,
    ev: &deflect_core::Event,
    detail: &str,
) -> Result<()> {
    let partition = partition.to_string();
    let headers = [
        (
            "deflect.reason",
            deflect_proto::RejectReason::JourneyOrder.as_str(),
        ),
        ("deflect.detail", detail),
        ("deflect.source.topic", source_topic),
        ("deflect.source.partition", partition.as_str()),
        ("deflect.event_id", ev.event_id.as_str()),
    ]
    .iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    });
    let key = ev.partition_key();
    let payload = deflect_proto::encode_protobuf(ev);
    out.send(topic, Some(key.as_bytes()), &payload, Some(headers), None)
        .with_context(|| format!("cannot dead-letter an event to topic {topic:?}"))
}

/// Decodes a record and checks it against the configured limits.
fn validate(
    limits: &crate::config::LimitsConfig,
    msg: &Record<'_>,
    payload: &[u8],
    format: deflect_proto::Format,
    now: i64,
) -> Result<Box<deflect_core::Event>, deflect_proto::DecodeError> {
    use deflect_proto::{DecodeError, RejectReason};
    if payload.len() > limits.max_record_bytes {
        return Err(DecodeError::new(
            RejectReason::Oversized,
            format!("{} bytes, limit {}", payload.len(), limits.max_record_bytes),
        ));
    }
    if limits.require_key && msg.key().is_none_or(|k| k.is_empty()) {
        return Err(DecodeError::new(
            RejectReason::MissingKey,
            "record has a null or empty key",
        ));
    }
    // boxed here, once: the engine buffers it as it is
    let ev = Box::new(deflect_proto::decode(payload, format)?);
    let max = now.saturating_add(limits.max_future.as_millis() as i64);
    let min = limits.min_event_time.as_millisecond();
    if ev.occurred_at < min || ev.occurred_at > max {
        return Err(DecodeError::new(
            RejectReason::TimestampOutOfBounds,
            format!("occurred_at {} outside [{min}, {max}]", ev.occurred_at),
        ));
    }
    Ok(ev)
}

/// The records of one poll, how to validate them, and what the partitions do after them.
struct Input<'a, 'm> {
    msgs: &'a [Record<'m>],
    /// Indexes into `msgs` of each partition's records.
    by_partition: BTreeMap<i32, Vec<usize>>,
    /// Partitions whose leader is unreachable (not idle however silent).
    unreachable: &'a BTreeSet<i32>,
    limits: &'a crate::config::LimitsConfig,
    format: deflect_proto::Format,
    now: Millis,
    /// Every partition is at the end of its input: close one more step of what is left.
    at_eof: bool,
    /// Journeys each partition keeps cached after its state is taken.
    keep_cached: usize,
    /// Count records whose key is not their event's customer (or contact) id.
    check_keys: bool,
}

/// A consumed record that was not applied and must be forwarded.
enum Dropped {
    /// Its interval had closed (`closed_until`: the instant before which the partition's events
    /// were late then, [`PartitionEngine::closed_before`]).
    Late {
        kind: &'static str,
        closed_until: Millis,
    },
    Rejected(deflect_proto::DecodeError),
}

/// What one partition did with its records of a poll.
struct Ingested {
    partition: i32,
    /// Records below the offset stored with the state (applied before a restart).
    skipped: u64,
    /// Records read again after a restart whose events are pending again.
    replayed: u64,
    /// Records whose key is not their event's customer id (contact id without one), and the
    /// first one's index into the poll's records.
    mis_keyed: u64,
    first_mis_keyed: Option<usize>,
    /// (index into the poll's records, why) of the records to forward.
    dropped: Vec<(usize, Dropped)>,
}

/// What advancing one partition produced.
struct Advanced {
    partition: i32,
    closed: Vec<ClosedInterval>,
    /// At the end of the input: more is left to close.
    more: bool,
    rejected: Vec<(deflect_core::event::Event, &'static str)>,
    reports: Vec<deflect_core::engine::Report>,
    /// What a partition that consumed, closed or finalized something writes.
    write: Option<PartWrite>,
}

/// A partition this instance owns: its engine, and what was last exported of it.
struct Part {
    engine: PartitionEngine,
    exported: telemetry::Exported,
}

/// Runs `f` on every partition, as tasks on `pool` (one thread per core: partitions are
/// independent), while the calling thread runs `meanwhile` (given a check that the tasks are
/// done); results come back in partition order. A thread done with its own partitions takes the
/// last ones of another (the partitions' loads differ from poll to poll).
fn on_partitions<T: Send>(
    engines: &mut BTreeMap<i32, Part>,
    pool: &rayon::ThreadPool,
    f: impl Fn(i32, &mut Part) -> Result<T> + Sync,
    meanwhile: impl FnOnce(&dyn Fn() -> bool),
) -> Result<Vec<T>> {
    // Each partition starts on the same worker thread every time (the i-th partition on thread
    // i mod n): what a partition's engine allocates is mostly freed by the thread that allocated
    // it (freeing another thread's memory costs that thread a collection later), and its state
    // stays in that core's caches. Only the tail of a poll moves: four pairs of `deflect bench`
    // ran 7 % faster with it than with the fixed split.
    let n = pool.current_num_threads().max(1);
    let count = engines.len();
    let mut shares: Vec<std::collections::VecDeque<(i32, &mut Part)>> =
        (0..n).map(|_| Default::default()).collect();
    for (i, (p, e)) in engines.iter_mut().enumerate() {
        shares[i % n].push_back((*p, e));
    }
    let shares: Vec<std::sync::Mutex<_>> = shares.into_iter().map(std::sync::Mutex::new).collect();
    let results = std::sync::Mutex::new(Vec::with_capacity(count));
    let running = AtomicUsize::new(n);
    pool.in_place_scope(|scope| {
        scope.spawn_broadcast(|_, ctx| {
            let own = ctx.index() % n;
            // its own partitions first; then, done early, the last ones of another thread's
            let next = || {
                let take = |i: usize, own: bool| {
                    let mut q = shares[i].lock().expect("shares lock");
                    if own {
                        q.pop_front()
                    } else {
                        q.pop_back()
                    }
                };
                take(own, true).or_else(|| (1..n).find_map(|k| take((own + k) % n, false)))
            };
            // counted out however the task ends (a panic is raised again when the scope ends)
            let _done = CountDown(&running);
            while let Some((p, e)) = next() {
                let r = f(p, e).map(|r| (p, r));
                results.lock().expect("results lock").push(r);
            }
        });
        meanwhile(&|| running.load(Ordering::Acquire) == 0);
    });
    let mut out = Vec::with_capacity(count);
    for r in results.into_inner().expect("results lock") {
        out.push(r?);
    }
    // in partition order, as the callers expect
    out.sort_by_key(|(p, _)| *p);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod partition_tasks_tests {
    use super::*;

    fn parts(n: i32) -> BTreeMap<i32, Part> {
        let cfg = Arc::new(Config::default().engine());
        (0..n)
            .map(|p| {
                let part = Part {
                    engine: PartitionEngine::new(cfg.clone()),
                    exported: Default::default(),
                };
                (p, part)
            })
            .collect()
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    /// Results in partition order whichever thread ran a partition; the calling thread's task
    /// runs meanwhile and sees the tasks finish; a thread done early takes the other's last ones.
    #[test]
    fn every_partition_once_in_order_while_the_caller_polls() {
        let mut engines = parts(6);
        let threads = std::sync::Mutex::new(BTreeMap::new());
        let mut saw_done = false;
        let four_started = AtomicBool::new(false);
        let out = on_partitions(
            &mut engines,
            &pool(),
            |p, _| {
                let me = std::thread::current().id();
                threads.lock().unwrap().insert(p, me);
                // partitions 0, 2, 4 start on one thread, 1, 3, 5 on the other: the first
                // thread stays on partition 0 until the other one took partition 4
                if p == 4 {
                    four_started.store(true, Ordering::Release);
                }
                let until = Instant::now() + Duration::from_secs(10);
                while p == 0 && !four_started.load(Ordering::Acquire) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(p * 10)
            },
            |done| {
                while !done() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                saw_done = true;
            },
        )
        .unwrap();
        assert_eq!(out, [0, 10, 20, 30, 40, 50]);
        assert!(saw_done);
        let threads = threads.into_inner().unwrap();
        // the thread that started on partition 1 took partition 4, the other one's last (if the
        // other thread started late, it may have taken more, even all of them)
        assert_eq!(threads[&4], threads[&1], "{threads:?}");
    }

    /// A task that fails or panics does not leave the caller waiting: an error comes back, a
    /// panic is raised again.
    #[test]
    fn a_failing_or_panicking_partition_ends_the_call() {
        let mut engines = parts(4);
        let wait = |done: &dyn Fn() -> bool| {
            let until = Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(Instant::now() < until, "the caller was left waiting");
            }
        };
        let err = on_partitions(
            &mut engines,
            &pool(),
            |p, _| {
                if p == 2 {
                    anyhow::bail!("partition {p} failed")
                } else {
                    Ok(p)
                }
            },
            wait,
        );
        assert!(err.unwrap_err().to_string().contains("partition 2 failed"));
        let started = Instant::now();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            on_partitions(
                &mut engines,
                &pool(),
                |p, _| {
                    if p == 3 {
                        panic!("partition {p} panicked")
                    } else {
                        Ok(p)
                    }
                },
                wait,
            )
        }));
        let payload = panicked.expect_err("the panic is raised again");
        let text = (payload.downcast_ref::<String>().cloned())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
        assert_eq!(text.as_deref(), Some("partition 3 panicked"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the caller waited for it"
        );
    }
}

/// Decrements a count of running tasks when dropped.
struct CountDown<'c>(&'c AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// How long a poll ahead waits for a record before it checks again whether the partitions are
/// done.
const AHEAD_WAIT: Duration = Duration::from_millis(1);

/// When [`Poller::poll`] stops (besides a full batch, a rebalance to apply, or 250 ms).
enum Until<'s> {
    /// Once no record is ready, after waiting up to this long for a first one.
    Drained(Duration),
    /// Once the partitions' work in progress is done (polling ahead meanwhile).
    WorkDone(&'s dyn Fn() -> bool),
}

/// The consumer side of the loop: what was polled, and where every partition's input ends.
struct Poller<'a> {
    consumer: &'a GroupConsumer,
    max_batch: usize,
    /// Partitions at the end of their input (a record of the partition clears it again).
    eof: BTreeSet<i32>,
    /// When the consumer returned the first record (throughput is measured from there).
    first_record: Option<Stamp>,
    empty_polls: u64,
    empty_poll_time: Duration,
    /// When the consumer last returned a record (or the loop started).
    last_record: Instant,
    /// When [`Poller::warn_if_stalled`] last warned.
    stall_warned: Option<Instant>,
}

impl<'a> Poller<'a> {
    /// Polls records into `msgs`, up to `max_batch` in all.
    fn poll(&mut self, msgs: &mut Vec<Record<'a>>, until: Until<'_>) {
        let started = Instant::now();
        let consumer = self.consumer;
        let (mut wait, work_done) = match until {
            Until::Drained(wait) => (wait, None),
            Until::WorkDone(done) => (AHEAD_WAIT, Some(done)),
        };
        let (eof, first_record) = (&mut self.eof, &mut self.first_record);
        let mut any = false;
        let mut seen = |s| match s {
            Seen::Records(p) => {
                if first_record.is_none() {
                    *first_record = Some(Stamp::now());
                }
                any = true;
                eof.remove(&p);
            }
            Seen::End(p) => {
                eof.insert(p);
            }
        };
        while msgs.len() < self.max_batch && !work_done.is_some_and(|done| done()) {
            // while the partitions work, a chunk at a time, so that their end is noticed soon
            let room = self.max_batch - msgs.len();
            let room = if work_done.is_some() {
                room.min(AHEAD_CHUNK)
            } else {
                room
            };
            let waited = (!wait.is_zero()).then(Instant::now);
            let n = consumer.read(msgs, room, wait, &mut seen);
            if consumer.has_assignments() || started.elapsed() > Duration::from_millis(250) {
                break;
            }
            if work_done.is_none() {
                if n == 0 {
                    self.empty_polls += 1;
                    if let Some(t) = waited {
                        self.empty_poll_time += t.elapsed();
                    }
                }
                if n < room {
                    // drained: what was ready is read
                    break;
                }
                wait = Duration::ZERO;
            }
        }
        if any {
            self.last_record = Instant::now();
        }
    }

    /// With `--exit-at-eof`, while some assigned partition is not at its end: once no record has
    /// come for [`STALL_WARNING`], warns (again every as long) naming each such partition, where
    /// it is read to and where the broker said it ends. A replay then waits, for a partition
    /// whose leader does not answer, whose last transaction is still open, or whose broker does
    /// not send the records it reports (Tansu 0.6.0's memory storage, see the README).
    fn warn_if_stalled(&mut self, assigned: &BTreeSet<i32>) {
        let now = Instant::now();
        if now - self.last_record < STALL_WARNING
            || self.stall_warned.is_some_and(|t| now - t < STALL_WARNING)
        {
            return;
        }
        let waiting: Vec<String> = assigned
            .iter()
            .filter(|p| !self.eof.contains(p))
            .map(|&p| {
                let (position, end) = self.consumer.progress(p);
                let show =
                    |o: Option<i64>| o.map_or_else(|| "unknown".to_string(), |o| o.to_string());
                format!("{p} (read to {}, ends at {})", show(position), show(end))
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        self.stall_warned = Some(now);
        tracing::warn!(
            seconds = (now - self.last_record).as_secs(),
            partitions = %waiting.join(", "),
            "no record came for a while and these partitions are not at their end yet: waiting for them"
        );
    }
}

/// How long a replay (`--exit-at-eof`) waits without any record before it warns about the
/// partitions it is still waiting for.
const STALL_WARNING: Duration = Duration::from_secs(10);

/// Records polled ahead per read while the partitions work (their end is checked in between).
const AHEAD_CHUNK: usize = 2048;

/// Records of a poll a partition's task decodes and ingests before it advances the partition's
/// engine again. A poll of 50,000 records gives each of 8 partitions about 6,000: decoded all
/// before the first advance, their events were out of the core's caches again when they were
/// processed, and the queue of pending events (in event-time order) was written to cold memory
/// as it grew to the whole poll. Advancing after every chunk closes what the watermark allows as
/// the records come: an event more than the grace period behind the watermark of the chunks
/// before its own is late, where a whole poll used to be ingested before anything closed.
const ADVANCE_EVERY: usize = 512;

/// Decodes, ingests and advances partition `p`'s records of this poll, a chunk at a time
/// ([`ADVANCE_EVERY`]), then closes one slice of what is left at the end of the input, exports
/// what closing changed and takes its state changes. Returns the time spent ingesting, waiting
/// for the write in flight and advancing.
fn work(
    p: i32,
    part: &mut Part,
    store: &Store,
    in_flight: &InFlight,
    input: &Input<'_, '_>,
    recorder: Recorder<'_>,
) -> Result<(Ingested, Advanced, [Duration; 3])> {
    let records = input.by_partition.get(&p).map_or(&[][..], Vec::as_slice);
    let e = &mut part.engine;
    if input.unreachable.contains(&p) {
        e.unreadable(input.now);
    }
    let mut ingested = Ingested {
        partition: p,
        skipped: 0,
        replayed: 0,
        mis_keyed: 0,
        first_mis_keyed: None,
        dropped: Vec::new(),
    };
    let mut reader = Synced {
        journey_reads_wait: !e.journey_reads_skip_last_changes(),
        reader: store.journeys(p),
        in_flight: Some(in_flight),
        waited: Duration::ZERO,
    };
    let (mut ingesting, mut advancing) = (Duration::ZERO, Duration::ZERO);
    let mut closed = Vec::new();
    let mut rest = records;
    loop {
        let (chunk, tail) = rest.split_at(rest.len().min(ADVANCE_EVERY));
        let t0 = Instant::now();
        ingest(e, chunk, input, &mut ingested);
        let t1 = Instant::now();
        closed.extend(e.advance(input.now, &mut reader));
        ingesting += t1 - t0;
        advancing += t1.elapsed();
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    let t = Instant::now();
    let (advanced, waited) = finish_advance(p, part, reader, closed, input, recorder)?;
    advancing += t.elapsed();
    Ok((
        ingested,
        advanced,
        [ingesting, waited, advancing.saturating_sub(waited)],
    ))
}

/// Partition `p`'s first record since its state was loaded is at `first`: warns about, and
/// counts, the records the state needed read that Kafka's reading skipped (their events are in
/// neither the state nor the figures). A log that ends before the state's `next_offset` is not
/// the log the state was built from (the topic was recreated, or truncated): an error, since
/// its records would be taken for ones already applied and skipped.
fn check_start(
    consumer: &GroupConsumer,
    p: i32,
    first: i64,
    expected: ExpectedStart,
    next_offset: i64,
) -> Result<()> {
    if let (ExpectedStart::Resume(_), Some(end)) = (expected, consumer.cached_log_end(p)) {
        if end < next_offset {
            anyhow::bail!(
                "the stored state of partition {p} of {} was read to offset {next_offset}, but \
                 the partition now ends at {end}: the topic was recreated or truncated, and its \
                 records would be skipped as already counted. Start with an empty state \
                 directory (and, to read the topic from its beginning, a new kafka.group_id)",
                consumer.topic()
            );
        }
    }
    let (from, log_start) = match expected {
        ExpectedStart::Resume(r) if first > r => (r, consumer.log_start(p)),
        ExpectedStart::Resume(_) => return Ok(()),
        // the last fetch's answer says where the log starts; it can trail retention, so a gap
        // it shows is asked of the brokers
        ExpectedStart::LogStart if consumer.cached_log_start(p) >= Some(first) => return Ok(()),
        ExpectedStart::LogStart => match consumer.log_start(p) {
            Some(low) if first > low => (low, Some(low)),
            _ => return Ok(()),
        },
    };
    telemetry::missed((first - from) as u64);
    let log_start = log_start.unwrap_or(-1);
    match expected {
        // the reading restarted at the log's beginning, past the state: retention deleted them
        ExpectedStart::Resume(r) if log_start >= first => tracing::warn!(
            partition = p,
            resume_offset = r,
            first_offset = first,
            "records after the stored state are no longer in kafka; their events are missing"
        ),
        ExpectedStart::Resume(r) => tracing::warn!(
            partition = p,
            resume_offset = r,
            first_offset = first,
            log_start,
            "records after the stored state were skipped: the group's committed offset is past \
             it (another instance of the group consumed them: move a partition's state with \
             `deflect state export` and `import`, or assign partitions by kafka.instances), or \
             the broker did not return them; their events are missing"
        ),
        ExpectedStart::LogStart => tracing::warn!(
            partition = p,
            log_start,
            first_offset = first,
            "no state stored for the partition, and the group's reading starts after the log's \
             beginning: another instance of the group, or an earlier state directory, consumed \
             the records before it; their events are missing"
        ),
    }
    Ok(())
}

/// Decodes and ingests `records` (indexes into the poll's records) of one partition.
fn ingest(e: &mut PartitionEngine, records: &[usize], input: &Input<'_, '_>, out: &mut Ingested) {
    let Ingested {
        skipped,
        replayed,
        mis_keyed,
        first_mis_keyed,
        dropped,
        ..
    } = out;
    for &i in records {
        let msg = &input.msgs[i];
        let payload = msg.payload().unwrap_or_default();
        match validate(input.limits, msg, payload, input.format, input.now) {
            Ok(ev) => {
                if input.check_keys && msg.key() != Some(ev.partition_key().as_bytes()) {
                    *mis_keyed += 1;
                    first_mis_keyed.get_or_insert(i);
                }
                let kind = ev.kind.type_name();
                match e.ingest(msg.offset(), ev, input.now) {
                    Ingest::AlreadyApplied => *skipped += 1,
                    Ingest::Replayed => *replayed += 1,
                    Ingest::Late => {
                        // the bound it was late against (the intervals before it close with the
                        // partition's next advance, if they have not yet)
                        let closed_until = e.closed_before().unwrap_or(0);
                        dropped.push((i, Dropped::Late { kind, closed_until }));
                    }
                    Ingest::Accepted | Ingest::Duplicate => {}
                }
            }
            Err(err) => {
                if e.reject(msg.offset()) == Ingest::AlreadyApplied {
                    *skipped += 1;
                } else {
                    dropped.push((i, Dropped::Rejected(err)));
                }
            }
        }
    }
}

/// After partition `p`'s records are ingested and advanced: at the end of the input, closes one
/// slice of what is left; exports what closing changed and takes its state changes. Returns
/// them with the time `reader` waited for the write in flight.
fn finish_advance(
    p: i32,
    part: &mut Part,
    mut reader: Synced<'_>,
    mut closed: Vec<ClosedInterval>,
    input: &Input<'_, '_>,
    recorder: Recorder<'_>,
) -> Result<(Advanced, Duration)> {
    let e = &mut part.engine;
    let mut more = false;
    if input.at_eof {
        if let Some(c) = e.finalize_step(&mut reader) {
            closed.extend(c);
            more = true;
        }
    }
    let waited = reader.waited;
    reader
        .reader
        .into_result()
        .context("cannot read journey state")?;
    let write = more || !closed.is_empty() || input.by_partition.contains_key(&p);
    if write {
        // what closing changed, exported by this worker (metrics may run one batch ahead of the
        // state on disk: they are absolute values, recomputed alike after a restart)
        metrics::with_local_recorder(recorder, || {
            telemetry::export_closed(p, e, &closed, &mut part.exported)
        });
    }
    let advanced = Advanced {
        partition: p,
        more,
        rejected: e.take_rejected(),
        reports: e.take_reports(),
        write: write.then(|| {
            let changes = e.take_changes(input.keep_cached);
            PartWrite {
                partition: p,
                snapshot: deflect_core::codec::encode(e.snapshot()),
                changes,
                last_record: (input.by_partition.get(&p))
                    .and_then(|r| r.last())
                    .map(|&i| RecordMark {
                        offset: input.msgs[i].offset(),
                        fingerprint: input.msgs[i].fingerprint(),
                    }),
            }
        }),
        closed,
    };
    Ok((advanced, waited))
}

/// The batch the writer has in flight: what it will have finished once it is written.
type InFlight = (Arc<Finished>, u64);

/// The store as a partition's advance reads it: a read waits for the batch in flight to be
/// written first, except timer scans (the engine lays that batch's timers over them) and
/// journey reads that the engine knows that batch does not touch
/// ([`PartitionEngine::journey_reads_skip_last_changes`]): then its advance overlaps the write.
struct Synced<'s> {
    reader: deflect_store::JourneyReader<'s>,
    journey_reads_wait: bool,
    /// Until the first read that must wait.
    in_flight: Option<&'s InFlight>,
    waited: Duration,
}

impl Synced<'_> {
    fn sync(&mut self) {
        if let Some((finished, target)) = self.in_flight.take() {
            let t = Instant::now();
            drop(finished.wait(*target));
            self.waited = t.elapsed();
        }
    }
}

impl deflect_core::engine::JourneyStore for Synced<'_> {
    fn load(&mut self, key: &str) -> Option<deflect_core::engine::StoredJourney> {
        if self.journey_reads_wait {
            self.sync();
        }
        self.reader.load(key)
    }
    fn keeps_timers(&self) -> bool {
        self.reader.keeps_timers()
    }
    fn timers(&mut self, from: Millis, to: Millis) -> Vec<deflect_core::engine::TimerKey> {
        // no wait: the engine lays the timer writes in flight over what this reads (a RocksDB
        // write batch is atomic for readers)
        self.reader.timers(from, to)
    }
    fn first_timer(&mut self, from: Millis) -> Option<Millis> {
        self.sync();
        self.reader.first_timer(from)
    }
}

/// A batch handed to the writer: per partition, its encoded snapshot and state changes.
struct WriteJob {
    parts: Vec<PartWrite>,
}

/// One partition's part of a batch: its encoded snapshot, its state changes, and the last record
/// it read, if it read any.
struct PartWrite {
    partition: i32,
    snapshot: Vec<u8>,
    changes: StateChanges,
    last_record: Option<RecordMark>,
}

/// The thread that writes each poll's state batch (one atomic RocksDB write) while the loop
/// polls and ingests the next poll. At most one batch is in flight.
struct Writer {
    jobs: Option<mpsc::SyncSender<WriteJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The batch in flight: the offsets it makes durable, and how many records it holds.
    in_flight: Option<(Vec<(i32, i64)>, usize)>,
    /// When the last batch that held records was written (by the writer's clock, not when the
    /// loop noticed).
    last_record_durable: Option<Stamp>,
    last_kafka_commit: Instant,
    /// Time the writer thread spent writing, and the puts and deletes it wrote.
    busy: Duration,
    ops: u64,
    /// Batches handed over so far, and what the writer thread finished.
    submitted: u64,
    finished: Arc<Finished>,
}

/// One written batch: how long the write took, when it was done, how many puts and deletes it
/// held.
type WriteOutcome = Result<(Duration, Stamp, usize), deflect_store::StoreError>;

/// What the writer thread finished: how many batches (written or failed) and the outcome of the
/// last one, until [`Writer::wait`] takes it. Closed when the thread ends, however it ends, so
/// that nobody waits for a write that never comes.
#[derive(Default)]
struct Finished {
    state: std::sync::Mutex<FinishedState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct FinishedState {
    count: u64,
    closed: bool,
    outcome: Option<WriteOutcome>,
}

impl Finished {
    fn update(&self, f: impl FnOnce(&mut FinishedState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }

    /// Waits until `target` batches are finished (or the writer is gone).
    fn wait(&self, target: u64) -> std::sync::MutexGuard<'_, FinishedState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.count < target && !st.closed {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }
}

/// Closes [`Finished`] when the writer thread ends.
struct CloseOnExit(Arc<Finished>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.update(|st| st.closed = true);
    }
}

impl Writer {
    fn start(store: Arc<Store>) -> Result<Writer> {
        let (jobs, rx) = mpsc::sync_channel::<WriteJob>(1);
        let finished = Arc::new(Finished::default());
        let done = finished.clone();
        let thread = std::thread::Builder::new()
            .name("deflect-writer".into())
            .spawn(move || {
                let _close = CloseOnExit(done.clone());
                for job in rx {
                    let t = Instant::now();
                    let mut batch = store
                        .batch_for((job.parts.iter()).map(|w| (w.snapshot.as_slice(), &w.changes)));
                    for w in &job.parts {
                        batch.partition_encoded(w.partition, &w.snapshot, &w.changes);
                        if let Some(m) = w.last_record {
                            batch.last_record(w.partition, m);
                        }
                    }
                    let ops = batch.len();
                    let r = batch.commit().map(|()| (t.elapsed(), Stamp::now(), ops));
                    done.update(|st| {
                        st.count += 1;
                        st.outcome = Some(r);
                    });
                }
            })
            .context("cannot start the state writer thread")?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            in_flight: None,
            last_record_durable: None,
            last_kafka_commit: Instant::now(),
            busy: Duration::ZERO,
            ops: 0,
            submitted: 0,
            finished,
        })
    }

    /// Hands a batch to the writer (the previous one must have been waited for).
    fn submit(
        &mut self,
        parts: Vec<PartWrite>,
        offsets: Vec<(i32, i64)>,
        records: usize,
    ) -> Result<()> {
        debug_assert!(self.in_flight.is_none(), "one batch in flight at most");
        self.jobs
            .as_ref()
            .and_then(|j| j.send(WriteJob { parts }).ok())
            .context("the state writer thread stopped")?;
        self.in_flight = Some((offsets, records));
        self.submitted += 1;
        Ok(())
    }

    /// What the writer finished, and the count it reaches once every batch handed over so far
    /// is finished (partition tasks wait on it before reading the store).
    fn finished(&self) -> (Arc<Finished>, u64) {
        (self.finished.clone(), self.submitted)
    }

    /// Waits for the batch in flight, if any: then its records are durable, and its offsets are
    /// committed to Kafka (at most once a second: Kafka's offsets are only a lower bound, the
    /// state store has the real ones).
    fn wait(&mut self, consumer: &GroupConsumer) -> Result<()> {
        let Some((offsets, records)) = self.in_flight.take() else {
            return Ok(());
        };
        let outcome = self.finished.wait(self.submitted).outcome.take();
        let (busy, written, ops) = outcome
            .context("the state writer thread stopped")?
            .context("cannot write state batch")?;
        self.busy += busy;
        self.ops += ops as u64;
        if records > 0 {
            self.last_record_durable = Some(written);
        }
        if self.last_kafka_commit.elapsed() >= Duration::from_secs(1) {
            consumer.commit(&offsets)?;
            self.last_kafka_commit = Instant::now();
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod forward_tests {
    use super::*;
    use deflect_kafka::Headers;

    fn header(h: &OwnedHeaders, name: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == name)
            .map(|x| String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned())
    }

    #[test]
    fn a_record_too_large_to_forward_is_cut_to_fit_and_says_how_long_it_was() {
        let (payload, key) = (vec![7u8; 2_000_000], vec![b'k'; 10_000]);
        let headers = OwnedHeaders::new().insert(Header {
            key: "deflect.reason",
            value: Some("oversized"),
        });
        let hb = HEADER_OVERHEAD + "deflect.reason".len() + "oversized".len();
        let (p, k, h) = fit(1_000_000, &payload, Some(&key), headers, hb);
        assert_eq!(k.map(<[u8]>::len), Some(MAX_FORWARDED_KEY));
        assert_eq!(header(&h, "deflect.key_bytes").as_deref(), Some("10000"));
        assert_eq!(
            header(&h, "deflect.payload_bytes").as_deref(),
            Some("2000000")
        );
        let all: usize = p.len()
            + MAX_FORWARDED_KEY
            + h.iter()
                .map(|x| HEADER_OVERHEAD + x.key.len() + x.value.map_or(0, <[u8]>::len))
                .sum::<usize>();
        assert!(all <= 1_000_000, "{all}");
        assert!(p.len() > 990_000 - MAX_FORWARDED_KEY, "{}", p.len());

        // what fits is left alone, without the headers
        let small = b"payload".to_vec();
        let (p, k, h) = fit(1_000_000, &small, Some(b"u1"), OwnedHeaders::new(), 0);
        assert_eq!((p, k), (&small[..], Some(&b"u1"[..])));
        assert_eq!(h.count(), 0);
    }
}

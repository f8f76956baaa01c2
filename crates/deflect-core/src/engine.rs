//! The per-partition streaming engine.
//!
//! Accepted events wait in a pending buffer until the interval they belong to closes (the watermark
//! passes `interval_end + grace`). Closing an interval processes every pending event and due timer
//! before its end in one total order (event time, lifecycle rank, event id; events before timers at
//! the same instant). The figures therefore depend only on *which* events were accepted, never on the
//! order or batching in which they arrived, and equal a batch computation over the sorted events.
//!
//! The engine holds no I/O. Journeys not in its cache are fetched through [`JourneyStore`]; what
//! changed is handed out by [`PartitionEngine::take_changes`] and [`PartitionEngine::snapshot`] so
//! the caller can write it, with the consumed offset, in one atomic batch.
//!
//! Pending events are not written: the snapshot keeps where the partition must be read again
//! ([`PartitionSnapshot::resume_offset`]), and after a restart [`PartitionEngine::ingest`] takes
//! back exactly the events that were pending and skips the rest.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Millis, Text};
use crate::journey::{Figures, Journey, JourneyConfig};
use crate::metrics::{CounterKey, CounterKeyRef, Counters, Metric, Series, Totals};
use crate::pending::PendingQueue;
use crate::time::{Interval, IntervalMemo, IntervalSpec};
use crate::watermark::Watermark;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub intervals: IntervalSpec,
    pub grace_ms: Millis,
    pub idle_timeout_ms: Millis,
    pub heatmap_days: u32,
    /// Heat-map cells per interval of the day (weekday × hour × minute) instead of per hour.
    pub heatmap_by_interval: bool,
    pub journey: JourneyConfig,
}

/// How far past the interval being closed the engine keeps timers in memory (event time). Timers
/// due later are only in the store (when it [keeps timers](JourneyStore::keeps_timers)) and are
/// read back, one range scan per partition, as the frontier approaches them.
pub const TIMER_WINDOW_MS: Millis = 3_600_000;

/// About how many events and timers one [`PartitionEngine::finalize_step`] processes.
pub const FINALIZE_STEP_ITEMS: u64 = 2_000;

/// Reads journeys that are not in the engine's cache (the RocksDB store in production).
pub trait JourneyStore {
    fn load(&mut self, key: &str) -> Option<StoredJourney>;
    /// Whether the store keeps the timers handed out by [`PartitionEngine::take_changes`]. Then the
    /// engine holds only the timers due within [`TIMER_WINDOW_MS`] in memory and reads the rest
    /// back with [`JourneyStore::timers`]; otherwise it holds every timer.
    fn keeps_timers(&self) -> bool {
        false
    }
    /// The stored timers due in `[from, to)`, as of the last write or the one before it: the
    /// engine lays the timer writes it handed out last over what this returns, so a read need
    /// not wait for that write to land (the write must be atomic for readers).
    fn timers(&mut self, _from: Millis, _to: Millis) -> Vec<TimerKey> {
        Vec::new()
    }
    /// When the first stored timer at or after `from` is due.
    fn first_timer(&mut self, from: Millis) -> Option<Millis> {
        self.timers(from, Millis::MAX).first().map(|k| k.0)
    }
}

/// A store with nothing in it (tests and fresh state).
pub struct NoStore;
impl JourneyStore for NoStore {
    fn load(&mut self, _key: &str) -> Option<StoredJourney> {
        None
    }
}

/// A journey as stored, with the instant its timer is set for.
///
/// Timers are set lazily: a journey's timer is at or before its next wake, never after it. An
/// event that moves the next wake earlier moves the timer; one that only pushes it later (most
/// events of a contact push its inactivity timeout) leaves the timer where it is. A timer that
/// comes due before its journey's next wake finds nothing due: it is set again at the next wake,
/// without processing anything (no interval is opened for it, no figure changes). So the figures
/// and the intervals closed are those of timers set exactly at each next wake, for a fraction of
/// the timer moves and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJourney {
    pub timer: Option<Millis>,
    pub journey: Journey,
}

/// The engine's decoded journeys, by key.
type JourneyCache = hashbrown::HashMap<JourneyKey, Cached, rustc_hash::FxBuildHasher>;

/// A journey in the engine's cache, with when its timer is set and whether it changed since the
/// last `take_changes`.
struct Cached {
    journey: Journey,
    timer: Option<Millis>,
    dirty: bool,
}

/// A pending event, ordered as events are processed: by event time, then by kind (see
/// [`crate::event::EventKind::rank`]), then by id, so that the order does not depend on delivery.
/// The event is part of the key (no copy of its id); its time and rank are kept inline, so that
/// comparisons rarely follow the box. Keys are unique: a second event with a pending id is a
/// duplicate and never held. `batch` (the first offset of the batch that accepted it) is not part
/// of the order.
#[derive(Debug)]
struct Pending {
    at: Millis,
    rank: u8,
    event: Box<Event>,
    batch: i64,
}

impl Pending {
    fn new(event: Box<Event>, batch: i64) -> Self {
        Pending {
            at: event.occurred_at,
            rank: event.kind.rank(),
            event,
            batch,
        }
    }

    fn key(&self) -> (Millis, u8, &str) {
        (self.at, self.rank, &self.event.event_id)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
/// A heat-map cell of one local date: (date, hour, minute of the interval start, or 0 when cells
/// are per hour).
pub type HeatKey = (jiff::civil::Date, u8, u8);
/// A journey's key (`c:` customer or `k:` contact), shared: the cache, the dirty list and the
/// timers hold the same allocation.
pub type JourneyKey = Arc<str>;
pub type TimerKey = (Millis, JourneyKey);

/// The first timer key at `t` (range bounds).
pub fn timer_bound(t: Millis) -> TimerKey {
    (t, JourneyKey::from(""))
}

/// Heat-map sums of one local (date, hour).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeatCell {
    pub arrivals: u64,
    pub answered: u64,
    pub wait_ms: u64,
}

/// One row of the heat map: local weekday (0 = Monday) × hour (× minute of the interval start
/// when cells are per interval; 0 otherwise), summed over the trailing range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeatRow {
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub cell: HeatCell,
    pub days_observed: u64,
}

/// Everything about a partition except journeys, pending events and timers (which are stored
/// per key): small, and rewritten with every batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// Next Kafka offset to consume.
    pub next_offset: i64,
    pub watermark: Watermark,
    /// Every event and timer before this instant has been processed.
    pub frontier: Option<Millis>,
    /// Running totals of every closed interval (what Prometheus sees).
    pub totals: Totals,
    /// Heat-map sums per local (date, hour, minute) cell over the trailing range.
    pub heat: BTreeMap<HeatKey, HeatCell>,
    /// Local (date, hour, minute) cells the closed frontier has passed through.
    pub observed: BTreeSet<HeatKey>,
    pub stats: Stats,
    /// Where a restart reads the partition again: the first offset of the oldest batch that
    /// still has a pending event (`next_offset` when nothing is pending). Pending events are not
    /// stored; they are read again from Kafka and taken back by [`PartitionEngine::ingest`].
    pub resume_offset: i64,
    /// Open callbacks of closed intervals: id → (requested at, tenant, queue).
    pub callbacks: BTreeMap<String, (Millis, String, String)>,
    /// Journeys with a pending timer (each has exactly one: its next wake).
    pub live_timers: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub accepted: u64,
    pub duplicates: u64,
    pub late: u64,
    pub rejected: u64,
    pub intervals_closed: u64,
    /// Events not applied because their order made no sense for their contact.
    pub out_of_order: u64,
}

/// What happened to one consumed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    Accepted,
    /// Same event id as an event still pending.
    Duplicate,
    /// Its interval already closed (`interval_end + grace <= watermark`).
    Late,
    /// Offset below the one stored with the state: already applied before a restart.
    AlreadyApplied,
    /// Read again after a restart: its event was pending when the state was written, and is
    /// pending again (counted when it was first accepted).
    Replayed,
}

/// Where an engine's state needs its partition to be read from, before the first record is read:
/// a first record after it means records the state does not cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedStart {
    /// A new engine (nothing stored for the partition): the log's first offset, which only the
    /// caller can know.
    LogStart,
    /// Restored state: its resume offset (reading from before it is fine).
    Resume(i64),
}

/// The figures of one interval, as it closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedInterval {
    pub interval: Interval,
    /// Shared with the interval's report (not copied per reader).
    pub counters: Arc<Counters>,
    pub heat: HeatCell,
}

/// Which part of an interval's report a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportPart {
    /// Figures attributed to the interval by their deciding event: final when it closes.
    Figures,
    /// Cohort figures (re-contact, containment, proactive deflection) of the contacts that ended
    /// and the notifications sent in the interval: revised as each horizon passes.
    Cohort,
}

impl ReportPart {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportPart::Figures => "figures",
            ReportPart::Cohort => "cohort",
        }
    }
}

/// One revision of one part of an interval's report. Its content depends only on the accepted
/// events (it is a snapshot at an event-time instant), so replaying the same input yields the
/// same reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub interval: Interval,
    pub part: ReportPart,
    pub revision: u32,
    pub is_final: bool,
    /// Labels of the horizons (`24h`, `72h`, `7d`, the proactive window) already final.
    pub horizons_final: Vec<String>,
    /// Shared with the closed interval or the cohort state it was taken from: a report costs
    /// no copy of its series.
    pub counters: Arc<Counters>,
    pub heat: HeatCell,
}

/// The cohort of one closed interval until its last horizon passes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortState {
    pub start: Millis,
    pub end: Millis,
    /// Revisions emitted so far.
    pub emitted: u32,
    /// Copied on write only while a report taken from it is alive (stored as the counters
    /// themselves).
    pub counters: Arc<Counters>,
}

/// State writes produced since the last call to `take_changes`, already encoded
/// ([`crate::codec`]).
#[derive(Debug, Default)]
pub struct StateChanges {
    pub timers_put: Vec<TimerKey>,
    /// Timers moved or taken away before they were due.
    pub timers_del: Vec<TimerKey>,
    /// Timers fired since the last changes: every stored timer due before this instant (the
    /// frontier) was fired, so one range delete removes them all, applied after the puts (a timer
    /// set and fired within the batch included). Fired timers were half of the timer writes of
    /// `deflect bench`, each a tombstone in the memtable.
    pub timers_fired_before: Option<Millis>,
    /// New value of each changed journey; `None` deletes it.
    pub journeys: Vec<(JourneyKey, Option<Vec<u8>>)>,
    /// New value of each changed cohort (by interval start); `None` deletes it.
    pub cohorts: Vec<(Millis, Option<Vec<u8>>)>,
}

impl StateChanges {
    pub fn is_empty(&self) -> bool {
        self.timers_put.is_empty()
            && self.timers_del.is_empty()
            && self.timers_fired_before.is_none()
            && self.journeys.is_empty()
            && self.cohorts.is_empty()
    }
}

/// The net write of one timer key within a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerOp {
    /// Written, and possibly in the store before this batch.
    Put,
    /// Written, and not in the store before this batch.
    PutNew,
    /// Deleted (possibly in the store before this batch).
    Delete,
}

impl TimerOp {
    fn is_put(self) -> bool {
        self != TimerOp::Delete
    }
}

enum CallbackOp {
    Open(String, Millis, String, String),
    Close(String),
}

struct Acc {
    interval: Interval,
    /// Hashed while the interval is processed (a B-tree of label vectors costs a string
    /// comparison per level on every count); sorted into [`Counters`] when it closes.
    counters: hashbrown::HashMap<CounterKey, u64, rustc_hash::FxBuildHasher>,
    heat: HeatCell,
    callbacks: Vec<CallbackOp>,
    /// Cohort figures decided by the item being processed: origin instant and series.
    cohort: Vec<(Millis, CounterKey)>,
    /// The partition's series, lent to the interval being processed.
    series: Series,
    /// Events not applied because their order made no sense for their contact.
    rejected: Vec<(Event, &'static str)>,
}

impl Figures for Acc {
    fn count(&mut self, metric: Metric, labels: &[&str], v: u64) {
        let k = CounterKeyRef { metric, labels };
        match self.counters.get_mut(&k) {
            Some(c) => *c += v,
            None => {
                self.counters.insert(self.series.key(&k), v);
            }
        }
    }
    fn heat_arrival(&mut self) {
        self.heat.arrivals += 1;
    }
    fn heat_answer(&mut self, wait_ms: i64) {
        self.heat.answered += 1;
        self.heat.wait_ms += wait_ms.max(0) as u64;
    }
    fn callback_opened(&mut self, id: &str, at: Millis, tenant: &str, queue: &str) {
        self.callbacks.push(CallbackOp::Open(
            id.to_string(),
            at,
            tenant.to_string(),
            queue.to_string(),
        ));
    }
    fn callback_closed(&mut self, id: &str) {
        self.callbacks.push(CallbackOp::Close(id.to_string()));
    }
    fn rejected(&mut self, event: &Event, detail: &'static str) {
        self.rejected.push((event.clone(), detail));
    }
    fn cohort(&mut self, metric: Metric, labels: &[&str], origin: Millis) {
        let key = self.series.key(&CounterKeyRef { metric, labels });
        *self.counters.entry(key.clone()).or_insert(0) += 1;
        self.cohort.push((origin, key));
    }
}

pub struct PartitionEngine {
    cfg: Arc<EngineConfig>,
    memo: IntervalMemo,
    snap: PartitionSnapshot,
    /// Pending events in processing order: most come in time order and are appended to a sorted
    /// run; a heap takes the others (see [`PendingQueue`]).
    pending: PendingQueue<Pending>,
    /// Pending events per batch: the oldest batch is where a restart must read again. The batch
    /// being ingested is counted apart until the next `take_changes`.
    batch_pending: BTreeMap<i64, u32>,
    /// First offset of the batch being ingested (since the last `take_changes`), and how many of
    /// its events are pending.
    open_batch: Option<i64>,
    open_batch_pending: u32,
    /// One past the highest offset delivered since the engine was built or restored. Below
    /// `next_offset` the partition is being read again after a restart.
    read_to: i64,
    /// Until the first record is read: where the state needs reading to start.
    unread: Option<ExpectedStart>,
    /// Where the journey key of the event being processed is built.
    key_buf: String,
    /// Ids of the pending events (inline up to 24 bytes), with their event time. An event is
    /// pending exactly when its time is not before the frontier (processing takes every event
    /// before it, and one that comes later than that is late), so the ids of processed events
    /// are dropped in one pass at the end of processing, instead of one removal per event.
    pending_ids: HashMap<Text, Millis>,
    /// Timers in memory: with a store that keeps timers, exactly those due before
    /// `timers_until`; otherwise all of them.
    timers: BTreeSet<TimerKey>,
    timers_until: Millis,
    cache: JourneyCache,
    /// Every journey the last [`PartitionEngine::take_changes`] handed out is still cached.
    writes_cached: bool,
    /// Keys of the cached journeys changed since the last `take_changes` (each once).
    dirty: Vec<JourneyKey>,
    /// Net timer writes since the last `take_changes`: a timer set and fired within one batch
    /// must not be written back by a later put, nor deleted from a store that never had it.
    /// Hashed: a put or delete per moved timer, where a B-tree compared keys on every level; the
    /// range reads below (once per window move or finalize slice) scan it.
    timer_ops: HashMap<TimerKey, TimerOp>,
    /// The latest timer fired since the last `take_changes` (they are deleted by range).
    fired_until: Option<Millis>,
    /// The timer writes handed out by the last `take_changes`, laid over timers read from the
    /// store whether or not that write has landed yet (a write lands before the next one is
    /// handed out).
    timer_ops_written: Vec<(TimerKey, TimerOp)>,
    changes: StateChanges,
    /// Cohorts of closed intervals whose last horizon has not passed, by interval start.
    cohorts: BTreeMap<Millis, CohortState>,
    /// (instant the next revision is due, interval start) of every cohort past revision 0.
    revisions_due: BTreeSet<(Millis, Millis)>,
    /// The first instant of `revisions_due` (`Millis::MAX` when empty): checked before every
    /// item, where reaching the set's first entry cost 200 instructions.
    next_revision_due: Millis,
    /// Cohort figures decided since they were last added to their cohorts, summed by cohort
    /// interval and series: adding each decision to a cohort's sorted counters compared label
    /// strings at every level of a B-tree. A cohort's are added when it is read (its revision
    /// emitted at a closing or a horizon), everyone's when the state is taken: summed over a
    /// whole batch, not each advance (one per chunk of a poll's records).
    cohort_adds: HashMap<Interval, hashbrown::HashMap<CounterKey, u64, rustc_hash::FxBuildHasher>>,
    /// Every series counted so far, each key built once (lent to the interval being processed).
    series: Series,
    /// Events and timers processed so far (since the engine was built; not stored).
    processed: u64,
    dirty_cohorts: BTreeSet<Millis>,
    /// Reports produced since the last `take_reports`.
    reports: Vec<Report>,
    /// Events not applied (journey order) since the last `take_rejected`.
    rejected: Vec<(Event, &'static str)>,
}

impl PartitionEngine {
    pub fn new(cfg: Arc<EngineConfig>) -> Self {
        let mut e = Self::restore(cfg, PartitionSnapshot::default(), Vec::new());
        e.unread = Some(ExpectedStart::LogStart);
        e
    }

    /// Rebuilds an engine from stored state. Timers are not loaded here: the engine reads them
    /// from the store ([`JourneyStore::timers`]) as the frontier approaches them. Pending events
    /// come back as the partition is read again from [`PartitionSnapshot::resume_offset`] (or
    /// from any offset before it).
    pub fn restore(
        cfg: Arc<EngineConfig>,
        snap: PartitionSnapshot,
        cohorts: Vec<CohortState>,
    ) -> Self {
        PartitionEngine {
            cfg,
            memo: IntervalMemo::default(),
            read_to: snap.resume_offset,
            unread: Some(ExpectedStart::Resume(snap.resume_offset)),
            key_buf: String::new(),
            snap,
            pending: Default::default(),
            batch_pending: BTreeMap::new(),
            open_batch: None,
            open_batch_pending: 0,
            pending_ids: HashMap::default(),
            timers: BTreeSet::new(),
            timers_until: Millis::MIN,
            cache: Default::default(),
            writes_cached: true,
            dirty: Vec::new(),
            timer_ops: HashMap::default(),
            fired_until: None,
            timer_ops_written: Vec::new(),
            changes: StateChanges::default(),
            cohorts: BTreeMap::new(),
            revisions_due: BTreeSet::new(),
            next_revision_due: Millis::MAX,
            cohort_adds: HashMap::default(),
            series: Series::default(),
            processed: 0,
            dirty_cohorts: BTreeSet::new(),
            reports: Vec::new(),
            rejected: Vec::new(),
        }
        .with_cohorts(cohorts)
    }

    fn with_cohorts(mut self, cohorts: Vec<CohortState>) -> Self {
        for c in cohorts {
            let start = c.start;
            self.cohorts.insert(start, c);
            self.schedule(start);
        }
        self
    }

    /// Indexes when the next revision of a cohort is due.
    fn schedule(&mut self, start: Millis) {
        let horizons = self.horizons();
        if let Some(c) = self.cohorts.get(&start) {
            if c.emitted >= 1 {
                if let Some((_, ms)) = horizons.get(c.emitted as usize - 1) {
                    let due = c.end + ms;
                    self.revisions_due.insert((due, start));
                    self.next_revision_due = self.next_revision_due.min(due);
                }
            }
        }
    }

    /// The horizons of the cohort figures, increasing, with their labels: the re-contact windows
    /// and the proactive window.
    fn horizons(&self) -> Vec<(String, Millis)> {
        let mut h: Vec<(String, Millis)> = crate::metrics::RECONTACT_WINDOWS
            .iter()
            .map(|(n, hours)| (n.to_string(), hours * 3_600_000))
            .collect();
        let pw = self.cfg.journey.proactive_window_ms;
        if !h.iter().any(|(_, ms)| *ms == pw) {
            h.push((format!("proactive_{}m", pw / 60_000), pw));
        }
        h.sort_by_key(|(_, ms)| *ms);
        h
    }

    fn cohort_state(&mut self, i: Interval) -> &mut CohortState {
        self.cohorts.entry(i.start).or_insert_with(|| CohortState {
            start: i.start,
            end: i.end,
            emitted: 0,
            counters: Default::default(),
        })
    }

    /// Emits the cohort revision of `start` for every horizon that passed by now (revision 0 at
    /// close, then one per horizon).
    fn emit_cohort(&mut self, start: Millis) {
        let horizons = self.horizons();
        let Some(c) = self.cohorts.get(&start) else {
            return;
        };
        let passed = horizons.iter().take(c.emitted as usize);
        let final_labels: Vec<String> = passed.map(|(n, _)| n.clone()).collect();
        let is_final = final_labels.len() == horizons.len();
        if !c.counters.is_empty() {
            self.reports.push(Report {
                interval: Interval {
                    start: c.start,
                    end: c.end,
                },
                part: ReportPart::Cohort,
                revision: c.emitted,
                is_final,
                horizons_final: final_labels,
                counters: c.counters.clone(),
                heat: HeatCell::default(),
            });
        }
        let c = self.cohorts.get_mut(&start).expect("present");
        c.emitted += 1;
        self.dirty_cohorts.insert(start);
        if is_final {
            self.cohorts.remove(&start);
        } else {
            self.schedule(start);
        }
    }

    /// Adds the buffered cohort figures to their cohorts.
    fn add_cohort_figures(&mut self) {
        if self.cohort_adds.is_empty() {
            return;
        }
        let mut adds = std::mem::take(&mut self.cohort_adds);
        for (i, keys) in adds.drain() {
            self.add_to_cohort(i, keys);
        }
        // keep the buffer's capacity
        self.cohort_adds = adds;
    }

    /// Adds the buffered figures of the cohort of interval `i`.
    fn add_cohort_figures_of(&mut self, i: Interval) {
        if let Some(keys) = self.cohort_adds.remove(&i) {
            self.add_to_cohort(i, keys);
        }
    }

    fn add_to_cohort(
        &mut self,
        i: Interval,
        keys: hashbrown::HashMap<CounterKey, u64, rustc_hash::FxBuildHasher>,
    ) {
        let counters = Arc::make_mut(&mut self.cohort_state(i).counters);
        for (key, v) in keys {
            counters.add_key(key, v);
        }
        self.dirty_cohorts.insert(i.start);
    }

    /// Every item before `t` is processed: emits each cohort revision whose horizon is at or
    /// before `t` (interval end + horizon), in order.
    fn emit_revisions(&mut self, t: Millis) {
        if self.next_revision_due > t {
            return;
        }
        while let Some(&(due, start)) = self.revisions_due.first() {
            if due > t {
                break;
            }
            self.revisions_due.remove(&(due, start));
            if let Some(end) = self.cohorts.get(&start).map(|c| c.end) {
                self.add_cohort_figures_of(Interval { start, end });
            }
            self.emit_cohort(start);
        }
        self.next_revision_due = self
            .revisions_due
            .first()
            .map_or(Millis::MAX, |(due, _)| *due);
    }

    /// Events processed since the last call whose order made no sense for their contact (not
    /// applied), with why.
    pub fn take_rejected(&mut self) -> Vec<(Event, &'static str)> {
        std::mem::take(&mut self.rejected)
    }

    /// Reports produced since the last call, in event-time order of their production.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// Cohorts still awaiting a horizon.
    pub fn cohorts_len(&self) -> usize {
        self.cohorts.len()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    pub fn next_offset(&self) -> i64 {
        self.snap.next_offset
    }
    /// Where the partition is being read: one past the highest offset delivered since the engine
    /// was built or restored (before any, where reading starts). Below [`Self::next_offset`]
    /// while a restart reads again what the stored state already covers.
    pub fn read_to(&self) -> i64 {
        self.read_to
    }
    /// Where a restart reads the partition again, as of the last `take_changes` (what Kafka
    /// may be told is consumed).
    pub fn resume_offset(&self) -> i64 {
        self.snap.resume_offset
    }
    /// Before any record was read: where the state needs the partition to be read from. The
    /// records from there up to the first one Kafka returns, when it returns a later one, are in
    /// neither the state nor the figures.
    pub fn expected_start(&self) -> Option<ExpectedStart> {
        self.unread
    }
    pub fn watermark(&self) -> Option<Millis> {
        self.snap.watermark.value
    }
    pub fn watermark_state(&self) -> &Watermark {
        &self.snap.watermark
    }
    pub fn frontier(&self) -> Option<Millis> {
        self.snap.frontier
    }
    pub fn totals(&self) -> &Totals {
        &self.snap.totals
    }
    pub fn stats(&self) -> Stats {
        self.snap.stats
    }
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    /// Journeys with a pending timer (in memory or only in the store).
    pub fn timers_len(&self) -> usize {
        self.snap.live_timers as usize
    }
    pub fn snapshot(&self) -> &PartitionSnapshot {
        &self.snap
    }

    /// Whether a journey this engine reads from its store is one that the writes last handed
    /// out by [`PartitionEngine::take_changes`] do not touch: they are all still cached (the
    /// cache was not trimmed), and it reads only journeys it does not have. Then its journey
    /// reads need not wait for that write to land. Its timer reads never need to
    /// ([`JourneyStore::timers`]), except [`JourneyStore::first_timer`] when finalizing.
    pub fn journey_reads_skip_last_changes(&self) -> bool {
        self.writes_cached
    }

    /// The instant before which an event of this partition is late: the start of the interval
    /// the watermark minus the grace period falls in (every record before counts, whatever the
    /// batches), or the closed frontier if it is further.
    pub fn closed_before(&mut self) -> Option<Millis> {
        let grace = self.cfg.grace_ms;
        let by_wm =
            (self.snap.watermark.value).map(|wm| self.interval_of(wm.saturating_sub(grace)).start);
        match (by_wm, self.snap.frontier) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// [`IntervalSpec::interval_of`], remembered.
    fn interval_of(&mut self, t: Millis) -> Interval {
        self.memo.interval_of(&self.cfg.intervals, t)
    }

    /// Marks a record that could not be decoded as consumed.
    pub fn reject(&mut self, offset: i64) -> Ingest {
        self.read_to = self.read_to.max(offset + 1);
        self.unread = None;
        if offset < self.snap.next_offset {
            return Ingest::AlreadyApplied;
        }
        self.snap.next_offset = offset + 1;
        self.snap.stats.rejected += 1;
        Ingest::Accepted
    }

    /// Takes one decoded record at `offset`, read at wall-clock time `now_wall`.
    ///
    /// A record below the offset stored with the state is read again after a restart: its event
    /// is taken back as pending when it was pending when the state was written, and skipped
    /// otherwise (it was processed, late, or a duplicate; counted then).
    pub fn ingest(
        &mut self,
        offset: i64,
        event: impl Into<Box<Event>>,
        now_wall: Millis,
    ) -> Ingest {
        // boxed once, where it is decoded: a buffered event is not moved again
        let event = event.into();
        self.read_to = self.read_to.max(offset + 1);
        self.unread = None;
        if offset < self.snap.next_offset {
            return self.replay(offset, event);
        }
        self.snap.next_offset = offset + 1;
        if let Some(c) = self.closed_before() {
            if event.occurred_at < c {
                self.snap.stats.late += 1;
                return Ingest::Late;
            }
        }
        if !self.claim_id(&event) {
            self.snap.stats.duplicates += 1;
            return Ingest::Duplicate;
        }
        self.snap.watermark.observe(event.occurred_at, now_wall);
        self.snap.stats.accepted += 1;
        self.hold(offset, event);
        Ingest::Accepted
    }

    /// A record read again after a restart. The state was written right after an advance, so
    /// the events pending then are exactly the accepted ones at or after the closed bound: any
    /// event before it was processed, or late when it came. Its first copy comes first, so a
    /// duplicate finds it pending. Nothing is counted again.
    fn replay(&mut self, offset: i64, event: Box<Event>) -> Ingest {
        if offset < self.snap.resume_offset
            || self.closed_before().is_some_and(|c| event.occurred_at < c)
            || !self.claim_id(&event)
        {
            return Ingest::AlreadyApplied;
        }
        self.hold(offset, event);
        Ingest::Replayed
    }

    /// Records `event`'s id as pending; false when an event with that id is pending already.
    fn claim_id(&mut self, event: &Event) -> bool {
        use std::collections::hash_map::Entry;
        match self.pending_ids.entry(event.event_id.as_str().into()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(event.occurred_at);
                true
            }
        }
    }

    /// Holds an event until its interval closes, in the batch being ingested.
    fn hold(&mut self, offset: i64, event: Box<Event>) {
        let batch = *self.open_batch.get_or_insert(offset);
        self.open_batch_pending += 1;
        self.pending.push(Pending::new(event, batch));
    }

    /// The partition cannot be read now (its leader is unreachable): its silence until now is
    /// not idleness ([`Watermark::unreadable`]).
    pub fn unreadable(&mut self, now_wall: Millis) {
        self.snap.watermark.unreadable(now_wall);
    }

    /// Advances the watermark (idleness included) and closes every interval it allows.
    pub fn advance(
        &mut self,
        now_wall: Millis,
        store: &mut dyn JourneyStore,
    ) -> Vec<ClosedInterval> {
        let Some(wm) = self.snap.watermark.tick(now_wall, self.cfg.idle_timeout_ms) else {
            return Vec::new();
        };
        let target = self
            .cfg
            .intervals
            .interval_of(wm.saturating_sub(self.cfg.grace_ms))
            .start;
        if store.keeps_timers() {
            self.window_timers(target, store);
        }
        self.process_until(target, store)
    }

    /// Holds in memory exactly the timers due before `target` + [`TIMER_WINDOW_MS`].
    fn window_timers(&mut self, target: Millis, store: &mut dyn JourneyStore) {
        let until = target.saturating_add(TIMER_WINDOW_MS);
        if self.timers_until < target {
            self.load_timers(until, store);
        } else if self.timers_until > until {
            // the rest is in the store or in `timer_ops`, written with the next batch
            drop(self.timers.split_off(&timer_bound(until)));
            self.timers_until = until;
        }
    }

    /// Where the timers not held in memory begin: at `timers_until`, and never before the
    /// frontier (everything before it was processed, so no timer there can be due).
    fn timers_not_in_memory_from(&self) -> Millis {
        self.timers_until
            .max(self.snap.frontier.unwrap_or(Millis::MIN))
    }

    /// Reads the timers due in `[timers_until, to)`: the stored ones, with the writes of this
    /// batch (not in the store yet) applied over them.
    fn load_timers(&mut self, to: Millis, store: &mut dyn JourneyStore) {
        let from = self.timers_not_in_memory_from();
        if from < to {
            self.timers.extend(store.timers(from, to));
            let range = timer_bound(from)..timer_bound(to);
            // the last write's, in case it has not landed, then this batch's (the range delete
            // of fired timers is below `from`: nothing to lay over)
            let ops =
                (self.timer_ops_written.iter().map(|(k, op)| (k, op))).chain(self.timer_ops.iter());
            for (k, op) in ops.filter(|(k, _)| range.contains(k)) {
                if op.is_put() {
                    self.timers.insert(k.clone());
                } else {
                    self.timers.remove(k);
                }
            }
        }
        self.timers_until = self.timers_until.max(to);
    }

    /// Closes everything: processes every pending event and every timer, however far ahead
    /// (end of a replay). Events arriving afterwards before the new frontier are late.
    pub fn finalize(&mut self, store: &mut dyn JourneyStore) -> Vec<ClosedInterval> {
        let mut out = Vec::new();
        while let Some(closed) = self.finalize_step(store) {
            out.extend(closed);
        }
        out
    }

    /// One step of [`PartitionEngine::finalize`]: closes slices of about [`TIMER_WINDOW_MS`] past
    /// the next pending event or timer until about [`FINALIZE_STEP_ITEMS`] events and timers were
    /// processed; `None` once nothing is left. Writing the changes between steps keeps memory
    /// bounded (the journey cache is trimmed by `take_changes`); a step of several slices spares
    /// the sparse week of timers after a replay's last event a write per hour of event time.
    pub fn finalize_step(&mut self, store: &mut dyn JourneyStore) -> Option<Vec<ClosedInterval>> {
        let start = self.processed;
        let mut out = self.finalize_slice(store)?;
        while self.processed - start < FINALIZE_STEP_ITEMS {
            match self.finalize_slice(store) {
                Some(closed) => out.extend(closed),
                None => break,
            }
        }
        Some(out)
    }

    /// One slice of [`PartitionEngine::finalize_step`]; `None` once nothing is left.
    fn finalize_slice(&mut self, store: &mut dyn JourneyStore) -> Option<Vec<ClosedInterval>> {
        let mut next = [
            self.pending.peek().map(|k| k.at),
            self.timers.first().map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .min();
        if store.keeps_timers() {
            // timers not in memory: stored, or written since the last batch
            let floor = self.timers_not_in_memory_from();
            let written = (self.timer_ops.iter())
                .filter(|(k, op)| k.0 >= floor && op.is_put())
                .map(|(k, _)| k.0)
                .min();
            next = [next, store.first_timer(floor), written]
                .into_iter()
                .flatten()
                .min();
        }
        let Some(next) = next else {
            // nothing is left to decide: every cohort's remaining revisions are final
            self.emit_revisions(Millis::MAX);
            return None;
        };
        let spec = &self.cfg.intervals;
        let target = spec
            .interval_of(next)
            .end
            .max(spec.interval_of(next.saturating_add(TIMER_WINDOW_MS)).start);
        if store.keeps_timers() {
            self.window_timers(target, store);
        }
        Some(self.process_until(target, store))
    }

    fn process_until(
        &mut self,
        target: Millis,
        store: &mut dyn JourneyStore,
    ) -> Vec<ClosedInterval> {
        let mut closed = Vec::new();
        if self.snap.frontier.is_some_and(|f| f >= target) {
            return closed;
        }
        let mut acc: Option<Acc> = None;
        loop {
            // the next item before `target`: an event, or a timer (events first at one instant)
            let next_event = self.pending.peek().map(|k| k.at).filter(|t| *t < target);
            let next_timer = self.timers.first().map(|k| k.0).filter(|t| *t < target);
            let (t, is_event) = match (next_event, next_timer) {
                (None, None) => break,
                (Some(e), Some(tm)) => (e.min(tm), e <= tm),
                (Some(e), None) => (e, true),
                (None, Some(tm)) => (tm, false),
            };
            self.processed += 1;
            // a due timer is taken off its journey first: one that came early is set again at
            // the journey's next wake, and nothing else happens
            let timer = if is_event {
                None
            } else {
                match self.take_first_timer(store) {
                    Some(key) => Some(key),
                    None => continue,
                }
            };
            if acc.as_ref().is_none_or(|a| t >= a.interval.end) {
                if let Some(a) = acc.take() {
                    closed.push(self.close(a));
                }
                let interval = self.interval_of(t);
                self.observe_until(interval.start);
                acc = Some(Acc {
                    interval,
                    counters: Default::default(),
                    heat: HeatCell::default(),
                    callbacks: Vec::new(),
                    cohort: Vec::new(),
                    series: std::mem::take(&mut self.series),
                    rejected: Vec::new(),
                });
            }
            // every item before t is processed: cohort horizons up to t are final
            self.emit_revisions(t);
            let a = acc.as_mut().expect("set above");
            match timer {
                None => {
                    let Pending {
                        event: e, batch, ..
                    } = self.pending.pop().expect("peeked above");
                    self.release_batch_entry(batch);
                    // the key is built in a buffer kept by the engine (no allocation per event)
                    let mut jk = std::mem::take(&mut self.key_buf);
                    e.journey_key_into(&mut jk);
                    self.with_journey(&jk, store, |cfg, j| j.apply(cfg, &e, a));
                    self.key_buf = jk;
                }
                Some((_, key)) => self.with_journey(&key, store, |cfg, j| j.fire(cfg, t, a)),
            }
            for (origin, key) in a.cohort.drain(..) {
                let i = self.interval_of(origin);
                *self
                    .cohort_adds
                    .entry(i)
                    .or_default()
                    .entry(key)
                    .or_insert(0) += 1;
            }
        }
        if let Some(a) = acc.take() {
            closed.push(self.close(a));
        }
        self.emit_revisions(target);
        // The frontier starts at the first processed item's interval, never before it, so the
        // observed hours do not depend on when `advance` happened to be called.
        if let Some(frontier) = self.snap.frontier {
            self.observe_until(target);
            // the events processed here are no longer pending
            let frontier = frontier.max(target);
            self.pending_ids.retain(|_, at| *at >= frontier);
        }
        closed
    }

    fn close(&mut self, mut a: Acc) -> ClosedInterval {
        self.series = std::mem::take(&mut a.series);
        let counters = Arc::new(Counters(
            std::mem::take(&mut a.counters).into_iter().collect(),
        ));
        self.snap.totals.merge(&counters);
        self.snap.stats.out_of_order += a.rejected.len() as u64;
        self.rejected.extend(a.rejected);
        // the interval's own figures are final; its cohort gets revision 0 (provisional). Parts
        // without any figure are not reported.
        if !counters.is_empty() {
            self.reports.push(Report {
                interval: a.interval,
                part: ReportPart::Figures,
                revision: 0,
                is_final: true,
                horizons_final: Vec::new(),
                counters: counters.clone(),
                heat: a.heat,
            });
        }
        self.add_cohort_figures_of(a.interval);
        self.cohort_state(a.interval);
        self.dirty_cohorts.insert(a.interval.start);
        self.emit_cohort(a.interval.start);
        for op in a.callbacks {
            match op {
                CallbackOp::Open(id, at, tenant, queue) => {
                    self.snap.callbacks.insert(id, (at, tenant, queue));
                }
                CallbackOp::Close(id) => {
                    self.snap.callbacks.remove(&id);
                }
            }
        }
        let cell = self
            .snap
            .heat
            .entry(self.heat_key(a.interval.start))
            .or_default();
        cell.arrivals += a.heat.arrivals;
        cell.answered += a.heat.answered;
        cell.wait_ms += a.heat.wait_ms;
        self.snap.stats.intervals_closed += 1;
        ClosedInterval {
            interval: a.interval,
            counters,
            heat: a.heat,
        }
    }

    fn heat_key(&self, t: Millis) -> HeatKey {
        let lh = self.cfg.intervals.local_hour(t);
        let minute = if self.cfg.heatmap_by_interval {
            lh.minute
        } else {
            0
        };
        (lh.date, lh.hour, minute)
    }

    /// Moves the frontier to `until`, marking the local hours it passes as observed.
    fn observe_until(&mut self, until: Millis) {
        let spec = &self.cfg.intervals;
        let range_ms = i64::from(self.cfg.heatmap_days) * 86_400_000 + 86_400_000;
        let from = self.snap.frontier.unwrap_or(until).max(until - range_ms);
        let mut t = from;
        while t < until {
            let k = self.heat_key(t);
            self.snap.observed.insert(k);
            t = spec.interval_of(t).end;
        }
        if self.snap.frontier.is_none_or(|f| until > f) {
            self.snap.frontier = Some(until);
            let today = spec.local_hour(until - 1).date;
            let cutoff = today
                .checked_sub(jiff::Span::new().days(i64::from(self.cfg.heatmap_days) - 1))
                .unwrap_or(today);
            // both ordered by date first: only the oldest cells go (a `retain` walked all of
            // them, 5 k instructions at every closing)
            while self
                .snap
                .observed
                .first()
                .is_some_and(|(d, _, _)| *d < cutoff)
            {
                self.snap.observed.pop_first();
            }
            while (self.snap.heat.first_key_value()).is_some_and(|((d, _, _), _)| *d < cutoff) {
                self.snap.heat.pop_first();
            }
        }
    }

    /// The journey of `key` in `cache`, loaded first when it is not there (a fresh one when the
    /// store has none), with its shared key: one hash lookup.
    fn cached<'c>(
        cache: &'c mut JourneyCache,
        key: &str,
        store: &mut dyn JourneyStore,
    ) -> (JourneyKey, &'c mut Cached) {
        use hashbrown::hash_map::EntryRef;
        match cache.entry_ref(key) {
            EntryRef::Occupied(o) => (o.key().clone(), o.into_mut()),
            EntryRef::Vacant(v) => {
                let (journey, timer) = match store.load(key) {
                    Some(s) => (s.journey, s.timer),
                    None => (Journey::new(key.starts_with("c:")), None),
                };
                let o = v.insert_entry(Cached {
                    journey,
                    timer,
                    dirty: false,
                });
                (o.key().clone(), o.into_mut())
            }
        }
    }

    /// Takes the first timer, known to be the next item, off its journey (its delete recorded).
    /// Returns it when it is due; when it came before the journey's next wake, sets the journey's
    /// timer again at that wake and returns `None`.
    fn take_first_timer(&mut self, store: &mut dyn JourneyStore) -> Option<TimerKey> {
        let key = self.timers.pop_first().expect("the next item is a timer");
        // no delete of its own: the range delete of fired timers takes it (and a put of it in
        // this batch, if any, is not written)
        self.timer_ops.remove(&key);
        self.fired_until = self.fired_until.max(Some(key.0));
        self.snap.live_timers = self.snap.live_timers.saturating_sub(1);
        let (shared, c) = Self::cached(&mut self.cache, &key.1, store);
        debug_assert_eq!(c.timer, Some(key.0), "a journey's timer is where it is set");
        c.timer = None;
        if c.journey
            .next_wake(&self.cfg.journey)
            .is_some_and(|w| w <= key.0)
        {
            Some(key)
        } else {
            let moved = Self::rewake(&self.cfg.journey, &mut self.dirty, &shared, c);
            self.move_timer(shared, moved, store.keeps_timers());
            None
        }
    }

    /// Applies `f` to the journey of `key` and moves its timer if its next wake moved before it
    /// (or went away).
    fn with_journey(
        &mut self,
        key: &str,
        store: &mut dyn JourneyStore,
        f: impl FnOnce(&JourneyConfig, &mut Journey),
    ) {
        let (shared, c) = Self::cached(&mut self.cache, key, store);
        f(&self.cfg.journey, &mut c.journey);
        let moved = Self::rewake(&self.cfg.journey, &mut self.dirty, &shared, c);
        self.move_timer(shared, moved, store.keeps_timers());
    }

    /// Marks a cached journey changed and sets its timer at its next wake unless it is set
    /// before it already (see [`StoredJourney`]), or takes it away when nothing is left to wake
    /// for. Returns the timer's instants (before, after).
    fn rewake(
        cfg: &JourneyConfig,
        dirty: &mut Vec<JourneyKey>,
        shared: &JourneyKey,
        c: &mut Cached,
    ) -> (Option<Millis>, Option<Millis>) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(shared.clone());
        }
        let before = c.timer;
        let after = match (before, c.journey.next_wake(cfg)) {
            (_, None) => None,
            (Some(s), Some(w)) if s <= w => Some(s),
            (_, w) => w,
        };
        c.timer = after;
        (before, after)
    }

    /// Moves a journey's timer from `before` to `after` in memory and in the writes.
    fn move_timer(
        &mut self,
        shared: JourneyKey,
        (before, after): (Option<Millis>, Option<Millis>),
        keeps_timers: bool,
    ) {
        if before == after {
            return;
        }
        if let Some(b) = before {
            let k = (b, shared.clone());
            // a timer outside the window is only in the store
            let in_memory = self.timers.remove(&k);
            if in_memory || keeps_timers {
                self.record_timer(k, false);
            }
        }
        if let Some(a) = after {
            let k = (a, shared);
            if !keeps_timers || a < self.timers_until {
                self.timers.insert(k.clone());
            }
            self.record_timer(k, true);
        }
        match (before, after) {
            (None, Some(_)) => self.snap.live_timers += 1,
            (Some(_), None) => self.snap.live_timers = self.snap.live_timers.saturating_sub(1),
            _ => {}
        }
    }

    fn release_batch_entry(&mut self, batch: i64) {
        if self.open_batch == Some(batch) {
            self.open_batch_pending -= 1;
            return;
        }
        let left = self
            .batch_pending
            .get_mut(&batch)
            .expect("every pending event has a batch");
        *left -= 1;
        if *left == 0 {
            self.batch_pending.remove(&batch);
        }
    }

    /// Records a timer write of this batch, netted against the earlier ones.
    fn record_timer(&mut self, k: TimerKey, put: bool) {
        use std::collections::hash_map::Entry;
        match (self.timer_ops.entry(k), put) {
            // a journey's timer is stored only at its current wake, so a put without an earlier
            // write of this batch is of a key the store does not have
            (Entry::Vacant(v), true) => {
                v.insert(TimerOp::PutNew);
            }
            (Entry::Vacant(v), false) => {
                v.insert(TimerOp::Delete);
            }
            (Entry::Occupied(o), false) if *o.get() == TimerOp::PutNew => {
                o.remove();
            }
            (Entry::Occupied(mut o), false) => {
                *o.get_mut() = TimerOp::Delete;
            }
            (Entry::Occupied(mut o), true) => {
                if *o.get() == TimerOp::Delete {
                    *o.get_mut() = TimerOp::Put;
                }
            }
        }
    }

    /// Hands out the writes accumulated since the last call; the journey cache is cleared
    /// afterwards when it holds more than `keep_cached` entries (everything written will be in
    /// the store; see [`PartitionEngine::journey_reads_skip_last_changes`]).
    ///
    /// Call it after [`PartitionEngine::advance`], with nothing ingested in between: a restart
    /// tells the events pending in the written state by that (see [`PartitionEngine::ingest`]).
    pub fn take_changes(&mut self, keep_cached: usize) -> StateChanges {
        self.add_cohort_figures();
        let mut ch = std::mem::take(&mut self.changes);
        self.timer_ops_written.clear();
        for (k, op) in self.timer_ops.drain() {
            if op.is_put() {
                ch.timers_put.push(k.clone());
            } else {
                ch.timers_del.push(k.clone());
            }
            self.timer_ops_written.push((k, op));
        }
        // in key order, as the store keeps them
        ch.timers_put.sort_unstable();
        ch.timers_del.sort_unstable();
        // a timer fired: the frontier moved past it
        if let (Some(fired), Some(frontier)) = (self.fired_until.take(), self.snap.frontier) {
            debug_assert!(fired < frontier, "fired {fired} at or past the frontier");
            ch.timers_fired_before = Some(frontier);
        }
        // a restart reads again from the oldest batch with a pending event, and not past what
        // was read again so far after the last restart
        debug_assert!(
            {
                let first = self.pending.peek().map(|k| k.at);
                let closed = self.closed_before();
                first.zip(closed).is_none_or(|(f, c)| f >= c)
            },
            "state taken with a pending event before the closed bound: advance first"
        );
        if let (Some(batch), n @ 1..) = (self.open_batch.take(), self.open_batch_pending) {
            self.batch_pending.insert(batch, n);
        }
        self.open_batch_pending = 0;
        let rereading = (self.read_to < self.snap.next_offset).then_some(self.read_to);
        self.snap.resume_offset = (self.batch_pending.keys().next().copied())
            .into_iter()
            .chain(rereading)
            .min()
            .unwrap_or(self.snap.next_offset);
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        for key in dirty {
            let c = self.cache.get_mut(&key).expect("dirty journeys are cached");
            c.dirty = false;
            if c.journey.is_empty() {
                debug_assert_eq!(c.timer, None, "an empty journey has no timer");
                // stays cached, empty, as the store will have it (none): the customer's next
                // contact needs no lookup, and every journey this batch writes stays cached
                ch.journeys.push((key, None));
            } else {
                let v = crate::codec::encode_journey(c.timer, &c.journey);
                ch.journeys.push((key, Some(v)));
            }
        }
        self.writes_cached = self.cache.len() <= keep_cached;
        if !self.writes_cached {
            self.cache.clear();
        }
        for start in std::mem::take(&mut self.dirty_cohorts) {
            let v = self.cohorts.get(&start).map(crate::codec::encode);
            ch.cohorts.push((start, v));
        }
        ch
    }

    /// Open callbacks per (tenant, queue): how many, and when the oldest was requested.
    pub fn callback_backlog(&self) -> BTreeMap<(String, String), (u64, Millis)> {
        let mut out: BTreeMap<(String, String), (u64, Millis)> = BTreeMap::new();
        for (at, tenant, queue) in self.snap.callbacks.values() {
            let e = out
                .entry((tenant.clone(), queue.clone()))
                .or_insert((0, *at));
            e.0 += 1;
            e.1 = e.1.min(*at);
        }
        out
    }

    /// The heat map over the trailing range, one row per (weekday, hour) with data or observation.
    pub fn heatmap(&self) -> Vec<HeatRow> {
        let mut rows: BTreeMap<(u8, u8, u8), HeatRow> = BTreeMap::new();
        let wd = |d: &jiff::civil::Date| crate::time::weekday_index(d.weekday());
        for (d, h, m) in &self.snap.observed {
            let r = rows.entry((wd(d), *h, *m)).or_default();
            r.days_observed += 1;
        }
        for ((d, h, m), c) in &self.snap.heat {
            let r = rows.entry((wd(d), *h, *m)).or_default();
            r.cell.arrivals += c.arrivals;
            r.cell.answered += c.answered;
            r.cell.wait_ms += c.wait_ms;
        }
        rows.into_iter()
            .map(|((w, h, m), mut r)| {
                r.weekday = w;
                r.hour = h;
                r.minute = m;
                r
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dims::DimensionsConfig;
    use crate::event::*;
    use proptest::prelude::*;

    const MIN: Millis = 60_000;

    fn cfg() -> Arc<EngineConfig> {
        Arc::new(EngineConfig {
            intervals: IntervalSpec::new("Europe/London", 15).unwrap(),
            grace_ms: 5 * MIN,
            idle_timeout_ms: i64::MAX / 4,
            heatmap_days: 28,
            heatmap_by_interval: false,
            journey: JourneyConfig::new(DimensionsConfig::default()),
        })
    }

    /// A contact as a list of (offset from its start, kind).
    fn arb_contact() -> impl Strategy<Value = Vec<(Millis, EventKind)>> {
        let step = prop_oneof![
            Just(EventKind::IvrEntered { node: "n".into() }),
            Just(EventKind::IvrExited {
                node: "n".into(),
                reason: IvrExitReason::SelfServed
            }),
            Just(EventKind::IvrExited {
                node: "n".into(),
                reason: IvrExitReason::HangUp
            }),
            Just(EventKind::SelfServiceResolved { confirmed: true }),
            Just(EventKind::AiAgentEnded {
                outcome: AiOutcome::Success,
                turns: 1
            }),
            Just(EventKind::AiAgentEnded {
                outcome: AiOutcome::Dropped,
                turns: 1
            }),
            Just(EventKind::QueueEntered {
                queue: "q".into(),
                priority: 0
            }),
            Just(EventKind::QueueExited {
                reason: QueueExitReason::Abandoned
            }),
            Just(EventKind::AgentConnected {
                context_received: false
            }),
            Just(EventKind::CallbackRequested {
                callback_id: "cb".into()
            }),
            Just(EventKind::SurveyResponse {
                score: 5.0,
                scale_min: 1.0,
                scale_max: 5.0
            }),
        ];
        (
            prop::bool::weighted(0.85),
            prop::collection::vec((0..30 * MIN, step), 0..5),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(customer_initiated, mut steps, ends)| {
                steps.sort_by_key(|s| s.0);
                let mut v = vec![(
                    0,
                    EventKind::ContactStarted {
                        direction: Direction::Inbound,
                        initiation: if customer_initiated {
                            Initiation::Customer
                        } else {
                            Initiation::Transfer
                        },
                    },
                )];
                let last = steps.last().map_or(0, |s| s.0);
                v.extend(steps);
                if ends {
                    v.push((
                        last + MIN,
                        EventKind::ContactEnded {
                            party: None,
                            resolved: true,
                        },
                    ));
                }
                v
            })
    }

    /// Random journeys: contacts of a few customers (some unknown) spread over ~3 days across
    /// the 2024-03-31 DST change in London.
    fn arb_events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            (
                0u8..6,
                0..(3 * 24 * 60 * MIN),
                prop::sample::select(vec![Channel::Voice, Channel::Chat]),
                arb_contact(),
            ),
            1..40,
        )
        .prop_map(|contacts| {
            let base = 1_711_756_800_000; // 2024-03-30T00:00Z
            let mut out = Vec::new();
            for (i, (cust, start, ch, steps)) in contacts.into_iter().enumerate() {
                for (j, (off, kind)) in steps.into_iter().enumerate() {
                    out.push(Event {
                        event_id: compact_str::format_compact!("e{i}-{j}"),
                        tenant: "t".into(),
                        contact_id: compact_str::format_compact!("c{i}"),
                        parent_contact_id: None,
                        customer_id: (cust > 0).then(|| compact_str::format_compact!("u{cust}")),
                        channel: ch,
                        occurred_at: base + start + off,
                        intent: None,
                        queue: None,
                        kind,
                    });
                }
            }
            out
        })
    }

    /// Journeys written by `take_changes`, as the RocksDB store would keep them.
    #[derive(Default)]
    struct MemStore {
        journeys: HashMap<String, StoredJourney>,
        snapshot: PartitionSnapshot,
        timers: BTreeSet<TimerKey>,
        cohorts: BTreeMap<Millis, CohortState>,
        /// The journeys of the last write, while the engine says its reads skip them (the
        /// pipeline then reads without waiting for that write to land).
        unsynced: Option<std::collections::HashSet<String>>,
        /// The timers of every other write land only with the next write (or a finalizing
        /// read, or a restart): timer reads in between see the store without them, as the
        /// pipeline's do while that write is in flight.
        timers_in_flight: Option<(StateChanges, Millis)>,
        writes: u64,
    }
    impl JourneyStore for MemStore {
        fn load(&mut self, key: &str) -> Option<StoredJourney> {
            assert!(
                !self.unsynced.as_ref().is_some_and(|w| w.contains(key)),
                "journey {key} read from the store before the write that changed it landed"
            );
            self.journeys.get(key).cloned()
        }
        fn keeps_timers(&self) -> bool {
            true
        }
        fn timers(&mut self, from: Millis, to: Millis) -> Vec<TimerKey> {
            self.timers
                .range(timer_bound(from)..timer_bound(to))
                .cloned()
                .collect()
        }
        fn first_timer(&mut self, from: Millis) -> Option<Millis> {
            // the pipeline waits for the write in flight here
            self.land_timers();
            self.timers(from, Millis::MAX).first().map(|k| k.0)
        }
    }
    impl MemStore {
        /// One durable write, as `deflect-store` makes it.
        fn write(&mut self, e: &mut PartitionEngine, keep_cached: usize) {
            let ch = e.take_changes(keep_cached);
            self.unsynced = e
                .journey_reads_skip_last_changes()
                .then(|| (ch.journeys.iter()).map(|(k, _)| k.to_string()).collect());
            for (k, j) in ch.journeys {
                match j {
                    Some(j) => self
                        .journeys
                        .insert(k.to_string(), crate::codec::decode(&j).unwrap()),
                    None => self.journeys.remove(&*k),
                };
            }
            self.land_timers();
            let frontier = e.snapshot().frontier.unwrap_or(Millis::MIN);
            let timers = StateChanges {
                timers_put: ch.timers_put,
                timers_del: ch.timers_del,
                timers_fired_before: ch.timers_fired_before,
                ..Default::default()
            };
            self.timers_in_flight = Some((timers, frontier));
            self.writes += 1;
            if self.writes.is_multiple_of(2) {
                self.land_timers();
            }
            for (k, c) in ch.cohorts {
                match c {
                    Some(c) => self.cohorts.insert(k, crate::codec::decode(&c).unwrap()),
                    None => self.cohorts.remove(&k),
                };
            }
            self.snapshot = e.snapshot().clone();
        }
        /// The timer writes of the write in flight land.
        fn land_timers(&mut self) {
            let Some((ch, frontier)) = self.timers_in_flight.take() else {
                return;
            };
            for t in ch.timers_del {
                assert!(
                    self.timers.remove(&t),
                    "deleting a timer never written: {t:?}"
                );
            }
            self.timers.extend(ch.timers_put);
            if let Some(before) = ch.timers_fired_before {
                self.timers.retain(|t| t.0 >= before);
            }
            // every timer before the frontier fired, and none of them is left behind
            assert!(
                self.timers.first().is_none_or(|t| t.0 >= frontier),
                "a fired timer left in the store: {:?} before {frontier}",
                self.timers.first()
            );
        }
        /// A crash: everything not written is lost; the engine comes back from the store.
        fn restore(&mut self, cfg: Arc<EngineConfig>) -> PartitionEngine {
            // after a restart every write has landed
            self.unsynced = None;
            self.land_timers();
            PartitionEngine::restore(
                cfg,
                self.snapshot.clone(),
                self.cohorts.values().cloned().collect(),
            )
        }
    }

    /// Delivers events to `engines` partitions, advancing and writing every `advance_every`
    /// records and crashing a partition every `crash_every` records (restored from what was
    /// written, its records re-delivered as Kafka would: from the resume offset, or from further
    /// back when Kafka's committed offset lags).
    fn run(
        engines: usize,
        deliveries: &[Event],
        advance_every: usize,
        write_every: usize,
        crash_every: usize,
    ) -> (Counters, Vec<HeatRow>, Stats, ReportSums, BTreeSet<Millis>) {
        let cfg = cfg();
        // the start of every interval that closed on any partition
        let mut closed: BTreeSet<Millis> = BTreeSet::new();
        // every report ever emitted, by (partition, interval, part, revision): a report emitted
        // again after a crash must be identical
        let mut emitted: BTreeMap<(usize, Millis, &'static str, u32), Report> = BTreeMap::new();
        let mut record = |p: usize, reports: Vec<Report>| {
            for r in reports {
                let k = (p, r.interval.start, r.part.as_str(), r.revision);
                if let Some(prev) = emitted.get(&k) {
                    assert_eq!(prev, &r, "a re-emitted report differs");
                } else {
                    emitted.insert(k, r);
                }
            }
        };
        let mut es: Vec<PartitionEngine> = (0..engines)
            .map(|_| PartitionEngine::new(cfg.clone()))
            .collect();
        let mut stores: Vec<MemStore> = (0..engines).map(|_| MemStore::default()).collect();
        let mut logs: Vec<Vec<Event>> = vec![Vec::new(); engines];
        // advances since each partition's last write (the pipeline advances after every chunk
        // of a poll's records and writes once per poll)
        let mut unwritten = vec![0usize; engines];
        for (i, e) in deliveries.iter().enumerate() {
            let p = e.journey_key().bytes().map(usize::from).sum::<usize>() % engines;
            logs[p].push(e.clone());
            let offset = logs[p].len() as i64 - 1;
            assert_ne!(es[p].ingest(offset, e.clone(), 0), Ingest::Late, "{e:?}");
            if advance_every > 0 && i % advance_every == 0 {
                let c = es[p].advance(0, &mut stores[p]);
                closed.extend(c.iter().map(|c| c.interval.start));
                record(p, es[p].take_reports());
                unwritten[p] += 1;
                if unwritten[p] >= write_every.max(1) {
                    unwritten[p] = 0;
                    stores[p].write(&mut es[p], if i % 2 == 0 { 0 } else { usize::MAX });
                }
            }
            if crash_every > 0 && i % crash_every == crash_every - 1 {
                // what was advanced since the last write is lost with the process
                unwritten[p] = 0;
                es[p] = stores[p].restore(cfg.clone());
                let resume = es[p].resume_offset();
                assert!(resume <= es[p].next_offset());
                // reading starts where the state says (the lag gauge counts from there)
                assert_eq!(es[p].read_to(), resume);
                let mut o = if i % 2 == 0 { resume / 2 } else { resume } as usize;
                // every third crash, a write and another crash halfway through the records read
                // again: the second restart must not skip the rest of them
                let mut again = (i % 3 == 0).then_some((o + logs[p].len()) / 2);
                while o < logs[p].len() {
                    let before = es[p].read_to();
                    assert_ne!(es[p].ingest(o as i64, logs[p][o].clone(), 0), Ingest::Late);
                    assert_eq!(es[p].read_to(), before.max(o as i64 + 1));
                    o += 1;
                    if again == Some(o) {
                        again = None;
                        let c = es[p].advance(0, &mut stores[p]);
                        closed.extend(c.iter().map(|c| c.interval.start));
                        record(p, es[p].take_reports());
                        stores[p].write(&mut es[p], 0);
                        es[p] = stores[p].restore(cfg.clone());
                        o = es[p].resume_offset() as usize;
                    }
                }
            }
        }
        let mut totals = Counters::default();
        let mut heat: BTreeMap<(u8, u8), HeatCell> = BTreeMap::new();
        let mut stats = Stats::default();
        for (p, (e, store)) in es.iter_mut().zip(&mut stores).enumerate() {
            let c = e.finalize(store);
            closed.extend(c.iter().map(|c| c.interval.start));
            record(p, e.take_reports());
            assert_eq!(e.pending_len(), 0);
            assert_eq!(e.timers_len(), 0);
            totals.merge(&e.totals().to_counters());
            for r in e.heatmap() {
                let c = heat.entry((r.weekday, r.hour)).or_default();
                c.arrivals += r.cell.arrivals;
                c.answered += r.cell.answered;
                c.wait_ms += r.cell.wait_ms;
            }
            stats.accepted += e.stats().accepted;
        }
        let heat = heat
            .into_iter()
            .filter(|(_, cell)| *cell != HeatCell::default())
            .map(|((weekday, hour), cell)| HeatRow {
                weekday,
                hour,
                minute: 0,
                cell,
                days_observed: 0,
            })
            .collect();
        let mut sums = ReportSums::new();
        for ((_, start, part, rev), r) in emitted {
            if !r.counters.is_empty() {
                sums.entry((start, part, rev))
                    .or_default()
                    .merge(&r.counters);
            }
        }
        (totals, heat, stats, sums, closed)
    }

    /// Report counters summed over partitions by (interval, part, revision).
    type ReportSums = BTreeMap<(Millis, &'static str, u32), Counters>;

    proptest! {
        // half of proptest's cases (256, or PROPTEST_CASES for a longer run): each is a pipeline
        #![proptest_config(ProptestConfig {
            cases: ProptestConfig::default().cases / 2,
            ..ProptestConfig::default()
        })]

        /// Arrival order within the grace period, batching (several advances per write
        /// included), cache trimming, the split across partitions and crashes (restore from the
        /// last write, re-delivery of the rest) never change a figure.
        #[test]
        fn figures_do_not_depend_on_delivery(events in arb_events(), delays in prop::collection::vec(0..(2 * MIN), 200), split in 1usize..4, every in 0usize..7, write_every in 1usize..4, crash in prop::sample::select(vec![0usize, 3, 7, 11])) {
            let mut sorted = events.clone();
            sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            let (expected, heat, _, reports, closed) = run(1, &sorted, 0, 1, 0);
            let mut shuffled: Vec<(Millis, usize, Event)> = events.into_iter().enumerate().map(|(i, e)| (e.occurred_at + delays[i % delays.len()], i, e)).collect();
            shuffled.sort_by_key(|(t, i, _)| (*t, *i));
            let deliveries: Vec<Event> = shuffled.into_iter().map(|(_, _, e)| e).collect();
            let (got, got_heat, stats, got_reports, got_closed) = run(split, &deliveries, every, write_every, crash);
            if crash == 0 {
                prop_assert_eq!(stats.accepted as usize, deliveries.len());
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(got_heat, heat);
            prop_assert_eq!(got_reports, reports);
            // which intervals close (empty ones included) does not depend on delivery either
            prop_assert_eq!(got_closed, closed);
        }
    }

    fn ev(id: &str, contact: &str, t: Millis, kind: EventKind) -> Event {
        Event {
            event_id: id.into(),
            tenant: "t".into(),
            contact_id: contact.into(),
            parent_contact_id: None,
            customer_id: Some("u".into()),
            channel: Channel::Voice,
            occurred_at: t,
            intent: None,
            queue: None,
            kind,
        }
    }

    /// A contact resolved by self-service, one event a minute from `t` (ids `{contact}-{n}`):
    /// contained in every re-contact window unless the customer comes back.
    fn resolved_contact(contact: &str, t: Millis) -> Vec<Event> {
        let kinds = [
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
            EventKind::SelfServiceResolved { confirmed: true },
            EventKind::ContactEnded {
                party: None,
                resolved: true,
            },
        ];
        (kinds.into_iter().enumerate())
            .map(|(n, kind)| ev(&format!("{contact}-{n}"), contact, t + n as i64 * MIN, kind))
            .collect()
    }

    #[test]
    fn figures_go_to_the_interval_of_their_deciding_event() {
        let mut e = PartitionEngine::new(cfg());
        let t0 = 1_704_704_400_000; // 2024-01-08T09:00Z (London = UTC in winter)
        let start = EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        };
        e.ingest(0, ev("a", "c", t0 + 14 * MIN, start), 0);
        e.ingest(
            1,
            ev(
                "b",
                "c",
                t0 + 14 * MIN + 50_000,
                EventKind::QueueEntered {
                    queue: "q".into(),
                    priority: 0,
                },
            ),
            0,
        );
        e.ingest(
            2,
            ev(
                "c",
                "c",
                t0 + 15 * MIN + 30_000,
                EventKind::AgentConnected {
                    context_received: false,
                },
            ),
            0,
        );
        e.ingest(
            3,
            ev(
                "d",
                "c",
                t0 + 40 * MIN,
                EventKind::ContactEnded {
                    party: None,
                    resolved: true,
                },
            ),
            0,
        );
        // late: before the frontier once the watermark is past 09:15 + grace
        e.ingest(4, ev("z", "x", t0 + 44 * MIN, EventKind::AiAgentStarted), 0);
        let closed = e.advance(0, &mut NoStore);
        assert_eq!(
            closed.len(),
            2,
            "09:00 and 09:15 closed, 09:30 still open at watermark 09:44"
        );
        assert_eq!(closed[0].interval.start, t0);
        assert_eq!(closed[0].counters.total(Metric::PotentialCalls), 1);
        assert_eq!(closed[0].counters.total(Metric::QueueEntered), 1);
        assert_eq!(closed[0].counters.total(Metric::QueueAnswered), 0);
        assert_eq!(closed[1].interval.start, t0 + 15 * MIN);
        assert_eq!(closed[1].counters.total(Metric::QueueAnswered), 1);
        assert_eq!(closed[1].counters.total(Metric::QueueWaitMs), 40_000);
        assert_eq!(
            e.ingest(5, ev("y", "y", t0 + 29 * MIN, EventKind::AiAgentStarted), 0),
            Ingest::Late
        );
        assert_eq!(
            e.ingest(6, ev("w", "w", t0 + 30 * MIN, EventKind::AiAgentStarted), 0),
            Ingest::Accepted
        );
        // the same record again (a consumer that re-read it): it is pending already
        assert_eq!(
            e.ingest(6, ev("w", "w", t0 + 30 * MIN, EventKind::AiAgentStarted), 0),
            Ingest::AlreadyApplied
        );
        assert_eq!(
            e.ingest(7, ev("w", "w", t0 + 30 * MIN, EventKind::AiAgentStarted), 0),
            Ingest::Duplicate
        );
        let rest = e.finalize(&mut NoStore);
        assert_eq!(rest[0].interval.start, t0 + 30 * MIN);
        assert_eq!(
            rest[0].counters.get(
                Metric::ContactOutcomes,
                &["other", "voice", "none", "assisted"]
            ),
            1
        );
        assert_eq!(e.next_offset(), 8);
    }

    #[test]
    fn only_timers_due_soon_are_held_in_memory() {
        // one resolved self-service contact per customer every 10 minutes for two days: each
        // leaves re-contact watches that wake 24 h, 72 h and 7 d after it ends
        let t0 = 1_704_704_400_000;
        let mut events = Vec::new();
        for i in 0..288 {
            let id = format!("k{i}");
            for mut e in resolved_contact(&id, t0 + i * 10 * MIN) {
                e.customer_id = Some(id.as_str().into());
                events.push(e);
            }
        }
        let (mut windowed, mut store) = (PartitionEngine::new(cfg()), MemStore::default());
        let mut all_in_memory = PartitionEngine::new(cfg());
        for (o, e) in events.iter().enumerate() {
            windowed.ingest(o as i64, e.clone(), 0);
            all_in_memory.ingest(o as i64, e.clone(), 0);
            if o % 50 == 49 {
                windowed.advance(0, &mut store);
                store.write(&mut windowed, 0);
                all_in_memory.advance(0, &mut NoStore);
                let until = windowed.frontier().unwrap() + TIMER_WINDOW_MS;
                assert!(windowed.timers.iter().all(|k| k.0 < until));
                // an hour holds six contacts' first timers (their 4 h inactivity timeout, set at
                // the first event and left there by later ones) and six 24 h watches of the day
                // before
                assert!(windowed.timers.len() <= 13, "{}", windowed.timers.len());
                assert_eq!(windowed.timers_len(), all_in_memory.timers.len());
            }
        }
        assert!(windowed.timers_len() > 200, "most journeys are still live");
        // a crash: the engine comes back without timers in memory and reads them as it goes
        let mut windowed = store.restore(cfg());
        let from = windowed.resume_offset() as usize;
        for (o, e) in events.iter().enumerate().skip(from) {
            windowed.ingest(o as i64, e.clone(), 0);
        }
        windowed.finalize(&mut store);
        all_in_memory.finalize(&mut NoStore);
        assert_eq!(windowed.totals(), all_in_memory.totals());
        assert_eq!(windowed.totals().total(Metric::Containment), 3 * 288);
        assert_eq!(windowed.timers_len(), 0);
    }

    /// A timer written by the batch being processed, due exactly where the timers not held in
    /// memory begin, is found by the end of the input (it is neither in memory nor in the store).
    #[test]
    fn finalizing_finds_a_timer_written_at_the_window_edge() {
        // a contact starting at 10:00 (an interval start) and never ending: the first slice
        // closes up to 11:00 and holds the timers before 12:00 in memory; the contact times out
        // at 12:00, the window's edge
        let t0 = 1_704_708_000_000; // 2024-01-08T10:00:00Z
        let mut c = (*cfg()).clone();
        c.journey.contact_timeout_ms = 120 * MIN;
        let mut e = PartitionEngine::new(Arc::new(c));
        let start = EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        };
        e.ingest(0, ev("a", "c1", t0, start), 0);
        let mut store = MemStore::default();
        assert!(e.finalize_slice(&mut store).is_some());
        assert_eq!(e.frontier(), Some(t0 + 60 * MIN));
        assert!(e.timers.is_empty(), "the timer is past the window");
        assert_eq!(e.timers_len(), 1);
        e.finalize(&mut store);
        assert_eq!(e.timers_len(), 0, "the timeout fired");
        assert!(e.frontier().unwrap() > t0 + 120 * MIN);
    }

    /// Two events of one contact at the same instant and rank are processed in the order of
    /// their ids, whatever order they come in: here two queue entries, the last of which labels
    /// the abandon that follows.
    #[test]
    fn ties_are_broken_by_event_id() {
        let t0 = 1_704_708_000_000;
        let mut c = (*cfg()).clone();
        c.journey.dims.queues = vec!["q1".into(), "q2".into()];
        let cfg = Arc::new(c);
        let entered = |q: &str| EventKind::QueueEntered {
            queue: q.into(),
            priority: 0,
        };
        let start = ev(
            "a-0",
            "c1",
            t0,
            EventKind::ContactStarted {
                direction: Direction::Inbound,
                initiation: Initiation::Customer,
            },
        );
        let q1 = ev("a-1", "c1", t0 + MIN, entered("q1"));
        let q2 = ev("a-2", "c1", t0 + MIN, entered("q2"));
        let abandoned = ev(
            "a-3",
            "c1",
            t0 + 2 * MIN,
            EventKind::QueueExited {
                reason: QueueExitReason::Abandoned,
            },
        );
        let totals = |order: [&Event; 4]| {
            let mut e = PartitionEngine::new(cfg.clone());
            for (o, ev) in order.into_iter().enumerate() {
                assert_eq!(e.ingest(o as i64, ev.clone(), 0), Ingest::Accepted);
            }
            e.finalize(&mut NoStore);
            e.totals().clone()
        };
        let in_order = totals([&start, &q1, &q2, &abandoned]);
        assert_eq!(in_order, totals([&start, &q2, &q1, &abandoned]));
        let abandoned_in = |q: &str| {
            (in_order.0.iter())
                .filter(|(k, _)| {
                    k.metric == Metric::QueueAbandoned && k.labels.iter().any(|l| l == q)
                })
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        assert_eq!((abandoned_in("q1"), abandoned_in("q2")), (0, 1));
    }

    /// An id names a duplicate only while its event is pending: once processed, the id is free
    /// again (a re-delivery of that event would be late by then).
    #[test]
    fn an_id_is_a_duplicate_only_while_its_event_is_pending() {
        let t0 = 1_704_704_400_000;
        let start = || EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        };
        let mut e = PartitionEngine::new(cfg());
        // (offset, event id, contact, minutes after t0, outcome)
        let deliver = |e: &mut PartitionEngine, records: &[(i64, &str, &str, i64, Ingest)]| {
            for &(offset, id, contact, min, want) in records {
                let got = e.ingest(offset, ev(id, contact, t0 + min * MIN, start()), 0);
                assert_eq!(got, want, "record at offset {offset}");
            }
        };
        deliver(
            &mut e,
            &[
                (0, "x", "c1", 0, Ingest::Accepted),
                (1, "x", "c1", 0, Ingest::Duplicate),
                (2, "x", "c2", 5, Ingest::Duplicate),
                (3, "y", "c3", 180, Ingest::Accepted),
            ],
        );
        e.advance(0, &mut NoStore);
        assert!(e.frontier().is_some_and(|f| f > t0 && f <= t0 + 180 * MIN));
        deliver(
            &mut e,
            &[
                (4, "x", "c1", 0, Ingest::Late),
                (5, "x", "c4", 180, Ingest::Accepted),
                (6, "x", "c4", 181, Ingest::Duplicate),
            ],
        );
        assert_eq!(e.stats().duplicates, 3);
    }

    /// A journey emptied by one batch stays cached as empty: the customer's next contact does
    /// not look it up in the store (where the delete may not have landed yet).
    #[test]
    fn an_emptied_journey_is_not_looked_up_again() {
        let t0 = 1_704_704_400_000;
        let (mut e, mut store) = (PartitionEngine::new(cfg()), MemStore::default());
        for (o, ev) in resolved_contact("a", t0).into_iter().enumerate() {
            e.ingest(o as i64, ev, 0);
        }
        // every re-contact window passes: nothing is left of the journey
        e.finalize(&mut store);
        store.write(&mut e, usize::MAX);
        assert!(store.journeys.is_empty());
        assert!(e.journey_reads_skip_last_changes());
        let later = e.frontier().unwrap() + 60 * MIN;
        for (o, ev) in resolved_contact("b", later).into_iter().enumerate() {
            e.ingest(10 + o as i64, ev, 0);
        }
        e.finalize(&mut store);
        // both contacts contained, in each of the three re-contact windows
        assert_eq!(e.totals().total(Metric::Containment), 6);
    }

    #[test]
    fn expected_start_is_known_until_the_first_record() {
        let t0 = 1_704_704_400_000;
        let start = EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        };
        let mut e = PartitionEngine::new(cfg());
        assert_eq!(e.expected_start(), Some(ExpectedStart::LogStart));
        assert_eq!(e.reject(3), Ingest::Accepted);
        assert_eq!(e.expected_start(), None, "a rejected record is read too");
        let snap = PartitionSnapshot {
            next_offset: 20,
            resume_offset: 10,
            ..Default::default()
        };
        let mut e = PartitionEngine::restore(cfg(), snap, Vec::new());
        assert_eq!(e.expected_start(), Some(ExpectedStart::Resume(10)));
        e.ingest(13, ev("a", "c", t0, start), 0);
        assert_eq!(e.expected_start(), None, "only before the first read");
    }

    #[test]
    fn idle_partition_closes_its_windows_by_wall_clock() {
        let mut e = PartitionEngine::new(cfg());
        let t0 = 1_704_704_400_000;
        let start = EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        };
        let mut c = (*cfg()).clone();
        c.idle_timeout_ms = 60_000;
        let mut e2 = PartitionEngine::new(Arc::new(c));
        e.ingest(0, ev("a", "c", t0, start.clone()), 1_000);
        e2.ingest(0, ev("a", "c", t0, start), 1_000);
        assert!(
            e.advance(10_000_000, &mut NoStore).is_empty(),
            "no idleness configured"
        );
        assert!(e2.advance(30_000, &mut NoStore).is_empty(), "not idle yet");
        // idle for 20 minutes of wall clock: the watermark moved by as much, 09:00 closes
        let closed = e2.advance(1_000 + 20 * MIN, &mut NoStore);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].counters.total(Metric::PotentialCalls), 1);
    }
}

#[cfg(test)]
mod heatmap_tests {
    use super::*;
    use crate::dims::DimensionsConfig;
    use crate::event::*;

    /// One potential call every 15 minutes from `from` to `to` (UTC ms), heat cells per 30-minute
    /// interval in London.
    fn run(from: Millis, to: Millis) -> Vec<HeatRow> {
        let cfg = Arc::new(EngineConfig {
            intervals: IntervalSpec::new("Europe/London", 30).unwrap(),
            grace_ms: 300_000,
            idle_timeout_ms: i64::MAX / 4,
            heatmap_days: 28,
            heatmap_by_interval: true,
            journey: JourneyConfig::new(DimensionsConfig::default()),
        });
        let mut e = PartitionEngine::new(cfg);
        let mut t = from;
        let mut i = 0;
        while t < to {
            let ev = Event {
                event_id: compact_str::format_compact!("e{i}"),
                tenant: "t".into(),
                contact_id: compact_str::format_compact!("c{i}"),
                parent_contact_id: None,
                customer_id: None,
                channel: Channel::Voice,
                occurred_at: t,
                intent: None,
                queue: None,
                kind: EventKind::ContactStarted {
                    direction: Direction::Inbound,
                    initiation: Initiation::Customer,
                },
            };
            e.ingest(i, ev, 0);
            t += 15 * 60_000;
            i += 1;
        }
        e.finalize(&mut NoStore);
        e.heatmap()
    }

    fn cell(rows: &[HeatRow], weekday: u8, hour: u8, minute: u8) -> Option<(u64, u64)> {
        rows.iter()
            .find(|r| (r.weekday, r.hour, r.minute) == (weekday, hour, minute))
            .map(|r| (r.cell.arrivals, r.days_observed))
    }

    #[test]
    fn interval_cells_across_the_25_hour_day() {
        // Sunday 2024-10-27: 01:00–02:00 local happens twice (BST, then GMT)
        let rows = run(1_729_987_200_000, 1_730_073_600_000); // 10-27T00:00Z .. 10-28T00:00Z
                                                              // two calls per 30-minute interval, each local 01:xx interval twice: 4 calls. The frontier
                                                              // goes on for a week after the calls (timers of ended contacts), so the next Sunday is
                                                              // observed too: 2 days.
        assert_eq!(cell(&rows, 6, 1, 0), Some((4, 2)));
        assert_eq!(cell(&rows, 6, 1, 30), Some((4, 2)));
        assert_eq!(cell(&rows, 6, 12, 30), Some((2, 2)));
        assert_eq!(rows.iter().map(|r| r.cell.arrivals).sum::<u64>(), 24 * 4);
    }

    #[test]
    fn interval_cells_across_the_23_hour_day() {
        // Sunday 2024-03-31: 01:00–02:00 local does not exist
        let rows = run(1_711_843_200_000, 1_711_926_000_000); // 03-31T00:00Z .. 03-31T23:00Z
        assert_eq!(cell(&rows, 6, 0, 30), Some((2, 2)));
        // observed only on the next Sunday, which has a 01:00
        assert_eq!(cell(&rows, 6, 1, 0), Some((0, 1)));
        assert_eq!(cell(&rows, 6, 2, 0), Some((2, 2)));
        // 23 hours of local time, 46 cells of 30 minutes with calls
        let with_calls = rows
            .iter()
            .filter(|r| r.weekday == 6 && r.cell.arrivals > 0);
        assert_eq!(with_calls.count(), 46);
    }
}

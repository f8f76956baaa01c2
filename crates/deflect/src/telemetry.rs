//! The Prometheus surface: business totals of each owned partition, the heat map, and the
//! pipeline's own health metrics. Names live here (pipeline) and in `deflect_core::metrics`
//! (business); labels come only from bounded sets.

use std::time::Duration;

use deflect_core::engine::{ClosedInterval, HeatRow, PartitionEngine};
use deflect_core::metrics::{wait_bucket_labels, CounterKey, Metric};
use deflect_core::time::WEEKDAY_NAMES;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Label,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const EVENTS: &str = "deflect_events_total";
pub const EVENTS_REJECTED: &str = "deflect_events_rejected_total";
pub const RECORDS_SKIPPED: &str = "deflect_records_already_applied_total";
pub const RECORDS_REPLAYED: &str = "deflect_records_replayed_total";
pub const RECORDS_MISSED: &str = "deflect_records_missed_total";
pub const RECORDS_MIS_KEYED: &str = "deflect_records_mis_keyed_total";
pub const INTERVALS_CLOSED: &str = "deflect_intervals_closed_total";
pub const WATERMARK: &str = "deflect_watermark_seconds";
pub const FRONTIER: &str = "deflect_closed_until_seconds";
pub const INSTANCE_WATERMARK: &str = "deflect_instance_watermark_seconds";
pub const CONSUMER_LAG: &str = "deflect_consumer_lag";
pub const PENDING_EVENTS: &str = "deflect_pending_events";
pub const TIMERS: &str = "deflect_timers";
pub const ASSIGNED_PARTITIONS: &str = "deflect_assigned_partitions";
pub const UNREACHABLE_PARTITIONS: &str = "deflect_unreachable_partitions";
pub const BATCH_SECONDS: &str = "deflect_batch_duration_seconds";
pub const BATCH_RECORDS: &str = "deflect_batch_records";
pub const STATE_BYTES: &str = "deflect_state_live_bytes";
pub const HEAT_ARRIVALS: &str = "deflect_heatmap_arrivals";
pub const HEAT_ANSWERED: &str = "deflect_heatmap_answered";
pub const HEAT_WAIT_MS: &str = "deflect_heatmap_answered_wait_milliseconds";
pub const HEAT_DAYS: &str = "deflect_heatmap_days_observed";
pub const LATE_EVENTS: &str = "deflect_late_events_total";
pub const REPORTS: &str = "deflect_reports_total";
pub const ROCKSDB_WRITE_STOPPED: &str = "deflect_rocksdb_write_stopped";
pub const ROCKSDB_DELAYED_WRITE_RATE: &str = "deflect_rocksdb_delayed_write_rate_bytes";
pub const STAFFING_AGENTS: &str = "deflect_staffing_required_agents";
pub const STAFFING_SCHEDULED: &str = "deflect_staffing_scheduled_staff";
pub const STAFFING_LOAD: &str = "deflect_staffing_offered_load_erlangs";
pub const CALLBACK_BACKLOG: &str = "deflect_callback_backlog";
pub const CALLBACK_OLDEST: &str = "deflect_callback_oldest_pending_seconds";
pub const OUTPUT_UNDELIVERED: &str = "deflect_output_undelivered_records";
pub const COMMIT_FAILURES: &str = "deflect_offset_commit_failures_total";

const BATCH_SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_RECORDS_BUCKETS: [f64; 11] = [
    1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 20000.0, 50000.0,
];

/// Builds a recorder (not installed globally: each pipeline records into its own, so tests can run
/// several in one process) and the handle that renders it.
pub fn recorder() -> (PrometheusRecorder, PrometheusHandle) {
    recorder_with_idle_timeout(IDLE_TIMEOUT)
}

/// Series not updated for this long disappear (see [`keep_process_counters`]).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

fn recorder_with_idle_timeout(idle: Duration) -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BATCH_SECONDS.into()), &BATCH_SECONDS_BUCKETS)
        .expect("non-empty buckets")
        .set_buckets_for_metric(Matcher::Full(BATCH_RECORDS.into()), &BATCH_RECORDS_BUCKETS)
        .expect("non-empty buckets")
        // series of partitions this instance no longer owns stop being refreshed and disappear;
        // histograms (the batch ones, without labels) stay: an idle pipeline records none, and
        // a histogram that came back from 0 would read as a counter reset to `rate()`
        .idle_timeout(
            metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::GAUGE,
            Some(idle),
        )
        .build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// Shows the process counters of every bounded label value (at 0 until counted), so that rates
/// and alerts see a zero, not an absent series. Every series not updated for the recorder's idle
/// timeout disappears (and would come back from 0): the pipeline calls this at every refresh,
/// within the timeout, to keep these (an increment of 0 counts as an update).
pub fn keep_process_counters() {
    for reason in deflect_proto::RejectReason::ALL {
        counter!(EVENTS_REJECTED, "reason" => reason.as_str()).increment(0);
    }
    for t in deflect_core::event::EVENT_TYPES {
        counter!(LATE_EVENTS, "type" => t).increment(0);
    }
    for part in ["figures", "cohort"] {
        for fin in ["true", "false"] {
            counter!(REPORTS, "part" => part, "final" => fin).increment(0);
        }
    }
    counter!(RECORDS_SKIPPED).increment(0);
    counter!(RECORDS_REPLAYED).increment(0);
    counter!(RECORDS_MISSED).increment(0);
    counter!(RECORDS_MIS_KEYED).increment(0);
    counter!(COMMIT_FAILURES).increment(0);
    // not waiting when this runs (the loop thread does both)
    gauge!(OUTPUT_UNDELIVERED).set(0.0);
}

/// Dead letters, late events and reports of the batch in hand not delivered yet, while the
/// pipeline waits for them (0 otherwise).
pub fn undelivered(n: i32) {
    gauge!(OUTPUT_UNDELIVERED).set(f64::from(n));
}

/// Registers help texts and the process counters ([`keep_process_counters`]); call inside the
/// recorder's scope.
pub fn describe() {
    keep_process_counters();
    for m in Metric::ALL {
        describe_counter!(m.name(), m.help());
    }
    describe_gauge!(
        OUTPUT_UNDELIVERED,
        "Dead letters, late events and reports the pipeline is waiting to see delivered before it \
         writes their batch (0 unless a broker does not take them)."
    );
    describe_counter!(
        EVENTS,
        "Records consumed, by what happened to them (accepted, duplicate, late)."
    );
    describe_counter!(
        EVENTS_REJECTED,
        "Records that could not be used, by reason; each goes to the dead-letter topic."
    );
    describe_counter!(
        RECORDS_SKIPPED,
        "Records re-delivered below the offset stored with the state (already applied)."
    );
    describe_counter!(
        RECORDS_REPLAYED,
        "Records read again after a restart because their events were still pending (not stored)."
    );
    describe_counter!(
        RECORDS_MIS_KEYED,
        "Records whose Kafka key is not their event's customer_id (contact_id without one), on a topic of several partitions: a customer's journey may be split over partitions."
    );
    describe_counter!(
        COMMIT_FAILURES,
        "Offset commits to the consumer group that failed (the committed offsets trail; restarts resume from the stored state)."
    );
    describe_counter!(
        RECORDS_MISSED,
        "Offsets the stored state needed read that Kafka's reading skipped (consumed by another instance of the group, or deleted by retention): not in the figures."
    );
    describe_counter!(
        INTERVALS_CLOSED,
        "Intervals closed (watermark passed interval end + grace)."
    );
    describe_gauge!(
        WATERMARK,
        "Event-time watermark of the partition, Unix seconds."
    );
    describe_gauge!(
        FRONTIER,
        "Every interval before this instant (Unix seconds) is closed and counted."
    );
    describe_gauge!(
        INSTANCE_WATERMARK,
        "Minimum watermark over non-idle partitions of this instance, Unix seconds."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records not read yet, per partition: the log end (librdkafka statistics, every 5 s) minus the offset after the last record read (a restart's re-read included)."
    );
    describe_gauge!(
        PENDING_EVENTS,
        "Accepted events waiting for their interval to close."
    );
    describe_gauge!(
        TIMERS,
        "Journeys with a pending event-time timer (contact timeout, containment)."
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Input partitions owned by this instance."
    );
    describe_gauge!(
        UNREACHABLE_PARTITIONS,
        "Owned input partitions whose leader is unreachable: their silence is not idleness, their intervals stay open."
    );
    describe_histogram!(
        BATCH_SECONDS,
        "Time to process, persist and commit one poll batch."
    );
    describe_histogram!(BATCH_RECORDS, "Records per poll batch.");
    describe_counter!(
        LATE_EVENTS,
        "Events that arrived after their interval closed, by event type; each goes to the late-events topic."
    );
    describe_counter!(
        REPORTS,
        "Interval reports produced to the output topic, by part (figures, cohort) and whether final."
    );
    describe_gauge!(
        ROCKSDB_WRITE_STOPPED,
        "1 while RocksDB has stopped writes (too many memtables or level-0 files), else 0."
    );
    describe_gauge!(
        ROCKSDB_DELAYED_WRITE_RATE,
        "Write rate RocksDB is throttling to while it delays writes (bytes/s), 0 when not delayed."
    );
    describe_gauge!(
        STAFFING_AGENTS,
        "Erlang C agents for staffing.target within service.level_threshold, from the last interval closed on every owned partition."
    );
    describe_gauge!(
        STAFFING_SCHEDULED,
        "Scheduled staff for those agents after staffing.shrinkage."
    );
    describe_gauge!(
        STAFFING_LOAD,
        "Offered load of that interval in Erlangs (queue entries per second x AHT)."
    );
    describe_gauge!(
        CALLBACK_BACKLOG,
        "Callbacks requested and not yet completed, canceled, expired or lost, at the closed frontier."
    );
    describe_gauge!(
        CALLBACK_OLDEST,
        "Age of the oldest open callback at the closed frontier (event time), seconds; take max across partitions."
    );
    describe_gauge!(STATE_BYTES, "Estimated live bytes in the RocksDB state.");
    describe_gauge!(
        HEAT_ARRIVALS,
        "Potential calls per local weekday and hour, summed over the trailing heat-map range."
    );
    describe_gauge!(
        HEAT_ANSWERED,
        "Queued contacts answered per local weekday and hour over the trailing range."
    );
    describe_gauge!(
        HEAT_WAIT_MS,
        "Queue wait of answered contacts per local weekday and hour over the trailing range, ms."
    );
    describe_gauge!(
        HEAT_DAYS,
        "Calendar days observed per local weekday and hour in the trailing range (divide by this)."
    );
}

fn labels(key: &CounterKey, partition: &str) -> Vec<Label> {
    key.metric
        .labels()
        .iter()
        .zip(key.labels.iter())
        .map(|(k, v)| Label::new(*k, v.clone()))
        .chain(std::iter::once(Label::new(
            "partition",
            partition.to_string(),
        )))
        .collect()
}

/// Sets every business counter of a partition to its stored total (startup, assignment, and a
/// periodic refresh that keeps owned series alive).
pub fn export_totals(p: i32, engine: &PartitionEngine) {
    let ps = p.to_string();
    // through the registry (fresh handles): this refresh is what keeps owned series alive
    Exported::default().set_counters(engine.totals().0.keys(), engine, &ps);
    export_partition(p, engine);
}

/// What was last exported of a partition, so that an update sets only what changed.
#[derive(Debug, Default)]
pub struct Exported {
    /// Heat-map rows by (weekday, hour, minute).
    heat: std::collections::BTreeMap<(u8, u8, u8), HeatRow>,
    /// Handles of the business series registered so far: updating one is an atomic add, not a
    /// registry lookup with its label strings (the idle timeout cannot orphan them: every update
    /// counts as activity, and the periodic refresh updates every owned series).
    counters: rustc_hash::FxHashMap<CounterKey, Counter>,
    /// The wait histograms registered so far, by their labels without `le`: the cumulative
    /// buckets' handles in `le` order.
    buckets: rustc_hash::FxHashMap<Vec<String>, Vec<Counter>>,
}

impl Exported {
    /// The rows that differ from the ones last exported, which they replace.
    fn changed_heat_rows(&mut self, rows: Vec<HeatRow>) -> Vec<HeatRow> {
        rows.into_iter()
            .filter(|r| self.heat.insert((r.weekday, r.hour, r.minute), *r) != Some(*r))
            .collect()
    }

    /// Sets a series to `v`, registering its handle on first use.
    fn set(&mut self, k: &CounterKey, v: u64, ps: &str) {
        match self.counters.get(k) {
            Some(c) => c.absolute(v),
            None => {
                let c = counter!(k.metric.name(), labels(k, ps));
                c.absolute(v);
                self.counters.insert(k.clone(), c);
            }
        }
    }

    /// Sets one counter series to the engine's total (and, the first time, its family's
    /// siblings with the same labels at 0 when they have no value yet); a wait bucket sets the
    /// whole cumulative histogram of its group.
    fn set_counter(&mut self, k: &CounterKey, engine: &PartitionEngine, ps: &str) {
        let totals = &engine.totals().0;
        if k.metric != Metric::QueueWaitBucket {
            let first = !self.counters.contains_key(k);
            self.set(k, totals[k], ps);
            if first {
                for sibling in deflect_core::metrics::family(k.metric).unwrap_or(&[]) {
                    let key = CounterKey {
                        metric: *sibling,
                        labels: k.labels.clone(),
                    };
                    if *sibling != k.metric && !totals.contains_key(&key) {
                        self.set(&key, 0, ps);
                    }
                }
            }
            return;
        }
        // the group's labels, then each bucket's `le`
        let group = &k.labels[..k.labels.len() - 1];
        let mut cumulative = 0;
        let mut handles = Vec::new();
        for le in wait_bucket_labels() {
            let key = CounterKey::new(k.metric, group.iter().map(String::as_str).chain([le]));
            cumulative += totals.get(&key).copied().unwrap_or(0);
            let c = counter!(key.metric.name(), labels(&key, ps));
            c.absolute(cumulative);
            handles.push(c);
        }
        self.buckets.insert(group.to_vec(), handles);
    }

    /// Sets the series of these keys to the engine's totals (each wait-bucket group once,
    /// whichever of its buckets changed).
    fn set_counters<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a CounterKey>,
        engine: &PartitionEngine,
        ps: &str,
    ) {
        let mut seen = rustc_hash::FxHashSet::default();
        let mut groups = rustc_hash::FxHashSet::default();
        for k in keys {
            let new = if k.metric == Metric::QueueWaitBucket {
                groups.insert(&k.labels[..k.labels.len() - 1])
            } else {
                seen.insert(k)
            };
            if new {
                self.set_counter(k, engine, ps);
            }
        }
    }

    /// Adds the figures of closed intervals to their series. A series registered before is
    /// incremented by each figure (a wait bucket increments its `le` and every greater one:
    /// they are cumulative); one seen for the first time is set to the engine's total, which
    /// already holds every interval of `closed`, and is not incremented again in this call.
    fn add_closed(&mut self, closed: &[ClosedInterval], engine: &PartitionEngine, ps: &str) {
        let mut fresh = rustc_hash::FxHashSet::<&CounterKey>::default();
        let mut fresh_groups = rustc_hash::FxHashSet::<&[String]>::default();
        for (k, v) in closed.iter().flat_map(|c| &c.counters.0) {
            if k.metric == Metric::QueueWaitBucket {
                let (group, le) = k.labels.split_at(k.labels.len() - 1);
                let i = wait_bucket_labels().position(|l| l == le[0]);
                match (self.buckets.get(group), i) {
                    (Some(_), _) if !fresh_groups.is_empty() && fresh_groups.contains(group) => {}
                    (Some(handles), Some(i)) => {
                        handles[i..].iter().for_each(|c| c.increment(*v));
                    }
                    // first seen (or an `le` of no bucket, from a store of other buckets: the
                    // group is set again from the totals)
                    _ => {
                        self.set_counter(k, engine, ps);
                        fresh_groups.insert(group);
                    }
                }
            } else {
                match self.counters.get(k) {
                    Some(_) if !fresh.is_empty() && fresh.contains(k) => {}
                    Some(c) => c.increment(*v),
                    None => {
                        self.set_counter(k, engine, ps);
                        fresh.insert(k);
                    }
                }
            }
        }
    }
}

/// Updates what closing these intervals changed.
pub fn export_closed(
    p: i32,
    engine: &PartitionEngine,
    closed: &[ClosedInterval],
    exported: &mut Exported,
) {
    let ps = p.to_string();
    exported.add_closed(closed, engine, &ps);
    if !closed.is_empty() {
        let rows = exported.changed_heat_rows(engine.heatmap());
        export_heat_rows(p, engine, rows.iter());
    }
    export_partition(p, engine);
}

fn export_heatmap(p: i32, engine: &PartitionEngine) {
    export_heat_rows(p, engine, engine.heatmap().iter());
}

fn export_heat_rows<'a>(p: i32, engine: &PartitionEngine, rows: impl Iterator<Item = &'a HeatRow>) {
    let ps = p.to_string();
    for row in rows {
        let mut l = vec![
            (
                "weekday",
                WEEKDAY_NAMES[usize::from(row.weekday)].to_string(),
            ),
            ("hour", row.hour.to_string()),
            ("partition", ps.clone()),
        ];
        if engine.config().heatmap_by_interval {
            l.push(("minute", format!("{:02}", row.minute)));
        }
        gauge!(HEAT_ARRIVALS, &l).set(row.cell.arrivals as f64);
        gauge!(HEAT_ANSWERED, &l).set(row.cell.answered as f64);
        gauge!(HEAT_WAIT_MS, &l).set(row.cell.wait_ms as f64);
        gauge!(HEAT_DAYS, &l).set(row.days_observed as f64);
    }
}

/// Per-partition health gauges and event counters.
pub fn export_partition(p: i32, engine: &PartitionEngine) {
    let ps = p.to_string();
    let s = engine.stats();
    for (result, v) in [
        ("accepted", s.accepted),
        ("duplicate", s.duplicates),
        ("late", s.late),
    ] {
        counter!(EVENTS, "result" => result, "partition" => ps.clone()).absolute(v);
    }
    counter!(INTERVALS_CLOSED, "partition" => ps.clone()).absolute(s.intervals_closed);
    if let Some(wm) = engine.watermark() {
        gauge!(WATERMARK, "partition" => ps.clone()).set(wm as f64 / 1000.0);
    }
    if let Some(f) = engine.frontier() {
        gauge!(FRONTIER, "partition" => ps.clone()).set(f as f64 / 1000.0);
    }
    export_callbacks(&ps, engine);
    gauge!(PENDING_EVENTS, "partition" => ps.clone()).set(engine.pending_len() as f64);
    gauge!(TIMERS, "partition" => ps).set(engine.timers_len() as f64);
}

/// Backlog gauges of every (tenant, queue) with open callbacks; a pair whose backlog emptied is set
/// to zero while the engine remembers it was seen.
fn export_callbacks(ps: &str, engine: &PartitionEngine) {
    let backlog = engine.callback_backlog();
    let frontier = engine.frontier().unwrap_or(0);
    // pairs that had callbacks go to zero rather than vanish (a cleared backlog is a value)
    for k in engine.totals().0.keys() {
        if k.metric == Metric::Callbacks && k.labels[2] == "requested" {
            let (tenant, queue) = (k.labels[0].clone(), k.labels[1].clone());
            let (n, oldest) = backlog
                .get(&(tenant.clone(), queue.clone()))
                .copied()
                .map_or((0, 0.0), |(n, at)| {
                    (n, (frontier - at).max(0) as f64 / 1000.0)
                });
            let l = [
                ("tenant", tenant),
                ("queue", queue),
                ("partition", ps.to_string()),
            ];
            gauge!(CALLBACK_BACKLOG, &l).set(n as f64);
            gauge!(CALLBACK_OLDEST, &l).set(oldest);
        }
    }
}

pub fn full_refresh(p: i32, engine: &PartitionEngine) {
    export_totals(p, engine);
    export_heatmap(p, engine);
}

pub fn rejected(reason: &'static str) {
    counter!(EVENTS_REJECTED, "reason" => reason).increment(1);
}

pub fn late(event_type: &'static str) {
    counter!(LATE_EVENTS, "type" => event_type).increment(1);
}

pub fn reports(reports: &[deflect_core::engine::Report]) {
    for r in reports {
        let fin = if r.is_final { "true" } else { "false" };
        counter!(REPORTS, "part" => r.part.as_str(), "final" => fin).increment(1);
    }
}

pub fn already_applied(n: u64) {
    counter!(RECORDS_SKIPPED).increment(n);
}

pub fn replayed(n: u64) {
    counter!(RECORDS_REPLAYED).increment(n);
}

/// Offset commits that failed in this process so far.
pub fn commit_failures(n: u64) {
    counter!(COMMIT_FAILURES).absolute(n);
}

pub fn missed(n: u64) {
    counter!(RECORDS_MISSED).increment(n);
}

pub fn mis_keyed(n: u64) {
    counter!(RECORDS_MIS_KEYED).increment(n);
}

pub fn batch(seconds: f64, records: usize) {
    histogram!(BATCH_SECONDS).record(seconds);
    histogram!(BATCH_RECORDS).record(records as f64);
}

pub fn lag(p: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "partition" => p.to_string()).set(lag as f64);
}

pub fn staffing(rows: &[crate::staffing::Staffing]) {
    for r in rows {
        let l = [("tenant", r.tenant.clone()), ("queue", r.queue.clone())];
        gauge!(STAFFING_AGENTS, &l).set(f64::from(r.agents));
        gauge!(STAFFING_SCHEDULED, &l).set(f64::from(r.scheduled));
        gauge!(STAFFING_LOAD, &l).set(r.load);
    }
}

pub fn rocksdb_stalls(stopped: u64, delayed_rate: u64) {
    gauge!(ROCKSDB_WRITE_STOPPED).set(stopped as f64);
    gauge!(ROCKSDB_DELAYED_WRITE_RATE).set(delayed_rate as f64);
}

/// Partitions assigned to this instance (also set by [`instance`] at every refresh).
pub fn assigned(n: usize) {
    gauge!(ASSIGNED_PARTITIONS).set(n as f64);
}

/// Owned partitions whose leader is unreachable.
pub fn unreachable(n: usize) {
    gauge!(UNREACHABLE_PARTITIONS).set(n as f64);
}

pub fn instance(assigned: usize, watermark: Option<i64>, state_bytes: u64) {
    self::assigned(assigned);
    if let Some(w) = watermark {
        gauge!(INSTANCE_WATERMARK).set(w as f64 / 1000.0);
    }
    gauge!(STATE_BYTES).set(state_bytes as f64);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deflect_core::engine::NoStore;

    use super::*;
    use crate::generate::{GenParams, Generator};

    /// Process counters kept by [`keep_process_counters`] outlive the idle timeout (an increment
    /// of 0 counts as an update); without it they disappear, and a counted one restarts from 0.
    #[test]
    fn kept_process_counters_outlive_the_idle_timeout() {
        let line = |handle: &PrometheusHandle| {
            let text = handle.render();
            text.lines()
                .find(|l| l.starts_with(RECORDS_MISSED))
                .map(str::to_string)
        };
        for keep in [true, false] {
            let (rec, handle) = recorder_with_idle_timeout(Duration::from_millis(300));
            metrics::with_local_recorder(&rec, || {
                describe();
                missed(7);
                batch(0.02, 1_234);
            });
            assert_eq!(
                line(&handle).as_deref(),
                Some("deflect_records_missed_total 7")
            );
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(100));
                if keep {
                    metrics::with_local_recorder(&rec, keep_process_counters);
                }
            }
            let after = line(&handle);
            // the batch histograms stay however long the pipeline is idle
            let text = handle.render();
            for h in [BATCH_SECONDS, BATCH_RECORDS] {
                let count = format!("{h}_count 1");
                assert!(text.lines().any(|l| l == count), "{h} gone:\n{text}");
            }
            assert!(text.contains("deflect_batch_records_sum 1234"), "{text}");
            if keep {
                assert_eq!(after.as_deref(), Some("deflect_records_missed_total 7"));
            } else {
                assert_eq!(
                    after, None,
                    "the recorder's idle timeout removes what is not kept"
                );
            }
        }
    }

    /// After every closing, the heat-map gauges equal the engine's heat map, although each closing
    /// sets only the rows that changed since the previous one; the business series equal the
    /// engine's totals (registered once, then incremented by each closing: a series first seen
    /// in a step that closes several intervals is not counted twice), their absent siblings 0.
    #[test]
    fn series_set_by_closings_follow_the_engine() {
        let (rec, handle) = recorder();
        let cfg = Arc::new(crate::config::Config::default().engine());
        let params = GenParams {
            contacts_per_hour: 300.0,
            customers: 2_000,
            ..Default::default()
        };
        let mut g = Generator::new(params.clone()).unwrap();
        let mut e = PartitionEngine::new(cfg);
        let mut exported = Exported::default();
        let (mut t, mut offset, mut rows_set) = (params.start_ms, 0, 0);
        let (mut series_checked, mut siblings_at_zero, mut buckets_checked) = (0, 0, 0);
        for _ in 0..36 {
            t += 3_600_000;
            for ev in g.until(t) {
                e.ingest(offset, ev, 0);
                offset += 1;
            }
            let closed = e.advance(0, &mut NoStore);
            metrics::with_local_recorder(&rec, || {
                export_closed(0, &e, &closed, &mut exported);
            });
            let text = handle.render();
            // business series: every total at its value, every absent family sibling at 0
            let totals = &e.totals().0;
            let line_of = |k: &CounterKey, v: u64| {
                let l: Vec<String> = (k.metric.labels().iter().zip(k.labels.iter()))
                    .map(|(n, v)| format!("{n}=\"{v}\""))
                    .chain(std::iter::once("partition=\"0\"".to_string()))
                    .collect();
                format!("{}{{{}}} {v}", k.metric.name(), l.join(","))
            };
            for (k, v) in totals {
                if k.metric == Metric::QueueWaitBucket {
                    // the whole cumulative histogram of the group
                    let mut cumulative = 0;
                    for le in wait_bucket_labels() {
                        let group = k.labels[..k.labels.len() - 1].iter();
                        let b = CounterKey::new(k.metric, group.map(String::as_str).chain([le]));
                        cumulative += totals.get(&b).copied().unwrap_or(0);
                        let line = line_of(&b, cumulative);
                        assert!(text.lines().any(|l| l == line), "missing {line:?}");
                        buckets_checked += 1;
                    }
                    continue;
                }
                let line = line_of(k, *v);
                assert!(text.lines().any(|l| l == line), "missing {line:?}");
                series_checked += 1;
                for sibling in deflect_core::metrics::family(k.metric).unwrap_or(&[]) {
                    let key = CounterKey {
                        metric: *sibling,
                        labels: k.labels.clone(),
                    };
                    if !totals.contains_key(&key) {
                        let line = line_of(&key, 0);
                        assert!(text.lines().any(|l| l == line), "missing {line:?}");
                        siblings_at_zero += 1;
                    }
                }
            }
            let rows = e.heatmap();
            rows_set = rows_set.max(rows.len());
            for r in rows {
                let labels = format!(
                    "{{weekday=\"{}\",hour=\"{}\",partition=\"0\"}}",
                    WEEKDAY_NAMES[usize::from(r.weekday)],
                    r.hour
                );
                for (name, v) in [
                    (HEAT_ARRIVALS, r.cell.arrivals),
                    (HEAT_ANSWERED, r.cell.answered),
                    (HEAT_WAIT_MS, r.cell.wait_ms),
                    (HEAT_DAYS, r.days_observed),
                ] {
                    let line = format!("{name}{labels} {v}");
                    assert!(
                        text.lines().any(|l| l == line),
                        "missing {line:?} after closing up to {t}"
                    );
                }
            }
        }
        assert!(
            rows_set >= 24,
            "the traffic spans more than a day: {rows_set} rows"
        );
        assert!(series_checked > 1000 && siblings_at_zero > 0 && buckets_checked > 100);
    }
}

//! Kafka plumbing for deflect (rdkafka with its bundled librdkafka).
//!
//! - [`GroupConsumer`]: a `BaseConsumer` meant to be polled on one dedicated thread. Rebalances are
//!   recorded by its context and handed to the caller after `poll` returns, so the caller decides
//!   when to load or drop partition state; each partition's end offset comes from librdkafka's
//!   statistics (the caller knows how far it consumed).
//! - [`OutputProducer`]: every record deflect writes (dead letters, late events, interval reports,
//!   generated traffic), with delivery checks.
//! - [`EmbeddedBroker`]: librdkafka's mock cluster hosted on its own thread, listening on loopback
//!   so other processes can connect (the demo and the tests).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub use mark::{fingerprint, records_at, At};
pub use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
pub use rdkafka::producer::BaseRecord;
pub use read::{Record, Seen};

mod mark;
mod read;
use read::Queue;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka client configuration: {0}")]
    Config(KafkaError),
    #[error("subscribing to {topic:?}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("{0}")]
    Metadata(String),
    #[error("stopped while {0} records were not delivered yet")]
    Canceled(i32),
}

/// Connection settings shared by every client.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (security, timeouts…), applied last.
    pub properties: HashMap<String, String>,
}

impl ClientSettings {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientSettings {
            bootstrap_servers: bootstrap.into(),
            properties: HashMap::new(),
        }
    }
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set_log_level(RDKafkaLogLevel::Warning);
        c
    }
    fn finish(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }
}

/// A partition assignment change, as seen by the polling thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

#[derive(Default)]
pub struct GroupContext {
    topic: String,
    /// `topic` for librdkafka's C calls, made once.
    topic_c: std::ffi::CString,
    events: Mutex<Vec<Assignment>>,
    /// Whether `events` is non-empty: read after every read, without the lock.
    has_events: AtomicBool,
    end_offsets: Mutex<HashMap<i32, i64>>,
    /// Partitions whose leader was not reachable at the last statistics report.
    unreachable: Mutex<BTreeSet<i32>>,
    /// The queue of each assigned partition, split off the consumer's queue before the partition
    /// is assigned, so that its records are read in batches ([`GroupConsumer::read`]).
    queues: Mutex<BTreeMap<i32, Split>>,
}

/// An assigned partition's own queue, and where its reading started.
struct Split {
    queue: Queue,
    /// Where reading starts (the committed offset, else the partition's beginning), looked up
    /// when the end of the partition is asked for before librdkafka has a position in it.
    start: Option<i64>,
    /// When `start` was last asked for: a lookup that failed (a coordinator that does not
    /// answer) is tried again after [`START_RETRY`], not at every call (each blocks the reading
    /// thread up to its timeouts).
    start_asked: Option<std::time::Instant>,
}

/// How long after a failed lookup of where a partition's reading starts it is tried again.
const START_RETRY: Duration = Duration::from_secs(30);

impl GroupContext {
    fn push(&self, a: Assignment) {
        let mut events = self.events.lock().expect("events lock");
        events.push(a);
        self.has_events.store(true, Ordering::Release);
    }

    /// Splits the partitions' queues off the consumer's queue: their records stay in the
    /// partition's own queue, which librdkafka no longer forwards (not even when it starts
    /// fetching the partition again after a revocation).
    fn split(&self, c: &BaseConsumer<Self>, ps: &[i32]) {
        let rk = c.client().native_ptr();
        let mut queues = self.queues.lock().expect("queues lock");
        for &p in ps {
            // SAFETY: the client is alive; the handle returned is ours, and dropped (with the
            // map) before the client is (`GroupConsumer`'s drop)
            let q = unsafe {
                Queue::from_ptr(rdkafka::bindings::rd_kafka_queue_get_partition(
                    rk,
                    self.topic_c.as_ptr(),
                    p,
                ))
            };
            match q {
                Some(q) => {
                    // SAFETY: a live handle; a null destination stops the forwarding
                    unsafe {
                        rdkafka::bindings::rd_kafka_queue_forward(q.ptr(), std::ptr::null_mut())
                    };
                    queues.insert(
                        p,
                        Split {
                            queue: q,
                            start: None,
                            start_asked: None,
                        },
                    );
                }
                // its records then come through the consumer's poll, as records too
                None => tracing::warn!(partition = p, "cannot split the partition's queue"),
            }
        }
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

/// Logs a client error librdkafka reports outside a poll. Reaching the end of a partition is
/// reported through poll as well (`enable.partition.eof`): not an error.
fn client_error(error: KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
        tracing::debug!(%reason, "end of partition");
    } else {
        tracing::warn!(error = %error, %reason, "kafka client error");
    }
}

/// The context of [`partition_count`]: the first cause librdkafka reported, for its error.
#[derive(Default)]
struct ProbeContext {
    cause: Mutex<Option<String>>,
}

impl ProbeContext {
    /// Keeps the first cause, without librdkafka's thread prefix (`[thrd:…]: `).
    fn note(&self, cause: &str) {
        let cause = match cause
            .strip_prefix("[thrd:")
            .and_then(|c| c.split_once("]: "))
        {
            Some((_, rest)) => rest,
            None => cause,
        };
        let mut first = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| cause.to_string());
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        use RDKafkaLogLevel::*;
        tracing::debug!(?level, fac, message = log_message, "librdkafka");
        if matches!(level, Emerg | Alert | Critical | Error) {
            self.note(log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // the reason names the broker and what failed; the error only its code
        if reason.is_empty() {
            self.note(&error.to_string());
        } else {
            self.note(reason);
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// The context of [`reader`]: client errors logged as [`GroupConsumer`]'s are (librdkafka's
/// default context logged every end of partition at error level).
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ConsumerContext for ReaderContext {}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason);
    }

    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            *self.unreachable.lock().expect("unreachable lock") = unreachable(&stats, t);
            let mut ends = self.end_offsets.lock().expect("end offsets lock");
            for (p, s) in &t.partitions {
                // the last stable offset (what a read_committed consumer can reach), else the
                // high watermark
                let end = if s.ls_offset >= 0 {
                    s.ls_offset
                } else {
                    s.hi_offset
                };
                if *p >= 0 && end >= 0 {
                    ends.insert(*p, end);
                }
            }
        }
    }
}

/// The partitions of `topic` (this consumer's, in `stats`) whose leader is unknown or whose
/// leader's connection is not up: their records cannot be fetched, so their silence says nothing
/// of whether anything was produced.
fn unreachable(stats: &Statistics, topic: &rdkafka::statistics::Topic) -> BTreeSet<i32> {
    // librdkafka's states of a connected broker (UPDATE: up, its state being broadcast;
    // REAUTH: up, authenticating again)
    let up: BTreeSet<i32> = (stats.brokers.values())
        .filter(|b| b.nodeid >= 0 && ["UP", "UPDATE", "REAUTH"].contains(&b.state.as_str()))
        .map(|b| b.nodeid)
        .collect();
    (topic.partitions.iter())
        .filter(|(p, s)| **p >= 0 && !up.contains(&s.leader))
        .map(|(p, _)| *p)
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Revoke(tpl) => {
                let ps = self.partitions(tpl);
                tracing::info!(partitions = ?ps, "partitions revoked");
                self.push(Assignment::Revoked(ps));
            }
            // before librdkafka starts fetching them
            Rebalance::Assign(tpl) => self.split(c, &self.partitions(tpl)),
            Rebalance::Error(_) => {}
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                let ps = self.partitions(tpl);
                tracing::info!(partitions = ?ps, "partitions assigned");
                self.push(Assignment::Assigned(ps));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(tpl) => {
                // what is left in them is outdated (librdkafka drops it when it is read)
                let mut queues = self.queues.lock().expect("queues lock");
                for p in self.partitions(tpl) {
                    queues.remove(&p);
                }
            }
        }
    }
}

/// A group member consuming one topic, read from one thread.
pub struct GroupConsumer {
    /// The consumer's own queue (rebalances, commits, statistics, errors): only its length is
    /// read here. Dropped before the consumer (fields drop in order).
    events: Queue,
    /// Where the results of asynchronous offset commits come (read by
    /// [`GroupConsumer::commit_failures`]): rust-rdkafka's commit callback is not called for
    /// them. Dropped before the consumer.
    commit_results: Queue,
    /// Whether the partitions were assigned by configuration (no rebalance explains a failed
    /// commit: warned).
    by_config: bool,
    /// Offset commits that failed ([`GroupConsumer::commit_failures`]).
    commit_failures: std::sync::atomic::AtomicU64,
    /// When a failed commit was last logged as a warning.
    commit_warned: Mutex<Option<std::time::Instant>>,
    /// Where the next read starts among the partitions' queues.
    next: std::sync::atomic::AtomicUsize,
    /// Whether reads report the ends of partitions ([`Seen::End`]).
    ends: bool,
    consumer: BaseConsumer<GroupContext>,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // queue handles go before the client they belong to
        self.consumer
            .context()
            .queues
            .lock()
            .expect("queues lock")
            .clear();
    }
}

/// Records taken from one partition's queue before the next partition's turn.
const ROUND: usize = 1024;

/// How long a waiting read sleeps on the consumer's queue at the most before it looks at the
/// partitions' queues again (a partition's queue cannot wake it): records of an idle partition
/// wait up to this long, and an idle pipeline wakes 200 times a second. Idle `deflect run` on
/// 8 partitions, 20 s: 1.2 % of a core (1 ms slices: 3.7 %; blocking in rust-rdkafka's poll, as
/// before batch reads: 1.0–1.6 %).
const WAIT_SLICE: Duration = Duration::from_millis(5);

impl GroupConsumer {
    /// Offsets are owned by the application: auto commit is off and offsets are committed with
    /// [`GroupConsumer::commit`] only after the state they produced is durable. With `ends`,
    /// reads report when a partition is read to its end ([`Seen::End`]).
    ///
    /// The end of a partition is worked out here (the position read to against the high
    /// watermark of the last fetch), not taken from librdkafka's `enable.partition.eof`: read in
    /// a batch, librdkafka 2.12's end-of-partition notice moves the partition's position one
    /// past the end (librdkafka issue 4844, fixed after 2.12), and a rebalance, which pauses and
    /// resumes the partitions it keeps, then fetches from there: a record skipped, or the
    /// partition read again from the start.
    ///
    /// With `partitions` listed, the consumer does not join the group: it is assigned those
    /// partitions for good (reported once, as an [`Assignment::Assigned`]), reads each from the
    /// group's committed offset (else the beginning) and commits under the group as a member does.
    pub fn new(
        settings: &ClientSettings,
        group: &str,
        topic: &str,
        ends: bool,
        partitions: &[i32],
    ) -> Result<Self, Error> {
        let mut c = settings.config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        consumer_defaults(&mut c);
        settings.finish(&mut c);
        // after `kafka.properties`: the notices would break batch reads (above)
        c.set("enable.partition.eof", "false");
        let topic_c = std::ffi::CString::new(topic).map_err(|_| {
            Error::Config(KafkaError::ClientCreation(format!(
                "topic name {topic:?} contains a NUL byte"
            )))
        })?;
        let ctx = GroupContext {
            topic: topic.to_string(),
            topic_c,
            ..Default::default()
        };
        let consumer: BaseConsumer<GroupContext> =
            c.create_with_context(ctx).map_err(Error::Config)?;
        if partitions.is_empty() {
            consumer
                .subscribe(&[topic])
                .map_err(|source| Error::Subscribe {
                    topic: topic.to_string(),
                    source,
                })?;
        } else {
            let ctx = consumer.context();
            // as a rebalance does it: queues split off before fetching starts
            ctx.split(&consumer, partitions);
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                // no offset: the group's committed one, else `auto.offset.reset`
                tpl.add_partition(topic, p);
            }
            consumer.assign(&tpl)?;
            tracing::info!(partitions = ?partitions, "partitions assigned by configuration");
            ctx.push(Assignment::Assigned(partitions.to_vec()));
        }
        let events = consumer_queue(&consumer)?;
        // SAFETY: the client is alive, and outlives the handle (field order)
        let commit_results = unsafe {
            Queue::from_ptr(rdkafka::bindings::rd_kafka_queue_new(
                consumer.client().native_ptr(),
            ))
        }
        .ok_or_else(|| {
            Error::Config(KafkaError::ClientCreation(
                "cannot create a queue for commit results".into(),
            ))
        })?;
        Ok(GroupConsumer {
            events,
            commit_results,
            by_config: !partitions.is_empty(),
            commit_failures: Default::default(),
            commit_warned: Mutex::new(None),
            next: Default::default(),
            ends,
            consumer,
        })
    }

    /// The topic consumed (kept by the consumer's context).
    pub fn topic(&self) -> &str {
        &self.consumer.context().topic
    }

    /// Reads up to `max` records of the assigned partitions into `out`, waiting up to `wait`
    /// for a first one when none is ready. Serves the consumer's events first (a rebalance is
    /// then reported by [`GroupConsumer::has_assignments`] and the read stops there). Each
    /// partition's records come in order; partitions take turns, [`ROUND`] records at a time.
    /// Records and ends of partitions are reported to `seen` as they are read.
    pub fn read<'c>(
        &'c self,
        out: &mut Vec<Record<'c>>,
        max: usize,
        wait: Duration,
        seen: &mut dyn FnMut(Seen),
    ) -> usize {
        let deadline = std::time::Instant::now() + wait;
        // records of a partition whose queue was not split come through here, before its
        // queue's (splitting is for good)
        let mut n = self.serve(out, Duration::ZERO, seen);
        loop {
            if self.has_assignments() {
                return n;
            }
            n += self.read_partitions(out, max.saturating_sub(n), seen);
            if n > 0 || wait.is_zero() {
                return n;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return n;
            }
            // in whole milliseconds: rust-rdkafka's poll spins through a sub-millisecond rest
            let ms = (deadline - now).as_micros().div_ceil(1000).max(1) as u64;
            n += self.serve(out, Duration::from_millis(ms).min(WAIT_SLICE), seen);
        }
    }

    /// Serves what waits in the consumer's own queue (rebalances, commit results, statistics,
    /// errors, and records of partitions whose queue was not split), waiting up to `wait` for
    /// something to come. Returns the records it added to `out`.
    fn serve<'c>(
        &'c self,
        out: &mut Vec<Record<'c>>,
        mut wait: Duration,
        seen: &mut dyn FnMut(Seen),
    ) -> usize {
        let mut n = 0;
        // bounded: what comes meanwhile waits for the next read
        for _ in 0..64 {
            if wait.is_zero() && self.events.len() == 0 {
                break;
            }
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    seen(Seen::Records(m.partition()));
                    out.push(Record::polled(m));
                    n += 1;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
            wait = Duration::ZERO;
        }
        n
    }

    /// Reads the partitions' queues in turns until `max` records or none is ready; then, with
    /// `ends`, reports each partition read to its end.
    fn read_partitions<'c>(
        &'c self,
        out: &mut Vec<Record<'c>>,
        max: usize,
        seen: &mut dyn FnMut(Seen),
    ) -> usize {
        let mut queues = self.consumer.context().queues.lock().expect("queues lock");
        if queues.is_empty() {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % queues.len();
        let mut splits: Vec<&mut Split> = queues.values_mut().collect();
        splits.rotate_left(start);
        let mut n = 0;
        'rounds: loop {
            let mut any = false;
            for split in splits.iter_mut() {
                if n >= max {
                    break 'rounds;
                }
                // an empty queue is skipped without the batch call's three clock reads
                if split.queue.len() == 0 {
                    continue;
                }
                let k = split
                    .queue
                    .read(out, (max - n).min(ROUND), Duration::ZERO, seen);
                n += k;
                any |= k > 0;
            }
            if !any {
                break;
            }
        }
        drop(splits);
        if self.ends {
            for (&p, split) in queues.iter_mut() {
                // a partition with records waiting is not at its end
                if split.queue.len() == 0 && self.at_end(p, split) {
                    seen(Seen::End(p));
                }
            }
        }
        n
    }

    /// Whether partition `p` is read up to the high watermark of its last fetch. The position is
    /// librdkafka's (the offset after the last record read, past the control records of
    /// transactions too, which are not returned) or, before it has one, where reading starts. In
    /// a partition whose last transaction is still open the end is not reached until it is
    /// committed or aborted.
    fn at_end(&self, p: i32, split: &mut Split) -> bool {
        let Some(high) = self.cached_log_end(p) else {
            return false;
        };
        let pos = self.position(p).or_else(|| self.split_start(p, split));
        pos.is_some_and(|pos| pos >= high)
    }

    /// Where the group's reading of assigned partition `p` starts ([`Self::start_offset`]),
    /// asked once and kept (a failed lookup is asked again after [`START_RETRY`]); `None` while
    /// not known, or when `p` is not assigned.
    pub fn reading_start(&self, p: i32) -> Option<i64> {
        let mut queues = self.consumer.context().queues.lock().expect("queues lock");
        self.split_start(p, queues.get_mut(&p)?)
    }

    fn split_start(&self, p: i32, split: &mut Split) -> Option<i64> {
        let ask = split.start_asked.is_none_or(|t| t.elapsed() >= START_RETRY);
        if split.start.is_none() && ask {
            split.start_asked = Some(std::time::Instant::now());
            split.start = self.start_offset(p);
        }
        split.start
    }

    /// Where partition `p` is read to (librdkafka's position) and where it ends (the high
    /// watermark of the last fetch answer): `None` for what is not known yet.
    pub fn progress(&self, p: i32) -> (Option<i64>, Option<i64>) {
        (self.position(p), self.cached_log_end(p))
    }

    /// librdkafka's position in `p`: the offset after the last record (or transaction marker)
    /// it handed out; `None` before one.
    fn position(&self, p: i32) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topic(), p);
        // SAFETY: a live client and list; librdkafka writes the offsets into the list
        let err = unsafe {
            rdkafka::bindings::rd_kafka_position(self.consumer.client().native_ptr(), tpl.ptr())
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        match tpl.find_partition(self.topic(), p)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// The low and high watermarks librdkafka keeps from its fetches (no request); `None` before
    /// the first fetch answer.
    fn cached_watermarks(&self, p: i32) -> Option<(i64, i64)> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: a live client; the topic is NUL-terminated; the outputs are plain integers
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.consumer.context().topic_c.as_ptr(),
                p,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some((low, high))
    }

    /// The first offset of `p` still in the log as of the last fetch answer (no request), when
    /// one came. It can trail retention: [`Self::log_start`] asks.
    pub fn cached_log_start(&self, p: i32) -> Option<i64> {
        self.cached_watermarks(p)
            .map(|(low, _)| low)
            .filter(|low| *low >= 0)
    }

    /// The end of `p` (its high watermark) as of the last fetch answer (no request), when one
    /// came.
    pub fn cached_log_end(&self, p: i32) -> Option<i64> {
        self.cached_watermarks(p).map(|(_, high)| high)
    }

    /// The first offset of `p` still in the log, asked of the brokers (up to 5 s). `None` when
    /// they do not answer.
    pub fn log_start(&self, p: i32) -> Option<i64> {
        (self.consumer)
            .fetch_watermarks(self.topic(), p, Duration::from_secs(5))
            .ok()
            .map(|(low, _)| low)
    }

    /// Where the group's reading of `p` starts: its committed offset, else (none committed,
    /// `auto.offset.reset` is `earliest`) the partition's beginning. Asks the brokers (up to
    /// 5 s for each of the two questions).
    fn start_offset(&self, p: i32) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topic(), p);
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .ok()?;
        match committed.find_partition(self.topic(), p)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => self.log_start(p),
        }
    }

    /// Assignment changes since the last call.
    pub fn take_assignments(&self) -> Vec<Assignment> {
        let ctx = self.consumer.context();
        let mut events = ctx.events.lock().expect("events lock");
        ctx.has_events.store(false, Ordering::Release);
        std::mem::take(&mut *events)
    }

    /// Whether a rebalance happened since the last `take_assignments`.
    pub fn has_assignments(&self) -> bool {
        (self.consumer.context().has_events).load(Ordering::Acquire)
    }

    /// The partitions whose leader was not reachable at the last statistics report (every 5 s):
    /// unknown, or its connection not up (a broker down, a network partition).
    pub fn unreachable_partitions(&self) -> BTreeSet<i32> {
        (self.consumer.context().unreachable.lock())
            .expect("unreachable lock")
            .clone()
    }

    /// Each partition's end offset from the last statistics report (every 5 s). librdkafka's
    /// own `consumer_lag` counts from the committed offset, which deflect keeps at the oldest
    /// pending event: the caller subtracts the offset it consumed to.
    pub fn end_offsets(&self) -> HashMap<i32, i64> {
        self.consumer
            .context()
            .end_offsets
            .lock()
            .expect("end offsets lock")
            .clone()
    }

    fn offset_list(&self, offsets: &[(i32, i64)]) -> Result<TopicPartitionList, Error> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(self.topic(), *p, Offset::Offset(*o))?;
        }
        Ok(tpl)
    }

    /// Commits `next offset` per partition (asynchronously). Commits for partitions revoked in
    /// the meantime fail harmlessly.
    pub fn commit(&self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = self.offset_list(offsets)?;
        // SAFETY: live client, list and queue; no callback (the result is read as an event)
        let err = unsafe {
            rdkafka::bindings::rd_kafka_commit_queue(
                self.consumer.client().native_ptr(),
                tpl.ptr(),
                self.commit_results.ptr(),
                None,
                std::ptr::null_mut(),
            )
        };
        self.commit_result(err);
        self.commit_failures();
        Ok(())
    }

    /// Offset commits that failed so far (refused by Kafka, or not answered), commits with
    /// nothing to commit aside; takes the results of asynchronous commits that came meanwhile.
    pub fn commit_failures(&self) -> u64 {
        loop {
            // SAFETY: a live queue; the event is ours and destroyed once
            let ev =
                unsafe { rdkafka::bindings::rd_kafka_queue_poll(self.commit_results.ptr(), 0) };
            if ev.is_null() {
                break;
            }
            // SAFETY: a live event, destroyed after its error is read
            let err = unsafe { rdkafka::bindings::rd_kafka_event_error(ev) };
            unsafe { rdkafka::bindings::rd_kafka_event_destroy(ev) };
            self.commit_result(err);
        }
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// Counts a failed commit; logs it as a warning (once a minute) when the partitions were
    /// assigned by configuration, where no rebalance explains it.
    fn commit_result(&self, err: rdkafka::bindings::rd_kafka_resp_err_t) {
        use rdkafka::bindings::rd_kafka_resp_err_t as E;
        // nothing to commit: not a failure
        if matches!(
            err,
            E::RD_KAFKA_RESP_ERR_NO_ERROR | E::RD_KAFKA_RESP_ERR__NO_OFFSET
        ) {
            return;
        }
        let e = KafkaError::ConsumerCommit(err.into());
        let n = self.commit_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.by_config {
            // a member's commit fails around rebalances: Kafka's answer to a partition moving
            tracing::debug!(error = %e, "offset commit failed (partition likely revoked)");
            return;
        }
        let mut warned = self.commit_warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.is_none_or(|t| t.elapsed() >= COMMIT_WARN_EVERY) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(
                error = %e,
                failures = n,
                "offset commit failed: the group's committed offsets (and lag measured from \
                 them) stay behind; restarts still resume from the stored state. Does an \
                 instance that joins the group use this group id? (warned once a minute)"
            );
        }
    }

    /// Commits synchronously (shutdown); a failure is counted in [`Self::commit_failures`] and
    /// returned, not logged.
    pub fn commit_sync(&self, offsets: &[(i32, i64)]) -> Result<(), Error> {
        if offsets.is_empty() {
            return Ok(());
        }
        let committed = self
            .consumer
            .commit(&self.offset_list(offsets)?, CommitMode::Sync);
        if committed.is_err() {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(committed?)
    }
}

/// How often a failing offset commit is logged as a warning at the most.
const COMMIT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Fetch settings of every consumer deflect creates (`kafka.properties` may override them).
fn consumer_defaults(c: &mut ClientConfig) {
    // when the prefetch queue has been full librdkafka postpones the partition's next fetch by
    // this much (default 1 s): a consumer that drains the queue in milliseconds then sat idle for
    // the rest of the second
    c.set("fetch.queue.backoff.ms", "20");
}

/// A plain consumer that reads a topic from the beginning without a group (benchmarks, tests).
pub fn reader(
    settings: &ClientSettings,
    topic: &str,
    partitions: i32,
) -> Result<BaseConsumer<ReaderContext>, Error> {
    let from: Vec<(i32, Offset)> = (0..partitions).map(|p| (p, Offset::Beginning)).collect();
    reader_from(settings, topic, &from)
}

/// A consumer assigned `topic`'s partitions from the given offsets, not a group member. After
/// the user's properties: it never commits (a `group.id` with `enable.auto.commit` there would
/// move another group's offsets), an offset before the log's start reads from the start, and
/// reaching the end of a partition is reported.
fn reader_from(
    settings: &ClientSettings,
    topic: &str,
    from: &[(i32, Offset)],
) -> Result<BaseConsumer<ReaderContext>, Error> {
    let mut c = settings.config();
    consumer_defaults(&mut c);
    settings.finish(&mut c);
    c.set("group.id", "deflect-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<ReaderContext> = c
        .create_with_context(ReaderContext)
        .map_err(Error::Config)?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in from {
        tpl.add_partition_offset(topic, *p, *o)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// A handle on `c`'s own queue. The callers keep it in a field declared before the consumer's,
/// so that it is dropped first.
fn consumer_queue<C: ConsumerContext>(c: &BaseConsumer<C>) -> Result<Queue, Error> {
    // SAFETY: the client is alive, and outlives the handle (above)
    unsafe {
        Queue::from_ptr(rdkafka::bindings::rd_kafka_queue_get_consumer(
            c.client().native_ptr(),
        ))
    }
    .ok_or_else(|| Error::Config(KafkaError::ClientCreation("no consumer queue".into())))
}

/// A plain consumer that reads a topic from the beginning without a group, in batches like
/// [`GroupConsumer::read`] (the benchmark's raw consumer).
pub struct BatchReader {
    /// Dropped before the consumer (fields drop in order).
    queue: Queue,
    _consumer: BaseConsumer<ReaderContext>,
}

impl BatchReader {
    pub fn new(settings: &ClientSettings, topic: &str, partitions: i32) -> Result<Self, Error> {
        let consumer = reader(settings, topic, partitions)?;
        let queue = consumer_queue(&consumer)?;
        Ok(BatchReader {
            queue,
            _consumer: consumer,
        })
    }

    /// Reads up to `max` records into `out`, waiting up to `wait` for a first one; ends of
    /// partitions are reported to `seen`.
    pub fn read<'c>(
        &'c self,
        out: &mut Vec<Record<'c>>,
        max: usize,
        wait: Duration,
        seen: &mut dyn FnMut(Seen),
    ) -> usize {
        self.queue.read(out, max, wait, seen)
    }
}

/// Counts failed deliveries, so a writer can refuse to commit offsets past records that never
/// reached their topic.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl rdkafka::producer::ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(
        &self,
        result: &rdkafka::message::DeliveryResult<'_>,
        _opaque: Self::DeliveryOpaque,
    ) {
        if let Err((e, m)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some(format!("{e} (topic {:?})", m.topic()));
        }
    }
}

/// deflect's producer (dead letters, late events, interval reports, the traffic generator): every
/// record is sent with retries on a full queue, and [`OutputProducer::flush`] fails if any delivery
/// failed.
pub struct OutputProducer {
    inner: ThreadedProducer<DeliveryTracker>,
    sent: u64,
    delivery_timeout: Duration,
    max_message_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// librdkafka's default `message.timeout.ms`.
const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// While a flush waits, a warning this often.
const FLUSH_WARN_EVERY: Duration = Duration::from_secs(10);

impl OutputProducer {
    pub fn new(settings: &ClientSettings) -> Result<Self, Error> {
        let mut c = settings.config();
        c.set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "false");
        settings.finish(&mut c);
        // librdkafka's own bound on a record's delivery, retries included (`delivery.timeout.ms`
        // is its alias); a record still queued then fails
        let delivery_timeout = ["message.timeout.ms", "delivery.timeout.ms"]
            .iter()
            .filter_map(|k| c.get(k))
            .find_map(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_DELIVERY_TIMEOUT, Duration::from_millis);
        let max_message_bytes = c
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        let inner = c
            .create_with_context(DeliveryTracker::default())
            .map_err(Error::Config)?;
        Ok(OutputProducer {
            inner,
            sent: 0,
            delivery_timeout,
            max_message_bytes,
        })
    }

    /// The largest record librdkafka sends (`message.max.bytes`, default 1,000,000): payload,
    /// key and headers together.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// How long librdkafka tries to deliver a record (`message.timeout.ms`, default 300 s).
    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// Queues one record (waits while librdkafka's queue is full); `partition` `None` lets the
    /// key choose it.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        partition: Option<i32>,
    ) -> Result<(), Error> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        }
    }

    /// Records queued since the last successful flush.
    pub fn unflushed(&self) -> u64 {
        self.sent
    }

    /// Waits until every queued record is delivered, or `timeout` passes; an error if any
    /// delivery failed. A warning every 10 s while it waits (brokers down, a leader moving).
    ///
    /// Not rust-rdkafka's `flush`: it polls the producer's queue for up to 100 ms whenever the
    /// first check finds records in flight, and the delivery reports are served by the
    /// producer's own polling thread, so every flush that had to wait at all took 100 ms.
    /// `rd_kafka_flush` returns as soon as the queue is empty.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        self.flush_unless(timeout, &AtomicBool::new(false), &mut |_| {})
    }

    /// [`OutputProducer::flush`], giving up ([`Error::Canceled`]) once `cancel` is set: a
    /// shutdown does not wait for brokers that do not answer (the records stay queued until the
    /// producer is dropped). `waiting` gets the records not delivered yet every 100 ms while it
    /// waits.
    pub fn flush_unless(
        &mut self,
        timeout: Duration,
        cancel: &AtomicBool,
        waiting: &mut dyn FnMut(i32),
    ) -> Result<(), Error> {
        if self.sent == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut warned = started;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let step = left.min(Duration::from_millis(100)).as_millis() as i32;
            // SAFETY: the client is alive for the call; librdkafka's flush is thread-safe
            let r = unsafe {
                rdkafka::bindings::rd_kafka_flush(self.inner.client().native_ptr(), step)
            };
            match r {
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => break,
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT => {}
                e => return Err(Error::Kafka(KafkaError::Flush(e.into()))),
            }
            if left.is_zero() {
                return Err(Error::Kafka(KafkaError::Flush(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Canceled(self.inner.in_flight_count()));
            }
            waiting(self.inner.in_flight_count());
            if warned.elapsed() >= FLUSH_WARN_EVERY {
                warned = std::time::Instant::now();
                tracing::warn!(
                    records = self.inner.in_flight_count(),
                    waited_s = started.elapsed().as_secs(),
                    gives_up_s = timeout.as_secs(),
                    "waiting for records to be delivered"
                );
            }
        }
        let ctx = self.inner.context();
        if ctx.failed.swap(0, std::sync::atomic::Ordering::Relaxed) > 0 {
            let last = ctx
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            return Err(Error::Delivery(last));
        }
        self.sent = 0;
        Ok(())
    }
}

/// Number of partitions of `topic` as the broker reports it.
pub fn partition_count(
    settings: &ClientSettings,
    topic: &str,
    timeout: Duration,
) -> Result<i32, Error> {
    // the user's properties too: security settings decide whether the brokers can be reached
    let mut c = settings.config();
    settings.finish(&mut c);
    let c: BaseConsumer<ProbeContext> = c
        .create_with_context(ProbeContext::default())
        .map_err(Error::Config)?;
    // the error's own text already names its code: no source chain (it would repeat it)
    let md = c.fetch_metadata(Some(topic), timeout).map_err(|e| {
        // what the connections ran into (an SSL handshake, an authentication, a refused
        // connection), served from the client's queue: the metadata error does not say
        for _ in 0..16 {
            let _ = c.poll(Duration::ZERO);
        }
        let cause = c.context().cause.lock().ok().and_then(|c| c.clone());
        match cause {
            Some(cause) => Error::Metadata(format!("{e} ({cause})")),
            None => Error::Metadata(e.to_string()),
        }
    })?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::Metadata(format!("topic {topic:?} not found")))?;
    if let Some(e) = t.error() {
        return Err(Error::Metadata(format!("topic {topic:?}: {e:?}")));
    }
    Ok(t.partitions().len() as i32)
}

/// librdkafka's mock cluster, hosted on a thread of its own (it is not `Send`), listening on
/// loopback. Topics are created up front (the mock has no CreateTopics API). It keeps only about
/// 5 MiB or 100,000 batches per partition: older data is dropped.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    pub fn start(topics: &[(&str, i32)]) -> Result<Self, Error> {
        let topics: Vec<(String, i32)> = topics.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (t, p) in &topics {
                    if let Err(e) = cluster.create_topic(t, *p, 1) {
                        let _ = ready_tx.send(Err(format!("create topic {t}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| Error::Broker(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| Error::Broker("broker thread died".into()))?
            .map_err(Error::Broker)?;
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn settings(&self) -> ClientSettings {
        ClientSettings::new(self.bootstrap.clone())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The librdkafka deflect links speaks TLS and SASL (PLAIN, SCRAM, OAUTHBEARER) and
    /// decompresses every codec a producer may use: rust-rdkafka's default build has no OpenSSL
    /// and no zstd, and a client configured for them fails at creation ("OpenSSL not available at
    /// build time").
    #[test]
    fn tls_sasl_and_every_codec_are_built_in() {
        let security = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ];
        let mut settings = ClientSettings::new("127.0.0.1:9");
        for (k, v) in security {
            settings.properties.insert(k.into(), v.into());
        }
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"] {
            let mut s = settings.clone();
            s.properties
                .insert("sasl.mechanisms".into(), mechanism.into());
            if let Err(e) = OutputProducer::new(&s) {
                panic!("SASL_SSL with {mechanism}: {e}");
            }
        }
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let mut s = settings.clone();
            s.properties.insert("compression.type".into(), codec.into());
            if let Err(e) = OutputProducer::new(&s) {
                panic!("{codec}: {e}");
            }
        }
    }
}

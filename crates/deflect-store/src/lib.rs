//! RocksDB state of deflect, laid out per Kafka partition.
//!
//! Column families, every key prefixed with the partition (u32 big-endian) so a partition's state
//! is one contiguous range that can be scanned, deleted or handed to another instance:
//!
//! | cf | key | value |
//! |---|---|---|
//! | `meta` | partition | [`PartitionSnapshot`]: consumed offset, resume offset, watermark, frontier, totals, heat map |
//! | `meta` | `deflect.format` | [`FORMAT_VERSION`] of the store, checked at open |
//! | `meta` | `deflect.settings` | the settings the state was built with ([`Store::check_settings`]) |
//! | `timers` | partition, fire time, journey key | (empty); read by time range as the frontier approaches |
//! | `journeys` | partition, journey key | [`StoredJourney`] (the journey and its timer's instant) |
//! | `cohorts` | partition, interval start | [`CohortState`]: cohort figures awaiting their horizons |
//!
//! Everything one poll produced, for every partition, is written in one `WriteBatch`: the state and
//! the offsets it corresponds to are durable together or not at all. Pending events (accepted,
//! their interval not closed yet) are not stored: a restart reads them again from Kafka, from the
//! snapshot's resume offset.

use std::path::Path;
use std::sync::Arc;

use deflect_core::codec;
use deflect_core::engine::{
    timer_bound, CohortState, JourneyStore, PartitionSnapshot, StateChanges, StoredJourney,
    TimerKey,
};
use deflect_core::event::Millis;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

const CF_META: &str = "meta";
const CF_TIMERS: &str = "timers";
const CF_JOURNEYS: &str = "journeys";
const CF_COHORTS: &str = "cohorts";
const CFS: [&str; 4] = [CF_META, CF_TIMERS, CF_JOURNEYS, CF_COHORTS];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb at {path}: {source}")]
    Rocks {
        path: String,
        source: rocksdb::Error,
    },
    #[error(
        "state store at {path} is open in another process (its RocksDB lock is held): one \
         deflect per state directory"
    )]
    InUse { path: String },
    #[error(
        "corrupt last-record mark of partition {partition} in state store ({len} bytes, not 16)"
    )]
    CorruptMark { partition: i32, len: usize },
    #[error("corrupt {what} in state store: {source}")]
    Corrupt {
        what: &'static str,
        source: codec::Error,
    },
    #[error(
        "state store at {path} has format {found}, this deflect reads format {FORMAT_VERSION}: \
         start with an empty state directory (and a new kafka.group_id to consume the input again \
         from its beginning)"
    )]
    Format { path: String, found: String },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} cannot be imported: {reason}")]
    ExportFile { path: String, reason: String },
    #[error(
        "state store at {path} holds no state of partitions {partitions:?} (it holds {held:?})"
    )]
    NotHeld {
        path: String,
        partitions: Vec<i32>,
        held: Vec<i32>,
    },
    #[error(
        "state store at {path} already holds partitions {partitions:?}: import with --replace to \
         overwrite their state, or drop them there first"
    )]
    Held { path: String, partitions: Vec<i32> },
    #[error(
        "state store at {path} was built with {ours}, the exported state with {file}: their \
         intervals, heat maps and cohorts do not add up; import into a store built with the \
         same settings, or into an empty state directory"
    )]
    ImportSettings {
        path: String,
        ours: String,
        file: String,
    },
    #[error(
        "the import of partition {partition} into the state store at {path} did not finish: run \
         `deflect state import --replace` with the same file again, or `deflect state drop` it"
    )]
    ImportUnfinished { path: String, partition: i32 },
    #[error(
        "state store at {path} was built with {stored}, the configuration says {configured}: \
         its intervals, heat map and cohorts follow the first. Put those settings back, or \
         start with an empty state directory (and a new kafka.group_id to consume the input \
         again from its beginning)"
    )]
    Settings {
        path: String,
        stored: String,
        configured: String,
    },
}

/// Version of the stored layout and encodings; bumped whenever either changes.
/// 2: partition snapshots count live timers; timers are read back by range, not at start-up.
/// 3: a journey is stored with its timer's instant.
/// 4: no pending events (the `pending` column family of earlier formats); snapshots keep the
/// resume offset.
pub const FORMAT_VERSION: u32 = 4;
/// Key of the format version in `meta` (partition keys there are exactly 4 bytes).
const FORMAT_KEY: &[u8] = b"deflect.format";
/// Key of the settings the state was built with.
const SETTINGS_KEY: &[u8] = b"deflect.settings";

/// Memory bounds of the store (all column families share them).
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// One LRU block cache for every column family, index and filter blocks included.
    pub block_cache_bytes: usize,
    /// Cap on all memtables together (a `WriteBufferManager` charged to the block cache).
    pub write_buffer_bytes: usize,
    /// fsync the WAL on every batch (survives power loss, not only process crashes).
    pub sync_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
            sync_writes: false,
        }
    }
}

pub struct Store {
    db: Arc<DB>,
    path: String,
    sync: bool,
}

fn ts_key(t: Millis) -> [u8; 8] {
    // flip the sign bit so big-endian byte order equals numeric order for negative times too
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn ts_from(b: &[u8]) -> Millis {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

fn prefix(p: i32) -> [u8; 4] {
    (p as u32).to_be_bytes()
}

fn timer_key(p: i32, k: &TimerKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + k.1.len());
    v.extend_from_slice(&prefix(p));
    v.extend_from_slice(&ts_key(k.0));
    v.extend_from_slice(k.1.as_bytes());
    v
}

fn journey_key(p: i32, k: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + k.len());
    v.extend_from_slice(&prefix(p));
    v.extend_from_slice(k.as_bytes());
    v
}

/// At least the bytes of a WriteBatch holding the given partitions' changes
/// ([`Batch::partition_encoded`]).
fn batch_bytes<'s>(parts: impl IntoIterator<Item = (&'s [u8], &'s StateChanges)>) -> usize {
    // a record: its tag, column family, key and value lengths (varints), then the bytes
    const RECORD: usize = 16;
    let mut bytes = 12;
    for (snap, ch) in parts {
        let timers = ch.timers_put.iter().chain(&ch.timers_del);
        bytes += timers.map(|k| RECORD + 12 + k.1.len()).sum::<usize>();
        // the range delete of fired timers: two keys
        bytes += RECORD + 2 * 12;
        bytes += (ch.journeys.iter())
            .map(|(k, j)| RECORD + 4 + k.len() + j.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        bytes += (ch.cohorts.iter())
            .map(|(_, c)| RECORD + 12 + c.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        bytes += RECORD + 4 + snap.len();
    }
    bytes
}

type KeyValue = (Box<[u8]>, Box<[u8]>);

/// A stored value decoded, or [`StoreError::Corrupt`] naming `what` it is.
fn decode<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, StoreError> {
    codec::decode(b).map_err(|source| StoreError::Corrupt { what, source })
}

/// Everything a partition needs to resume.
pub struct RestoredPartition {
    pub snapshot: PartitionSnapshot,
    pub cohorts: Vec<CohortState>,
    /// The last record the state read (`None` in a state written before 2026-11-28's
    /// thirteenth session, until its next batch).
    pub last_record: Option<RecordMark>,
}

/// A record a partition's state has read: its offset and a fingerprint of its key and value (the
/// Kafka side computes it). A restart reads the record at that offset again: another one there
/// means the log is not the one the state was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMark {
    pub offset: i64,
    pub fingerprint: u64,
}

impl RecordMark {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..].copy_from_slice(&self.fingerprint.to_be_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let (o, f) = b.split_at(8);
        Some(RecordMark {
            offset: i64::from_be_bytes(o.try_into().ok()?),
            fingerprint: u64::from_be_bytes(f.try_into().ok()?),
        })
    }
}

/// The meta key of partition `p`'s [`RecordMark`] (its snapshot's key is the bare prefix).
fn mark_key(p: i32) -> [u8; 15] {
    let mut k = [0u8; 15];
    k[..4].copy_from_slice(&prefix(p));
    k[4..].copy_from_slice(b"last-record");
    k
}

fn cohort_key(p: i32, start: Millis) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&prefix(p));
    v[4..].copy_from_slice(&ts_key(start));
    v
}

impl Store {
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            opts.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let table = |bloom: bool| {
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            // Most journey lookups are for customers with no stored journey (new or expired): a
            // bloom filter answers those without reading an index and a data block from every
            // level, which otherwise dominated at millions of customers. Index and filters are
            // partitioned and live in the block cache (bounded), with the top level and L0's
            // pinned.
            if bloom {
                t.set_bloom_filter(10.0, false);
                t.set_partition_filters(true);
            }
            t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
            t.set_cache_index_and_filter_blocks(true);
            t.set_pin_top_level_index_and_filter(true);
            t.set_pin_l0_filter_and_index_blocks_in_cache(true);
            t
        };
        let (point_reads, scans_only) = (table(true), table(false));
        // The same for the memtables, where the recent writes are: without a filter, a lookup of
        // a key it does not hold walks the skip list (7 % of the partition workers' time in
        // `deflect bench`). Whole-key filters serve point reads only: timers and cohorts are
        // only ever scanned, so their puts (half of all) add to no filter (adding to the
        // memtable's was 1.7 % of `deflect bench`'s CPU, and flushes built table filters no read
        // used).
        let cf_opts = |name: &str| {
            let point = !matches!(name, CF_TIMERS | CF_COHORTS);
            let mut o = Options::default();
            o.set_block_based_table_factory(if point { &point_reads } else { &scans_only });
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if point {
                o.set_memtable_whole_key_filtering(true);
                o.set_memtable_prefix_bloom_ratio(0.02);
            }
            o
        };
        let mut db_opts = cf_opts(CF_META);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        db_opts.set_atomic_flush(true);
        db_opts.set_max_background_jobs(2);
        // a store of another format may have other column families: open them all, so that the
        // format check below can say what is wrong
        let mut names: Vec<String> = DB::list_cf(&db_opts, path).unwrap_or_default();
        for n in CFS {
            if !names.iter().any(|e| e == n) {
                names.push(n.to_string());
            }
        }
        let cfs = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_opts(n)));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| {
            // RocksDB's lock file: another process has the store open
            if source.kind() == rocksdb::ErrorKind::IOError && source.as_ref().contains("/LOCK") {
                StoreError::InUse {
                    path: shown.clone(),
                }
            } else {
                StoreError::Rocks {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
        let store = Store {
            db: Arc::new(db),
            path: shown,
            sync: opts.sync_writes,
        };
        store.check_format()?;
        Ok(store)
    }

    /// Refuses a store written in another format; stamps a new store with this one.
    fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        let found = self.db.get_cf(meta, FORMAT_KEY).map_err(|e| self.err(e))?;
        let found = match found {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let mut it = self.db.iterator_cf(meta, IteratorMode::Start);
                if it.next().is_none() {
                    self.db
                        .put_cf(meta, FORMAT_KEY, FORMAT_VERSION.to_string())
                        .map_err(|e| self.err(e))?;
                    return Ok(());
                }
                "1 (no version recorded)".to_string()
            }
        };
        if found == FORMAT_VERSION.to_string() {
            Ok(())
        } else {
            Err(StoreError::Format {
                path: self.path.clone(),
                found,
            })
        }
    }

    /// Refuses a store built with other `settings` than these: the caller's description of the
    /// settings that shape what is stored (time zone, interval length, heat-map cells), compared
    /// as text. A store without a record of them (new, or written before they were recorded)
    /// records these.
    pub fn check_settings(&self, settings: &str) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        match self
            .db
            .get_cf(meta, SETTINGS_KEY)
            .map_err(|e| self.err(e))?
        {
            Some(stored) if stored == settings.as_bytes() => Ok(()),
            Some(stored) => Err(StoreError::Settings {
                path: self.path.clone(),
                stored: String::from_utf8_lossy(&stored).into_owned(),
                configured: settings.to_string(),
            }),
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                (self.db)
                    .put_cf_opt(meta, SETTINGS_KEY, settings, &wo)
                    .map_err(|e| self.err(e))
            }
        }
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Loads a partition's state, or `None` when this store has never seen the partition.
    pub fn load_partition(&self, p: i32) -> Result<Option<RestoredPartition>, StoreError> {
        let meta = self.cf(CF_META);
        let unfinished = (self.db).get_pinned_cf(meta, handoff::unfinished_key(p));
        if unfinished.map_err(|e| self.err(e))?.is_some() {
            return Err(StoreError::ImportUnfinished {
                path: self.path.clone(),
                partition: p,
            });
        }
        let Some(meta) = self
            .db
            .get_cf(self.cf(CF_META), prefix(p))
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let snapshot: PartitionSnapshot = decode("partition snapshot", &meta)?;
        let mut cohorts = Vec::new();
        for item in self.scan(CF_COHORTS, p) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            cohorts.push(decode("cohort", &v)?);
        }
        let last_record = match self
            .db
            .get_cf(self.cf(CF_META), mark_key(p))
            .map_err(|e| self.err(e))?
        {
            None => None,
            Some(b) => Some(RecordMark::from_bytes(&b).ok_or(StoreError::CorruptMark {
                partition: p,
                len: b.len(),
            })?),
        };
        Ok(Some(RestoredPartition {
            snapshot,
            cohorts,
            last_record,
        }))
    }

    fn scan(
        &self,
        cf: &str,
        p: i32,
    ) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + '_ {
        let pre = prefix(p);
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(&pre, Direction::Forward))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&pre)))
    }

    /// Reads journeys of partition `p` for the engine. A read error is kept and must be checked
    /// with [`JourneyReader::into_result`] before the step's changes are written.
    pub fn journeys(&self, p: i32) -> JourneyReader<'_> {
        JourneyReader {
            store: self,
            partition: p,
            error: None,
        }
    }

    /// Starts a batch of writes.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            wb: WriteBatch::default(),
        }
    }

    /// A batch with room for the given partitions' changes: a batch grown by doubling copied
    /// its bytes about twice over, into fresh pages each time (a poll's batch is megabytes).
    pub fn batch_for<'s>(
        &self,
        parts: impl IntoIterator<Item = (&'s [u8], &'s StateChanges)>,
    ) -> Batch<'_> {
        Batch {
            store: self,
            wb: WriteBatch::with_capacity_bytes(batch_bytes(parts)),
        }
    }

    /// Write stalls: (1 when writes are stopped, else 0; the delayed write rate in bytes/s when
    /// RocksDB is slowing writes down, else 0).
    pub fn write_stall(&self) -> (u64, u64) {
        let get = |p: &str| self.db.property_int_value(p).ok().flatten().unwrap_or(0);
        (
            get("rocksdb.is-write-stopped"),
            get("rocksdb.actual-delayed-write-rate"),
        )
    }

    /// Bytes held in the shared block cache, memtables charged to it included.
    pub fn block_cache_usage_bytes(&self) -> u64 {
        // one cache shared by every column family: any of them reports it
        self.db
            .property_int_value_cf(self.cf(CF_JOURNEYS), "rocksdb.block-cache-usage")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Memory RocksDB holds outside the block cache for open table files (bytes, all column
    /// families).
    pub fn table_readers_bytes(&self) -> u64 {
        self.sum_over_cfs("rocksdb.estimate-table-readers-mem")
    }

    /// An integer property summed over every column family.
    fn sum_over_cfs(&self, property: &str) -> u64 {
        CFS.iter()
            .filter_map(|n| {
                self.db
                    .property_int_value_cf(self.cf(n), property)
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Approximate on-disk size of live data (bytes).
    pub fn live_size_bytes(&self) -> u64 {
        self.sum_over_cfs("rocksdb.estimate-live-data-size")
    }
}

pub struct JourneyReader<'a> {
    store: &'a Store,
    partition: i32,
    error: Option<StoreError>,
}

impl JourneyReader<'_> {
    pub fn into_result(self) -> Result<(), StoreError> {
        self.error.map_or(Ok(()), Err)
    }
}

impl JourneyStore for JourneyReader<'_> {
    fn load(&mut self, key: &str) -> Option<StoredJourney> {
        let k = journey_key(self.partition, key);
        match self.store.db.get_pinned_cf(self.store.cf(CF_JOURNEYS), k) {
            Ok(Some(v)) => match decode("journey", &v) {
                Ok(j) => Some(j),
                Err(e) => {
                    self.error.get_or_insert(e);
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.error.get_or_insert(self.store.err(e));
                None
            }
        }
    }

    fn keeps_timers(&self) -> bool {
        true
    }

    fn timers(&mut self, from: Millis, to: Millis) -> Vec<TimerKey> {
        self.scan_timers(from, to, usize::MAX)
    }

    fn first_timer(&mut self, from: Millis) -> Option<Millis> {
        self.scan_timers(from, Millis::MAX, 1).first().map(|k| k.0)
    }
}

impl JourneyReader<'_> {
    /// Up to `limit` timers of this partition due in `[from, to)`, in time order.
    fn scan_timers(&mut self, from: Millis, to: Millis, limit: usize) -> Vec<TimerKey> {
        let start = timer_key(self.partition, &timer_bound(from));
        let end = timer_key(self.partition, &timer_bound(to));
        let mut out = Vec::new();
        // the bound ends the scan at `end` (so it stays in this partition), instead of RocksDB
        // skipping the tombstones of fired and moved timers beyond it in search of a live key
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end);
        let iter = self.store.db.iterator_cf_opt(
            self.store.cf(CF_TIMERS),
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter.take(limit) {
            match item {
                Ok((k, _)) => {
                    let key = String::from_utf8_lossy(&k[12..]);
                    out.push((ts_from(&k[4..12]), key.as_ref().into()));
                }
                Err(e) => {
                    self.error.get_or_insert(self.store.err(e));
                    break;
                }
            }
        }
        out
    }
}

/// One atomic write: the changes and snapshots of any number of partitions.
pub struct Batch<'a> {
    store: &'a Store,
    wb: WriteBatch,
}

impl Batch<'_> {
    pub fn partition(&mut self, p: i32, snap: &PartitionSnapshot, ch: &StateChanges) {
        self.partition_encoded(p, &codec::encode(snap), ch);
    }

    /// [`Batch::partition`] with the snapshot already encoded (by the thread that owns it).
    pub fn partition_encoded(&mut self, p: i32, snap: &[u8], ch: &StateChanges) {
        let s = self.store;
        let (timers, journeys) = (s.cf(CF_TIMERS), s.cf(CF_JOURNEYS));
        for k in &ch.timers_del {
            self.wb.delete_cf(timers, timer_key(p, k));
        }
        for k in &ch.timers_put {
            self.wb.put_cf(timers, timer_key(p, k), []);
        }
        if let Some(before) = ch.timers_fired_before {
            // after the puts: a timer set and fired within the batch goes too
            self.wb.delete_range_cf(
                timers,
                timer_key(p, &timer_bound(Millis::MIN)),
                timer_key(p, &timer_bound(before)),
            );
        }
        for (k, j) in &ch.journeys {
            match j {
                Some(j) => self.wb.put_cf(journeys, journey_key(p, k), j),
                None => self.wb.delete_cf(journeys, journey_key(p, k)),
            }
        }
        let cohorts = s.cf(CF_COHORTS);
        for (start, c) in &ch.cohorts {
            match c {
                Some(c) => self.wb.put_cf(cohorts, cohort_key(p, *start), c),
                None => self.wb.delete_cf(cohorts, cohort_key(p, *start)),
            }
        }
        self.wb.put_cf(s.cf(CF_META), prefix(p), snap);
    }

    /// Partition `p`'s state has read up to the record `mark` (written with its snapshot).
    pub fn last_record(&mut self, p: i32, mark: RecordMark) {
        let meta = self.store.cf(CF_META);
        self.wb.put_cf(meta, mark_key(p), mark.to_bytes());
    }

    pub fn len(&self) -> usize {
        self.wb.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }

    /// Writes the batch atomically (WAL on; fsync if configured).
    pub fn commit(self) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.store.sync);
        self.store
            .db
            .write_opt(self.wb, &wo)
            .map_err(|e| self.store.err(e))
    }
}

mod handoff;
pub use handoff::{Held, Moved, Size};

#[cfg(test)]
mod tests;

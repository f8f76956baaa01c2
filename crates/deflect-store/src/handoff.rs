//! Moving a partition's state to another store (`deflect state export | import | drop`).
//!
//! Every key of a partition starts with its prefix, in every column family, so its whole state
//! (snapshot and last-record mark, journeys, timers, cohorts) is one range per column family.
//! An export writes those ranges to a file; an import writes them into another store, for a
//! partition that store does not hold. Both stores must be closed (no deflect running on them):
//! RocksDB's lock refuses a second process.
//!
//! The file: `MAGIC`, then (big-endian) the file layout version, the store's
//! [`FORMAT_VERSION`](crate::FORMAT_VERSION), the settings the state was built with (length and
//! bytes), the partitions (count, then each), then records (column family index, key length,
//! key, value length, value) ended by [`END`], the record count and a CRC-32 of every byte
//! before it. An import checks the whole file before it writes anything.
//!
//! An import writes in bounded batches: first, in one batch, it clears the partitions' ranges and
//! marks each partition's import as unfinished; then their records; last, in one batch, their
//! snapshots and marks, removing the unfinished marks. A store whose import stopped part way
//! refuses to load those partitions (see [`StoreError::ImportUnfinished`]) until an import
//! (with `replace`) or a drop finishes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use deflect_core::engine::PartitionSnapshot;
use rocksdb::WriteBatch;

use crate::{prefix, Store, StoreError, CFS, CF_META, FORMAT_VERSION, SETTINGS_KEY};

/// First bytes of an export file.
const MAGIC: &[u8] = b"deflect-state-export\n";
/// Version of the file layout (not of the state's encoding: that is `FORMAT_VERSION`).
const LAYOUT: u32 = 1;
/// Column-family tag that ends the records.
const END: u8 = 0xff;
/// Bytes of records an import writes per batch.
const IMPORT_BATCH_BYTES: usize = 32 << 20;
/// Suffix of the meta key marking a partition whose import has not finished.
const UNFINISHED: &[u8] = b"import-unfinished";

/// The meta key marking partition `p`'s import as unfinished.
pub(crate) fn unfinished_key(p: i32) -> Vec<u8> {
    let mut k = prefix(p).to_vec();
    k.extend_from_slice(UNFINISHED);
    k
}

/// A value read from the store.
type Value = Box<[u8]>;

/// How much of a partition's state: what an export writes, or an import wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    /// Stored journeys (customers, or contacts without a customer).
    pub journeys: u64,
    /// Every key of the partition, journeys included, and their keys' and values' bytes.
    pub keys: u64,
    pub bytes: u64,
}

impl Size {
    fn add(&mut self, cf: &str, k: &[u8], v: &[u8]) {
        self.keys += 1;
        self.bytes += (k.len() + v.len()) as u64;
        self.journeys += u64::from(cf == crate::CF_JOURNEYS);
    }
}

/// What an export or import moved, per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub partition: i32,
    pub size: Size,
}

/// A partition held by a store, as `deflect state list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub partition: i32,
    /// The next offset the state expects to read.
    pub next_offset: i64,
    /// Where a restart resumes reading (pending events are read again from there).
    pub resume_offset: i64,
    pub size: Size,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn bad_file(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::ExportFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl Store {
    /// The partitions whose meta key is their prefix followed by `suffix`, with its value, in
    /// order: with no suffix, those the store holds (their snapshots).
    fn meta_of_partitions(&self, suffix: &[u8]) -> Result<Vec<(i32, Value)>, StoreError> {
        let mut out = Vec::new();
        for item in (self.db).iterator_cf(self.cf(CF_META), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.len() == 4 + suffix.len() && k.ends_with(suffix) {
                out.push((i32::from_be_bytes(k[..4].try_into().expect("4 bytes")), v));
            }
        }
        Ok(out)
    }

    /// The partitions with a meta key of `suffix` ([`Store::meta_of_partitions`]), in order.
    fn partitions_with(&self, suffix: &[u8]) -> Result<Vec<i32>, StoreError> {
        let metas = self.meta_of_partitions(suffix)?;
        Ok(metas.into_iter().map(|(p, _)| p).collect())
    }

    /// The partitions this store holds a state for, in order (no key of theirs read).
    fn held(&self) -> Result<Vec<i32>, StoreError> {
        self.partitions_with(b"")
    }

    /// The partitions whose import did not finish, in order.
    fn unfinished(&self) -> Result<Vec<i32>, StoreError> {
        self.partitions_with(UNFINISHED)
    }

    /// Refuses partitions this store does not hold.
    fn require_held(&self, partitions: &[i32]) -> Result<(), StoreError> {
        let held = self.held()?;
        let missing: Vec<i32> = (partitions.iter())
            .filter(|p| !held.contains(p))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::NotHeld {
            path: self.path.clone(),
            partitions: missing,
            held,
        })
    }

    /// The partitions this store holds a state for, in order, with their size (every key read
    /// once).
    pub fn partitions(&self) -> Result<Vec<Held>, StoreError> {
        let mut out = Vec::new();
        for (p, v) in self.meta_of_partitions(b"")? {
            let snapshot: PartitionSnapshot = crate::decode("partition snapshot", &v)?;
            let mut size = Size::default();
            for cf in CFS {
                for item in self.scan(cf, p) {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    size.add(cf, &k, &v);
                }
            }
            out.push(Held {
                partition: p,
                next_offset: snapshot.next_offset,
                resume_offset: snapshot.resume_offset,
                size,
            });
        }
        Ok(out)
    }

    /// The settings the state was built with ([`Store::check_settings`]), if recorded.
    pub fn settings(&self) -> Result<Option<String>, StoreError> {
        let v = (self.db)
            .get_cf(self.cf(CF_META), SETTINGS_KEY)
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Deletes everything of these partitions (each held by this store, or left by an unfinished
    /// import), in one atomic write.
    pub fn drop_partitions(&self, partitions: &[i32]) -> Result<(), StoreError> {
        let unfinished = self.unfinished()?;
        let settled: Vec<i32> = (partitions.iter())
            .filter(|p| !unfinished.contains(p))
            .copied()
            .collect();
        self.require_held(&settled)?;
        let mut wb = WriteBatch::default();
        for &p in partitions {
            self.clear_range(&mut wb, p);
        }
        self.write_synced(wb)
    }

    fn clear_range(&self, wb: &mut WriteBatch, p: i32) {
        let end = (p as u32).saturating_add(1).to_be_bytes();
        for cf in CFS {
            wb.delete_range_cf(self.cf(cf), prefix(p), end);
        }
    }

    fn write_synced(&self, wb: WriteBatch) -> Result<(), StoreError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(|e| self.err(e))
    }

    /// Writes the state of `partitions` (each held by this store) to `file`.
    pub fn export(&self, partitions: &[i32], file: &Path) -> Result<Vec<Moved>, StoreError> {
        let mut partitions = partitions.to_vec();
        partitions.sort_unstable();
        partitions.dedup();
        self.require_held(&partitions)?;
        let settings = self.settings()?.unwrap_or_default();
        let io = io_err(file);
        let f = std::fs::File::create(file).map_err(&io)?;
        let mut w = Checked::new(BufWriter::new(f));
        w.write_all(MAGIC).map_err(&io)?;
        w.write_all(&LAYOUT.to_be_bytes()).map_err(&io)?;
        w.write_all(&FORMAT_VERSION.to_be_bytes()).map_err(&io)?;
        w.write_all(&(settings.len() as u32).to_be_bytes())
            .map_err(&io)?;
        w.write_all(settings.as_bytes()).map_err(&io)?;
        w.write_all(&(partitions.len() as u32).to_be_bytes())
            .map_err(&io)?;
        for p in &partitions {
            w.write_all(&p.to_be_bytes()).map_err(&io)?;
        }
        let mut out = Vec::new();
        for &p in &partitions {
            let mut size = Size::default();
            for (i, cf) in CFS.iter().enumerate() {
                for item in self.scan(cf, p) {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    w.write_all(&[i as u8]).map_err(&io)?;
                    w.write_all(&(k.len() as u32).to_be_bytes()).map_err(&io)?;
                    w.write_all(&k).map_err(&io)?;
                    w.write_all(&(v.len() as u32).to_be_bytes()).map_err(&io)?;
                    w.write_all(&v).map_err(&io)?;
                    size.add(cf, &k, &v);
                }
            }
            out.push(Moved { partition: p, size });
        }
        let records: u64 = out.iter().map(|m| m.size.keys).sum();
        w.write_all(&[END]).map_err(&io)?;
        w.write_all(&records.to_be_bytes()).map_err(&io)?;
        let Checked { mut inner, crc } = w;
        let crc = crc.finalize();
        inner.write_all(&crc.to_be_bytes()).map_err(&io)?;
        let f = inner.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(&io)?;
        Ok(out)
    }

    /// Writes the partitions exported to `file` into this store. A partition it already holds
    /// is refused unless `replace` (its state is then overwritten); so is a file of another
    /// state format, or of a state built with other settings than this store's.
    pub fn import(&self, file: &Path, replace: bool) -> Result<Vec<Moved>, StoreError> {
        verify(file)?;
        let io = io_err(file);
        let f = std::fs::File::open(file).map_err(&io)?;
        let mut r = BufReader::new(f);
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic).map_err(&io)?;
        let layout = read_u32(&mut r).map_err(&io)?;
        if layout != LAYOUT {
            return Err(bad_file(
                file,
                format!("file layout {layout}, not {LAYOUT}"),
            ));
        }
        let format = read_u32(&mut r).map_err(&io)?;
        if format != FORMAT_VERSION {
            return Err(bad_file(
                file,
                format!("state format {format}, this deflect reads format {FORMAT_VERSION}"),
            ));
        }
        let settings = String::from_utf8_lossy(&read_bytes(&mut r).map_err(&io)?).into_owned();
        let count = read_u32(&mut r).map_err(&io)?;
        let mut partitions = Vec::new();
        for _ in 0..count {
            partitions.push(read_u32(&mut r).map_err(&io)? as i32);
        }
        // settings: this store's must be the file's (a new store takes the file's, below)
        let ours = self.settings()?;
        if let Some(ours) = &ours {
            if !settings.is_empty() && *ours != settings {
                return Err(StoreError::ImportSettings {
                    path: self.path.clone(),
                    ours: ours.clone(),
                    file: settings,
                });
            }
        }
        if !replace {
            let held: Vec<i32> = (self.held()?.into_iter())
                .chain(self.unfinished()?)
                .filter(|p| partitions.contains(p))
                .collect();
            if !held.is_empty() {
                return Err(StoreError::Held {
                    path: self.path.clone(),
                    partitions: held,
                });
            }
        }
        if ours.is_none() && !settings.is_empty() {
            self.check_settings(&settings)?;
        }
        // the ranges cleared and each import marked unfinished, at once
        let mut wb = WriteBatch::default();
        for &p in &partitions {
            self.clear_range(&mut wb, p);
            wb.put_cf(self.cf(CF_META), unfinished_key(p), []);
        }
        self.write_synced(wb)?;
        let mut moved: Vec<Moved> = (partitions.iter())
            .map(|&p| Moved {
                partition: p,
                ..Moved::default()
            })
            .collect();
        let mut wb = WriteBatch::default();
        let mut last = WriteBatch::default();
        loop {
            let mut tag = [0u8];
            r.read_exact(&mut tag).map_err(&io)?;
            if tag[0] == END {
                break;
            }
            let cf = *CFS
                .get(tag[0] as usize)
                .ok_or_else(|| bad_file(file, format!("column family {} unknown", tag[0])))?;
            let k = read_bytes(&mut r).map_err(&io)?;
            let v = read_bytes(&mut r).map_err(&io)?;
            let p = (k.get(..4))
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
                .filter(|p| partitions.contains(p))
                .ok_or_else(|| bad_file(file, "a key outside the listed partitions"))?;
            let m = moved.iter_mut().find(|m| m.partition == p).expect("listed");
            m.size.add(cf, &k, &v);
            if cf == CF_META {
                // snapshots and marks last: until they are written the partition is not held
                last.put_cf(self.cf(cf), &k, &v);
                continue;
            }
            wb.put_cf(self.cf(cf), &k, &v);
            if wb.size_in_bytes() >= IMPORT_BATCH_BYTES {
                self.write_synced(std::mem::take(&mut wb))?;
            }
        }
        let stated = read_u64(&mut r).map_err(&io)?;
        let records: u64 = moved.iter().map(|m| m.size.keys).sum();
        if stated != records {
            return Err(bad_file(
                file,
                format!("{records} records, the file says {stated}"),
            ));
        }
        self.write_synced(wb)?;
        for &p in &partitions {
            last.delete_cf(self.cf(CF_META), unfinished_key(p));
        }
        self.write_synced(last)?;
        Ok(moved)
    }
}

/// Checks an export file's magic, length and checksum before anything is written from it.
fn verify(file: &Path) -> Result<(), StoreError> {
    let io = io_err(file);
    let mut f = BufReader::new(std::fs::File::open(file).map_err(&io)?);
    let len = std::fs::metadata(file).map_err(&io)?.len();
    if len < (MAGIC.len() + 4) as u64 {
        return Err(bad_file(file, "too short to be a deflect state export"));
    }
    let mut magic = vec![0u8; MAGIC.len()];
    f.read_exact(&mut magic).map_err(&io)?;
    if magic != MAGIC {
        return Err(bad_file(file, "not a deflect state export"));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&magic);
    let mut left = len - MAGIC.len() as u64 - 4;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).map_err(&io)?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    if read_u32(&mut f).map_err(&io)? != crc.finalize() {
        return Err(bad_file(
            file,
            "checksum mismatch (truncated or damaged; export it again)",
        ));
    }
    Ok(())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let n = read_u32(r)? as usize;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// A writer that checksums what passes through it.
struct Checked<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Checked<W> {
    fn new(inner: W) -> Self {
        Checked {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

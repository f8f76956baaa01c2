//! Replays of real contact-center data: adapters turn a source format into contact events.
//!
//! Every adapter implements [`Adapter`]; `deflect replay NAME FILE...` reads the files, sorts the
//! events by event time and produces them to a topic. A Genesys or Twilio adapter is added the same
//! way: a module here and a line in [`adapter`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use deflect_core::event::Event;

pub mod anonymous_bank;
pub mod connect_ctr;

/// What an adapter read from one source.
#[derive(Debug, Default)]
pub struct Converted {
    pub events: Vec<Event>,
    /// Source records used.
    pub records: u64,
    /// Source records skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

impl Converted {
    pub fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_insert(0) += 1;
    }
    pub fn merge(&mut self, other: Converted) {
        self.events.extend(other.events);
        self.records += other.records;
        for (k, v) in other.skipped {
            *self.skipped.entry(k).or_insert(0) += v;
        }
    }
}

pub trait Adapter {
    /// The name used on the command line.
    fn name(&self) -> &'static str;
    /// The IANA time zone of the source's local times, if it has one.
    fn time_zone(&self) -> Option<&'static str>;
    /// Converts one file's contents.
    fn convert(&self, text: &str) -> Result<Converted>;
}

/// The adapter of a name.
pub fn adapter(name: &str) -> Option<Box<dyn Adapter>> {
    match name {
        "anonymous-bank" => Some(Box::new(anonymous_bank::AnonymousBank)),
        "connect-ctr" => Some(Box::new(connect_ctr::ConnectCtr)),
        _ => None,
    }
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .with_context(|| format!("cannot gunzip {}", path.display()))?;
        Ok(s)
    } else {
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
    }
}

/// Converts every file and sorts the events in the order the pipeline processes them.
pub fn convert_files(adapter: &dyn Adapter, files: &[impl AsRef<Path>]) -> Result<Converted> {
    let mut all = Converted::default();
    for f in files {
        let text = read_text(f.as_ref())?;
        let c = adapter
            .convert(&text)
            .with_context(|| format!("converting {}", f.as_ref().display()))?;
        tracing::info!(file = %f.as_ref().display(), records = c.records, events = c.events.len(), skipped = ?c.skipped, "converted");
        all.merge(c);
    }
    all.events.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    Ok(all)
}

//! `deflect state`: what a state directory holds, and moving partitions' state between them
//! (when the partitions an instance reads change: `kafka.instances`, `kafka.partitions`).
//! Every command needs the state directories closed: no deflect running on them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deflect_store::{Moved, Store, StoreOptions};

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// The partitions a state directory holds: offsets, journeys, keys and bytes.
    List { dir: PathBuf },
    /// Write partitions' state to a file (the directory keeps it until `drop`).
    Export {
        dir: PathBuf,
        /// Partitions to export (comma-separated or repeated).
        #[arg(long, short, required = true, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// The file to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write the partitions of an exported file into a state directory (created if missing).
    Import {
        dir: PathBuf,
        file: PathBuf,
        /// Overwrite partitions the directory already holds.
        #[arg(long)]
        replace: bool,
    },
    /// Delete partitions' state from a state directory (after they were imported elsewhere).
    Drop {
        dir: PathBuf,
        #[arg(long, short, required = true, value_delimiter = ',')]
        partitions: Vec<i32>,
    },
}

/// Runs the command; returns what it prints.
pub fn run(c: &StateCommand) -> Result<String> {
    let mut out = String::new();
    match c {
        StateCommand::List { dir } => {
            let store = open_existing(dir)?;
            let held = store.partitions()?;
            writeln!(
                out,
                "partition  next_offset  resume_offset  journeys      keys       bytes"
            )?;
            for h in &held {
                writeln!(
                    out,
                    "{:>9}  {:>11}  {:>13}  {:>8}  {:>8}  {:>10}",
                    h.partition,
                    h.next_offset,
                    h.resume_offset,
                    h.size.journeys,
                    h.size.keys,
                    h.size.bytes
                )?;
            }
            if held.is_empty() {
                writeln!(out, "(no partition)")?;
            }
        }
        StateCommand::Export {
            dir,
            partitions,
            out: file,
        } => {
            let store = open_existing(dir)?;
            let moved = (store.export(partitions, file))
                .with_context(|| format!("cannot export from {}", dir.display()))?;
            summary(&mut out, "exported", &moved, file)?;
        }
        StateCommand::Import { dir, file, replace } => {
            let store = open(dir)?;
            let moved = (store.import(file, *replace))
                .with_context(|| format!("cannot import into {}", dir.display()))?;
            summary(&mut out, "imported", &moved, file)?;
        }
        StateCommand::Drop { dir, partitions } => {
            open_existing(dir)?
                .drop_partitions(partitions)
                .with_context(|| format!("nothing dropped from {}", dir.display()))?;
            writeln!(
                out,
                "dropped partitions {partitions:?} from {}",
                dir.display()
            )?;
        }
    }
    Ok(out)
}

/// Opens a state directory that must exist (a typo must not create an empty one).
fn open_existing(dir: &Path) -> Result<Store> {
    anyhow::ensure!(
        dir.join("CURRENT").is_file(),
        "{} is not a deflect state directory (no RocksDB there)",
        dir.display()
    );
    open(dir)
}

/// Opens a state directory for a `deflect state` command, which needs it closed.
fn open(dir: &Path) -> Result<Store> {
    Store::open(dir, StoreOptions::default()).map_err(|e| match e {
        deflect_store::StoreError::InUse { .. } => anyhow::Error::new(e)
            .context("stop the deflect that runs on it first (deflect state needs it closed)"),
        e => e.into(),
    })
}

fn summary(out: &mut String, verb: &str, moved: &[Moved], file: &Path) -> Result<()> {
    for m in moved {
        writeln!(
            out,
            "{verb} partition {}: {} journeys, {} keys, {} bytes",
            m.partition, m.size.journeys, m.size.keys, m.size.bytes
        )?;
    }
    writeln!(out, "file {}", file.display())?;
    Ok(())
}

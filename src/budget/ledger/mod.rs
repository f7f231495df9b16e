//! The spend ledger: one JSON line per settled request, appended to
//! `state_dir/ledger-YYYY-MM.jsonl` (UTC month of the request's start).
//!
//! An entry is written with one `write(2)` before the response's last bytes
//! go to the client, so a response the client saw complete survives
//! `kill -9` (the page cache outlives the process). `fsync` runs every
//! `fsync_interval` (or after every entry when it is zero), which bounds
//! what a power loss can take.
//!
//! `state_dir/ledger.meta` records, at each fsync, how many bytes and
//! entries each file had on disk. At start that tells a write torn by a
//! crash (after the last fsync: its remains are skipped) from damage (a
//! file shorter than what was fsynced, or lines in it that are not
//! entries), which `budget_store.on_ledger_error` decides about: a ledger
//! that cannot be read must never silently reset spend.

//! Layout: `entry` (the line format), `write` (appends, fsync and the
//! fsync record), `scan` (reading back, telling damage from torn writes),
//! `repair` (what `on_ledger_error` does to damaged files).
//!
//! The ledger stores and reads entries; it must not count budgets.

mod entry;
mod repair;
mod scan;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use entry::Entry;
pub use scan::{Problem, Scan};

/// What `ledger.meta` records of one ledger file: the length and entries
/// fsynced to it. Everything up to `bytes` must read back as entries; a
/// shorter file or a line that does not parse there is damage, not a torn
/// write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub bytes: u64,
    pub entries: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetaFile {
    files: BTreeMap<String, FileMeta>,
}

/// The sidecar of the ledger files, in `state_dir`.
pub const META_FILE: &str = "ledger.meta";

/// Written and fsynced counts per ledger file name, and what is kept out of
/// `ledger.meta` while the ledger is damaged.
#[derive(Debug, Default)]
struct Track {
    /// Bytes and entries written so far (this process's view).
    written: BTreeMap<String, FileMeta>,
    /// What `ledger.meta` says (or will say at the next write).
    meta: BTreeMap<String, FileMeta>,
    meta_dirty: bool,
    /// `ledger.meta` existed but did not parse.
    meta_error: Option<String>,
    /// Damaged files kept as they are (`on_ledger_error: fail_closed`):
    /// neither appended to nor re-recorded, so the damage stays visible.
    frozen: BTreeSet<String>,
}

pub struct Ledger {
    dir: PathBuf,
    fsync_each: bool,
    /// The open file and the month it is for.
    file: Mutex<Option<(String, File)>>,
    dirty: AtomicBool,
    /// Taken after `file`, never before it.
    track: Mutex<Track>,
}

fn month_of(at: Timestamp) -> String {
    at.strftime("%Y-%m").to_string()
}

fn file_name(month: &str) -> String {
    format!("ledger-{month}.jsonl")
}

impl Ledger {
    pub fn new(dir: &Path, fsync_each: bool) -> Self {
        let mut track = Track::default();
        match std::fs::read(dir.join(META_FILE)) {
            Ok(bytes) => match serde_json::from_slice::<MetaFile>(&bytes) {
                Ok(m) => track.meta = m.files,
                Err(e) => track.meta_error = Some(e.to_string()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => track.meta_error = Some(e.to_string()),
        }
        Self { dir: dir.to_path_buf(), fsync_each, file: Mutex::new(None), dirty: AtomicBool::new(false), track: Mutex::new(track) }
    }

    fn track(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the write lock: appends wait while a replay holds it.
    pub fn lock(&self) -> MutexGuard<'_, Option<(String, File)>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `ledger.meta` could not be read (then damage that shortens a
    /// file cannot be seen).
    pub fn meta_error(&self) -> Option<String> {
        self.track().meta_error.clone()
    }
}

#[cfg(test)]
mod tests;

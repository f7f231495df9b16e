//! The spend ledger: one JSON line per settled request, appended to
//! `state_dir/ledger-YYYY-MM.jsonl` (UTC month of the request's start).
//!
//! An entry is written with one `write(2)` before the response's last bytes
//! go to the client, so a response the client saw complete survives
//! `kill -9` (the page cache outlives the process). `fsync` runs every
//! `fsync_interval` (or after every entry when it is zero), which bounds
//! what a power loss can take.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One settled request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// When the request was admitted (RFC 3339, UTC); the windows it counts in.
    pub ts: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub route: String,
    pub provider: String,
    /// The configured model that served (`other` for an unknown one).
    pub model: String,
    /// The model the client asked for, when it differs from `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    pub input: u64,
    #[serde(default)]
    pub cached: u64,
    #[serde(default)]
    pub cache_write: u64,
    pub output: u64,
    pub cost_usd: f64,
    /// What the same tokens would have cost at the requested model.
    pub requested_cost_usd: f64,
    /// Tokens counted locally because the provider reported no usage
    /// (e.g. a stream the client cut).
    #[serde(default, skip_serializing_if = "is_false")]
    pub estimated: bool,
    /// The budget whose `on_exceed: downgrade` moved this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgraded_by: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Entry {
    pub fn at(&self) -> Option<Timestamp> {
        self.ts.parse().ok()
    }
}

pub struct Ledger {
    dir: PathBuf,
    fsync_each: bool,
    /// The open file and the month it is for.
    file: Mutex<Option<(String, File)>>,
    dirty: AtomicBool,
}

fn ends_unterminated(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn month_of(at: Timestamp) -> String {
    at.strftime("%Y-%m").to_string()
}

impl Ledger {
    pub fn new(dir: &Path, fsync_each: bool) -> Self {
        Self { dir: dir.to_path_buf(), fsync_each, file: Mutex::new(None), dirty: AtomicBool::new(false) }
    }

    pub fn path_for(&self, month: &str) -> PathBuf {
        self.dir.join(format!("ledger-{month}.jsonl"))
    }

    /// Take the write lock: appends wait while a replay holds it.
    pub fn lock(&self) -> MutexGuard<'_, Option<(String, File)>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one entry (the caller holds [`Ledger::lock`]).
    pub fn append(&self, guard: &mut MutexGuard<'_, Option<(String, File)>>, e: &Entry) -> std::io::Result<()> {
        let month = month_of(e.at().unwrap_or_else(Timestamp::now));
        if guard.as_ref().is_none_or(|(m, _)| *m != month) {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.path_for(&month);
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            // A line torn by a crash must not swallow the next entry.
            if ends_unterminated(&path)? {
                f.write_all(b"\n")?;
            }
            if let Some((_, old)) = guard.take() {
                let _ = old.sync_data();
            }
            **guard = Some((month, f));
        }
        let Some((_, f)) = guard.as_mut() else { return Ok(()) };
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        if self.fsync_each {
            f.sync_data()?;
        } else {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// fsync if anything was written since the last call.
    pub fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        // fsync a duplicate handle, so appends do not wait for the disk.
        let file = self.lock().as_ref().and_then(|(_, f)| f.try_clone().ok());
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, "cannot fsync the spend ledger");
            }
        }
    }

    /// Every entry admitted at or after `since` (Unix seconds), oldest file
    /// first. A line that does not parse (a write torn by power loss) is
    /// skipped with a warning.
    pub fn read_since(&self, since: i64, mut f: impl FnMut(&Entry, Timestamp)) -> std::io::Result<()> {
        let Ok(start) = Timestamp::from_second(since) else { return Ok(()) };
        let first = month_of(start);
        let mut files: Vec<(String, PathBuf)> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let month = name.strip_prefix("ledger-")?.strip_suffix(".jsonl")?.to_string();
                    (month >= first).then(|| (month, e.path()))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        files.sort();
        for (_, path) in files {
            let reader = BufReader::new(File::open(&path)?);
            for (n, line) in reader.split(b'\n').enumerate() {
                let line = line?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Entry>(&line).ok().and_then(|e| e.at().map(|t| (e, t))) {
                    Some((e, at)) if at.as_second() >= since => f(&e, at),
                    Some(_) => {}
                    None => tracing::warn!(file = %path.display(), line = n + 1, "skipping a ledger line that does not parse (torn write?)"),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path(), false);
        let e = Entry { ts: "2026-11-25T10:00:00.5Z".into(), app: "a".into(), route: "r".into(), provider: "p".into(), model: "m".into(), input: 10, output: 5, cost_usd: 0.25, requested_cost_usd: 0.5, ..Default::default() };
        let old = Entry { ts: "2026-10-31T23:59:59Z".into(), ..e.clone() };
        {
            let mut g = l.lock();
            l.append(&mut g, &old).unwrap();
            l.append(&mut g, &e).unwrap();
        }
        l.sync();
        assert!(dir.path().join("ledger-2026-10.jsonl").exists());
        let mut f = OpenOptions::new().append(true).open(dir.path().join("ledger-2026-11.jsonl")).unwrap();
        f.write_all(b"{\"ts\":\"2026-11-25T11:").unwrap();
        // A new process appends after the torn line, not onto it.
        let l2 = Ledger::new(dir.path(), true);
        let later = Entry { ts: "2026-11-25T12:00:00Z".into(), ..e.clone() };
        l2.append(&mut l2.lock(), &later).unwrap();
        let mut seen = Vec::new();
        l.read_since("2026-11-01T00:00:00Z".parse::<Timestamp>().unwrap().as_second(), |e, _| seen.push(e.clone())).unwrap();
        assert_eq!(seen, vec![e, later]);
        let mut all = 0;
        l.read_since(0, |_, _| all += 1).unwrap();
        assert_eq!(all, 3);
    }
}

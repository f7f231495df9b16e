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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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

/// Something wrong with the ledger that would make spend look lower than
/// it is if it were ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The file (or `state_dir`) exists but cannot be read.
    Unreadable { file: PathBuf, error: String },
    /// Lines that are not ledger entries, in the fsynced part of the file
    /// or followed by entries (so not a write torn by a crash).
    Damaged { file: PathBuf, lines: u64, bytes: u64, nul_bytes: u64, first_line: u64, entries: u64 },
    /// Shorter than what was fsynced to it.
    Truncated { file: PathBuf, bytes: u64, expected: FileMeta, entries: u64 },
    /// Gone, though entries were fsynced to it.
    Missing { file: PathBuf, expected: FileMeta },
}

impl Problem {
    pub fn file(&self) -> &Path {
        match self {
            Problem::Unreadable { file, .. } | Problem::Damaged { file, .. } | Problem::Truncated { file, .. } | Problem::Missing { file, .. } => file,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreadable { file, error } => write!(f, "{}: cannot be read ({error}); every entry in it is skipped", file.display()),
            Problem::Damaged { file, lines, bytes, nul_bytes, first_line, entries } => write!(
                f,
                "{}: {lines} line(s) that are not ledger entries ({bytes} bytes skipped, {nul_bytes} of them NUL bytes), the first at line {first_line}; {entries} entries are readable",
                file.display()
            ),
            Problem::Truncated { file, bytes, expected, entries } => write!(
                f,
                "{}: {bytes} bytes with {entries} entries, but {} bytes holding {} entries were fsynced to it ({META_FILE}): {} bytes and {} entries are missing",
                file.display(),
                expected.bytes,
                expected.entries,
                expected.bytes.saturating_sub(*bytes),
                expected.entries.saturating_sub(*entries)
            ),
            Problem::Missing { file, expected } => write!(f, "{}: missing, but {} bytes holding {} entries were fsynced to it ({META_FILE})", file.display(), expected.bytes, expected.entries),
        }
    }
}

/// What reading the ledger found besides the entries.
#[derive(Debug, Default)]
pub struct Scan {
    pub problems: Vec<Problem>,
    /// Entries read (all of them, not only those since `since`), per file.
    pub entries: u64,
}

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

/// Bytes and lines of a ledger file (a line per entry).
fn count_file(path: &Path) -> std::io::Result<FileMeta> {
    let mut r = BufReader::new(File::open(path)?);
    let mut meta = FileMeta::default();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(meta);
        }
        let n = buf.len();
        meta.entries += memchr::memchr_iter(b'\n', buf).count() as u64;
        meta.bytes += n as u64;
        r.consume(n);
    }
}

/// One line read back: an entry, blank, or not an entry.
fn parse_line(line: &[u8]) -> Option<Option<(Entry, Timestamp)>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Some(None);
    }
    serde_json::from_slice::<Entry>(line).ok().and_then(|e| e.at().map(|t| Some((e, t))))
}

/// What one pass over a ledger file found.
#[derive(Debug, Default)]
struct FileScan {
    len: u64,
    entries: u64,
    /// Lines that are not entries: (offset, bytes, NUL bytes, line number).
    bad: Vec<(u64, u64, u64, u64)>,
    /// Where the last entry's line ends.
    good_end: u64,
}

fn scan_file(path: &Path, mut each: impl FnMut(&[u8], Entry, Timestamp)) -> std::io::Result<FileScan> {
    let mut r = BufReader::new(File::open(path)?);
    let mut s = FileScan::default();
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = r.read_until(b'\n', &mut line)? as u64;
        if read == 0 {
            return Ok(s);
        }
        n += 1;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        match parse_line(body) {
            Some(Some((e, at))) => {
                s.entries += 1;
                s.good_end = s.len + read;
                each(&line, e, at);
            }
            Some(None) => {}
            None => s.bad.push((s.len, read, body.iter().filter(|b| **b == 0).count() as u64, n)),
        }
        s.len += read;
    }
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

    pub fn path_for(&self, month: &str) -> PathBuf {
        self.dir.join(file_name(month))
    }

    fn track(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the write lock: appends wait while a replay holds it.
    pub fn lock(&self) -> MutexGuard<'_, Option<(String, File)>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open `month`'s file for appending. A line torn by a crash beyond
    /// what was fsynced is cut off, so it cannot swallow the next entry
    /// nor later read as damage.
    fn open(&self, month: &str) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        let name = file_name(month);
        let path = self.dir.join(&name);
        if self.track().frozen.contains(&name) {
            return Err(std::io::Error::other(format!("{} is damaged and kept as it is (budget_store.on_ledger_error: fail_closed); repair or move it and restart modelgate", path.display())));
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = f.metadata()?.len();
        if len > 0 {
            let mut r = File::open(&path)?;
            let mut last = [0u8];
            r.seek(SeekFrom::End(-1))?;
            r.read_exact(&mut last)?;
            if last[0] != b'\n' {
                // Find where the last complete line ends.
                let keep = {
                    let mut buf = Vec::new();
                    r.seek(SeekFrom::Start(0))?;
                    r.read_to_end(&mut buf)?;
                    memchr::memrchr(b'\n', &buf).map_or(0, |i| i as u64 + 1)
                };
                let synced = self.track().meta.get(&name).map_or(0, |m| m.bytes);
                if keep >= synced {
                    tracing::warn!(file = %path.display(), bytes = len - keep, "removing the end of a ledger line torn by a crash (it was never fsynced and holds no complete entry)");
                    f.set_len(keep)?;
                } else {
                    f.write_all(b"\n")?;
                }
            }
        }
        let counts = {
            let t = self.track();
            t.written.get(&name).copied().filter(|c| c.bytes == f.metadata().map(|m| m.len()).unwrap_or(u64::MAX))
        };
        let counts = match counts {
            Some(c) => c,
            None => count_file(&path)?,
        };
        self.track().written.insert(name, counts);
        Ok(f)
    }

    /// Append one entry (the caller holds [`Ledger::lock`]).
    pub fn append(&self, guard: &mut MutexGuard<'_, Option<(String, File)>>, e: &Entry) -> std::io::Result<()> {
        let month = month_of(e.at().unwrap_or_else(Timestamp::now));
        if guard.as_ref().is_none_or(|(m, _)| *m != month) {
            let f = self.open(&month)?;
            if let Some((old_month, old)) = guard.take() {
                if old.sync_data().is_ok() {
                    let mut t = self.track();
                    let name = file_name(&old_month);
                    if let Some(c) = t.written.get(&name).copied() {
                        t.meta.insert(name, c);
                        t.meta_dirty = true;
                    }
                }
            }
            **guard = Some((month, f));
        }
        let Some((month, f)) = guard.as_mut() else { return Ok(()) };
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        let name = file_name(month);
        let mut t = self.track();
        let c = t.written.entry(name.clone()).or_default();
        c.bytes += line.len() as u64;
        c.entries += 1;
        let c = *c;
        drop(t);
        if self.fsync_each {
            f.sync_data()?;
            let mut t = self.track();
            t.meta.insert(name, c);
            t.meta_dirty = true;
        } else {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// fsync if anything was written since the last call, then record what
    /// is on disk in `ledger.meta`.
    pub fn sync(&self) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            // fsync a duplicate handle, so appends do not wait for the disk;
            // the counts taken with it are all written before the fsync.
            let (file, counts) = {
                let g = self.lock();
                match g.as_ref() {
                    Some((month, f)) => {
                        let name = file_name(month);
                        let c = self.track().written.get(&name).copied();
                        (f.try_clone().ok(), c.map(|c| (name, c)))
                    }
                    None => (None, None),
                }
            };
            if let Some(f) = file {
                match f.sync_data() {
                    Ok(()) => {
                        if let Some((name, c)) = counts {
                            let mut t = self.track();
                            t.meta.insert(name, c);
                            t.meta_dirty = true;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot fsync the spend ledger"),
                }
            }
        }
        self.write_meta();
    }

    fn write_meta(&self) {
        let bytes = {
            let mut t = self.track();
            if !t.meta_dirty {
                return;
            }
            t.meta_dirty = false;
            serde_json::to_vec_pretty(&MetaFile { files: t.meta.clone() })
        };
        let result = bytes.map_err(std::io::Error::other).and_then(|b| crate::fsutil::write_atomic(&self.dir.join(META_FILE), &b));
        if let Err(e) = result {
            self.track().meta_dirty = true;
            tracing::error!(file = %self.dir.join(META_FILE).display(), error = %e, "cannot write the ledger's fsync record");
        }
    }

    /// Ledger files of months from `first` on, oldest first.
    fn files_since(&self, first: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut files: Vec<(String, PathBuf)> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let month = name.strip_prefix("ledger-")?.strip_suffix(".jsonl")?.to_string();
                    (month.as_str() >= first).then(|| (month, e.path()))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        files.sort();
        Ok(files)
    }

    /// Every entry admitted at or after `since` (Unix seconds), oldest file
    /// first, and what is wrong with the files read: unreadable files,
    /// lines that are not entries (except the end of a line torn by a crash
    /// after the last fsync, skipped with a warning), files shorter than
    /// `ledger.meta` says were fsynced, or missing.
    pub fn scan_since(&self, since: i64, mut f: impl FnMut(&Entry, Timestamp)) -> Scan {
        let mut scan = Scan::default();
        let Ok(start) = Timestamp::from_second(since) else { return scan };
        let first = month_of(start);
        let files = match self.files_since(&first) {
            Ok(files) => files,
            Err(e) => {
                scan.problems.push(Problem::Unreadable { file: self.dir.clone(), error: e.to_string() });
                return scan;
            }
        };
        let meta = self.track().meta.clone();
        for (month, path) in &files {
            let name = file_name(month);
            let synced = meta.get(&name).copied().unwrap_or_default();
            let fs = match scan_file(path, |_, e, at| {
                if at.as_second() >= since {
                    f(&e, at)
                }
            }) {
                Ok(fs) => fs,
                Err(e) => {
                    scan.problems.push(Problem::Unreadable { file: path.clone(), error: e.to_string() });
                    continue;
                }
            };
            scan.entries += fs.entries;
            if fs.len < synced.bytes {
                scan.problems.push(Problem::Truncated { file: path.clone(), bytes: fs.len, expected: synced, entries: fs.entries });
            }
            // Damage: any bad line before the last entry, and a bad end
            // that reaches into what was fsynced.
            let (mut lines, mut bytes, mut nul, mut first_line) = (0, 0, 0, None);
            for &(off, len, nuls, n) in &fs.bad {
                let tail = off >= fs.good_end;
                if tail && (off >= synced.bytes || fs.len < synced.bytes) {
                    tracing::warn!(file = %path.display(), line = n, bytes = len, "skipping the end of a ledger line torn by a crash after the last fsync");
                    continue;
                }
                lines += 1;
                bytes += len;
                nul += nuls;
                first_line.get_or_insert(n);
            }
            if let Some(first_line) = first_line {
                scan.problems.push(Problem::Damaged { file: path.clone(), lines, bytes, nul_bytes: nul, first_line, entries: fs.entries });
            }
        }
        for (name, expected) in &meta {
            let Some(month) = name.strip_prefix("ledger-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
            if month >= first.as_str() && expected.bytes > 0 && !files.iter().any(|(m, _)| m == month) {
                scan.problems.push(Problem::Missing { file: self.dir.join(name), expected: *expected });
            }
        }
        scan
    }

    /// [`Ledger::scan_since`], logging what is wrong (reloads and
    /// re-seeding, after the start-up check).
    pub fn read_since(&self, since: i64, f: impl FnMut(&Entry, Timestamp)) {
        for p in self.scan_since(since, f).problems {
            tracing::error!(problem = %p, "the spend ledger is damaged; the entries it holds are not counted");
        }
    }

    /// Why `ledger.meta` could not be read (then damage that shortens a
    /// file cannot be seen).
    pub fn meta_error(&self) -> Option<String> {
        self.track().meta_error.clone()
    }

    /// `on_ledger_error: fail_closed`: leave the damaged files exactly as
    /// they are until someone repairs them.
    pub fn freeze(&self, problems: &[Problem]) {
        let mut t = self.track();
        for p in problems {
            if let Some(name) = p.file().file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n.starts_with("ledger-")) {
                t.frozen.insert(name);
            }
        }
    }

    /// `on_ledger_error: reset`: move each damaged or unreadable file
    /// aside (`NAME.damaged-UNIXTIME`) with its readable entries copied
    /// into a fresh file, and record shortened or missing files as they
    /// are now, so the next start is clean. Returns what was done.
    pub fn reset(&self, problems: &[Problem]) -> Result<Vec<String>, String> {
        let stamp = Timestamp::now().as_second();
        let mut done = Vec::new();
        for p in problems {
            let path = p.file().to_path_buf();
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n.starts_with("ledger-")) else {
                return Err(format!("{p}; on_ledger_error: reset cannot repair that: make {} readable", path.display()));
            };
            match p {
                Problem::Damaged { .. } | Problem::Unreadable { .. } => {
                    let mut keep = Vec::new();
                    let entries = scan_file(&path, |line, _, _| keep.extend_from_slice(line)).map(|s| s.entries).unwrap_or(0);
                    let aside = path.with_file_name(format!("{name}.damaged-{stamp}"));
                    std::fs::rename(&path, &aside).map_err(|e| format!("{p}; on_ledger_error: reset cannot move it aside to {}: {e}", aside.display()))?;
                    crate::fsutil::write_atomic(&path, &keep).map_err(|e| format!("cannot write {} with the {entries} readable entries: {e}", path.display()))?;
                    self.track().meta.insert(name, FileMeta { bytes: keep.len() as u64, entries });
                    done.push(format!("{} moved to {}; its {entries} readable entries copied back", path.display(), aside.display()));
                }
                Problem::Truncated { bytes, entries, .. } => {
                    self.track().meta.insert(name, FileMeta { bytes: *bytes, entries: *entries });
                    done.push(format!("{}: counting the {entries} entries it still has", path.display()));
                }
                Problem::Missing { .. } => {
                    self.track().meta.remove(&name);
                    done.push(format!("{}: counting no entries from it", path.display()));
                }
            }
            self.track().written.remove(p.file().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_str());
        }
        self.track().meta_dirty = true;
        self.write_meta();
        Ok(done)
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
        let scan = l.scan_since("2026-11-01T00:00:00Z".parse::<Timestamp>().unwrap().as_second(), |e, _| seen.push(e.clone()));
        assert_eq!(seen, vec![e, later]);
        assert_eq!(scan.problems, vec![], "the torn end was cut off, not left as damage");
        let mut all = 0;
        l.read_since(0, |_, _| all += 1);
        assert_eq!(all, 3);
    }
}

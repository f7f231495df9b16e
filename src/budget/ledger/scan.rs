//! Reading the ledger back: every entry since a time, and what is wrong
//! with the files ([`Problem`]): unreadable, damaged, shortened or missing,
//! told apart from the end of a line torn by a crash after the last fsync.
//! It must not change a file (that is `repair`'s, on an operator's policy).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::entry::{parse_line, Entry};
use super::{file_name, month_of, FileMeta, Ledger, META_FILE};

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

/// Bytes and lines of a ledger file (a line per entry).
pub(super) fn count_file(path: &Path) -> std::io::Result<FileMeta> {
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

/// What one pass over a ledger file found.
#[derive(Debug, Default)]
pub(super) struct FileScan {
    len: u64,
    pub(super) entries: u64,
    /// Lines that are not entries: (offset, bytes, NUL bytes, line number).
    bad: Vec<(u64, u64, u64, u64)>,
    /// Where the last entry's line ends.
    good_end: u64,
}

pub(super) fn scan_file(path: &Path, mut each: impl FnMut(&[u8], Entry, Timestamp)) -> std::io::Result<FileScan> {
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
}

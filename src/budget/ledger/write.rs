//! Appending to the ledger: one `write(2)` per entry, the month's file
//! opened (a line torn by a crash cut off first), fsync per
//! `fsync_interval`, and `ledger.meta`, the record of what was fsynced.
//! It must not read entries back (`scan`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use jiff::Timestamp;

use super::scan::count_file;
use super::{file_name, month_of, Entry, Ledger, MetaFile, META_FILE};

impl Ledger {
    /// Open `month`'s file for appending. A line torn by a crash beyond
    /// what was fsynced is cut off, so it cannot swallow the next entry
    /// nor later read as damage.
    fn open(&self, month: &str) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        let name = file_name(month);
        let path = self.dir.join(&name);
        if self.track().frozen.contains(&name) {
            return Err(std::io::Error::other(format!(
                "{} is damaged and kept as it is (budget_store.on_ledger_error: fail_closed); repair or move it and restart modelgate",
                path.display()
            )));
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let ends_line = |path: &std::path::Path| -> std::io::Result<bool> {
            let mut r = File::open(path)?;
            let mut last = [0u8];
            r.seek(SeekFrom::End(-1))?;
            r.read_exact(&mut last)?;
            Ok(last[0] == b'\n')
        };
        // During a binary upgrade the old process may be appending at this
        // moment: a line still being written is not a torn one. Look again
        // a moment later before cutting anything.
        let torn = f.metadata()?.len() > 0 && !ends_line(&path)? && {
            std::thread::sleep(std::time::Duration::from_millis(50));
            !ends_line(&path)?
        };
        let len = f.metadata()?.len();
        if torn {
            let mut r = File::open(&path)?;
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

    /// Append one entry (the caller holds [`Ledger::lock`]) to the file of
    /// its month; `now` (the budgets' clock) for an entry whose `ts` does
    /// not parse.
    pub fn append(&self, guard: &mut MutexGuard<'_, Option<(String, File)>>, e: &Entry, now: Timestamp) -> std::io::Result<()> {
        // An entry's time is RFC 3339 in UTC: its month is its first seven
        // characters (parsed only when it is not).
        let month = match e.ts.get(..7) {
            Some(m) if e.ts.ends_with('Z') && m.as_bytes()[4] == b'-' && m.bytes().filter(u8::is_ascii_digit).count() == 6 => m.to_string(),
            _ => month_of(e.at().unwrap_or(now)),
        };
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
        let mut line = Vec::with_capacity(384);
        e.write_json(&mut line);
        line.push(b'\n');
        f.write_all(&line)?;
        let name = file_name(month);
        let mut t = self.track();
        let c = match t.written.get_mut(&name) {
            Some(c) => c,
            None => t.written.entry(name.clone()).or_default(),
        };
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

    pub(super) fn write_meta(&self) {
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
}

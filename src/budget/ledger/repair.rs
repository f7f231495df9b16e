//! What `budget_store.on_ledger_error` does to a damaged ledger:
//! `fail_closed` freezes the files as they are, `reset` moves them aside
//! and keeps their readable entries. It must not decide the policy (that
//! is `Budgets::open`'s) nor run without one.

use jiff::Timestamp;

use super::scan::{scan_file, Problem};
use super::{FileMeta, Ledger};

impl Ledger {
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
    /// are now, so the next start is clean; `now` (the budgets' clock)
    /// stamps the names. Returns what was done.
    pub fn reset(&self, problems: &[Problem], now: Timestamp) -> Result<Vec<String>, String> {
        let stamp = now.as_second();
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
                    crate::fsutil::write_atomic(&path, &keep)
                        .map_err(|e| format!("cannot write {} with the {entries} readable entries: {e}", path.display()))?;
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

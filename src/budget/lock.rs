//! One process per `state_dir`: an exclusive `flock` on `state_dir/lock`,
//! held for the life of the process. Two processes appending to one ledger
//! would interleave entries and each count only its own spend, so the
//! second refuses to start instead — except the new process of a binary
//! upgrade (`modelgate run --upgrade`), which starts while the old one
//! drains and takes the lock when the old one exits ([`try_lock`] until it
//! is free).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The held lock; released when the process exits (the kernel drops
/// `flock` locks with the last descriptor, also after `kill -9`).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file's second line: this build hands its listening sockets to
/// `modelgate run --upgrade` on SIGQUIT.
const HANDS_OVER: &str = "hands-over: upgrade.sock";

/// What trying the lock found.
#[derive(Debug)]
pub enum Attempt {
    Locked(StateLock),
    /// Another process holds it; its pid when the lock file names one, and
    /// whether it hands its listening sockets over on SIGQUIT (a build
    /// from before `--upgrade` would shut down instead).
    Busy {
        holder: Option<u32>,
        hands_over: bool,
    },
}

/// Take the lock on `dir` (created if missing) and write our pid into it.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, String> {
    match try_lock(dir)? {
        Attempt::Locked(l) => Ok(l),
        Attempt::Busy { holder, .. } => {
            let holder = holder.map_or("another modelgate process".to_string(), |pid| format!("another modelgate process (pid {pid})"));
            Err(format!(
                "state_dir {} is in use by {holder}: its spend ledger can have only one writer. Stop that process, or give this one its own state_dir (to replace a running modelgate without downtime: modelgate run --upgrade)",
                dir.display()
            ))
        }
    }
}

/// Try the lock once, without waiting.
pub fn try_lock(dir: &Path) -> Result<Attempt, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create state_dir {}: {e}; create it or point state_dir at a writable directory", dir.display()))?;
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the state_dir lock {}: {e}; make state_dir writable by this user", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let mut lines = text.lines();
            let holder = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
            return Ok(Attempt::Busy { holder, hands_over: lines.any(|l| l.trim() == HANDS_OVER) });
        }
        return Err(format!("cannot lock state_dir {} ({}): {err}", dir.display(), path.display()));
    }
    // Best effort: the pid only makes the message above more helpful (and
    // tells `modelgate run --upgrade` whom to take over from).
    let _ = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}\n{HANDS_OVER}", std::process::id()))
        .and_then(|_| file.flush());
    Ok(Attempt::Locked(StateLock { _file: file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts like another process would.
        let err = lock_state_dir(dir.path()).unwrap_err();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        assert!(lock_state_dir(dir.path()).is_ok(), "released with its descriptor");
    }
}

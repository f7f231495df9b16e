//! Zero-downtime binary upgrade: a new process takes the listening sockets
//! of the running one, which then drains and exits.
//!
//! ```text
//! new: modelgate run --upgrade            old (holds state_dir/lock)
//!   reads the old pid from state_dir/lock
//!   listens on state_dir/upgrade.sock ──▶ SIGQUIT (sent by the new one)
//!   receives the listening sockets   ◀── sends them (Pingora), accepts 5 s more
//!   serves; READY=1 + MAINPID=          stops accepting, drains like SIGTERM,
//!   waits for state_dir/lock  ◀──────── settles, fsyncs the ledger, exits
//!   takes it; recounts budgets from the ledger; MAINPID= again
//! ```
//!
//! The ledger has two writers while the old process drains. That is safe:
//! each entry is one `write(2)` to a file opened `O_APPEND`, so lines never
//! interleave. What the new process cannot see while both run is the old
//! one's reservations and the spend it settles after the new one counted
//! the ledger; once the old one has exited, the new one takes the lock and
//! recounts every budget from the ledger (keeping its own reservations),
//! so no settled request is lost from the counts either. With a Redis
//! budget store the shared counters are exact throughout.
//!
//! `modelgate upgrade` is the service manager's side: it starts
//! `modelgate run --upgrade` in its own session and returns once the new
//! process serves (or fails with the new process's exit status).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::budget::lock::{self, Attempt, StateLock};
use crate::budget::Budgets;

/// The Unix socket the listening sockets are handed over on.
pub fn sock_path(state_dir: &Path) -> Result<PathBuf, String> {
    let p = state_dir.join("upgrade.sock");
    // sockaddr_un holds 108 bytes with the NUL; Pingora would panic on more.
    if p.as_os_str().len() > 100 {
        return Err(format!("the upgrade socket path {} is too long for a Unix socket (100 bytes at most): use a shorter state_dir", p.display()));
    }
    Ok(p)
}

/// How this process holds `state_dir`.
pub enum Start {
    /// It holds the lock: a normal start.
    Alone(StateLock),
    /// `--upgrade` and `pid` holds the lock: take over from it.
    TakeOver { old_pid: u32 },
}

/// Lock `state_dir`, or with `upgrade` find the process to take over from.
pub fn start(state_dir: &Path, upgrade: bool) -> Result<Start, String> {
    if !upgrade {
        return lock::lock_state_dir(state_dir).map(Start::Alone);
    }
    match lock::try_lock(state_dir)? {
        Attempt::Locked(l) => {
            tracing::warn!(state_dir = %state_dir.display(), "--upgrade: no running modelgate holds this state_dir; starting normally");
            Ok(Start::Alone(l))
        }
        Attempt::Busy { holder: Some(pid), hands_over: true } => Ok(Start::TakeOver { old_pid: pid }),
        Attempt::Busy { holder: Some(pid), hands_over: false } => Err(format!(
            "--upgrade: the modelgate running on state_dir {} (pid {pid}) is a build from before zero-downtime upgrades; it would shut down on SIGQUIT instead of handing over its sockets. Restart it this once (systemctl restart modelgate)",
            state_dir.display()
        )),
        Attempt::Busy { holder: None, .. } => {
            Err(format!("--upgrade: state_dir {} is locked but its lock file names no process to take over from", state_dir.display()))
        }
    }
}

/// Send SIGQUIT to the old process once our upgrade socket exists (Pingora
/// creates it in `bootstrap`, which blocks until the sockets arrive).
pub fn signal_old_when_listening(sock: PathBuf, old_pid: u32) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // bind() makes the file, listen() follows at once.
        std::thread::sleep(Duration::from_millis(50));
        tracing::info!(old_pid, "asking the running modelgate to hand over its listening sockets (SIGQUIT)");
        let Ok(pid) = i32::try_from(old_pid) else { return };
        // SAFETY: kill(2) with a pid read from the state_dir lock, held by
        // that process (so it is a live modelgate, not a recycled pid).
        if unsafe { libc::kill(pid, libc::SIGQUIT) } != 0 {
            tracing::error!(old_pid, error = %std::io::Error::last_os_error(), "cannot signal the running modelgate");
        }
    });
}

/// The new process's lock, once the old process let go of it.
static TAKEN: OnceLock<StateLock> = OnceLock::new();

/// Waits for the old process to exit, takes the state_dir lock and
/// recounts the budgets from the ledger.
pub struct Handover {
    pub state_dir: PathBuf,
    pub old_pid: u32,
    pub budgets: Budgets,
    pub state: std::sync::Arc<arc_swap::ArcSwap<crate::config::Snapshot>>,
}

#[async_trait]
impl BackgroundService for Handover {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let started = Instant::now();
        // The old process drains for up to its shutdown_grace_s (plus the
        // time to settle what it had to end): say so if it takes longer.
        let patience = self.state.load().shutdown_grace + Duration::from_secs(60);
        let mut warned = false;
        let l = loop {
            match lock::try_lock(&self.state_dir) {
                Ok(Attempt::Locked(l)) => break l,
                Ok(Attempt::Busy { .. }) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot take the state_dir lock after the upgrade; budgets may miss the old process's last settlements until a restart");
                    return;
                }
            }
            if !warned && started.elapsed() > patience {
                warned = true;
                tracing::warn!(
                    old_pid = self.old_pid,
                    waited_s = started.elapsed().as_secs(),
                    "the previous modelgate still holds state_dir; still waiting for it to exit (budgets here do not yet count what it settles)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = TAKEN.set(l);
        let snap = self.state.load_full();
        let file_store = matches!(snap.budget_store.kind, crate::config::StoreKind::File);
        if file_store {
            let b = self.budgets.clone();
            let problems = tokio::task::spawn_blocking(move || b.recount(&snap)).await.unwrap_or_default();
            for p in problems {
                tracing::error!(problem = %p, "the spend ledger is damaged; the entries it holds are not counted");
            }
        }
        tracing::info!(
            old_pid = self.old_pid,
            waited_s = started.elapsed().as_secs_f64(),
            recounted = file_store,
            "the previous modelgate has exited; took over state_dir"
        );
        super::notify::main_pid();
    }
}

/// `modelgate upgrade`: start `modelgate run -c CONFIG --upgrade` (this
/// binary, as it is on disk now) in its own session and wait until it
/// serves. Returns its pid.
pub fn spawn_and_wait(config: &Path, limit: Duration) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors it creates.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("cannot create a pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned only here.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = write_end.as_raw_fd();
    let mut cmd = Command::new(&exe);
    // Its output goes where this command's errors go (the journal under
    // systemd), never to our stdout: a caller reading that to its end
    // would wait for the new process to exit.
    let log = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned().map_err(|e| format!("cannot duplicate standard error: {e}"))?;
    cmd.args(["run", "--upgrade", "-c"]).arg(config).stdin(Stdio::null()).stdout(Stdio::from(log)).env(super::notify::READY_FD_ENV, w.to_string());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (the new process outlives this command) and fcntl (keep the pipe's
    // write end open across exec).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::setsid();
            let flags = libc::fcntl(w, libc::F_GETFD);
            if flags < 0 || libc::fcntl(w, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    drop(write_end);
    let pid = child.id();
    // Read until "ready" or EOF (the child exited, or closed the pipe).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut got = String::new();
        let _ = f.read_to_string(&mut got);
        let _ = tx.send(got);
    });
    match rx.recv_timeout(limit) {
        Ok(got) if got.starts_with("ready") => Ok(pid),
        Ok(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("the new modelgate (pid {pid}) exited before serving ({status}); the running one keeps serving unless it had already handed over its sockets (see its log)"))
        }
        Err(_) => Err(format!("the new modelgate (pid {pid}) did not serve within {} s; it keeps running — look at its log", limit.as_secs())),
    }
}

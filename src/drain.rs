//! Shutdown that loses nothing.
//!
//! `SIGTERM`: Pingora stops accepting at once; in-flight requests and
//! streams run on for up to `shutdown_grace_s`; whatever is still running
//! then is told to stop ([`Drain::abort`]): each ends its stream with an
//! error event in its client's dialect and settles its spend (estimated
//! from what was relayed). The ledger is fsynced and the process exits 0.
//! `SIGINT` does the same with no grace. `SIGQUIT` (binary upgrade, sent by
//! `modelgate run --upgrade`) first hands the listening sockets to the new
//! process (Pingora sends them, then keeps accepting for 5 s while the new
//! process starts serving), then drains like `SIGTERM`; a `SIGQUIT` with no
//! new process waiting for the sockets is ignored, so a stray signal cannot
//! take the service down. `STOPPING=1` goes to systemd on `SIGTERM` and
//! `SIGINT` only: after a hand-over the service is not stopping.
//!
//! Pingora itself would wait its fixed grace period and then drop every
//! task (tokio cancels futures at shutdown), which cuts streams without an
//! error event and without settling; hence this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::{watch, Notify};

use crate::budget::Budgets;

/// How long aborted requests get to write their error events and settle.
const SETTLE_AFTER_ABORT: Duration = Duration::from_secs(5);
/// How long the last trace spans may take to reach the collector at shutdown.
const TRACE_FLUSH: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Drain(Arc<Inner>);

struct Inner {
    in_flight: AtomicUsize,
    idle: Notify,
    abort: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain(Arc::new(Inner { in_flight: AtomicUsize::new(0), idle: Notify::new(), abort: watch::channel(false).0 }))
    }
}

/// Held by a request while it runs.
pub struct InFlight(Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0 .0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0 .0.idle.notify_waiters();
        }
    }
}

/// Completes when the running requests must stop.
pub struct AbortSignal(watch::Receiver<bool>);

impl AbortSignal {
    pub async fn fired(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // The sender lives as long as the server: never stop on its loss.
            std::future::pending::<()>().await;
        }
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
}

impl Drain {
    pub fn enter(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn signal(&self) -> AbortSignal {
        AbortSignal(self.0.abort.subscribe())
    }

    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Acquire)
    }

    /// Tell every running request to stop now.
    pub fn abort(&self) {
        self.0.abort.send_replace(true);
    }

    /// Wait until no request runs, at most `limit`; true when none does.
    pub async fn idle_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.0.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Let running requests finish for up to `grace`, then stop the rest and
    /// give them time to settle; fsync the ledger.
    pub async fn drain(&self, grace: Duration, budgets: &Budgets) {
        let running = self.in_flight();
        tracing::info!(in_flight = running, grace_s = grace.as_secs_f64(), "shutting down: no new connections; letting requests in flight finish");
        if !self.idle_within(grace).await {
            tracing::warn!(in_flight = self.in_flight(), "shutdown grace period over: ending the remaining requests with an error event");
            self.abort();
            if !self.idle_within(SETTLE_AFTER_ABORT).await {
                tracing::error!(in_flight = self.in_flight(), "requests did not settle in time after the abort");
            }
        }
        let b = budgets.clone();
        let _ = tokio::task::spawn_blocking(move || b.sync_ledger()).await;
        crate::telemetry::flush(TRACE_FLUSH).await;
        crate::accesslog::flush();
        tracing::info!("shutdown complete: every request settled, ledger synced");
    }
}

/// Runs the drain when Pingora starts a graceful shutdown, then ends the
/// process (Pingora would otherwise sleep out its whole grace period and
/// then drop what is left).
pub struct DrainService {
    pub drain: Drain,
    pub budgets: Budgets,
    pub grace: Duration,
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        self.drain.drain(self.grace, &self.budgets).await;
        crate::cache::at_exit();
        std::process::exit(0);
    }
}

/// Signals: `SIGTERM` and `SIGQUIT` start Pingora's graceful shutdown (the
/// drain runs in [`DrainService`]; `SIGQUIT` hands the listeners over
/// first); `SIGINT` ends requests at once but still settles them before
/// the process ends.
pub struct Signals {
    pub drain: Drain,
    pub budgets: Budgets,
    /// Where a new process waits for the listening sockets.
    pub upgrade_sock: std::path::PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers; SIGTERM will not drain");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    if self.upgrade_sock.exists() {
                        tracing::info!(in_flight = self.drain.in_flight(), sock = %self.upgrade_sock.display(), "SIGQUIT: handing the listening sockets to the new modelgate, then draining");
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    tracing::warn!(sock = %self.upgrade_sock.display(), "SIGQUIT but no new modelgate waits for the listening sockets (start one with `modelgate run --upgrade`, which signals this process itself); ignored");
                }
                _ = term.recv() => {
                    crate::server::notify::stopping();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    crate::server::notify::stopping();
                    tracing::info!(in_flight = self.drain.in_flight(), "SIGINT: ending requests in flight now");
                    self.drain.drain(Duration::ZERO, &self.budgets).await;
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

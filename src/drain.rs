//! Shutdown that loses nothing.
//!
//! `SIGTERM`: Pingora stops accepting at once; in-flight requests and
//! streams run on for up to `shutdown_grace_s`; whatever is still running
//! then is told to stop ([`Drain::abort`]): each ends its stream with an
//! error event in its client's dialect and settles its spend (estimated
//! from what was relayed). The ledger is fsynced and the process exits 0.
//! A connection accepted just before the listener stopped is answered
//! too: its request gets a moment (`FRESH_SETTLE`) to arrive, and the
//! drain waits for it. Answers given while draining carry
//! `Connection: close`, so kept-alive clients reconnect (to the new
//! process, after a hand-over); connections idle when the listener stops
//! are closed. `SIGINT` does the same with no grace. `SIGQUIT` (binary upgrade, sent by
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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::{watch, Notify};

use crate::budget::Budgets;

/// How long aborted requests get to write their error events and settle.
const SETTLE_AFTER_ABORT: Duration = Duration::from_secs(5);
/// How long a connection accepted just before the listener stopped has to
/// start its request (one round trip after the accept, on any sane network).
const FRESH_SETTLE: Duration = Duration::from_secs(1);
/// How long the last trace spans may take to reach the collector at shutdown.
const TRACE_FLUSH: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Drain(Arc<Inner>);

struct Inner {
    /// Requests running ([`Drain::enter`]).
    in_flight: AtomicUsize,
    /// Connections accepted that have not yet had an answer started
    /// ([`Drain::fresh`]): a request may be on its way on each.
    fresh: AtomicUsize,
    /// Either count reached zero.
    idle: Notify,
    abort: watch::Sender<bool>,
    /// A shutdown or hand-over has begun: answers close their connection.
    closing: AtomicBool,
}

impl Default for Drain {
    fn default() -> Self {
        Drain(Arc::new(Inner {
            in_flight: AtomicUsize::new(0),
            fresh: AtomicUsize::new(0),
            idle: Notify::new(),
            abort: watch::channel(false).0,
            closing: AtomicBool::new(false),
        }))
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

/// Held by a client connection from its accept until its first answer
/// starts (its request has entered by then) or it closes.
pub struct Fresh(Drain);

impl Drop for Fresh {
    fn drop(&mut self) {
        if self.0 .0.fresh.fetch_sub(1, Ordering::AcqRel) == 1 {
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

    /// A connection just accepted (see [`Fresh`]).
    pub fn fresh(&self) -> Fresh {
        self.0.fresh.fetch_add(1, Ordering::AcqRel);
        Fresh(self.clone())
    }

    pub fn signal(&self) -> AbortSignal {
        AbortSignal(self.0.abort.subscribe())
    }

    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Acquire)
    }

    fn fresh_count(&self) -> usize {
        self.0.fresh.load(Ordering::Acquire)
    }

    /// A shutdown or hand-over has begun (answers then close their connection).
    pub fn closing(&self) -> bool {
        self.0.closing.load(Ordering::Relaxed)
    }

    fn begin_closing(&self) {
        self.0.closing.store(true, Ordering::Relaxed);
    }

    /// Tell every running request to stop now.
    pub fn abort(&self) {
        self.0.abort.send_replace(true);
    }

    /// Wait until `done` holds, at most `limit`; whether it does.
    async fn until(&self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.0.idle.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return done(self);
            }
        }
    }

    /// Wait until no request runs, at most `limit`; true when none does.
    pub async fn idle_within(&self, limit: Duration) -> bool {
        self.until(limit, |d| d.in_flight() == 0).await
    }

    /// The listener has stopped: give connections it accepted just before
    /// (their request may still be on the way) up to [`FRESH_SETTLE`] to
    /// start one. Idle kept-alive connections are closed after this.
    pub async fn settle_fresh(&self) {
        if !self.until(FRESH_SETTLE, |d| d.fresh_count() == 0).await {
            tracing::info!(connections = self.fresh_count(), "connections accepted before the listener stopped sent no request in time; closing them");
        }
    }

    /// Let running requests finish for up to `grace`, then stop the rest and
    /// give them time to settle; fsync the ledger.
    pub async fn drain(&self, grace: Duration, budgets: &Budgets) {
        let running = self.in_flight();
        tracing::info!(in_flight = running, grace_s = grace.as_secs_f64(), "shutting down: no new connections; letting requests in flight finish");
        // Connections accepted just before the listener stopped count as
        // running until their request has entered (or they are closed).
        if !self.until(grace, |d| d.in_flight() == 0 && d.fresh_count() == 0).await {
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
                        self.drain.begin_closing();
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    tracing::warn!(sock = %self.upgrade_sock.display(), "SIGQUIT but no new modelgate waits for the listening sockets (start one with `modelgate run --upgrade`, which signals this process itself); ignored");
                }
                _ = term.recv() => {
                    self.drain.begin_closing();
                    crate::server::notify::stopping();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    self.drain.begin_closing();
                    crate::server::notify::stopping();
                    tracing::info!(in_flight = self.drain.in_flight(), "SIGINT: ending requests in flight now");
                    self.drain.drain(Duration::ZERO, &self.budgets).await;
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

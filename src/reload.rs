//! Hot reload: a file watcher and SIGHUP both lead to one `reload`, which
//! builds a new snapshot (fallible) and stores it (infallible). A bad file
//! keeps the old snapshot running, logs every error, and counts a failure.
//!
//! The watcher watches the config's parent directory, not the file: editors
//! and config-map swaps replace files by rename, which a watch on the file
//! itself would lose. Events are merged for a moment, `Access` events are
//! ignored (reading the file must not trigger another reload), and a reload
//! happens only when the file's bytes actually changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::budget::Budgets;
use crate::config::{self, Snapshot};
use crate::metrics;

const DEBOUNCE: Duration = Duration::from_millis(250);

/// Load `path` and swap it in. Returns whether the new config was applied.
/// systemd hears `RELOADING=1` before and `READY=1` after (either way: a
/// rejected file leaves the old config serving).
pub fn reload(path: &Path, state: &ArcSwap<Snapshot>, budgets: &Budgets, why: &str) -> bool {
    crate::server::notify::reloading();
    let applied = apply(path, state, budgets, why);
    crate::server::notify::reloaded(applied);
    applied
}

fn apply(path: &Path, state: &ArcSwap<Snapshot>, budgets: &Budgets, why: &str) -> bool {
    match config::load_file(path) {
        Ok(new) => {
            let old = state.load();
            if new.listen.gateway != old.listen.gateway || new.listen.admin != old.listen.admin {
                tracing::warn!("listen addresses changed in {}; they take effect only after a restart", path.display());
            }
            if new.threads != old.threads {
                tracing::warn!("threads changed in {}; it takes effect only after a restart", path.display());
            }
            if new.budget_store != old.budget_store || new.state_dir != old.state_dir {
                tracing::warn!("budget_store or state_dir changed in {}; they take effect only after a restart", path.display());
            }
            for (provider, env) in new.missing_keys() {
                tracing::warn!(provider, env, "api_key_env is not set; requests to this provider will fail with 401");
            }
            // Limits apply at once; spend carries over (recounted from the
            // ledger for a budget whose scope or window changed).
            budgets.sync(&new);
            let routes = new.routes.len();
            state.store(Arc::new(new));
            metrics::reload(true);
            tracing::info!(file = %path.display(), routes, trigger = why, "config reloaded");
            true
        }
        Err(errs) => {
            for e in &errs.errors {
                tracing::error!(file = %path.display(), error = %e, "config reload rejected; keeping the previous config");
            }
            metrics::reload(false);
            false
        }
    }
}

pub struct Reloader {
    pub path: PathBuf,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub budgets: Budgets,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.watch(shutdown, None).await
    }

    /// Ready once SIGHUP is handled: the readiness announcement
    /// (`READY=1`) waits for it, so a reload right after the start is not
    /// lost.
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: pingora::services::ServiceReadyNotifier) {
        self.watch(shutdown, Some(ready)).await
    }
}

impl Reloader {
    async fn watch(&self, mut shutdown: ShutdownWatch, ready: Option<pingora::services::ServiceReadyNotifier>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if !matches!(ev.kind, EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w));
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP instead");
                None
            }
        };
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        // The bytes last judged: at first those the running config was
        // loaded from, so an edit made between the start and this watcher
        // is applied now rather than taken as the baseline.
        let mut last = self.state.load().source_digest;
        self.reload_if_changed(&mut last, "file change");
        drop(ready);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    self.reload_if_changed(&mut last, "file change");
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    reload(&self.path, &self.state, &self.budgets, "SIGHUP");
                    last = std::fs::read(&self.path).map_or(last, |b| config::digest(&b));
                }
            }
        }
    }

    /// Reload when the file's bytes differ from those last judged (a
    /// rejected file is not tried again until it changes).
    fn reload_if_changed(&self, last: &mut u64, why: &str) {
        let Ok(bytes) = std::fs::read(&self.path) else { return };
        let now = config::digest(&bytes);
        if now != *last {
            reload(&self.path, &self.state, &self.budgets, why);
            *last = now;
        }
    }
}

//! The budgets' background service: fsync the ledger every
//! `budget_store.fsync_interval` (and once more at shutdown), and
//! reconnect to / reconcile with the shared store.
//!
//! It only drives `Budgets`' own upkeep calls; it must not count spend.

use super::Budgets;

/// Background work: fsync the ledger every `fsync` (and once more at
/// shutdown), and reconnect to / reconcile with the shared store.
pub struct Upkeep {
    pub budgets: Budgets,
    pub fsync: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let period = if self.fsync.is_zero() { std::time::Duration::from_secs(1) } else { self.fsync.min(std::time::Duration::from_secs(1)) };
        let mut tick = tokio::time::interval(period);
        let mut since_sync = std::time::Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.budgets.sync_ledger();
                    return;
                }
                _ = tick.tick() => {
                    since_sync += period;
                    if since_sync >= self.fsync {
                        since_sync = std::time::Duration::ZERO;
                        let b = self.budgets.clone();
                        let _ = tokio::task::spawn_blocking(move || b.sync_ledger()).await;
                    }
                    self.budgets.reconcile().await;
                }
            }
        }
    }
}

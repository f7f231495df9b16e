//! The shared store's connection: one multiplexed connection made on
//! demand, failing fast while Redis is marked down, and periodic
//! reconnection with the queued settlements replayed. It must not build
//! script arguments.

use std::time::Instant;

use redis::aio::MultiplexedConnection;

use super::{CallError, Shared, TIMEOUTS_TO_DOWN};

impl Shared {
    /// Our timeout for connecting and for each answer (the crate's default
    /// answer timeout is 500 ms).
    pub(super) fn conn_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(self.timeout)).set_response_timeout(Some(self.timeout))
    }

    /// The connection if there is one; an error at once while Redis is
    /// marked down.
    fn current(&self) -> Result<Option<MultiplexedConnection>, String> {
        let s = self.state();
        if s.down.is_some() {
            return Err(format!("Redis at {} is unreachable", self.url));
        }
        Ok(s.conn.clone())
    }

    /// A connection (made once, shared by all calls).
    async fn conn(&self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&self.conn_config())).await {
            Ok(Ok(c)) => {
                self.state().conn = Some(c.clone());
                crate::metrics::budget_store(true);
                Ok(c)
            }
            Ok(Err(e)) => Err(self.fail(e.to_string())),
            Err(_) => Err(self.fail(format!("no connection within {} ms", self.timeout.as_millis()))),
        }
    }

    /// Record a failed call: Redis is down after a connection failure or
    /// a few timeouts in a row.
    fn fail(&self, why: String) -> String {
        self.mark_down(&why);
        format!("Redis at {}: {why}", self.url)
    }

    fn timed_out(&self, why: String) -> String {
        let down = {
            let mut s = self.state();
            s.timeouts += 1;
            s.timeouts >= TIMEOUTS_TO_DOWN
        };
        if down {
            self.mark_down(&why);
        }
        format!("Redis at {}: {why}", self.url)
    }

    fn mark_down(&self, why: &str) {
        let mut s = self.state();
        if s.down.is_none() {
            tracing::error!(url = %self.url, error = %why, "budget store (Redis) unavailable");
            crate::metrics::budget_store(false);
        }
        s.down.get_or_insert_with(Instant::now);
        s.conn = None;
        s.timeouts = 0;
    }

    pub(super) async fn run(&self, inv: redis::ScriptInvocation<'_>) -> Result<Vec<i64>, CallError> {
        self.run_as(inv).await
    }

    /// [`Shared::run`] for a script that answers something else than
    /// numbers (the overrides' script answers strings).
    pub(super) async fn run_as<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> Result<T, CallError> {
        let mut conn = self.conn().await.map_err(|message| CallError { message, maybe_ran: false })?;
        let sent = |message: String| CallError { message, maybe_ran: true };
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.state().timeouts = 0;
                Ok(v)
            }
            Ok(Err(e)) if e.is_timeout() => Err(sent(self.timed_out(e.to_string()))),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() => {
                Err(sent(self.fail(e.to_string())))
            }
            Ok(Err(e)) => Err(sent(format!("Redis at {}: {e}", self.url))),
            Err(_) => Err(sent(self.timed_out(format!("no answer within {} ms", self.timeout.as_millis())))),
        }
    }

    /// Periodic: when down, try to reconnect; when up, replay what queued.
    pub async fn reconcile(&self) {
        let was_down = self.state().down.is_some();
        if was_down {
            let ok = match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&self.conn_config())).await {
                Ok(Ok(mut c)) => {
                    let ping: Result<Result<String, _>, _> = tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut c)).await;
                    ping.is_ok_and(|r| r.is_ok()).then_some(c)
                }
                _ => None,
            };
            let Some(c) = ok else { return };
            {
                let mut s = self.state();
                s.conn = Some(c);
                s.down = None;
            }
            let queued = self.state().pending.len();
            tracing::info!(url = %self.url, queued, "budget store (Redis) reachable again; replaying settlements made meanwhile");
            crate::metrics::budget_store(true);
        }
        self.drain().await;
    }
}

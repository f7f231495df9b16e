//! The fleet store: answers in Redis, on the budget store's connection
//! settings (URL, timeout, key prefix), under
//! `{prefix}:cache:HEX(route):HEX(model):KEY` with the entry's TTL in
//! Redis (`SET … EX`), so sidecars sharing the Redis share hits and
//! `DELETE /admin/cache` can find a model's or route's entries by pattern.
//!
//! Fail-open: a refused or dropped connection, or an answer not within
//! `timeout_ms`, is a miss (counted in `modelgate_cache_store_errors_total`),
//! never an error to the client. After a connection failure Redis is
//! marked down and not asked again for a second (no request waits on it
//! meanwhile); then one request tries to reconnect.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::entry::Answer;
use super::key::Key;

/// How long Redis is left alone after a connection failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Timeouts in a row that count as Redis being down.
const TIMEOUTS_TO_DOWN: u32 = 3;

pub struct RedisStore {
    client: redis::Client,
    url: String,
    timeout: Duration,
    prefix: String,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    down_since: Option<Instant>,
    last_try: Option<Instant>,
    timeouts: u32,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration, prefix: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("cache: Redis URL `{url}`: {e}"))?;
        Ok(RedisStore { client, url: url.to_string(), timeout, prefix: prefix.to_string(), state: Mutex::default(), connecting: tokio::sync::Mutex::new(()) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether Redis answered last time it was asked.
    pub fn up(&self) -> bool {
        self.state().down_since.is_none()
    }

    fn key(&self, route: &str, model: &str, k: &Key) -> String {
        format!("{{{}}}:cache:{}:{}:{}", self.prefix, hex::encode(route), hex::encode(model), hex::encode(k))
    }

    /// The pattern of keys for `route` and `model` (`None`: any).
    fn pattern(&self, route: Option<&str>, model: Option<&str>) -> String {
        let any = |v: Option<&str>| v.map_or_else(|| "*".to_string(), hex::encode);
        format!("{{{}}}:cache:{}:{}:*", glob_escape(&self.prefix), any(route), any(model))
    }

    async fn conn(&self) -> Result<MultiplexedConnection, String> {
        {
            let s = self.state();
            if let Some(c) = &s.conn {
                return Ok(c.clone());
            }
            if s.down_since.is_some() && s.last_try.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                return Err(format!("Redis at {} is unreachable", self.url));
            }
        }
        let Ok(_one) = self.connecting.try_lock() else {
            // Someone is connecting: do not queue behind them.
            return Err(format!("Redis at {}: connecting", self.url));
        };
        self.state().last_try = Some(Instant::now());
        let cfg = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(self.timeout)).set_response_timeout(Some(self.timeout));
        match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&cfg)).await {
            Ok(Ok(c)) => {
                let mut s = self.state();
                if s.down_since.take().is_some() {
                    tracing::info!(url = %self.url, "response cache: Redis reachable again");
                }
                s.conn = Some(c.clone());
                s.timeouts = 0;
                crate::metrics::cache_store_up(true);
                Ok(c)
            }
            Ok(Err(e)) => Err(self.down(e.to_string())),
            Err(_) => Err(self.down(format!("no connection within {} ms", self.timeout.as_millis()))),
        }
    }

    fn down(&self, why: String) -> String {
        let mut s = self.state();
        if s.down_since.is_none() {
            tracing::warn!(url = %self.url, error = %why, "response cache: Redis unavailable; requests are served as misses until it is back");
            crate::metrics::cache_store_up(false);
            s.down_since = Some(Instant::now());
        }
        s.conn = None;
        s.timeouts = 0;
        format!("Redis at {}: {why}", self.url)
    }

    /// Run one command under the timeout; a dropped connection or repeated
    /// timeouts mark Redis down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => {
                self.state().timeouts = 0;
                Ok(v)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() => {
                Err(self.down(e.to_string()))
            }
            Ok(Err(e)) if !e.is_timeout() => Err(format!("Redis at {}: {e}", self.url)),
            _ => {
                let n = {
                    let mut s = self.state();
                    s.timeouts += 1;
                    s.timeouts
                };
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                Err(if n >= TIMEOUTS_TO_DOWN { self.down(why) } else { format!("Redis at {}: {why}", self.url) })
            }
        }
    }

    pub async fn get(&self, route: &str, model: &str, k: &Key) -> Result<Option<Arc<Answer>>, String> {
        let v: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.key(route, model, k))).await?;
        Ok(v.and_then(|b| Answer::decode(&b)).filter(|a| a.ttl_left(super::now()) > 0).map(Arc::new))
    }

    pub async fn put(&self, k: &Key, a: &Answer) -> Result<(), String> {
        let ttl = a.ttl_left(super::now()).max(1);
        self.run::<()>(redis::cmd("SET").arg(self.key(&a.route, &a.model, k)).arg(a.encode()).arg("EX").arg(ttl)).await
    }

    /// Delete the entries of `route` and/or `model` (all when neither).
    pub async fn clear(&self, route: Option<&str>, model: Option<&str>) -> Result<u64, String> {
        let pattern = self.pattern(route, model);
        let (mut cursor, mut n) = (0u64, 0u64);
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.run(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000)).await?;
            if !keys.is_empty() {
                n += self.run::<u64>(redis::cmd("UNLINK").arg(keys)).await?;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}

/// `s` matched literally in a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

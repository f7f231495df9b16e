//! Rate-limit counts shared by a fleet in Redis: per count a sorted set
//! `{prefix}:rl:{bucket}` of entries `id|tokens` scored by the time they
//! were admitted (ms, Redis's own clock, so sidecars' clocks do not
//! matter) and a counter `…:t` of their tokens. [`ADMIT`] drops entries
//! older than the window, checks every count and adds to all of them in
//! one atomic step; [`ADJUST`] replaces an entry's worst case with the
//! tokens used.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::Mutex;

use super::{Bucket, Refusal, WINDOW_MS};
use crate::config::OnUnavailable;

/// KEYS: (zset, tokens) per count. ARGV: window ms, id, tokens, then
/// (rpm, tpm) per count (-1: none). Answers {blocked count (0: admitted),
/// 1 requests / 0 tokens, wait ms (-1: never fits)}.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local id = ARGV[2]
local tok = tonumber(ARGV[3])
local nb = #KEYS / 2
for i = 1, nb do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - win)
  local gone = 0
  for _, m in ipairs(old) do gone = gone + (tonumber(string.match(m, '|(%d+)$')) or 0) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now - win) end
  if gone > 0 then redis.call('DECRBY', s, gone) end
end
for i = 1, nb do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local rpm, tpm = tonumber(ARGV[2+2*i]), tonumber(ARGV[3+2*i])
  local cnt = redis.call('ZCARD', z)
  if rpm >= 0 and cnt + 1 > rpm then
    local e = redis.call('ZRANGE', z, cnt - rpm, cnt - rpm, 'WITHSCORES')
    local at = tonumber(e[2] or now)
    return {i, 1, at + win - now}
  end
  if tpm >= 0 then
    if tok > tpm then return {i, 0, -1} end
    local sum = tonumber(redis.call('GET', s) or '0')
    if sum + tok > tpm then
      local need = sum + tok - tpm
      local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed, at = 0, now
      for j = 1, #all, 2 do
        freed = freed + (tonumber(string.match(all[j], '|(%d+)$')) or 0)
        at = tonumber(all[j+1])
        if freed >= need then break end
      end
      return {i, 0, at + win - now}
    end
  end
end
for i = 1, nb do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  redis.call('ZADD', z, now, id .. '|' .. tok)
  redis.call('INCRBY', s, tok)
  redis.call('PEXPIRE', z, win + 5000)
  redis.call('PEXPIRE', s, win + 5000)
end
return {0, 0, 0}
"#;

/// KEYS: (zset, tokens) per count. ARGV: id, worst, actual.
const ADJUST: &str = r#"
local old = ARGV[1] .. '|' .. ARGV[2]
local new = ARGV[1] .. '|' .. ARGV[3]
local diff = tonumber(ARGV[2]) - tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local at = redis.call('ZSCORE', z, old)
  if at then
    redis.call('ZREM', z, old)
    redis.call('ZADD', z, at, new)
    redis.call('DECRBY', s, diff)
  end
end
return 1
"#;

pub(super) struct RedisStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    pub(super) on_unavailable: OnUnavailable,
    admit: Script,
    adjust: Script,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisStore {
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration, on_unavailable: OnUnavailable) -> Result<Self, String> {
        Ok(RedisStore {
            client: redis::Client::open(url).map_err(|e| format!("budget_store.url: {e}"))?,
            prefix: prefix.to_string(),
            timeout,
            on_unavailable,
            admit: Script::new(ADMIT),
            adjust: Script::new(ADJUST),
            conn: Mutex::new(None),
        })
    }

    async fn conn(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget_conn(&self) {
        *self.conn.lock().await = None;
    }

    fn keys(&self, buckets: &[Bucket]) -> Vec<String> {
        let mut keys = Vec::with_capacity(buckets.len() * 2);
        for b in buckets {
            let z = format!("{}:rl:{}", self.prefix, b.id);
            keys.push(z.clone());
            keys.push(format!("{z}:t"));
        }
        keys
    }

    pub(super) async fn admit(self: &Arc<Self>, buckets: &[Bucket], id: &str, worst: u64) -> Result<Result<(), Refusal>, String> {
        let mut conn = self.conn().await?;
        let mut inv = self.admit.prepare_invoke();
        for k in self.keys(buckets) {
            inv.key(k);
        }
        inv.arg(WINDOW_MS).arg(id).arg(worst);
        for b in buckets {
            inv.arg(b.amounts.rpm.map_or(-1, |v| v as i64)).arg(b.amounts.tpm.map_or(-1, |v| v as i64));
        }
        let out: Vec<i64> = match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.forget_conn().await;
                return Err(e.to_string());
            }
            Err(_) => {
                // It may still run: give its tokens back when it does.
                self.adjust_later(buckets.to_vec(), id.to_string(), worst, 0);
                return Err("timed out".into());
            }
        };
        let (blocked, requests, wait) = (out.first().copied().unwrap_or(0), out.get(1).copied().unwrap_or(0), out.get(2).copied().unwrap_or(0));
        if blocked == 0 {
            return Ok(Ok(()));
        }
        Ok(Err(Refusal { bucket: (blocked - 1) as usize, requests: requests == 1, wait_ms: (wait >= 0).then_some(wait), full: false }))
    }

    pub(super) async fn adjust(&self, buckets: &[Bucket], id: &str, worst: u64, actual: u64) {
        let Ok(mut conn) = self.conn().await else { return };
        let mut inv = self.adjust.prepare_invoke();
        for k in self.keys(buckets) {
            inv.key(k);
        }
        inv.arg(id).arg(worst).arg(actual);
        let r: Result<Result<i64, _>, _> = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await;
        if !matches!(r, Ok(Ok(_))) {
            tracing::debug!("rate-limit settlement did not reach the shared store; the reservation expires with its window");
        }
    }

    /// Give tokens back from a drop (no await there).
    pub(super) fn adjust_later(self: &Arc<Self>, buckets: Vec<Bucket>, id: String, worst: u64, actual: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let me = self.clone();
        handle.spawn(async move { me.adjust(&buckets, &id, worst, actual).await });
    }
}

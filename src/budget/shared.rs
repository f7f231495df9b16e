//! Budgets shared by a fleet in Redis: one Lua script per operation, so
//! checking and reserving (or releasing and settling) are atomic across
//! sidecars.
//!
//! Per budget and window: a hash `{prefix}:budget:{name}:{window start}`
//! with spent (`sn` nano-USD, `st` tokens, `sr` requests) and reserved
//! (`rn`, `rt`, `rr`) counts, and a sorted set `…:holds` of reservations
//! (`id|nanos|tokens|requests`, scored by expiry) so a sidecar that dies
//! with requests in flight cannot hold budget forever. Keys expire a day
//! after their window ends.
//!
//! When Redis cannot be reached, calls fail fast (no waiting on every
//! request): the store is marked down, requests follow `on_unavailable`,
//! settlements queue in memory, and [`Shared::reconcile`] reconnects and
//! replays them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;
use redis::Script;

use crate::config::{Amounts, Limits, OnUnavailable};

/// How long a reservation lives in Redis without being settled.
const HOLD_TTL: Duration = Duration::from_secs(15 * 60);
/// Keys outlive their window by this much (for late settlements and reports).
const KEY_GRACE_SECS: i64 = 86_400;
/// Settlements kept while Redis is away; the oldest are dropped beyond this.
const MAX_PENDING: usize = 100_000;
/// Calls in a row that time out before Redis counts as unreachable (a
/// dropped or refused connection counts at once).
const TIMEOUTS_TO_DOWN: u32 = 3;

const RESERVE: &str = r#"
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local member = ARGV[3]
local n, t, r = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reserve = ARGV[7] == '1'
local nb = #KEYS / 2
local out = {0}
local blocked = false
for i = 1, nb do
  local c, h = KEYS[2*i-1], KEYS[2*i]
  local old = redis.call('ZRANGEBYSCORE', h, '-inf', now)
  for _, m in ipairs(old) do
    local _, on, ot, orr = string.match(m, '^(.*)|(%d+)|(%d+)|(%d+)$')
    if on then
      redis.call('HINCRBY', c, 'rn', -tonumber(on))
      redis.call('HINCRBY', c, 'rt', -tonumber(ot))
      redis.call('HINCRBY', c, 'rr', -tonumber(orr))
    end
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', h, '-inf', now) end
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr')
  local base = 7 + (i-1)*5
  local ln, lt, lr = tonumber(ARGV[base+1]), tonumber(ARGV[base+2]), tonumber(ARGV[base+3])
  local s = {}
  for j = 1, 6 do
    s[j] = math.max(tonumber(v[j]) or 0, 0)
    out[#out+1] = s[j]
  end
  local over = (ln >= 0 and s[1] + s[4] + n > ln) or (lt >= 0 and s[2] + s[5] + t > lt) or (lr >= 0 and s[3] + s[6] + r > lr)
  if over and ARGV[base+4] == '1' then blocked = true end
end
if blocked then out[1] = 1 end
if reserve and not blocked then
  for i = 1, nb do
    local c, h = KEYS[2*i-1], KEYS[2*i]
    local at = tonumber(ARGV[7 + (i-1)*5 + 5])
    redis.call('HINCRBY', c, 'rn', n)
    redis.call('HINCRBY', c, 'rt', t)
    redis.call('HINCRBY', c, 'rr', r)
    redis.call('ZADD', h, expiry, member)
    redis.call('EXPIREAT', c, at)
    redis.call('EXPIREAT', h, at)
  end
end
return out
"#;

const SETTLE: &str = r#"
local member = ARGV[1]
local hn, ht, hr = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local an, at, ar = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}
for i = 1, #KEYS / 2 do
  local c, h = KEYS[2*i-1], KEYS[2*i]
  if member ~= '' and redis.call('ZREM', h, member) == 1 then
    redis.call('HINCRBY', c, 'rn', -hn)
    redis.call('HINCRBY', c, 'rt', -ht)
    redis.call('HINCRBY', c, 'rr', -hr)
  end
  if an > 0 then redis.call('HINCRBY', c, 'sn', an) end
  if at > 0 then redis.call('HINCRBY', c, 'st', at) end
  if ar > 0 then redis.call('HINCRBY', c, 'sr', ar) end
  local exp = tonumber(ARGV[7 + i])
  redis.call('EXPIREAT', c, exp)
  redis.call('EXPIREAT', h, exp)
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr')
  for j = 1, 6 do out[#out+1] = math.max(tonumber(v[j]) or 0, 0) end
end
return out
"#;

/// A settlement waiting for Redis to come back.
struct Pending {
    member: String,
    held: Amounts,
    keys: Vec<(String, i64, i64)>,
    actual: Amounts,
}

pub struct Shared {
    client: redis::Client,
    url: String,
    pub on_unavailable: OnUnavailable,
    timeout: Duration,
    prefix: String,
    reserve: Script,
    settle: Script,
    state: Arc<Mutex<State>>,
    /// One connection attempt at a time (no herd of connects under load).
    connecting: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    /// Since when Redis is considered unreachable.
    down: Option<Instant>,
    pending: VecDeque<Pending>,
    /// Consecutive calls that timed out.
    timeouts: u32,
}

type Counts = Vec<(Amounts, Amounts)>;

fn counts(v: &[i64]) -> Counts {
    let u = |x: i64| x.max(0) as u64;
    v.chunks_exact(6)
        .map(|s| (Amounts { nanos: u(s[0]), tokens: u(s[1]), requests: u(s[2]) }, Amounts { nanos: u(s[3]), tokens: u(s[4]), requests: u(s[5]) }))
        .collect()
}

fn limit_arg(l: Option<u64>) -> i64 {
    l.map(|v| i64::try_from(v).unwrap_or(i64::MAX)).unwrap_or(-1)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Shared {
    pub fn new(url: &str, on_unavailable: OnUnavailable, timeout: Duration, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("budget_store.url `{url}`: {e}"))?;
        Ok(Self {
            client,
            url: url.to_string(),
            on_unavailable,
            timeout,
            prefix: prefix.to_string(),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            state: Arc::new(Mutex::new(State::default())),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self, name: &str, start: i64) -> [String; 2] {
        let c = format!("{{{}}}:budget:{name}:{start}", self.prefix);
        let h = format!("{c}:holds");
        [c, h]
    }

    /// Our timeout for connecting and for each answer (the crate's default
    /// answer timeout is 500 ms).
    fn conn_config(&self) -> redis::AsyncConnectionConfig {
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

    async fn run(&self, inv: redis::ScriptInvocation<'_>) -> Result<Vec<i64>, String> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.state().timeouts = 0;
                Ok(v)
            }
            Ok(Err(e)) if e.is_timeout() => Err(self.timed_out(e.to_string())),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() => Err(self.fail(e.to_string())),
            Ok(Err(e)) => Err(format!("Redis at {}: {e}", self.url)),
            Err(_) => Err(self.timed_out(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    /// Check and (when no blocking budget is over) reserve `worst` in every
    /// budget. Returns whether it reserved, and each budget's (spent,
    /// reserved) before this request.
    pub async fn reserve(&self, id: &str, keys: &[(String, i64, i64)], flags: &[(Limits, bool)], worst: Amounts, now: Timestamp) -> Result<(bool, Counts), String> {
        self.script(Some(id), keys, flags, worst, now).await
    }

    /// Current (spent, reserved) of each budget, expired holds purged.
    pub async fn read(&self, keys: &[(String, i64, i64)], now: Timestamp) -> Result<Counts, String> {
        let flags: Vec<(Limits, bool)> = keys.iter().map(|_| (Limits::default(), false)).collect();
        self.script(None, keys, &flags, Amounts::default(), now).await.map(|(_, c)| c)
    }

    async fn script(&self, id: Option<&str>, keys: &[(String, i64, i64)], flags: &[(Limits, bool)], worst: Amounts, now: Timestamp) -> Result<(bool, Counts), String> {
        let now_ms = now.as_millisecond();
        let member = format!("{}|{}|{}|{}", id.unwrap_or(""), worst.nanos, worst.tokens, worst.requests);
        let mut inv = self.reserve.prepare_invoke();
        for (name, start, _) in keys {
            for k in self.keys(name, *start) {
                inv.key(k);
            }
        }
        inv.arg(now_ms).arg(now_ms + HOLD_TTL.as_millis() as i64).arg(member).arg(int(worst.nanos)).arg(int(worst.tokens)).arg(int(worst.requests)).arg(if id.is_some() { "1" } else { "0" });
        for ((_, _, end), (limits, block)) in keys.iter().zip(flags) {
            inv.arg(limit_arg(limits.nanos)).arg(limit_arg(limits.tokens)).arg(limit_arg(limits.requests)).arg(if *block { "1" } else { "0" }).arg(end + KEY_GRACE_SECS);
        }
        let v = self.run(inv).await?;
        let reserved = id.is_some() && v.first() == Some(&0);
        Ok((reserved, counts(v.get(1..).unwrap_or_default())))
    }

    /// Release a reservation (`member` empty: none) and add `actual` to
    /// spent. When Redis is away the settlement is queued and `None`
    /// returned.
    pub async fn settle(&self, id: String, held: Amounts, keys: Vec<(String, i64, i64)>, actual: Amounts) -> Option<Counts> {
        let member = if id.is_empty() { String::new() } else { format!("{id}|{}|{}|{}", held.nanos, held.tokens, held.requests) };
        let p = Pending { member, held, keys, actual };
        match self.apply(&p).await {
            Ok(c) => Some(c),
            Err(_) => {
                self.queue(p);
                None
            }
        }
    }

    /// `settle` from a context that cannot wait (a dropped hold).
    pub fn settle_later(&self, id: String, held: Amounts, keys: Vec<(String, i64, i64)>, actual: Amounts) {
        let member = format!("{id}|{}|{}|{}", held.nanos, held.tokens, held.requests);
        self.queue(Pending { member, held, keys, actual });
        // Apply now if Redis is up; otherwise reconcile will.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let me = self.handle();
            h.spawn(async move { me.drain().await });
        }
    }

    fn queue(&self, p: Pending) {
        let mut s = self.state();
        if s.pending.len() >= MAX_PENDING {
            s.pending.pop_front();
            tracing::error!("too many settlements waiting for Redis; dropping the oldest");
        }
        s.pending.push_back(p);
    }

    fn handle(&self) -> Shared {
        Shared {
            client: self.client.clone(),
            url: self.url.clone(),
            on_unavailable: self.on_unavailable,
            timeout: self.timeout,
            prefix: self.prefix.clone(),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            state: self.state.clone(),
            connecting: self.connecting.clone(),
        }
    }

    async fn apply(&self, p: &Pending) -> Result<Counts, String> {
        let mut inv = self.settle.prepare_invoke();
        for (name, start, _) in &p.keys {
            for k in self.keys(name, *start) {
                inv.key(k);
            }
        }
        inv.arg(&p.member).arg(int(p.held.nanos)).arg(int(p.held.tokens)).arg(int(p.held.requests)).arg(int(p.actual.nanos)).arg(int(p.actual.tokens)).arg(int(p.actual.requests));
        for (_, _, end) in &p.keys {
            inv.arg(end + KEY_GRACE_SECS);
        }
        self.run(inv).await.map(|v| counts(&v))
    }

    /// Apply queued settlements in order while Redis answers.
    async fn drain(&self) {
        loop {
            let Some(p) = self.state().pending.pop_front() else { return };
            if self.apply(&p).await.is_err() {
                self.state().pending.push_front(p);
                return;
            }
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

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
//!
//! Holds cannot leak: a reservation whose answer never came (a timeout, a
//! dropped connection) may still run in Redis later, so its release is
//! queued and retried until Redis answers; the release leaves a tombstone
//! (`!ID` in the holds set) so a reservation arriving after it does
//! nothing. Settlements leave the same tombstone, so one replayed after an
//! answer was lost is not counted twice. Hold ids carry a random
//! per-process part, so sidecars with the same pid (containers) never
//! share one.
//!
//! A counter that disappears mid-window (Redis restarted without its data,
//! FLUSHALL) is noticed by its epoch (`ep`, a random number set when the
//! hash is created): this process remembers the epoch it last saw and what
//! it has put into it; a new epoch (or a missing hash) asks
//! [`Shared::take_reseed`]'s caller to add back this process's spend from
//! its ledger, once per epoch (`sd:NONCE` fields mark it done).

use std::collections::{HashMap, HashSet, VecDeque};
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
/// How long the tombstone of a released or settled hold lives: longer than
/// any reservation or replay can be late.
const TOMB_TTL: Duration = HOLD_TTL;
/// Values per budget in a script's answer: spent (3), reserved (3), epoch.
const PER_KEY: usize = 7;

const RESERVE: &str = r#"
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local member = ARGV[3]
local n, t, r = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reserve = ARGV[7] == '1'
local id = ARGV[8]
local cand = ARGV[9]
local nb = #KEYS / 2
local out = {0}
local blocked = false
local released = false
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
  if reserve and redis.call('ZSCORE', h, '!' .. id) then released = true end
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'ep')
  local base = 9 + (i-1)*5
  local ln, lt, lr = tonumber(ARGV[base+1]), tonumber(ARGV[base+2]), tonumber(ARGV[base+3])
  local s = {}
  for j = 1, 6 do
    s[j] = math.max(tonumber(v[j]) or 0, 0)
    out[#out+1] = s[j]
  end
  out[#out+1] = tonumber(v[7]) or 0
  local over = (ln >= 0 and s[1] + s[4] + n > ln) or (lt >= 0 and s[2] + s[5] + t > lt) or (lr >= 0 and s[3] + s[6] + r > lr)
  if over and ARGV[base+4] == '1' then blocked = true end
end
if blocked then out[1] = 1 end
-- Released before it arrived (its caller gave up waiting): do nothing.
if released then out[1] = 2 end
if reserve and not blocked and not released then
  for i = 1, nb do
    local c, h = KEYS[2*i-1], KEYS[2*i]
    local at = tonumber(ARGV[9 + (i-1)*5 + 5])
    redis.call('HINCRBY', c, 'rn', n)
    redis.call('HINCRBY', c, 'rt', t)
    redis.call('HINCRBY', c, 'rr', r)
    redis.call('HSETNX', c, 'ep', cand)
    out[1 + i*7] = tonumber(redis.call('HGET', c, 'ep'))
    redis.call('ZADD', h, expiry, member)
    redis.call('EXPIREAT', c, at)
    redis.call('EXPIREAT', h, at)
  end
end
return out
"#;

const SETTLE: &str = r#"
local id, member = ARGV[1], ARGV[2]
local hn, ht, hr = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local an, at, ar = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local tomb = tonumber(ARGV[9])
local cand = ARGV[10]
local out = {}
for i = 1, #KEYS / 2 do
  local c, h = KEYS[2*i-1], KEYS[2*i]
  -- A tombstone: this hold was settled or released already (a replay).
  if id == '' or not redis.call('ZSCORE', h, '!' .. id) then
    if member ~= '' and redis.call('ZREM', h, member) == 1 then
      redis.call('HINCRBY', c, 'rn', -hn)
      redis.call('HINCRBY', c, 'rt', -ht)
      redis.call('HINCRBY', c, 'rr', -hr)
    end
    if an > 0 then redis.call('HINCRBY', c, 'sn', an) end
    if at > 0 then redis.call('HINCRBY', c, 'st', at) end
    if ar > 0 then redis.call('HINCRBY', c, 'sr', ar) end
    if redis.call('EXISTS', c) == 1 then redis.call('HSETNX', c, 'ep', cand) end
    if id ~= '' then redis.call('ZADD', h, tomb, '!' .. id) end
  end
  local exp = tonumber(ARGV[10 + i])
  redis.call('EXPIREAT', c, exp)
  redis.call('EXPIREAT', h, exp)
  local v = redis.call('HMGET', c, 'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'ep')
  for j = 1, 6 do out[#out+1] = math.max(tonumber(v[j]) or 0, 0) end
  out[#out+1] = tonumber(v[7]) or 0
end
return out
"#;

/// Add this process's spend back into a counter that lost it: only into
/// the epoch the caller saw (0: the hash is gone; it is created), and once
/// per process and epoch. Answers {applied, epoch now}.
const SEED: &str = r#"
local c, h = KEYS[1], KEYS[2]
local cur = tonumber(redis.call('HGET', c, 'ep') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
if cur == 0 then
  cur = tonumber(ARGV[2])
  redis.call('HSET', c, 'ep', ARGV[2])
end
if redis.call('HSETNX', c, 'sd:' .. ARGV[3], 1) == 1 then
  local n, t, r = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  if n > 0 then redis.call('HINCRBY', c, 'sn', n) end
  if t > 0 then redis.call('HINCRBY', c, 'st', t) end
  if r > 0 then redis.call('HINCRBY', c, 'sr', r) end
end
redis.call('EXPIREAT', c, tonumber(ARGV[7]))
return {1, cur}
"#;

/// A settlement (or a release: `actual` zero) waiting for Redis.
struct Pending {
    /// The hold's id (its tombstone); empty for none.
    id: String,
    /// The reservation to remove; empty when it was not made in Redis.
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
    seed: Script,
    /// This process's random part of seed marks.
    nonce: u64,
    /// When this process started (Unix seconds).
    started: i64,
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
    /// Per counter (budget, window start): the epoch last seen and what
    /// this process has put into it.
    views: HashMap<(String, i64), View>,
    /// Counters (name, start, end) that lost this process's spend.
    reseed: HashSet<(String, i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct View {
    epoch: i64,
    mine: Amounts,
}

type Counts = Vec<(Amounts, Amounts)>;

fn counts(v: &[i64]) -> (Counts, Vec<i64>) {
    let u = |x: i64| x.max(0) as u64;
    v.chunks_exact(PER_KEY)
        .map(|s| ((Amounts { nanos: u(s[0]), tokens: u(s[1]), requests: u(s[2]) }, Amounts { nanos: u(s[3]), tokens: u(s[4]), requests: u(s[5]) }), s[6]))
        .unzip()
}

/// A random 64-bit number (std's per-process random SipHash keys, mixed
/// with the time and pid).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

/// A new epoch: non-zero and exact in Lua's doubles.
fn epoch() -> i64 {
    (random_u64() >> 12) as i64 | 1
}

/// A failed script call; `maybe_ran`: it was sent, so Redis may still run
/// it (a timeout or a dropped connection).
#[derive(Debug)]
pub struct CallError {
    pub message: String,
    pub maybe_ran: bool,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
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
            seed: Script::new(SEED),
            nonce: random_u64(),
            started: Timestamp::now().as_second(),
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

    async fn run(&self, inv: redis::ScriptInvocation<'_>) -> Result<Vec<i64>, CallError> {
        let mut conn = self.conn().await.map_err(|message| CallError { message, maybe_ran: false })?;
        let sent = |message: String| CallError { message, maybe_ran: true };
        match tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.state().timeouts = 0;
                Ok(v)
            }
            Ok(Err(e)) if e.is_timeout() => Err(sent(self.timed_out(e.to_string()))),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() => Err(sent(self.fail(e.to_string()))),
            Ok(Err(e)) => Err(sent(format!("Redis at {}: {e}", self.url))),
            Err(_) => Err(sent(self.timed_out(format!("no answer within {} ms", self.timeout.as_millis())))),
        }
    }

    /// Check and (when no blocking budget is over) reserve `worst` in every
    /// budget. Returns whether it reserved, and each budget's (spent,
    /// reserved) before this request. On an error that may still reserve
    /// in Redis later, call [`Shared::release_later`].
    pub async fn reserve(&self, id: &str, keys: &[(String, i64, i64)], flags: &[(Limits, bool)], worst: Amounts, now: Timestamp) -> Result<(bool, Counts), CallError> {
        self.script(Some(id), keys, flags, worst, now).await
    }

    /// Current (spent, reserved) of each budget, expired holds purged.
    pub async fn read(&self, keys: &[(String, i64, i64)], now: Timestamp) -> Result<Counts, String> {
        let flags: Vec<(Limits, bool)> = keys.iter().map(|_| (Limits::default(), false)).collect();
        self.script(None, keys, &flags, Amounts::default(), now).await.map(|(_, c)| c).map_err(|e| e.message)
    }

    async fn script(&self, id: Option<&str>, keys: &[(String, i64, i64)], flags: &[(Limits, bool)], worst: Amounts, now: Timestamp) -> Result<(bool, Counts), CallError> {
        let now_ms = now.as_millisecond();
        let member = format!("{}|{}|{}|{}", id.unwrap_or(""), worst.nanos, worst.tokens, worst.requests);
        let mut inv = self.reserve.prepare_invoke();
        for (name, start, _) in keys {
            for k in self.keys(name, *start) {
                inv.key(k);
            }
        }
        inv.arg(now_ms).arg(now_ms + HOLD_TTL.as_millis() as i64).arg(member).arg(int(worst.nanos)).arg(int(worst.tokens)).arg(int(worst.requests)).arg(if id.is_some() { "1" } else { "0" });
        inv.arg(id.unwrap_or("")).arg(epoch());
        for ((_, _, end), (limits, block)) in keys.iter().zip(flags) {
            inv.arg(limit_arg(limits.nanos)).arg(limit_arg(limits.tokens)).arg(limit_arg(limits.requests)).arg(if *block { "1" } else { "0" }).arg(end + KEY_GRACE_SECS);
        }
        let v = self.run(inv).await?;
        let reserved = id.is_some() && v.first() == Some(&0);
        let (c, epochs) = counts(v.get(1..).unwrap_or_default());
        self.observe(keys, &epochs, None);
        Ok((reserved, c))
    }

    /// Note the epochs Redis answered with; `settled`: the amounts this
    /// answer's settlement added to every counter.
    fn observe(&self, keys: &[(String, i64, i64)], epochs: &[i64], settled: Option<Amounts>) {
        let mut s = self.state();
        for ((name, start, end), &epoch) in keys.iter().zip(epochs) {
            let add = settled.unwrap_or_default();
            match s.views.get_mut(&(name.clone(), *start)) {
                Some(v) if v.epoch == epoch => v.mine = v.mine + add,
                known => {
                    // Suspect: an epoch that changed or vanished (a counter
                    // that was missing and now exists was created after we
                    // looked, holding what we settled since), and a counter
                    // missing the first time we look, when this process may
                    // have spend in its window from before it started.
                    let changed = match known {
                        Some(v) => v.epoch != 0,
                        None => epoch == 0 && *start < self.started,
                    };
                    s.views.insert((name.clone(), *start), View { epoch, mine: add });
                    if changed {
                        s.reseed.insert((name.clone(), *start, *end));
                    }
                }
            }
        }
        // Forget windows long gone (a month is the longest).
        if s.views.len() > 4096 {
            let now = Timestamp::now().as_second();
            s.views.retain(|k, _| k.1 > now - 40 * 86_400);
        }
    }

    /// Counters that lost this process's spend (name, window start, end).
    pub fn take_reseed(&self) -> Vec<(String, i64, i64)> {
        self.state().reseed.drain().collect()
    }

    /// Add back what this process spent in a counter that lost it: `total`
    /// is its spend in that window from the ledger; what it already put into
    /// the counter's current epoch, and settlements still queued for Redis,
    /// are not added again. An error leaves the counter for the next try.
    pub async fn reseed(&self, name: &str, start: i64, end: i64, total: Amounts) -> Result<(), String> {
        for _ in 0..3 {
            let (view, queued) = {
                let s = self.state();
                let view = s.views.get(&(name.to_string(), start)).copied().unwrap_or_default();
                let queued = s.pending.iter().filter(|p| p.keys.iter().any(|k| k.0 == name && k.1 == start)).fold(Amounts::default(), |a, p| a + p.actual);
                (view, queued)
            };
            let add = total - view.mine - queued;
            if add == Amounts::default() {
                return Ok(());
            }
            let [c, h] = self.keys(name, start);
            let mut inv = self.seed.prepare_invoke();
            inv.key(c).key(h).arg(view.epoch).arg(epoch()).arg(format!("{:016x}", self.nonce)).arg(int(add.nanos)).arg(int(add.tokens)).arg(int(add.requests)).arg(end + KEY_GRACE_SECS);
            let v = match self.run(inv).await {
                Ok(v) => v,
                Err(e) => {
                    self.state().reseed.insert((name.to_string(), start, end));
                    return Err(e.message);
                }
            };
            let (applied, now) = (v.first() == Some(&1), v.get(1).copied().unwrap_or(0));
            let mut s = self.state();
            if applied {
                s.views.insert((name.to_string(), start), View { epoch: now, mine: view.mine + add });
                tracing::warn!(budget = name, window_start = %crate::budget::window::rfc3339(start), usd = crate::config::usd(add.nanos), tokens = add.tokens, requests = add.requests, url = %self.url, "a budget counter in Redis lost this process's spend (Redis restarted without its data, or was flushed); added it back from the local ledger. Run Redis with appendonly yes so a restart keeps budgets");
                return Ok(());
            }
            // The counter changed again meanwhile: seed the new epoch.
            s.views.insert((name.to_string(), start), View { epoch: now, mine: Amounts::default() });
        }
        Ok(())
    }

    /// Release a reservation (`remote`: it was made in Redis) and add
    /// `actual` to spent. When Redis is away the settlement is queued and
    /// `None` returned.
    pub async fn settle(&self, id: String, remote: bool, held: Amounts, keys: Vec<(String, i64, i64)>, actual: Amounts) -> Option<Counts> {
        let member = if remote { format!("{id}|{}|{}|{}", held.nanos, held.tokens, held.requests) } else { String::new() };
        let p = Pending { id, member, held, keys, actual };
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
        self.queue(Pending { id, member, held, keys, actual });
        // Apply now if Redis is up; otherwise reconcile will.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let me = self.handle();
            h.spawn(async move { me.drain().await });
        }
    }

    /// A reservation whose answer never came may still be made in Redis:
    /// release it (retried until Redis answers; harmless if it never ran,
    /// and its tombstone stops it if it runs after the release).
    pub fn release_later(&self, id: &str, worst: Amounts, keys: Vec<(String, i64, i64)>) {
        self.settle_later(id.to_string(), worst, keys, Amounts::default());
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
            seed: Script::new(SEED),
            nonce: self.nonce,
            started: self.started,
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
        let tomb = Timestamp::now().as_millisecond() + TOMB_TTL.as_millis() as i64;
        inv.arg(&p.id).arg(&p.member).arg(int(p.held.nanos)).arg(int(p.held.tokens)).arg(int(p.held.requests)).arg(int(p.actual.nanos)).arg(int(p.actual.tokens)).arg(int(p.actual.requests));
        inv.arg(tomb).arg(epoch());
        for (_, _, end) in &p.keys {
            inv.arg(end + KEY_GRACE_SECS);
        }
        let v = self.run(inv).await.map_err(|e| e.message)?;
        let (c, epochs) = counts(&v);
        self.observe(&p.keys, &epochs, Some(p.actual));
        Ok(c)
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

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
//!
//! Layout: this file holds the client, reservations and reads; `conn` the
//! connection and its up/down state; `settle` settlements and their queue;
//! `reseed` epochs and adding lost spend back; `scripts` the Lua;
//! `overrides` admin overrides shared by the fleet on the same store. It must
//! not judge limits itself (the scripts only enforce the flags admission
//! passes) nor read the ledger.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;
use redis::Script;

use scripts::{RESERVE, SEED, SETTLE};

use super::amount::{Amounts, Limits};
use super::clock::Clock;
use crate::config::OnUnavailable;

mod conn;
pub mod overrides;
mod reseed;
mod scripts;
mod settle;

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
    /// When this process started (Unix seconds, on `clock`).
    started: i64,
    /// The budgets' clock: hold expiries, tombstones and window ages.
    clock: Arc<dyn Clock>,
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
    // Only seeds the hash: not budget time, so not the budgets' clock.
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
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub message: String,
    pub maybe_ran: bool,
}

fn limit_arg(l: Option<u64>) -> i64 {
    l.map(|v| i64::try_from(v).unwrap_or(i64::MAX)).unwrap_or(-1)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Shared {
    pub fn new(url: &str, on_unavailable: OnUnavailable, timeout: Duration, prefix: &str, clock: Arc<dyn Clock>) -> Result<Self, String> {
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
            started: clock.now().as_second(),
            clock,
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

    /// Check and (when no blocking budget is over) reserve `worst` in every
    /// budget. Returns whether it reserved, and each budget's (spent,
    /// reserved) before this request. On an error that may still reserve
    /// in Redis later, call [`Shared::release_later`].
    pub async fn reserve(
        &self,
        id: &str,
        keys: &[(String, i64, i64)],
        flags: &[(Limits, bool)],
        worst: Amounts,
        now: Timestamp,
    ) -> Result<(bool, Counts), CallError> {
        self.script(Some(id), keys, flags, worst, now).await
    }

    /// Current (spent, reserved) of each budget, expired holds purged.
    pub async fn read(&self, keys: &[(String, i64, i64)], now: Timestamp) -> Result<Counts, String> {
        let flags: Vec<(Limits, bool)> = keys.iter().map(|_| (Limits::default(), false)).collect();
        self.script(None, keys, &flags, Amounts::default(), now).await.map(|(_, c)| c).map_err(|e| e.message)
    }

    async fn script(
        &self,
        id: Option<&str>,
        keys: &[(String, i64, i64)],
        flags: &[(Limits, bool)],
        worst: Amounts,
        now: Timestamp,
    ) -> Result<(bool, Counts), CallError> {
        let now_ms = now.as_millisecond();
        let member = format!("{}|{}|{}|{}", id.unwrap_or(""), worst.nanos, worst.tokens, worst.requests);
        let mut inv = self.reserve.prepare_invoke();
        for (name, start, _) in keys {
            for k in self.keys(name, *start) {
                inv.key(k);
            }
        }
        inv.arg(now_ms)
            .arg(now_ms + HOLD_TTL.as_millis() as i64)
            .arg(member)
            .arg(int(worst.nanos))
            .arg(int(worst.tokens))
            .arg(int(worst.requests))
            .arg(if id.is_some() { "1" } else { "0" });
        inv.arg(id.unwrap_or("")).arg(epoch());
        for ((_, _, end), (limits, block)) in keys.iter().zip(flags) {
            inv.arg(limit_arg(limits.nanos))
                .arg(limit_arg(limits.tokens))
                .arg(limit_arg(limits.requests))
                .arg(if *block { "1" } else { "0" })
                .arg(end + KEY_GRACE_SECS);
        }
        let v = self.run(inv).await?;
        let reserved = id.is_some() && v.first() == Some(&0);
        let (c, epochs) = counts(v.get(1..).unwrap_or_default());
        self.observe(keys, &epochs, None);
        Ok((reserved, c))
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
            clock: self.clock.clone(),
            state: self.state.clone(),
            connecting: self.connecting.clone(),
        }
    }
}

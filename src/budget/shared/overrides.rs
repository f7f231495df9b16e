//! The Redis side of admin overrides shared by a fleet: it rides on the
//! budgets' store (same client, timeouts, connection and up/down state),
//! so a sidecar has one view of whether Redis answers.
//!
//! Layout: a hash `{prefix}:overrides` (route → the override as JSON,
//! opaque here) and a hash `{prefix}:overrides:meta` (`epoch`, a random
//! number set when the store is created, and `v`, bumped on every change).
//! One script reads, sets or deletes and answers the whole store with its
//! epoch and version; a change is published on `{prefix}:overrides:changed`
//! from inside the script, so no sidecar can see the change before the
//! notice is sent. When the meta hash is missing (a new Redis, or one that
//! lost its data) the script first seeds the store with the caller's last
//! known overrides, so a Redis restart without data does not silently drop
//! overrides an operator set. Changes are delivered on a RESP3
//! subscription (Redis 6 or later); the caller re-reads periodically as
//! well, which also covers an older Redis.
//!
//! It must not interpret or validate overrides: the policy owns them.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Script};

use super::{epoch, CallError, Shared};

/// Read, set or delete, and answer the store. KEYS: the overrides hash,
/// the meta hash. ARGV: op (`read`, `set`, `del`), route, value, the epoch
/// of a store created now, the change channel, then the caller's overrides
/// as route, value pairs (written only when the store is missing).
/// Answers: seeded, found (del: whether the route had one), epoch,
/// version, then route, value pairs.
const OVERRIDES: &str = r"
local seeded = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  for i = 6, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('HSET', KEYS[2], 'epoch', ARGV[4], 'v', 0)
  seeded = 1
end
local changed = seeded
local found = 1
if ARGV[1] == 'set' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  changed = 1
elseif ARGV[1] == 'del' then
  found = redis.call('HDEL', KEYS[1], ARGV[2])
  if found == 1 then changed = 1 end
end
if changed == 1 then
  local v = redis.call('HINCRBY', KEYS[2], 'v', 1)
  redis.call('PUBLISH', ARGV[5], tostring(v))
end
local m = redis.call('HMGET', KEYS[2], 'epoch', 'v')
local out = {tostring(seeded), tostring(found), tostring(m[1]), tostring(m[2])}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
";

/// What the script does besides answering the store.
#[derive(Debug, Clone, Copy)]
pub enum OverrideOp<'a> {
    Read,
    /// Route, value.
    Set(&'a str, &'a str),
    Remove(&'a str),
}

/// The fleet's overrides as Redis holds them after the call.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOverrides {
    /// Which store (a new one after Redis lost its data).
    pub epoch: i64,
    /// Bumped on every change of this store.
    pub version: i64,
    /// Route, value (unordered).
    pub entries: Vec<(String, String)>,
    /// The store was missing and this call seeded it.
    pub seeded: bool,
    /// For a removal: the route had an override.
    pub found: bool,
}

/// The budgets' Redis store, for overrides.
pub struct OverrideChannel {
    shared: Shared,
    script: Script,
}

impl OverrideChannel {
    pub(in crate::budget) fn new(shared: &Shared) -> Self {
        Self { shared: shared.handle(), script: Script::new(OVERRIDES) }
    }

    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Since when Redis is marked unreachable (by any call of this process).
    pub fn down_since(&self) -> Option<Instant> {
        self.shared.state().down
    }

    fn channel(&self) -> String {
        format!("{{{}}}:overrides:changed", self.shared.prefix)
    }

    /// Run `op` and answer the store; `seed` (route, value) fills it first
    /// if it is missing.
    pub async fn call(&self, op: OverrideOp<'_>, seed: &[(String, String)]) -> Result<FleetOverrides, CallError> {
        let (name, route, value) = match op {
            OverrideOp::Read => ("read", "", ""),
            OverrideOp::Set(r, v) => ("set", r, v),
            OverrideOp::Remove(r) => ("del", r, ""),
        };
        let mut inv = self.script.prepare_invoke();
        let key = format!("{{{}}}:overrides", self.shared.prefix);
        inv.key(&key).key(format!("{key}:meta"));
        inv.arg(name).arg(route).arg(value).arg(epoch()).arg(self.channel());
        for (r, v) in seed {
            inv.arg(r).arg(v);
        }
        let out: Vec<String> = self.shared.run_as(inv).await?;
        parse(out).ok_or_else(|| CallError { message: format!("Redis at {}: unexpected answer from the overrides script", self.shared.url), maybe_ran: true })
    }

    /// Subscribe to change notices on a connection of its own (RESP3, so
    /// Redis 6 or later). It does not mark Redis down when it fails: the
    /// caller's reads do that.
    pub async fn subscribe(&self) -> Result<Subscription, String> {
        let info = self.shared.client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let config = self.shared.conn_config().set_push_sender(tx);
        let timeout = self.shared.timeout;
        let connect = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            conn.subscribe(self.channel()).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(timeout * 2, connect).await {
            Ok(Ok(conn)) => Ok(Subscription { _conn: conn, rx }),
            Ok(Err(e)) => Err(format!("Redis at {}: cannot subscribe to override changes: {e}", self.shared.url)),
            Err(_) => Err(format!("Redis at {}: cannot subscribe to override changes: no answer within {} ms", self.shared.url, (timeout * 2).as_millis())),
        }
    }
}

fn parse(out: Vec<String>) -> Option<FleetOverrides> {
    let mut it = out.into_iter();
    let seeded = it.next()? == "1";
    let found = it.next()? == "1";
    let epoch = it.next()?.parse().ok()?;
    let version = it.next()?.parse().ok()?;
    let rest: Vec<String> = it.collect();
    if !rest.len().is_multiple_of(2) {
        return None;
    }
    let entries = rest.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    Some(FleetOverrides { epoch, version, entries, seeded, found })
}

/// A live subscription to override changes.
pub struct Subscription {
    /// Kept open for the pushes; dropping it ends the subscription.
    _conn: MultiplexedConnection,
    rx: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscription {
    /// Wait for a change notice (`true`, with any others already queued
    /// taken too) or the end of the connection (`false`).
    pub async fn changed(&mut self) -> bool {
        loop {
            match self.rx.recv().await {
                Some(PushInfo { kind: PushKind::Message, .. }) => {
                    while let Ok(p) = self.rx.try_recv() {
                        if p.kind == PushKind::Disconnection {
                            return false;
                        }
                    }
                    return true;
                }
                Some(PushInfo { kind: PushKind::Disconnection, .. }) | None => return false,
                // Subscribe confirmations and the like.
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn answers_parse() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = parse(s(&["1", "0", "42", "3", "r", "{}", "q", "{\"target\":\"a\"}"])).unwrap();
        assert!(f.seeded && !f.found);
        assert_eq!((f.epoch, f.version, f.entries.len()), (42, 3, 2));
        assert_eq!(f.entries[1], ("q".to_string(), "{\"target\":\"a\"}".to_string()));
        assert!(parse(s(&["0", "1", "42", "3", "r"])).is_none(), "a route without a value");
        assert!(parse(s(&["0", "1", "x", "3"])).is_none());
    }
}

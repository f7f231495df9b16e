//! The response cache: exact-match answers for repeated requests, kept
//! before translation and replayed through the relay (`relay::Canned`), so
//! a hit is translated, settled and accounted like a live answer.
//!
//! The request's part of the key is computed once when its route's cache
//! policy applies ([`Cache::plan`]); each attempt adds its served model
//! and looks up before any budget is held ([`Cache::lookup`]): a hit is
//! served without an upstream call. A miss records the answer on its way
//! to the client ([`Recorder`]) and stores it only when it ended cleanly
//! and successfully. Concurrent identical misses are coalesced: the first
//! goes upstream, the others wait for it ([`Flight`]) and are then served
//! from the cache (or, if it was not stored, go upstream themselves).
//!
//! One owner per file: `key` (what a key is made of, what may be cached),
//! `entry` (a stored answer and its byte form), `memory` and `redis` (the
//! stores). This file must not write to the client.

pub mod entry;
pub mod key;
pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::body::JsonBody;
use crate::config::{CacheConfig, CachePolicy, CacheStore, CacheStoreKind, Provider, RouteCache, Snapshot};
use crate::dialect::{Dialect, Incoming};
use crate::policy::{Attempt, Decision};
use crate::usage::{RawUsage, Usage};
use entry::{Answer, Body};
use key::Key;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The response cache of this process (cheap to clone).
#[derive(Clone, Default)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Made from the first snapshot that configures a cache; store changes
    /// need a restart.
    store: OnceLock<(Store, CacheStore)>,
    state_dir: OnceLock<PathBuf>,
    /// Misses in flight, by key: the others wait on the semaphore, which
    /// is closed when the first is done.
    flights: Mutex<HashMap<Key, Arc<Semaphore>>>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    stored: AtomicU64,
    coalesced: AtomicU64,
    errors: AtomicU64,
    saved_nanos: AtomicU64,
}

enum Store {
    Memory(memory::Memory),
    Redis(Box<redis::RedisStore>),
}

/// What the cache does for one request.
pub enum Plan {
    /// No cache is configured: nothing to say.
    Off,
    /// Configured, but not for this request (`x-modelgate-cache: bypass`).
    Bypass(key::Reason),
    Ask(Box<Ask>),
}

/// A request the cache applies to: its digest and policy.
pub struct Ask {
    cache: Cache,
    digest: Key,
    policy: Arc<CachePolicy>,
    /// Look up (false for `Cache-Control: no-cache`: only store the fresh answer).
    lookup: bool,
    max_entry_bytes: usize,
    route: String,
}

impl Ask {
    /// Look `attempt` up (see [`Cache::lookup`]).
    pub async fn lookup(&self, attempt: &Attempt<'_>, provider: &Provider, wait: Duration) -> Lookup {
        self.cache.lookup(self, attempt, provider, wait).await
    }

    /// What `x-modelgate-cache` says of a miss: `bypass` when the client
    /// said `no-cache` (the answer is kept, but was not looked up).
    pub fn miss_label(&self) -> &'static str {
        if self.lookup {
            "miss"
        } else {
            "bypass"
        }
    }

    /// Count a found answer as served (`true`) or not.
    pub fn served(&self, hit: bool) {
        self.cache.served(hit);
    }

    pub fn cache(&self) -> Cache {
        self.cache.clone()
    }
}

/// What an attempt found.
pub enum Lookup {
    Hit(Arc<Answer>),
    /// Go upstream; record the answer with this.
    Miss(Box<Recorder>),
}

/// What the relay does about the cache for the answer it sends.
#[derive(Default)]
pub enum Note {
    #[default]
    None,
    /// Record the live answer; store it if it ends well.
    Record(Box<Recorder>),
    /// The answer is a cached one: settle it as a hit.
    Hit { usage: Usage, cache: Cache },
}

impl Cache {
    /// The cache for `snap` (the store is made now when it configures one,
    /// else on first use after a reload adds it).
    pub fn start(snap: &Snapshot) -> Result<Cache, String> {
        let c = Cache::default();
        let _ = c.inner.state_dir.set(snap.state_dir.clone());
        if let Some(cfg) = &snap.cache {
            c.store(cfg)?;
        }
        let _ = PROCESS.set(c.clone());
        Ok(c)
    }

    fn store(&self, cfg: &CacheConfig) -> Result<&Store, String> {
        if let Some((s, made)) = self.inner.store.get() {
            if *made != cfg.store {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| tracing::warn!("cache store settings changed; they take effect at the next restart"));
            }
            return Ok(s);
        }
        let store = match &cfg.store.kind {
            CacheStoreKind::Memory { max_bytes, max_entries, persist } => {
                let dir = self.inner.state_dir.get().filter(|_| *persist);
                Store::Memory(memory::Memory::open(*max_bytes, *max_entries, dir.map(PathBuf::as_path)))
            }
            CacheStoreKind::Redis { url, timeout, key_prefix } => Store::Redis(Box::new(redis::RedisStore::new(url, *timeout, key_prefix)?)),
        };
        let _ = self.inner.store.set((store, cfg.store.clone()));
        self.inner.store.get().map(|(s, _)| s).ok_or_else(|| "cache store".to_string())
    }

    /// Decide what the cache does for a request: which policy applies
    /// (its route's, else the global one), whether the request may be
    /// cached, and its digest.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        snap: &Snapshot,
        decision: &Decision<'_>,
        incoming: &Incoming,
        headers: &HeaderMap,
        json: Option<&JsonBody>,
        body: &Bytes,
        app: &str,
    ) -> Plan {
        let Some(cfg) = &snap.cache else { return Plan::Off };
        let policy = match decision.route.map(|r| &r.cache) {
            Some(RouteCache::Off) => None,
            Some(RouteCache::On(p)) => Some(p),
            Some(RouteCache::Inherit) | None => cfg.global.as_ref(),
        };
        let plan = (|| {
            let policy = policy.ok_or("off")?;
            let json = json.ok_or("not_a_model_call")?;
            let control = key::client_control(headers);
            if control.no_store {
                return Err("no_store");
            }
            key::cacheable(incoming, json, policy)?;
            let digest = key::request_digest(incoming, headers, app, body, policy)?;
            self.store(cfg).map_err(|e| {
                tracing::error!(error = %e, "response cache store unavailable");
                "store_error"
            })?;
            if control.no_cache {
                // Not served from the cache (the fresh answer is kept).
                self.inner.stats.bypasses.fetch_add(1, Ordering::Relaxed);
                crate::metrics::cache_request("bypass");
                crate::metrics::cache_bypass("no_cache");
            }
            Ok(Ask {
                cache: self.clone(),
                digest,
                policy: policy.clone(),
                lookup: !control.no_cache,
                max_entry_bytes: cfg.store.max_entry_bytes,
                route: decision.route_label().to_string(),
            })
        })();
        match plan {
            Ok(ask) => Plan::Ask(Box::new(ask)),
            Err(reason) => {
                self.inner.stats.bypasses.fetch_add(1, Ordering::Relaxed);
                crate::metrics::cache_request("bypass");
                crate::metrics::cache_bypass(reason);
                Plan::Bypass(reason)
            }
        }
    }

    /// The store, once one was made.
    fn made(&self) -> Option<&Store> {
        self.inner.store.get().map(|(s, _)| s)
    }

    async fn get(&self, route: &str, model: &str, k: &Key) -> Option<Arc<Answer>> {
        match self.made()? {
            Store::Memory(m) => m.get(k),
            Store::Redis(r) => match r.get(route, model, k).await {
                Ok(a) => a,
                Err(e) => {
                    self.error("get", &e);
                    None
                }
            },
        }
    }

    fn error(&self, op: &'static str, e: &str) {
        self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::cache_store_error(op);
        tracing::debug!(op, error = %e, "response cache store error (served as a miss)");
    }

    /// Look an attempt up: a hit, or a miss with the recorder for its
    /// answer. An identical miss already in flight is waited for (at most
    /// `wait`), then looked up again.
    pub async fn lookup(&self, ask: &Ask, attempt: &Attempt<'_>, provider: &Provider, wait: Duration) -> Lookup {
        let key = key::attempt_key(&ask.digest, &ask.route, attempt, provider);
        let model = attempt.model_label().to_string();
        let recorder = |flight: Option<Flight>| {
            Box::new(Recorder {
                cache: self.clone(),
                key,
                ttl: ask.policy.ttl,
                model: model.clone(),
                route: ask.route.clone(),
                max_bytes: ask.max_entry_bytes,
                kind: provider.kind,
                flight,
            })
        };
        if !ask.lookup {
            return Lookup::Miss(recorder(None));
        }
        let mut waited = false;
        loop {
            if let Some(a) = self.get(&ask.route, &model, &key).await {
                // (Counted when served: `served`.)
                return Lookup::Hit(a);
            }
            let sem = {
                let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&key) {
                    Some(sem) if !waited => sem.clone(),
                    Some(_) => {
                        // Waited once already and still no answer: go alone.
                        drop(flights);
                        return self.miss(recorder(None));
                    }
                    None => {
                        let sem = Arc::new(Semaphore::new(0));
                        flights.insert(key, sem.clone());
                        drop(flights);
                        return self.miss(recorder(Some(Flight { cache: self.clone(), key, sem })));
                    }
                }
            };
            self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            crate::metrics::cache_coalesced();
            // Closed when the first request is done (stored or not).
            let _ = tokio::time::timeout(wait, sem.acquire()).await;
            waited = true;
        }
    }

    fn miss(&self, r: Box<Recorder>) -> Lookup {
        self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
        crate::metrics::cache_request("miss");
        Lookup::Miss(r)
    }

    /// A hit is served (`true`), or was found but is not served because a
    /// budget moves the request to another model (`false`: a miss).
    pub fn served(&self, hit: bool) {
        if hit {
            self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
            crate::metrics::cache_request("hit");
        } else {
            self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
            crate::metrics::cache_request("miss");
        }
    }

    /// A served hit saved `usd` (at the model's prices).
    pub fn saved(&self, usd: f64) {
        self.inner.stats.saved_nanos.fetch_add(crate::budget::amount::nanos(usd), Ordering::Relaxed);
    }

    async fn put(&self, key: Key, a: Answer) {
        let Some(store) = self.made() else { return };
        match store {
            Store::Memory(m) => m.put(key, Arc::new(a)),
            Store::Redis(r) => {
                if let Err(e) = r.put(&key, &a).await {
                    self.error("set", &e);
                    crate::metrics::cache_store("error");
                    return;
                }
            }
        }
        self.inner.stats.stored.fetch_add(1, Ordering::Relaxed);
        crate::metrics::cache_store("stored");
    }

    /// `DELETE /admin/cache`: entries of `route` and/or `model` (all when
    /// neither); how many were removed (Redis: keys deleted).
    pub async fn clear(&self, route: Option<&str>, model: Option<&str>) -> Result<u64, String> {
        match self.made() {
            None => Ok(0),
            Some(Store::Memory(m)) => Ok(m.remove_if(|a| route.is_none_or(|r| a.route == r) && model.is_none_or(|x| a.model == x))),
            Some(Store::Redis(r)) => r.clear(route, model).await,
        }
    }

    /// `GET /admin/cache`.
    pub fn report(&self, snap: &Snapshot) -> Report {
        let s = &self.inner.stats;
        let (store, available, entries, bytes, max_bytes, max_entries) = match self.made() {
            None => ("none", true, Some(0), Some(0), None, None),
            Some(Store::Memory(m)) => {
                let (n, b) = m.usage();
                crate::metrics::cache_size(n, b);
                ("memory", true, Some(n), Some(b), Some(m.max_bytes), m.max_entries)
            }
            Some(Store::Redis(r)) => ("redis", r.up(), None, None, None, None),
        };
        Report {
            enabled: snap.cache.is_some(),
            store,
            available,
            entries,
            bytes,
            max_bytes,
            max_entries,
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            bypasses: s.bypasses.load(Ordering::Relaxed),
            stored: s.stored.load(Ordering::Relaxed),
            coalesced: s.coalesced.load(Ordering::Relaxed),
            store_errors: s.errors.load(Ordering::Relaxed),
            savings_usd: crate::budget::amount::usd(s.saved_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Refresh the size gauges (periodic).
    pub fn upkeep(&self) {
        if let Some(Store::Memory(m)) = self.made() {
            let (n, b) = m.usage();
            crate::metrics::cache_size(n, b);
        }
    }

    /// `persist: true`: write the memory store to state_dir (at shutdown).
    pub fn persist(&self) {
        let Some(Store::Memory(m)) = self.made() else { return };
        match m.save() {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "response cache saved"),
            Err(e) => tracing::warn!(error = %e, "cannot save the response cache"),
        }
    }
}

/// The process's cache, for [`at_exit`].
static PROCESS: OnceLock<Cache> = OnceLock::new();

/// Before the process exits (SIGTERM's drain, SIGINT): save the memory
/// store when `persist: true`.
pub fn at_exit() {
    if let Some(c) = PROCESS.get() {
        c.persist();
    }
}

/// Background: the size gauges every few seconds; with `persist: true`,
/// a save every five minutes too (a crash loses at most that much).
pub struct Upkeep(pub Cache);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    self.0.upkeep();
                    n += 1;
                    if n.is_multiple_of(60) {
                        let c = self.0.clone();
                        let _ = tokio::task::spawn_blocking(move || c.persist()).await;
                    }
                }
            }
        }
    }
}

/// `GET /admin/cache`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub enabled: bool,
    pub store: &'static str,
    pub available: bool,
    /// Memory store: entries and weighed bytes (Redis: null).
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub stored: u64,
    pub coalesced: u64,
    pub store_errors: u64,
    pub savings_usd: f64,
}

/// The first of concurrent identical misses; the others wait until it is
/// dropped (its answer stored, or not).
pub struct Flight {
    cache: Cache,
    key: Key,
    sem: Arc<Semaphore>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = self.cache.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.sem)) {
            flights.remove(&self.key);
        }
        self.sem.close();
    }
}

/// Records a live answer for the cache and stores it if it ends well.
pub struct Recorder {
    cache: Cache,
    key: Key,
    ttl: Duration,
    model: String,
    route: String,
    max_bytes: usize,
    /// The provider's dialect (its usage is normalised by it).
    kind: Dialect,
    flight: Option<Flight>,
}

/// A stream's pieces as the tap passed them on, up to the entry bound.
#[derive(Default)]
pub struct Recording {
    pieces: Vec<Bytes>,
    bytes: usize,
    max: usize,
    over: bool,
}

impl Recording {
    pub fn push(&mut self, b: &Bytes) {
        if self.over || b.is_empty() {
            return;
        }
        self.bytes += b.len();
        if self.bytes > self.max {
            self.over = true;
            self.pieces = Vec::new();
            return;
        }
        self.pieces.push(b.clone());
    }
}

impl Recorder {
    /// A recording for a stream this recorder's answer is.
    pub fn recording(&self) -> Recording {
        Recording { max: self.max_bytes, ..Recording::default() }
    }

    /// A whole answer that was relayed: stored when it is a 2xx answer
    /// within the size bound whose finish is not an error.
    pub async fn whole(self: Box<Self>, status: u16, content_type: Option<&str>, body: &Bytes, usage: Option<RawUsage>) {
        if !(200..300).contains(&status) {
            return;
        }
        if body.len() > self.max_bytes {
            crate::metrics::cache_store("too_large");
            return;
        }
        self.keep(Body::Whole(body.clone()), content_type, usage).await;
    }

    /// A stream that ended cleanly (the provider's terminal event, no error
    /// event, nothing malformed or cut): stored within the size bound.
    pub async fn stream(self: Box<Self>, content_type: Option<&str>, rec: Recording, usage: Option<RawUsage>) {
        if rec.over {
            crate::metrics::cache_store("too_large");
            return;
        }
        self.keep(Body::Stream(rec.pieces), content_type, usage).await;
    }

    async fn keep(self, body: Body, content_type: Option<&str>, usage: Option<RawUsage>) {
        if entry::finish_is_error(&body) {
            crate::metrics::cache_store("not_cacheable");
            return;
        }
        let body = compact(body);
        let now = now();
        let answer = Answer {
            body,
            content_type: content_type.unwrap_or("application/json").to_string(),
            usage: usage.map(|u| u.normalize(self.kind)).unwrap_or_default(),
            created: now,
            expires: now + self.ttl.as_secs(),
            model: self.model,
            route: self.route,
        };
        let flight = self.flight;
        let cache = self.cache;
        let key = self.key;
        match cache.made() {
            Some(Store::Redis(_)) => {
                // Off the response path; waiters are let go once it is stored.
                tokio::spawn(async move {
                    cache.put(key, answer).await;
                    drop(flight);
                });
            }
            _ => {
                cache.put(key, answer).await;
                drop(flight);
            }
        }
    }
}

/// The body in one allocation of its own size: what the relay read may
/// sit in larger buffers (a growing read buffer, the stream tap's), which a
/// kept slice would keep alive whole. A stream's events are kept as one
/// piece, in their order: a hit is written in one go (its events are all
/// there), not as the provider happened to send them.
fn compact(body: Body) -> Body {
    match body {
        Body::Whole(b) => Body::Whole(Bytes::copy_from_slice(&b)),
        Body::Stream(pieces) => {
            let mut all = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
            pieces.iter().for_each(|p| all.extend_from_slice(p));
            Body::Stream(vec![Bytes::from(all)])
        }
    }
}

/// A cached answer as the relay's source: its header (with `Age`), and
/// the body whole or as the stream's pieces.
pub fn replay(a: &Answer, provider: Dialect, translated: bool) -> Result<crate::relay::Response, crate::dialect::GatewayError> {
    use crate::relay::{Canned, Response};
    let mut h = pingora::http::ResponseHeader::build(200, Some(2)).map_err(crate::upstream::request::internal)?;
    h.insert_header(http::header::CONTENT_TYPE, a.content_type.as_str()).map_err(crate::upstream::request::internal)?;
    h.insert_header(http::header::AGE, now().saturating_sub(a.created).to_string()).map_err(crate::upstream::request::internal)?;
    Ok(match &a.body {
        Body::Whole(b) => Response::Whole { src: Box::new(Canned::new(h, [])), body: b.clone(), usage: None },
        Body::Stream(pieces) => {
            // Nothing to drop: the usage-only chunk was dropped when it was recorded.
            let tap = crate::dialect::sse::StreamTap::new(provider, false);
            let mut tap = if translated { tap.collecting() } else { tap };
            let mut rest = pieces.iter().cloned();
            let first = rest.next().map(|p| tap.feed(&p)).unwrap_or_default();
            Response::Stream { src: Box::new(Canned::new(h, rest)), tap: Box::new(tap), first }
        }
    })
}

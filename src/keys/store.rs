//! Keys created and revoked at runtime (`POST /admin/keys`,
//! `DELETE /admin/keys/NAME`): kept hashed in `state_dir/keys.json`
//! (written atomically, mode 0600) and, when the budget store is Redis, in
//! the hash `{prefix}:keys` and the set `{prefix}:keys:revoked`, which
//! every sidecar reads back every second ([`KeyStore::refresh`]).
//!
//! Lookups are lock-free (one `ArcSwap` load); nothing is hashed or looked
//! up at all while no key exists (`is_empty`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::config::{KeySource, RateAmounts, Snapshot, StoreKind, VirtualKey};

/// The stored form of a key (hash only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredKey {
    pub name: String,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// The key's own budgets as the admin API took them (checked again
    /// against the config whenever the keys are loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<serde_json::Value>,
    pub created_at: i64,
}

impl StoredKey {
    /// The key, its budgets checked against `snap`; `None` (logged) when
    /// they no longer pass (the key is then unknown: refused in
    /// `known_keys` mode, never served without its budgets).
    fn key(&self, snap: &Snapshot) -> Option<VirtualKey> {
        let budgets = match crate::config::runtime_key_budgets(snap, &self.name, &self.budgets) {
            Ok(b) => b,
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                tracing::error!(key = %self.name, hash_prefix = &self.hash[..8.min(self.hash.len())], problems = ?errors, "a runtime key's budgets do not pass against this config; the key is not accepted until they do (revoke it and create it again)");
                return None;
            }
        };
        Some(VirtualKey {
            name: self.name.clone(),
            hash: self.hash.clone(),
            app: self.app.clone(),
            user: self.user.clone(),
            models: self.models.clone(),
            model_globs: self.models.iter().map(|g| WildMatch::new(g)).collect(),
            routes: self.routes.clone(),
            expires_at: self.expires_at,
            limits: RateAmounts { rpm: self.rpm, tpm: self.tpm },
            source: KeySource::Admin,
            created_at: Some(self.created_at),
            budgets,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    keys: Vec<StoredKey>,
    /// Hashes of revoked keys (admin-created or from the config).
    #[serde(default)]
    revoked: Vec<String>,
}

/// A key to create (the admin API's request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub app: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    /// RFC 3339 or a date.
    pub expires_at: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// The key's own budgets: entries like a `keys:` entry's `budgets:`
    /// (name, window, limit_usd/limit_tokens/limit_requests, warn_at,
    /// on_exceed, downgrade_to).
    #[serde(default)]
    pub budgets: Vec<serde_json::Value>,
}

#[derive(Default)]
struct Table {
    /// As stored (`keys.json`).
    stored: Vec<StoredKey>,
    by_hash: HashMap<String, Arc<VirtualKey>>,
    revoked: HashSet<String>,
}

/// Told the runtime keys' budgets whenever the keys change.
type BudgetsListener = Box<dyn Fn(Vec<crate::config::Budget>) + Send + Sync>;

#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    table: ArcSwap<Table>,
    /// No key exists and none is revoked: authentication is skipped.
    empty: AtomicBool,
    file: PathBuf,
    /// Writers one at a time (file and table agree).
    write: Mutex<()>,
    redis: Option<Redis>,
    budgets_listener: std::sync::OnceLock<BudgetsListener>,
}

struct Redis {
    client: redis::Client,
    keys: String,
    revoked: String,
    timeout: std::time::Duration,
}

impl Default for KeyStore {
    fn default() -> Self {
        KeyStore::with_file(PathBuf::new(), None)
    }
}

impl KeyStore {
    fn with_file(file: PathBuf, redis: Option<Redis>) -> Self {
        KeyStore {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(Table::default()),
                empty: AtomicBool::new(true),
                file,
                write: Mutex::new(()),
                redis,
                budgets_listener: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Open `state_dir/keys.json` (and the shared store when the budgets
    /// use Redis).
    pub fn open(snap: &Snapshot) -> Result<Self, String> {
        let file = snap.state_dir.join("keys.json");
        let redis = match &snap.budget_store.kind {
            StoreKind::Redis { url, key_prefix, timeout, .. } => Some(Redis {
                client: redis::Client::open(url.as_str()).map_err(|e| format!("budget_store.url: {e}"))?,
                keys: format!("{key_prefix}:keys"),
                revoked: format!("{key_prefix}:keys:revoked"),
                timeout: (*timeout).max(std::time::Duration::from_millis(500)),
            }),
            _ => None,
        };
        let store = KeyStore::with_file(file.clone(), redis);
        let f = read(&file)?;
        store.install(snap, f.keys, f.revoked.into_iter().collect());
        Ok(store)
    }

    /// Tell `listener` the runtime keys' budgets now and after every
    /// change (the budget book keeps them; set once).
    pub fn on_budgets(&self, listener: impl Fn(Vec<crate::config::Budget>) + Send + Sync + 'static) {
        if self.inner.budgets_listener.set(Box::new(listener)).is_ok() {
            self.tell_budgets();
        }
    }

    fn tell_budgets(&self) {
        if let Some(listen) = self.inner.budgets_listener.get() {
            let t = self.inner.table.load();
            let mut keys: Vec<&Arc<VirtualKey>> = t.by_hash.values().collect();
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            listen(keys.iter().flat_map(|k| k.budgets.iter().cloned()).collect());
        }
    }

    fn install(&self, snap: &Snapshot, stored: Vec<StoredKey>, revoked: HashSet<String>) {
        let by_hash: HashMap<String, Arc<VirtualKey>> = stored.iter().filter_map(|k| Some((k.hash.clone(), Arc::new(k.key(snap)?)))).collect();
        self.inner.empty.store(by_hash.is_empty() && revoked.is_empty(), Ordering::Relaxed);
        self.inner.table.store(Arc::new(Table { stored, by_hash, revoked }));
        self.tell_budgets();
    }

    pub fn is_empty(&self) -> bool {
        self.inner.empty.load(Ordering::Relaxed)
    }

    pub fn lookup(&self, hash: &str) -> Option<Arc<VirtualKey>> {
        self.inner.table.load().by_hash.get(hash).cloned()
    }

    pub fn is_revoked(&self, hash: &str) -> bool {
        !self.is_empty() && self.inner.table.load().revoked.contains(hash)
    }

    /// Every runtime key, and the revoked hashes.
    pub fn list(&self) -> (Vec<Arc<VirtualKey>>, Vec<String>) {
        let t = self.inner.table.load();
        let mut keys: Vec<Arc<VirtualKey>> = t.by_hash.values().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        let mut revoked: Vec<String> = t.revoked.iter().cloned().collect();
        revoked.sort();
        (keys, revoked)
    }

    fn stored(&self) -> (Vec<StoredKey>, HashSet<String>) {
        let t = self.inner.table.load();
        (t.stored.clone(), t.revoked.clone())
    }

    /// Create a key: returns the key itself (shown once, never stored).
    pub async fn create(&self, snap: &Snapshot, new: NewKey) -> Result<(String, Arc<VirtualKey>), (u16, String)> {
        let bad = |m: String| Err((400, m));
        if !crate::config::valid_name(&new.name) {
            return bad("`name` must be 1-64 letters, digits, `-`, `_` or `.`".into());
        }
        let taken = snap.keys.by_hash.values().any(|k| k.name == new.name) || self.stored().0.iter().any(|k| k.name == new.name);
        if taken {
            return Err((409, format!("a key named `{}` exists already; revoke it first or pick another name", new.name)));
        }
        for (f, v) in [("app", &new.app), ("user", &new.user)] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return bad(format!("`{f}` must not be empty (leave it out instead)"));
            }
        }
        for r in &new.routes {
            if !snap.routes.iter().any(|x| &x.name == r) {
                return bad(format!("unknown route `{r}`"));
            }
        }
        if new.rpm == Some(0) || new.tpm == Some(0) {
            return bad("`rpm` and `tpm` must be greater than 0 (leave them out for no limit)".into());
        }
        let expires_at = match new.expires_at.as_deref() {
            None => None,
            Some(t) => match crate::config::expiry_of(t) {
                Some(s) => Some(s),
                None => return bad(format!("`expires_at`: `{t}` is not a time; write RFC 3339 (2026-12-31T00:00:00Z) or a date (2026-12-31)")),
            },
        };
        if let Err(errors) = crate::config::runtime_key_budgets(snap, &new.name, &new.budgets) {
            let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return bad(errors.join("; "));
        }
        let secret = format!("mg-{}", hex::encode(random_bytes().map_err(|e| (500, e))?));
        let hash = super::hash_key(&secret);
        let stored = StoredKey {
            name: new.name,
            hash: hash.clone(),
            app: new.app,
            user: new.user,
            models: new.models,
            routes: new.routes,
            expires_at,
            rpm: new.rpm,
            tpm: new.tpm,
            budgets: new.budgets,
            created_at: jiff::Timestamp::now().as_second(),
        };
        if let Some(r) = &self.inner.redis {
            let json = serde_json::to_string(&stored).map_err(|e| (500, e.to_string()))?;
            let mut conn = r.conn().await.map_err(|e| (503, format!("cannot reach the shared store to create the key for the fleet: {e}")))?;
            let _: () = tokio::time::timeout(r.timeout, redis::cmd("HSET").arg(&r.keys).arg(&hash).arg(json).query_async(&mut conn))
                .await
                .map_err(|_| (503, "the shared store did not answer in time".to_string()))?
                .map_err(|e| (503, format!("the shared store refused the key: {e}")))?;
        }
        {
            let _w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
            let (mut keys, revoked) = self.stored();
            keys.push(stored);
            self.save(&keys, &revoked).map_err(|e| (500, e))?;
            self.install(snap, keys, revoked);
        }
        let key = self.lookup(&hash).ok_or((500, "the key was not stored".to_string()))?;
        tracing::info!(key = %key.name, hash_prefix = key.hash_prefix(), "virtual key created");
        Ok((secret, key))
    }

    /// Revoke the key named `name` (runtime or config); returns its hash
    /// prefix.
    pub async fn revoke(&self, snap: &Snapshot, name: &str) -> Result<String, (u16, String)> {
        let runtime = self.stored().0.into_iter().find(|k| k.name == name);
        let hash = match runtime.map(|k| k.hash).or_else(|| snap.keys.by_hash.values().find(|k| k.name == name).map(|k| k.hash.clone())) {
            Some(h) => h,
            None => return Err((404, format!("no key named `{name}`"))),
        };
        if let Some(r) = &self.inner.redis {
            let mut conn = r.conn().await.map_err(|e| (503, format!("cannot reach the shared store to revoke the key for the fleet: {e}")))?;
            let _: () = tokio::time::timeout(r.timeout, redis::cmd("SADD").arg(&r.revoked).arg(&hash).query_async(&mut conn))
                .await
                .map_err(|_| (503, "the shared store did not answer in time".to_string()))?
                .map_err(|e| (503, format!("the shared store refused the revocation: {e}")))?;
        }
        {
            let _w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
            let (keys, mut revoked) = self.stored();
            revoked.insert(hash.clone());
            self.save(&keys, &revoked).map_err(|e| (500, e))?;
            self.install(snap, keys, revoked);
        }
        tracing::info!(key = %name, hash_prefix = &hash[..8], "virtual key revoked");
        Ok(hash[..8].to_string())
    }

    fn save(&self, keys: &[StoredKey], revoked: &HashSet<String>) -> Result<(), String> {
        if self.inner.file.as_os_str().is_empty() {
            return Ok(());
        }
        let mut revoked: Vec<String> = revoked.iter().cloned().collect();
        revoked.sort();
        let mut keys = keys.to_vec();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        let body = serde_json::to_vec_pretty(&File { keys, revoked }).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&self.inner.file, &body).map_err(|e| format!("cannot write {}: {e}", self.inner.file.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.inner.file, std::fs::Permissions::from_mode(0o600));
        }
        Ok(())
    }

    /// Read the fleet's keys and revocations from Redis (when shared):
    /// keys another sidecar created or revoked become known here.
    pub async fn refresh(&self, snap: &Snapshot) {
        let Some(r) = &self.inner.redis else { return };
        let Ok(mut conn) = r.conn().await else { return };
        let read = async {
            let keys: HashMap<String, String> = redis::cmd("HGETALL").arg(&r.keys).query_async(&mut conn).await?;
            let revoked: HashSet<String> = redis::cmd("SMEMBERS").arg(&r.revoked).query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>((keys, revoked))
        };
        let Ok(Ok((remote, remote_revoked))) = tokio::time::timeout(r.timeout, read).await else { return };
        let _w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        let (mut keys, mut revoked) = self.stored();
        let before = (keys.len(), revoked.len());
        for (hash, json) in remote {
            if keys.iter().any(|k| k.hash == hash) {
                continue;
            }
            if let Ok(k) = serde_json::from_str::<StoredKey>(&json) {
                if k.hash == hash {
                    keys.push(k);
                }
            }
        }
        revoked.extend(remote_revoked);
        if (keys.len(), revoked.len()) != before {
            if let Err(e) = self.save(&keys, &revoked) {
                tracing::warn!(error = %e, "cannot save the fleet's keys locally");
            }
            self.install(snap, keys, revoked);
        }
    }
}

impl Redis {
    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        match tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

fn read(file: &Path) -> Result<File, String> {
    match std::fs::read(file) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is damaged ({e}); repair it or move it away (its keys are then unknown)", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// 192 bits from the operating system's CSPRNG.
fn random_bytes() -> Result<[u8; 24], String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the operating system: {e}"))?;
    Ok(b)
}

/// The background service: refresh the fleet's keys every second.
pub struct Refresh(pub KeyStore, pub Arc<ArcSwap<Snapshot>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Refresh {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if self.0.inner.redis.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.0.refresh(&self.1.load()).await,
            }
        }
    }
}

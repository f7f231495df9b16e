//! Runtime route overrides set through the admin API: route name → fixed
//! target model. They live outside the config snapshot, so they survive
//! reloads, and in `state_dir/overrides.json`, so they survive restarts.
//!
//! With a Redis budget store the overrides are the fleet's: a change is
//! made in Redis first (`crate::budget::OverrideChannel`) and applied here
//! from Redis's answer, and changes made by other sidecars arrive through
//! [`overrides_fleet`](super::overrides_fleet). The file is then this
//! sidecar's copy of the last known state, in force while Redis is away.
//!
//! Readers take the current map lock-free (`ArcSwap`); writers serialize on a
//! mutex, write the file atomically and durably (`fsutil::write_atomic`)
//! and only then swap, so the file and memory never disagree (a local
//! store's change fails when its file cannot be written; a fleet change is
//! applied anyway, since the fleet already has it). A corrupt file stops
//! the start with a clear message rather than silently dropping overrides
//! an operator set (often to route around an incident).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::overrides_fleet::Fleet;
use crate::budget::{FleetOverrides, OverrideChannel, OverrideOp};
use crate::config::Snapshot;

/// Why an override could not be set or removed: the request's mistake, or
/// the store's (the caller answers 400, 500 or 503 on it).
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The route or target does not exist in the config.
    #[error("{0}")]
    Invalid(String),
    /// The overrides file could not be saved (nothing changed).
    #[error("{0}")]
    Store(String),
    /// The fleet's store (Redis) did not answer.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Override {
    /// The model every request of the route goes to.
    pub target: String,
    /// RFC 3339 time it was set.
    pub set_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub type Overrides = IndexMap<String, Override>;

pub struct OverrideStore {
    file: Option<PathBuf>,
    current: ArcSwap<Overrides>,
    /// Serializes changes (a fleet call and applying its answer included);
    /// holds the fleet store's (epoch, version) last applied.
    write: tokio::sync::Mutex<Option<(i64, i64)>>,
    fleet: Option<Fleet>,
}

impl Default for OverrideStore {
    fn default() -> Self {
        Self::in_memory(Overrides::new())
    }
}

impl OverrideStore {
    pub fn in_memory(map: Overrides) -> Self {
        Self { file: None, current: ArcSwap::from_pointee(map), write: tokio::sync::Mutex::new(None), fleet: None }
    }

    pub fn file_in(state_dir: &Path) -> PathBuf {
        state_dir.join("overrides.json")
    }

    /// Open the store in `state_dir` (an absent file is an empty store).
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let file = Self::file_in(state_dir);
        let map = read(&file)?;
        Ok(Self { file: Some(file), current: ArcSwap::from_pointee(map), write: tokio::sync::Mutex::new(None), fleet: None })
    }

    /// Share the overrides with the fleet through `channel` (the budgets'
    /// Redis store; `None` keeps them local). Start
    /// [`overrides_fleet::service`](super::overrides_fleet::service) to
    /// receive other sidecars' changes.
    pub fn shared_by(mut self, channel: Option<OverrideChannel>) -> Self {
        self.fleet = channel.map(Fleet::new);
        self
    }

    pub(super) fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub fn load(&self) -> Arc<Overrides> {
        self.current.load_full()
    }

    /// Where the overrides are kept and, for the fleet's store, whether it
    /// answers (`/admin/overrides`).
    pub fn store_report(&self) -> serde_json::Value {
        match &self.fleet {
            None => serde_json::json!({"kind": "file"}),
            Some(f) => f.report(),
        }
    }

    /// Set `route`'s target after checking it against `snap`.
    pub async fn set(&self, snap: &Snapshot, route: &str, target: &str, note: Option<String>) -> Result<Override, OverrideError> {
        check(snap, route, target).map_err(OverrideError::Invalid)?;
        let o = Override { target: target.to_string(), set_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(), note };
        if self.fleet.is_some() {
            let value = serde_json::to_string(&o).map_err(|e| OverrideError::Store(e.to_string()))?;
            self.fleet_call(snap, OverrideOp::Set(route, &value)).await?;
        } else {
            self.update(|m| {
                m.insert(route.to_string(), o.clone());
            })
            .await?;
        }
        Ok(o)
    }

    /// Remove `route`'s override; `Ok(false)` when there was none.
    pub async fn remove(&self, snap: &Snapshot, route: &str) -> Result<bool, OverrideError> {
        if self.fleet.is_some() {
            return Ok(self.fleet_call(snap, OverrideOp::Remove(route)).await?.found);
        }
        let mut found = false;
        self.update(|m| found = m.shift_remove(route).is_some()).await?;
        Ok(found)
    }

    /// Read the fleet's overrides and apply them (a no-op for a local
    /// store). A failure is recorded in the store's state and logged once.
    pub async fn refresh(&self, snap: &Snapshot) {
        if self.fleet.is_some() {
            let _ = self.fleet_call(snap, OverrideOp::Read).await;
        }
    }

    async fn update(&self, f: impl FnOnce(&mut Overrides)) -> Result<(), OverrideError> {
        let _guard = self.write.lock().await;
        let mut next = (**self.current.load()).clone();
        f(&mut next);
        if let Some(file) = &self.file {
            write(file, &next).map_err(OverrideError::Store)?;
        }
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Run `op` on the fleet's store (seeding it with what this sidecar
    /// knows if Redis lost it) and apply the answer.
    async fn fleet_call(&self, snap: &Snapshot, op: OverrideOp<'_>) -> Result<FleetOverrides, OverrideError> {
        let Some(fleet) = &self.fleet else {
            return Err(OverrideError::Store("overrides are not shared".to_string()));
        };
        let mut applied = self.write.lock().await;
        let seed: Vec<(String, String)> = self.current.load().iter().filter_map(|(r, o)| serde_json::to_string(o).ok().map(|v| (r.clone(), v))).collect();
        match fleet.channel.call(op, &seed).await {
            Ok(remote) => {
                fleet.synced();
                self.apply(snap, &remote, &mut applied);
                Ok(remote)
            }
            Err(e) => {
                fleet.failed(&e.message);
                let outcome = match (op, e.maybe_ran) {
                    (OverrideOp::Read, _) => "",
                    (_, false) => "; nothing changed",
                    (_, true) => "; the change may still have been made: check GET /admin/overrides",
                };
                Err(OverrideError::Unavailable(format!(
                    "the fleet's override store is unavailable ({}){outcome}. The last known overrides stay in force; try again when Redis answers",
                    e.message
                )))
            }
        }
    }

    /// Make the fleet's `remote` state this sidecar's (unless it is the
    /// state already applied): warn about overrides that do not fit this
    /// config (they stay stored but inactive), save the file copy.
    fn apply(&self, snap: &Snapshot, remote: &FleetOverrides, applied: &mut Option<(i64, i64)>) {
        if *applied == Some((remote.epoch, remote.version)) {
            return;
        }
        *applied = Some((remote.epoch, remote.version));
        let mut next = Overrides::new();
        for (route, value) in &remote.entries {
            match serde_json::from_str::<Override>(value) {
                Ok(o) => {
                    next.insert(route.clone(), o);
                }
                Err(e) => tracing::warn!(route, error = %e, "an override in Redis is not valid JSON of an override; ignored"),
            }
        }
        next.sort_keys();
        if remote.seeded && next.is_empty() {
            tracing::info!("created the fleet's override store in Redis");
        } else if remote.seeded {
            tracing::warn!(
                overrides = next.len(),
                "the fleet's override store was missing in Redis (new, or Redis lost its data); seeded it with this sidecar's last known overrides"
            );
        }
        let current = self.current.load();
        if **current == next {
            return;
        }
        for (route, o) in &next {
            if current.get(route) == Some(o) {
                continue;
            }
            match check(snap, route, &o.target) {
                Ok(()) => tracing::info!(route, target = %o.target, "route override from the fleet applied"),
                Err(e) => {
                    tracing::warn!(route, target = %o.target, problem = %e, "route override from the fleet does not apply to this config; it stays stored but inactive")
                }
            }
        }
        for route in current.keys().filter(|r| !next.contains_key(*r)) {
            tracing::info!(route, "route override removed by the fleet");
        }
        if let Some(file) = &self.file {
            if let Err(e) = write(file, &next) {
                tracing::error!(error = %e, "cannot save the local copy of the fleet's overrides; they apply, but a restart while Redis is away would start from an older copy");
            }
        }
        self.current.store(Arc::new(next));
    }
}

/// Why an override cannot apply to `snap` (`Ok` when it can).
pub fn check(snap: &Snapshot, route: &str, target: &str) -> Result<(), String> {
    if !snap.routes.iter().any(|r| r.name == route) {
        let names: Vec<&str> = snap.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(format!("no route named `{route}`; routes: {}", names.join(", ")));
    }
    if !snap.models.contains_key(target) {
        let names: Vec<&str> = snap.models.keys().map(String::as_str).collect();
        return Err(format!("unknown model `{target}`; models: {}", names.join(", ")));
    }
    Ok(())
}

fn read(file: &Path) -> Result<Overrides, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a valid overrides file ({e}); fix or delete it", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::new()),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

fn write(file: &Path, map: &Overrides) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(map).map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(file, &text).map_err(|e| format!("cannot save {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config::{Config, Kind};

    /// Models `a` and `b` (OpenAI), `c` (Anthropic) and a route `r`.
    fn conf() -> String {
        Config::new()
            .provider("openai", Kind::OpenAi, "http://127.0.0.1:1")
            .provider("anthropic", Kind::Anthropic, "http://127.0.0.1:2")
            .model("a", "openai")
            .prices(1.0, 1.0)
            .model("b", "openai")
            .prices(1.0, 1.0)
            .model("c", "anthropic")
            .prices(1.0, 1.0)
            .route(r#"name: r, match: { model: "x*" }, target: a"#)
            .build()
    }

    #[tokio::test]
    async fn overrides_persist_and_are_checked() {
        let snap = crate::config::load_str(&conf(), &|_| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = OverrideStore::open(dir.path()).unwrap();
        let e = store.set(&snap, "nope", "a", None).await.unwrap_err();
        assert!(matches!(e, OverrideError::Invalid(_)) && e.to_string().contains("no route named `nope`"), "{e}");
        let e = store.set(&snap, "r", "zz", None).await.unwrap_err();
        assert!(matches!(e, OverrideError::Invalid(_)) && e.to_string().contains("unknown model"), "{e}");
        // A model of another dialect is fine: requests are translated.
        store.set(&snap, "r", "c", None).await.unwrap();
        store.set(&snap, "r", "b", Some("incident 42".into())).await.unwrap();
        let again = OverrideStore::open(dir.path()).unwrap();
        assert_eq!(again.load().get("r").map(|o| o.target.as_str()), Some("b"));
        assert!(again.remove(&snap, "r").await.unwrap());
        assert!(!again.remove(&snap, "r").await.unwrap());
        assert!(OverrideStore::open(dir.path()).unwrap().load().is_empty());
    }
}

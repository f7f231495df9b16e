//! Runtime route overrides set through the admin API: route name → fixed
//! target model. They live outside the config snapshot, so they survive
//! reloads, and in `state_dir/overrides.json`, so they survive restarts.
//!
//! Readers take the current map lock-free (`ArcSwap`); writers serialize on a
//! mutex, write the file atomically and durably (`fsutil::write_atomic`)
//! and only then swap, so the file and memory never disagree. A corrupt
//! file stops the start with a clear message rather than silently dropping
//! overrides an operator set (often to route around an incident).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::config::Snapshot;

/// Why an override could not be set or removed: the request's mistake, or
/// the store's (the caller answers 400 or 500 on it).
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The route or target does not exist in the config.
    #[error("{0}")]
    Invalid(String),
    /// The overrides file could not be saved (nothing changed).
    #[error("{0}")]
    Store(String),
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
    write: Mutex<()>,
}

impl Default for OverrideStore {
    fn default() -> Self {
        Self::in_memory(Overrides::new())
    }
}

impl OverrideStore {
    pub fn in_memory(map: Overrides) -> Self {
        Self { file: None, current: ArcSwap::from_pointee(map), write: Mutex::new(()) }
    }

    pub fn file_in(state_dir: &Path) -> PathBuf {
        state_dir.join("overrides.json")
    }

    /// Open the store in `state_dir` (an absent file is an empty store).
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let file = Self::file_in(state_dir);
        let map = read(&file)?;
        Ok(Self { file: Some(file), current: ArcSwap::from_pointee(map), write: Mutex::new(()) })
    }

    pub fn load(&self) -> Arc<Overrides> {
        self.current.load_full()
    }

    /// Set `route`'s target after checking it against `snap`.
    pub fn set(&self, snap: &Snapshot, route: &str, target: &str, note: Option<String>) -> Result<Override, OverrideError> {
        check(snap, route, target).map_err(OverrideError::Invalid)?;
        let o = Override { target: target.to_string(), set_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(), note };
        self.update(|m| {
            m.insert(route.to_string(), o.clone());
        })?;
        Ok(o)
    }

    /// Remove `route`'s override; `Ok(false)` when there was none.
    pub fn remove(&self, route: &str) -> Result<bool, OverrideError> {
        let mut found = false;
        self.update(|m| found = m.shift_remove(route).is_some())?;
        Ok(found)
    }

    fn update(&self, f: impl FnOnce(&mut Overrides)) -> Result<(), OverrideError> {
        let _guard = self.write.lock().map_err(|_| OverrideError::Store("override store lock poisoned".to_string()))?;
        let mut next = (**self.current.load()).clone();
        f(&mut next);
        if let Some(file) = &self.file {
            write(file, &next).map_err(OverrideError::Store)?;
        }
        self.current.store(Arc::new(next));
        Ok(())
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

    #[test]
    fn overrides_persist_and_are_checked() {
        let snap = crate::config::load_str(&conf(), &|_| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = OverrideStore::open(dir.path()).unwrap();
        let e = store.set(&snap, "nope", "a", None).unwrap_err();
        assert!(matches!(e, OverrideError::Invalid(_)) && e.to_string().contains("no route named `nope`"), "{e}");
        let e = store.set(&snap, "r", "zz", None).unwrap_err();
        assert!(matches!(e, OverrideError::Invalid(_)) && e.to_string().contains("unknown model"), "{e}");
        // A model of another dialect is fine: requests are translated.
        store.set(&snap, "r", "c", None).unwrap();
        store.set(&snap, "r", "b", Some("incident 42".into())).unwrap();
        let again = OverrideStore::open(dir.path()).unwrap();
        assert_eq!(again.load().get("r").map(|o| o.target.as_str()), Some("b"));
        assert!(again.remove("r").unwrap());
        assert!(!again.remove("r").unwrap());
        assert!(OverrideStore::open(dir.path()).unwrap().load().is_empty());
    }
}

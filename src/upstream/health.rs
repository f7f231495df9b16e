//! Provider health as modelgate sees it: a circuit breaker per
//! model@provider fed by every attempt (`upstream::breaker`), and the
//! results of active health checks (which also tell which models a local
//! server has installed).
//!
//! Time is passed in (`now`), so the state machine is tested without
//! waiting. State is keyed by names, so it survives config reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::upstream::Connector;
use bytes::Bytes;
use pingora::http::RequestHeader;
use serde_json::{json, Value};

use crate::config::{Auth, Breaker, HealthCheck, Provider, Snapshot};
pub use crate::upstream::breaker::Admit;
use crate::upstream::breaker::Circuit;

/// Why a model cannot be tried now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unusable {
    /// Its provider fails its health check.
    Unhealthy,
    /// A local model the provider does not list.
    NotInstalled,
    /// Its breaker is open (for this long, when known).
    CircuitOpen { retry_in: Duration },
}

impl Unusable {
    /// The `outcome` label of the skipped attempt.
    pub fn label(self) -> &'static str {
        match self {
            Unusable::Unhealthy => "unhealthy",
            Unusable::NotInstalled => "not_installed",
            Unusable::CircuitOpen { .. } => "circuit_open",
        }
    }
}

/// What the last active check of a provider found.
#[derive(Debug, Clone)]
struct Checked {
    at: Instant,
    healthy: bool,
    /// Model ids the provider lists (when its answer lists models).
    installed: Option<Vec<String>>,
    error: Option<String>,
}

#[derive(Default)]
struct Inner {
    circuits: HashMap<(String, String), Circuit>,
    checks: HashMap<String, Checked>,
}

/// Shared by the gateway (admit/record), the admin API and the checker.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
}

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// May an attempt at `model` on `provider` go ahead now?
    pub fn admit(&self, model: &str, provider: &str, cfg: &Breaker, now: Instant) -> Admit {
        if cfg.failures == 0 {
            return Admit::Go { probe: false };
        }
        self.with(|i| match i.circuits.get_mut(&(model.to_string(), provider.to_string())) {
            Some(c) => c.admit(cfg, now, model, provider),
            None => Admit::Go { probe: false },
        })
    }

    /// The outcome of an attempt: `Err(reason)` for a failure that counts
    /// against the model (retryable statuses, timeouts, connection errors).
    pub fn record(&self, model: &str, provider: &str, cfg: &Breaker, outcome: Result<(), &'static str>, now: Instant) {
        if cfg.failures == 0 {
            return;
        }
        self.with(|i| i.circuits.entry((model.to_string(), provider.to_string())).or_default().record(cfg, outcome, now, model, provider))
    }

    /// Whether `model` (upstream id `id`, `label` in metrics and breakers)
    /// on `provider` can be tried now: its provider passes its health
    /// check, a local model is installed, its breaker is closed or due a
    /// probe. The one answer the attempt loop and readiness share;
    /// `take_probe` claims a due half-open probe (the attempt loop), else it
    /// only looks. `Ok(true)`: this try is the probe.
    pub fn usable(&self, provider: &Provider, id: Option<&str>, label: &str, breaker: &Breaker, now: Instant, take_probe: bool) -> Result<bool, Unusable> {
        if self.provider_healthy(&provider.name) == Some(false) {
            return Err(Unusable::Unhealthy);
        }
        if provider.local && id.is_some_and(|id| self.installed(&provider.name, id) == Some(false)) {
            return Err(Unusable::NotInstalled);
        }
        if !take_probe {
            return match self.is_open(label, &provider.name, breaker, now) {
                true => Err(Unusable::CircuitOpen { retry_in: Duration::ZERO }),
                false => Ok(false),
            };
        }
        match self.admit(label, &provider.name, breaker, now) {
            Admit::Go { probe } => Ok(probe),
            Admit::Skip { retry_in } => Err(Unusable::CircuitOpen { retry_in }),
        }
    }

    /// Whether the model would be skipped now (breaker open, no probe due).
    pub fn is_open(&self, model: &str, provider: &str, cfg: &Breaker, now: Instant) -> bool {
        cfg.failures > 0 && self.with(|i| i.circuits.get(&(model.to_string(), provider.to_string())).is_some_and(|c| c.is_open(cfg, now)))
    }

    /// `Some(false)` when the provider's last health check failed.
    pub fn provider_healthy(&self, provider: &str) -> Option<bool> {
        self.with(|i| i.checks.get(provider).map(|c| c.healthy))
    }

    /// `Some(false)` when the provider's last check listed models and `id`
    /// was not among them.
    pub fn installed(&self, provider: &str, id: &str) -> Option<bool> {
        self.with(|i| i.checks.get(provider).and_then(|c| c.installed.as_ref()).map(|ids| ids.iter().any(|m| m == id)))
    }

    fn checked(&self, provider: &str, c: Checked) {
        crate::metrics::provider_up(provider, c.healthy);
        let was = self.with(|i| i.checks.insert(provider.to_string(), c.clone())).map(|p| p.healthy);
        if was != Some(c.healthy) {
            match &c.error {
                Some(e) => tracing::warn!(provider, error = %e, "provider health check failed; its models are skipped until it passes"),
                None => tracing::info!(provider, installed = ?c.installed, "provider health check passed"),
            }
        }
    }

    fn due(&self, provider: &str, interval: Duration, now: Instant) -> bool {
        self.with(|i| i.checks.get(provider).is_none_or(|c| now.saturating_duration_since(c.at) >= interval))
    }

    /// Routes none of whose models can serve now (`/readyz`, the
    /// `route_down` alert): every one skipped for an open breaker, a failing
    /// provider health check, or (local) not installed; with each model and
    /// why.
    pub fn unservable(&self, snap: &Snapshot, now: Instant) -> Vec<(String, Vec<(String, &'static str)>)> {
        let why = |name: &str| match snap.models.get(name) {
            Some(m) => self.usable(&snap.providers[m.provider], Some(&m.id), &m.name, &m.breaker, now, false).err().map(Unusable::label),
            None => Some("unknown"),
        };
        snap.routes
            .iter()
            .filter_map(|r| {
                let planned: Vec<&str> = r.target.models().into_iter().chain(r.fallbacks.iter().map(String::as_str)).collect();
                let mut skipped = Vec::with_capacity(planned.len());
                for m in &planned {
                    skipped.push((m.to_string(), why(m)?));
                }
                (!planned.is_empty()).then(|| (r.name.clone(), skipped))
            })
            .collect()
    }

    /// `GET /admin/health`.
    pub fn report(&self, snap: &Snapshot, now: Instant) -> Value {
        self.with(|i| {
            let mut models: Vec<Value> = i.circuits.iter().map(|((model, provider), c)| c.report(model, provider, now)).collect();
            models.sort_by(|a, b| a["model"].as_str().cmp(&b["model"].as_str()));
            let providers: Vec<Value> = snap
                .providers
                .iter()
                .filter(|p| p.health_check.is_some())
                .map(|p| match i.checks.get(&p.name) {
                    Some(c) => json!({"provider": p.name, "healthy": c.healthy, "installed": c.installed, "error": c.error,
                                      "checked_ms_ago": now.saturating_duration_since(c.at).as_millis() as u64}),
                    None => json!({"provider": p.name, "healthy": null, "installed": null, "error": null, "checked_ms_ago": null}),
                })
                .collect();
            json!({"models": models, "providers": providers})
        })
    }
}

/// Model ids in a model-list answer: OpenAI-style `{"data": [{"id"}]}`,
/// Ollama `{"models": [{"name"|"model"}]}`, Gemini `{"models": [{"name":
/// "models/…"}]}`, Anthropic `{"data": [{"id"}]}`.
pub fn listed_models(body: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let items = v["data"].as_array().or(v["models"].as_array())?;
    Some(
        items
            .iter()
            .filter_map(|m| m["id"].as_str().or(m["name"].as_str()).or(m["model"].as_str()))
            .map(|id| id.strip_prefix("models/").unwrap_or(id).to_string())
            .collect(),
    )
}

/// Check one provider: GET its health path; healthy when it answers below
/// 500 within the timeout.
async fn check(connector: &Connector, p: &Provider, hc: &HealthCheck) -> Checked {
    let at = Instant::now();
    let fail = |error: String| Checked { at, healthy: false, installed: None, error: Some(error) };
    let Ok(mut req) = RequestHeader::build(http::Method::GET, hc.path.as_bytes(), Some(4)) else {
        return fail(format!("bad health_check path {}", hc.path));
    };
    let _ = req.insert_header("host", p.endpoint.authority.as_str());
    let _ = req.insert_header("accept-encoding", "identity");
    if let Auth::Inject { key: Some(k), .. } = &p.auth {
        let spec = p.kind.spec();
        let _ = req.insert_header(spec.auth_header, spec.auth_value(k.expose()));
        if let Some((name, value)) = spec.version_header {
            let _ = req.insert_header(name, value);
        }
    }
    let t = super::Timeouts { connect: hc.timeout, first_byte: hc.timeout, idle: hc.timeout, total: hc.timeout };
    let mut ex = match super::send(connector, &p.endpoint, &t, &req, &Bytes::new()).await {
        Ok(ex) => ex,
        Err(e) => return fail(format!("GET {}: {e}", hc.path)),
    };
    let status = ex.header().status.as_u16();
    let mut body = Vec::new();
    while let Ok(Some(c)) = ex.chunk().await {
        if body.len() + c.len() > 4 * 1024 * 1024 {
            break;
        }
        body.extend_from_slice(&c);
    }
    ex.finish(connector).await;
    if status >= 500 {
        return fail(format!("GET {} answered {status}", hc.path));
    }
    let installed = if status == 200 { listed_models(&body) } else { None };
    Checked { at, healthy: true, installed, error: None }
}

/// The background checker: every provider with a `health_check` is checked
/// at its interval, following config reloads.
pub struct Checker {
    pub state: Arc<arc_swap::ArcSwap<Snapshot>>,
    pub health: Health,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Checker {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let connector = Connector::new(None);
        loop {
            // Wake for the shortest interval configured (at most once a
            // second when no provider is checked, after a reload).
            let snap = self.state.load_full();
            let nap = snap.providers.iter().filter_map(|p| p.health_check.as_ref()).map(|h| h.interval / 4).min().unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(nap.clamp(Duration::from_millis(25), Duration::from_secs(1))) => {}
            }
            let snap = self.state.load_full();
            let now = Instant::now();
            // One after another; each is bounded by its timeout.
            for (p, hc) in snap.providers.iter().filter_map(|p| p.health_check.as_ref().map(|h| (p, h))) {
                if !self.health.due(&p.name, hc.interval, now) {
                    continue;
                }
                let c = check(&connector, p, hc).await;
                self.health.checked(&p.name, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Breaker {
        Breaker { failures: 3, failure_rate: 0.5, window: Duration::from_secs(60), min_requests: 10, cooldown: Duration::from_secs(30) }
    }

    #[test]
    fn opens_after_consecutive_failures_half_opens_after_the_cool_down_and_closes_on_success() {
        let h = Health::default();
        let c = cfg();
        let t0 = Instant::now();
        assert_eq!(h.admit("m", "p", &c, t0), Admit::Go { probe: false });
        h.record("m", "p", &c, Err("503"), t0);
        h.record("m", "p", &c, Ok(()), t0);
        // A success resets the consecutive count.
        for _ in 0..2 {
            h.record("m", "p", &c, Err("503"), t0);
        }
        assert_eq!(h.admit("m", "p", &c, t0), Admit::Go { probe: false });
        h.record("m", "p", &c, Err("429"), t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(h.admit("m", "p", &c, t1), Admit::Skip { retry_in: Duration::from_secs(20) });
        assert!(h.is_open("m", "p", &c, t1));
        // Cool-down over: exactly one probe goes through.
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(h.admit("m", "p", &c, t2), Admit::Go { probe: true });
        assert!(matches!(h.admit("m", "p", &c, t2), Admit::Skip { .. }));
        // The probe fails: open again for a whole cool-down.
        h.record("m", "p", &c, Err("timeout"), t2);
        assert_eq!(h.admit("m", "p", &c, t2 + Duration::from_secs(29)), Admit::Skip { retry_in: Duration::from_secs(1) });
        let t3 = t2 + Duration::from_secs(30);
        assert_eq!(h.admit("m", "p", &c, t3), Admit::Go { probe: true });
        h.record("m", "p", &c, Ok(()), t3);
        assert_eq!(h.admit("m", "p", &c, t3), Admit::Go { probe: false });
        assert!(!h.is_open("m", "p", &c, t3));
        let r = h.report(&crate::config::load_str(crate::config::EMBEDDED_DEFAULT, &|_| None).unwrap(), t3);
        assert_eq!(r["models"][0]["state"], "closed");
    }

    #[test]
    fn a_lost_probe_does_not_keep_the_breaker_half_open_forever() {
        let h = Health::default();
        let c = cfg();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record("m", "p", &c, Err("503"), t0);
        }
        let t1 = t0 + c.cooldown;
        assert_eq!(h.admit("m", "p", &c, t1), Admit::Go { probe: true });
        // The probe's client went away; after another cool-down a new probe is allowed.
        assert_eq!(h.admit("m", "p", &c, t1 + c.cooldown), Admit::Go { probe: true });
    }

    #[test]
    fn opens_on_the_failure_rate_within_the_window() {
        let h = Health::default();
        let c = Breaker { failures: 100, ..cfg() };
        let t0 = Instant::now();
        // Alternating: never 3 in a row, but 50 % over 10 attempts.
        for i in 0..9 {
            h.record("m", "p", &c, if i % 2 == 0 { Ok(()) } else { Err("500") }, t0);
        }
        assert_eq!(h.admit("m", "p", &c, t0), Admit::Go { probe: false });
        h.record("m", "p", &c, Err("500"), t0);
        assert!(h.is_open("m", "p", &c, t0));
        // Outcomes older than the window do not count.
        let h = Health::default();
        for _ in 0..5 {
            h.record("m", "p", &c, Err("500"), t0);
        }
        let later = t0 + c.window + Duration::from_secs(1);
        for _ in 0..5 {
            h.record("m", "p", &c, Ok(()), later);
        }
        h.record("m", "p", &c, Err("500"), later);
        assert!(!h.is_open("m", "p", &c, later));
    }

    #[test]
    fn failures_zero_turns_the_breaker_off() {
        let h = Health::default();
        let c = Breaker { failures: 0, ..cfg() };
        let t0 = Instant::now();
        for _ in 0..50 {
            h.record("m", "p", &c, Err("503"), t0);
        }
        assert_eq!(h.admit("m", "p", &c, t0), Admit::Go { probe: false });
    }

    #[test]
    fn model_lists_of_every_kind_are_read() {
        assert_eq!(listed_models(br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":"llama3.1:8b"}]}"#).unwrap(), vec!["gpt-4o", "llama3.1:8b"]);
        assert_eq!(listed_models(br#"{"models":[{"name":"llama3.1:8b","model":"llama3.1:8b"}]}"#).unwrap(), vec!["llama3.1:8b"]);
        assert_eq!(listed_models(br#"{"models":[{"name":"models/gemini-2.5-flash"}]}"#).unwrap(), vec!["gemini-2.5-flash"]);
        assert!(listed_models(b"ok").is_none());
    }
}

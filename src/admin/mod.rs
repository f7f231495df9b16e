//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (every listener accepts connections and every route
//! has a model that can serve),
//! `/admin/budgets` (spend against each budget), `/admin/usage` (cost,
//! tokens and savings by provider, model, app, route and split arm),
//! `/admin/overrides` (runtime route targets), `/admin/route` (explain a
//! routing decision), and the web dashboard at `/` with its own endpoints
//! (`dashboard`, `insight`, `feedback`). Mutating endpoints need
//! `Authorization: Bearer <token>` with the token from the variable named
//! by `admin_token_env`; with `admin_read_requires_token` the read-only ones
//! and `/metrics` do too (`/healthz` and `/readyz` stay open for probes).
//! The dashboard's data endpoints need the token whenever one is set.

mod dashboard;
mod feedback;
mod insight;
mod keys;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use crate::budget::Budgets;
use crate::config::Snapshot;
use crate::policy::explain;
use crate::policy::overrides::OverrideError;
use crate::policy::OverrideStore;
use crate::stats::Stats;
use crate::upstream::health::Health;

pub struct Admin {
    pub metrics: PrometheusHandle,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub overrides: Arc<OverrideStore>,
    pub budgets: Budgets,
    pub health: Health,
    pub cache: crate::cache::Cache,
    pub stats: &'static Stats,
    /// Virtual keys created at runtime (`/admin/keys`).
    pub keys: crate::keys::KeyStore,
}

type Reply = Response<Vec<u8>>;

/// The largest body `POST /admin/route` reads.
const EXPLAIN_MAX_BODY: usize = 1024 * 1024;

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = resp.body().len().to_string().parse() {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

fn json_reply(status: StatusCode, v: serde_json::Value) -> Reply {
    reply(status, "application/json", v.to_string().into_bytes())
}

/// A typed report as JSON (the same bytes as its `serde_json::Value`).
fn serialized_reply(status: StatusCode, v: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(v) {
        Ok(body) => reply(status, "application/json", body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render the report: {e}")),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(status, json!({"error": message.into()}))
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Equal length and bytes, without an early exit on the first difference.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Bytes, Reply> {
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(c)) if buf.len() + c.len() > limit => return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {limit} bytes"))),
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOverride {
    target: String,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    headers: indexmap::IndexMap<String, String>,
    body: serde_json::Value,
}

fn default_path() -> String {
    "/v1/chat/completions".into()
}

impl Admin {
    /// Routes none of whose models can serve now: every one skipped for an
    /// open breaker, a failing provider health check, or (local) not installed.
    fn unservable_routes(&self, snap: &Snapshot) -> Vec<String> {
        self.health.unservable(snap, Instant::now()).into_iter().map(|(route, _)| route).collect()
    }

    // The error is the reply itself, built at most once per admin call.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, snap: &Snapshot, session: &ServerSession) -> Result<(), Reply> {
        let Some((var, token)) = &snap.admin_token else {
            return Err(error(
                StatusCode::FORBIDDEN,
                "admin endpoints that need a token are disabled: set `admin_token_env: SOME_VAR` in the config and SOME_VAR in modelgate's environment",
            ));
        };
        let Some(token) = token else {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("admin endpoints that need a token are disabled: {var} (admin_token_env) is not set in modelgate's environment"),
            ));
        };
        let given = session.req_header().headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        match given {
            Some(g) if same_secret(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong admin token")),
            None => Err(error(StatusCode::UNAUTHORIZED, format!("send `Authorization: Bearer <token>` with the token from {var}"))),
        }
    }

    /// The dashboard's data endpoints: open like the other read-only ones
    /// when no admin token is set; with a token, they need it (even when
    /// `admin_read_requires_token` is off) — they list single requests, and
    /// the page asks for the token once. A token variable that is named but
    /// unset leaves them open on a loopback listener only.
    #[allow(clippy::result_large_err)]
    fn dashboard_access(&self, snap: &Snapshot, session: &ServerSession) -> Result<(), Reply> {
        match &snap.admin_token {
            None => Ok(()),
            Some((_, Some(_))) => self.authorize(snap, session),
            Some((_, None)) if snap.listen.admin.ip().is_loopback() => Ok(()),
            Some(_) => self.authorize(snap, session),
        }
    }

    fn list_overrides(&self, snap: &Snapshot) -> Reply {
        let list: Vec<serde_json::Value> = self
            .overrides
            .load()
            .iter()
            .map(|(route, o)| {
                let problem = crate::policy::overrides::check(snap, route, &o.target).err();
                json!({"route": route, "target": o.target, "set_at": o.set_at, "note": o.note, "active": problem.is_none(), "problem": problem})
            })
            .collect();
        json_reply(StatusCode::OK, json!({"overrides": list, "store": self.overrides.store_report()}))
    }

    async fn overrides(&self, session: &mut ServerSession, snap: &Snapshot, method: &Method, route: &str) -> Reply {
        if let Err(r) = self.authorize(snap, session) {
            return r;
        }
        if *method == Method::DELETE {
            return match self.overrides.remove(snap, route).await {
                Ok(true) => json_reply(StatusCode::OK, json!({"removed": route})),
                Ok(false) => error(StatusCode::NOT_FOUND, format!("route `{route}` has no override")),
                Err(e @ OverrideError::Unavailable(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        }
        let body = match read_body(session, 64 * 1024).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req: SetOverride = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("send a JSON body like {{\"target\": \"gpt-4o-mini\", \"note\": \"why\"}} ({e})")),
        };
        match self.overrides.set(snap, route, &req.target, req.note).await {
            Ok(o) => {
                tracing::info!(route, target = %o.target, "route override set");
                json_reply(StatusCode::OK, json!({"route": route, "target": o.target, "set_at": o.set_at, "note": o.note}))
            }
            Err(e @ OverrideError::Store(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(e @ OverrideError::Unavailable(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e @ OverrideError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    /// `DELETE /admin/cache[?model=M][&route=R]`: remove cached answers.
    async fn clear_cache(&self, session: &ServerSession, snap: &Snapshot) -> Reply {
        if let Err(r) = self.authorize(snap, session) {
            return r;
        }
        let query = session.req_header().uri.query().unwrap_or("");
        let arg = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        };
        let (model, route) = (arg("model"), arg("route"));
        match self.cache.clear(route.as_deref(), model.as_deref()).await {
            Ok(n) => {
                tracing::info!(deleted = n, model = ?model, route = ?route, "response cache cleared");
                json_reply(StatusCode::OK, json!({"deleted": n, "model": model, "route": route}))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot clear the response cache: {e}")),
        }
    }

    async fn route(&self, session: &mut ServerSession, snap: &Snapshot) -> Reply {
        // Unauthenticated: keep what one call can make modelgate buffer small.
        let body = match read_body(session, snap.max_body_bytes.min(EXPLAIN_MAX_BODY)).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let q: RouteQuery = match serde_json::from_slice(&body) {
            Ok(q) => q,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "send {{\"path\": \"/v1/chat/completions\", \"headers\": {{\"x-modelgate-app\": \"…\"}}, \"body\": {{…the model request…}}}} ({e})"
                    ),
                )
            }
        };
        let mut headers = http::HeaderMap::new();
        for (k, v) in &q.headers {
            match (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                (Ok(k), Ok(v)) => {
                    headers.append(k, v);
                }
                _ => return error(StatusCode::BAD_REQUEST, format!("`{k}: {v}` is not a valid header")),
            }
        }
        let request_body = Bytes::from(q.body.to_string());
        json_reply(StatusCode::OK, explain::explain(snap, &self.overrides.load(), &q.path, &headers, request_body))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Reply {
        let snap = self.state.load_full();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        // The dashboard's page and files hold no data (the page asks for
        // the token and sends it with every call), so a browser can load
        // them without one.
        if method == Method::GET {
            match path.as_str() {
                "/" | "/dashboard" | "/dashboard/" => return dashboard::page(),
                p => {
                    if let Some(name) = p.strip_prefix("/dashboard/") {
                        return dashboard::asset(name);
                    }
                }
            }
        }
        if snap.admin_read_requires_token && !matches!(path.as_str(), "/healthz" | "/readyz") {
            if let Err(r) = self.authorize(&snap, session) {
                return r;
            }
        }
        if path.starts_with("/dashboard/") {
            return error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} answers GET"));
        }
        if path == "/admin/keys" {
            return self.keys(session, &snap, &method, None).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/keys/") {
            let name = percent_encoding::percent_decode_str(rest).decode_utf8_lossy().into_owned();
            return self.keys(session, &snap, &method, Some(&name)).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/overrides/") {
            let route = percent_encoding::percent_decode_str(rest).decode_utf8_lossy().into_owned();
            return match method {
                Method::PUT | Method::DELETE => self.overrides(session, &snap, &method, &route).await,
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use PUT to set a route's override and DELETE to remove it"),
            };
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let mut text = crate::metrics::render(&self.metrics);
                self.budgets.render_metrics(&mut text);
                reply(StatusCode::OK, "text/plain; version=0.0.4", text.into_bytes())
            }
            (Method::GET, "/admin/budgets") => serialized_reply(StatusCode::OK, &self.budgets.report().await),
            (Method::GET, "/admin/usage") => match crate::budget::UsageQuery::parse(session.req_header().uri.query().unwrap_or("")) {
                Ok(q) => serialized_reply(StatusCode::OK, &self.budgets.usage(q)),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            (Method::GET, "/readyz") => {
                let unservable = self.unservable_routes(&snap);
                let listening = crate::server::listen::listening();
                let ready = listening && !snap.providers.is_empty() && unservable.is_empty();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                json_reply(
                    status,
                    json!({"ready": ready, "listening": listening, "providers": snap.providers.len(), "models": snap.models.len(), "routes": snap.routes.len(), "unservable_routes": unservable}),
                )
            }
            (Method::GET, "/admin/health") => {
                let mut report = self.health.report(&snap, Instant::now());
                report["fallbacks"] = insight::fallbacks(&crate::metrics::render(&self.metrics));
                json_reply(StatusCode::OK, report)
            }
            (Method::GET, "/admin/cache") => serialized_reply(StatusCode::OK, &self.cache.report(&snap)),
            (Method::DELETE, "/admin/cache") => self.clear_cache(session, &snap).await,
            (Method::GET, "/admin/requests" | "/admin/series" | "/admin/traffic" | "/admin/experiments") => {
                if let Err(r) = self.dashboard_access(&snap, session) {
                    return r;
                }
                let query = session.req_header().uri.query().unwrap_or("").to_string();
                self.insight(&snap, &path, &query)
            }
            (Method::POST, "/admin/feedback") => self.feedback(session, &snap).await,
            (Method::GET, "/admin/overrides") => self.list_overrides(&snap),
            (Method::POST, "/admin/route") => self.route(session, &snap).await,
            (
                _,
                "/metrics" | "/healthz" | "/readyz" | "/admin/overrides" | "/admin/budgets" | "/admin/usage" | "/admin/health" | "/" | "/dashboard"
                | "/dashboard/" | "/admin/requests" | "/admin/series" | "/admin/traffic" | "/admin/experiments",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} answers GET")),
            (_, "/admin/route" | "/admin/feedback") => error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} answers POST")),
            (_, "/admin/cache") => error(StatusCode::METHOD_NOT_ALLOWED, "/admin/cache answers GET (stats) and DELETE (clear; ?model=M and/or ?route=R)"),
            (_, other) => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no admin endpoint {other}; try / (the dashboard), /metrics, /healthz, /readyz, /admin/health, /admin/budgets, /admin/usage, /admin/overrides, /admin/keys, /admin/route, /admin/requests, /admin/series, /admin/traffic, /admin/experiments, /admin/feedback"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer t0k"), Some("t0k"));
        assert_eq!(bearer("bearer t0k"), Some("t0k"));
        assert_eq!(bearer("BEARER  t0k "), Some("t0k"));
        assert_eq!(bearer("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearert0k"), None);
    }
}

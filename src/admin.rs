//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (a config is loaded and at least one provider exists).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::config::Snapshot;

pub struct Admin {
    pub metrics: PrometheusHandle,
    pub state: Arc<ArcSwap<Snapshot>>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
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

fn json_reply(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let head = session.req_header();
        if head.method != http::Method::GET {
            return json_reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "the admin endpoints answer GET"}));
        }
        match head.uri.path() {
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", crate::metrics::render(&self.metrics).into_bytes()),
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let snap = self.state.load();
                let ready = !snap.providers.is_empty();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                json_reply(status, json!({"ready": ready, "providers": snap.providers.len(), "models": snap.models.len(), "routes": snap.routes.len()}))
            }
            other => json_reply(StatusCode::NOT_FOUND, json!({"error": format!("no admin endpoint {other}; try /metrics, /healthz or /readyz")})),
        }
    }
}

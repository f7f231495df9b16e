//! The telemetry background service: finished requests from the queue
//! become spans, batched (`telemetry.batch_size` spans, or what waited
//! `telemetry.batch_delay_ms`) and exported with `opentelemetry-otlp`'s
//! HTTP/protobuf exporter. Its HTTP client is Pingora's connector (the one
//! modelgate calls providers with: same TLS stack and roots), so no second
//! HTTP stack or runtime is linked in. The queue is drained on a timer
//! (every 50 ms, or `batch_delay_ms` if shorter), so a request never wakes
//! the service. One export at a time; while it runs the queue fills, and past `telemetry.queue` the request path drops
//! (never waits). A failed export is dropped and counted, not retried:
//! traces are best effort. The exporter follows reloads of `telemetry:`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;
use tokio::sync::{mpsc, oneshot};

use super::{spans, Msg};
use crate::config::{Snapshot, Telemetry};
use crate::upstream::endpoint::Endpoint;
use crate::upstream::{self, Connector, Timeouts};

/// The queue's receiving end (from [`super::channel`]).
pub struct Receiver(pub(super) mpsc::Receiver<Msg>);

pub struct Service {
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Taken when the service starts.
    pub queue: std::sync::Mutex<Option<Receiver>>,
}

/// Export what is queued now and wait (up to `limit`) until it was sent:
/// at shutdown, after the last request was accounted for.
pub async fn flush(limit: Duration) {
    let Some(tx) = super::QUEUE.get() else { return };
    let (ack, done) = oneshot::channel();
    let _ = tokio::time::timeout(limit, async {
        if tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    })
    .await;
}

/// The running exporter and the config it was built from.
struct Current {
    cfg: Arc<Telemetry>,
    exporter: opentelemetry_otlp::SpanExporter,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Service {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        // Runs until the process ends: requests still finish (and are
        // flushed by the drain) after the shutdown signal.
        let Some(Receiver(mut rx)) = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let connector = Arc::new(Connector::new(None));
        let scope = InstrumentationScope::builder("modelgate").with_version(env!("CARGO_PKG_VERSION")).build();
        let mut current: Option<Current> = None;
        let mut batch: Vec<SpanData> = Vec::new();
        let mut oldest: Option<tokio::time::Instant> = None;
        let mut acks = Vec::new();
        loop {
            let cfg = self.state.load().telemetry.clone();
            let (delay, size) = cfg.as_ref().map_or((Duration::from_secs(1), 512), |c| (c.batch_delay, c.batch_size));
            // Woken by a timer, never by each request: a wake-up per
            // request costs a cross-thread wake on the request path.
            tokio::time::sleep(delay.min(DRAIN_EVERY)).await;
            loop {
                match rx.try_recv() {
                    Ok(Msg::Request(f)) => {
                        batch.extend(spans::build(*f, &scope));
                        oldest.get_or_insert_with(tokio::time::Instant::now);
                    }
                    Ok(Msg::Flush(ack)) => acks.push(ack),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let due = oldest.is_some_and(|t| t.elapsed() >= delay) || batch.len() >= size || !acks.is_empty();
            if !due {
                continue;
            }
            oldest = None;
            while !batch.is_empty() {
                let take = batch.len().min(size);
                let rest = batch.split_off(take);
                let now = std::mem::replace(&mut batch, rest);
                export(&mut current, cfg.as_ref(), &connector, now).await;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
    }
}

/// How often the queue is drained (at most; `batch_delay_ms` if shorter).
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Export one batch (with the exporter of `cfg`, rebuilt when it changed;
/// with the one running when telemetry was just turned off).
async fn export(current: &mut Option<Current>, cfg: Option<&Arc<Telemetry>>, connector: &Arc<Connector>, batch: Vec<SpanData>) {
    let n = batch.len() as u64;
    if let Some(cfg) = cfg {
        if !current.as_ref().is_some_and(|c| c.cfg.same_exporter(cfg)) {
            *current = match build(cfg, connector) {
                Ok(exporter) => Some(Current { cfg: cfg.clone(), exporter }),
                Err(e) => {
                    tracing::warn!(collector = %cfg.shown(), error = %e, "the OTLP trace exporter could not be built");
                    None
                }
            };
        }
    }
    let Some(c) = current.as_ref() else {
        crate::metrics::trace_spans_dropped("export_failed", n);
        return;
    };
    match c.exporter.export(batch).await {
        Ok(()) => crate::metrics::trace_spans_exported(n),
        Err(e) => {
            crate::metrics::trace_spans_dropped("export_failed", n);
            tracing::warn!(collector = %c.cfg.shown(), spans = n, error = %e, "trace export failed; these spans are dropped");
        }
    }
}

fn build(cfg: &Arc<Telemetry>, connector: &Arc<Connector>) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let headers: HashMap<String, String> = cfg.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
    let client = Client { connector: connector.clone(), endpoint: cfg.endpoint.clone(), path: cfg.path.clone(), timeout: cfg.timeout };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(format!("{}{}", cfg.shown(), cfg.path))
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(cfg.timeout)
        .with_headers(headers)
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .map_err(|e| e.to_string())?;
    exporter.set_resource(
        &Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    Ok(exporter)
}

/// The exporter's HTTP client: Pingora's connector to the collector.
struct Client {
    connector: Arc<Connector>,
    endpoint: Arc<Endpoint>,
    path: String,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("authority", &self.endpoint.authority).finish_non_exhaustive()
    }
}

/// Answers beyond this are cut (a collector answers a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = RequestHeader::build("POST", self.path.as_bytes(), Some(parts.headers.len() + 4))?;
        for (k, v) in parts.headers.iter() {
            req.insert_header(k.clone(), v.clone())?;
        }
        req.insert_header("host", self.endpoint.authority.as_str())?;
        req.insert_header("content-length", body.len().to_string())?;
        req.insert_header("user-agent", concat!("modelgate/", env!("CARGO_PKG_VERSION")))?;
        let t = self.timeout;
        let limits = Timeouts { connect: t.min(Duration::from_secs(5)), first_byte: t, idle: t, total: t };
        let mut ex = upstream::send(&self.connector, &self.endpoint, &limits, &req, &body).await.map_err(|e| e.to_string())?;
        let status = ex.header().status;
        let mut answer = Vec::new();
        loop {
            match ex.chunk().await {
                Ok(Some(c)) if answer.len() < MAX_ANSWER => answer.extend_from_slice(&c),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        ex.finish(&self.connector).await;
        let mut resp = Response::new(Bytes::from(answer));
        *resp.status_mut() = status;
        Ok(resp)
    }
}

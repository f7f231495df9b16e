//! Posting alerts to sinks: one worker per sink with its own queue, so a
//! sink that is down delays only its own alerts. A failed try (connection
//! refused, timeout, 5xx, 408, 429) is retried after `backoff` × 2^(n-1),
//! capped at `max_backoff`, until `give_up_after`; a 4xx other than those
//! means the sink will not take it (revoked webhook, bad token) and drops
//! it at once. Every failed try is counted and logged.
//!
//! The HTTP client is Pingora's connector (the one modelgate calls
//! providers with: same TLS stack and roots), through `upstream::send`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::upstream::Connector;
use bytes::Bytes;
use pingora::http::RequestHeader;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{payload, Alert, Event};
use crate::config::{Alerts, Delivery, Sink, SinkKind};
use crate::upstream::{self, Timeouts};

/// Why a try failed.
#[derive(Debug)]
pub struct Failed {
    /// Another try may succeed.
    pub retry: bool,
    pub message: String,
}

/// An alert on its way to one sink.
struct Pending {
    alert: Arc<Alert>,
    sink: Arc<Sink>,
    delivery: Delivery,
    body: Bytes,
    since: Instant,
    tries: u32,
    next: Instant,
}

/// The body `sink` receives for `a`.
fn body_for(sink: &Sink, a: &Alert) -> Bytes {
    Bytes::from(match sink.kind {
        SinkKind::Webhook => payload::generic(a),
        SinkKind::Slack => payload::slack(a),
    })
}

/// POST `body` to `sink` once; the status on a 2xx.
pub async fn post(connector: &Connector, sink: &Sink, body: &Bytes) -> Result<u16, Failed> {
    let fail = |retry, message: String| Failed { retry, message };
    let mut req = RequestHeader::build("POST", sink.path.as_bytes(), None).map_err(|e| fail(false, e.to_string()))?;
    let mut set = |k: &str, v: &str| req.insert_header(k.to_string(), v).map(|_| ()).map_err(|e| fail(false, format!("header {k}: {e}")));
    set("host", &sink.endpoint.authority)?;
    set("content-type", "application/json")?;
    set("content-length", &body.len().to_string())?;
    set("user-agent", concat!("modelgate/", env!("CARGO_PKG_VERSION")))?;
    for (k, v) in &sink.headers {
        set(k, v.expose())?;
    }
    let t = Timeouts { connect: sink.timeout.min(Duration::from_secs(5)), first_byte: sink.timeout, idle: sink.timeout, total: sink.timeout };
    let mut ex = upstream::send(connector, &sink.endpoint, &t, &req, body).await.map_err(|e| fail(true, e.to_string()))?;
    let status = ex.header().status.as_u16();
    let mut answer = Vec::new();
    loop {
        match ex.chunk().await {
            Ok(Some(c)) if answer.len() < 300 => answer.extend_from_slice(&c),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    ex.finish(connector).await;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let said = String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim().to_string();
    Err(fail(matches!(status, 408 | 429) || status >= 500, format!("answered {status}: {said}")))
}

/// The delivery workers, one per sink name.
pub struct Outbox {
    connector: Arc<Connector>,
    workers: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

impl Outbox {
    pub fn new() -> Self {
        Outbox { connector: Arc::new(Connector::new(None)), workers: Mutex::new(HashMap::new()) }
    }

    /// Queue `alert` for every sink of `cfg` that takes its rule.
    pub fn send(&self, alert: &Arc<Alert>, cfg: &Alerts) {
        let rule = crate::config::RuleKind::parse(alert.rule);
        let now = Instant::now();
        for sink in cfg.sinks.iter().filter(|s| rule.is_none_or(|r| s.wants(r))) {
            let p = Pending { alert: alert.clone(), sink: sink.clone(), delivery: cfg.delivery, body: body_for(sink, alert), since: now, tries: 0, next: now };
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            let tx = workers.entry(sink.name.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(cfg.delivery.queue.max(1));
                tokio::spawn(worker(rx, self.connector.clone()));
                tx
            });
            if let Err(e) = tx.try_send(p) {
                let p = match e {
                    mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
                };
                crate::metrics::alert_dropped(&p.sink.name, "queue_full");
                tracing::error!(sink = %p.sink.name, id = %p.alert.id, "alert dropped: the sink's queue is full (alerts.delivery.queue)");
            }
        }
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

/// One sink's worker: alerts in order, the head retried until it is
/// delivered, rejected or too old.
async fn worker(mut rx: mpsc::Receiver<Pending>, connector: Arc<Connector>) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    loop {
        let Some(head) = queue.front() else {
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => return,
            }
            continue;
        };
        if Instant::now() < head.next {
            let next = head.next;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                p = rx.recv() => match p {
                    Some(p) => push(&mut queue, p),
                    None => return,
                },
            }
            continue;
        }
        while let Ok(p) = rx.try_recv() {
            push(&mut queue, p);
        }
        let Some(mut p) = queue.pop_front() else { continue };
        p.tries += 1;
        match post(&connector, &p.sink, &p.body).await {
            Ok(_) => {
                crate::metrics::alert_sent(&p.sink.name, p.alert.rule);
                if p.tries > 1 {
                    tracing::info!(sink = %p.sink.name, id = %p.alert.id, tries = p.tries, "alert delivered after the sink failed before");
                } else {
                    tracing::debug!(sink = %p.sink.name, id = %p.alert.id, "alert delivered");
                }
            }
            Err(f) => {
                crate::metrics::alert_failure(&p.sink.name);
                let wait = p.delivery.backoff.saturating_mul(1 << (p.tries - 1).min(20)).min(p.delivery.max_backoff);
                if !f.retry {
                    crate::metrics::alert_dropped(&p.sink.name, "rejected");
                    tracing::error!(sink = %p.sink.name, url = %p.sink.shown(), id = %p.alert.id, error = %f.message, "alert dropped: the sink refused it");
                } else if p.since.elapsed() + wait > p.delivery.give_up_after {
                    crate::metrics::alert_dropped(&p.sink.name, "expired");
                    tracing::error!(sink = %p.sink.name, url = %p.sink.shown(), id = %p.alert.id, tries = p.tries, error = %f.message, "alert dropped: the sink kept failing for alerts.delivery.give_up_after_s");
                } else {
                    tracing::warn!(sink = %p.sink.name, url = %p.sink.shown(), id = %p.alert.id, tries = p.tries, retry_in_ms = wait.as_millis() as u64, error = %f.message, "alert delivery failed; retrying");
                    p.next = Instant::now() + wait;
                    queue.push_front(p);
                }
            }
        }
    }
}

/// Add to a sink's queue; a full queue loses its oldest alert.
fn push(queue: &mut VecDeque<Pending>, p: Pending) {
    let cap = p.delivery.queue.max(1);
    while queue.len() >= cap {
        if let Some(old) = queue.pop_front() {
            crate::metrics::alert_dropped(&old.sink.name, "queue_full");
            tracing::error!(sink = %old.sink.name, id = %old.alert.id, "alert dropped: the sink's queue is full (alerts.delivery.queue)");
        }
    }
    queue.push_back(p);
}

/// `modelgate alerts test`: one test alert to every sink, one try each.
/// Returns (sink, its URL as shown, the result) per sink.
pub async fn send_test(cfg: &Alerts) -> Vec<(String, String, Result<u16, String>)> {
    let connector = Connector::new(None);
    let alert = Alert::new(&Event::Test, cfg, jiff::Timestamp::now());
    let mut out = Vec::new();
    for sink in &cfg.sinks {
        let r = post(&connector, sink, &body_for(sink, &alert)).await.map_err(|f| f.message);
        out.push((sink.name.clone(), sink.shown(), r));
    }
    out
}

//! One JSON line per request: who, what was asked, what served it, tokens,
//! cost, timings. Never prompt text, never keys.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::config::AccessLog;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Record {
    pub ts: String,
    /// Returned to the client in `x-modelgate-request-id`.
    pub request_id: crate::request_id::RequestId,
    pub method: String,
    pub path: String,
    pub dialect: &'static str,
    pub api: &'static str,
    pub app: String,
    pub task: Option<String>,
    pub requested_model: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub route: String,
    /// Routing mode the decision used.
    pub mode: &'static str,
    /// Complexity score (model calls only).
    pub complexity: Option<u8>,
    /// Estimated input tokens, when routing needed to count them.
    pub est_input_tokens: Option<u64>,
    /// Split arm the request landed in.
    pub arm: Option<String>,
    /// Shadow mode: the model routing would have chosen.
    pub shadow_model: Option<String>,
    /// The budget whose `on_exceed: downgrade` moved this request.
    pub downgraded_by: Option<String>,
    pub status: u16,
    pub attempts: usize,
    pub stream: bool,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    /// Whether the provider reported usage (false: tokens and cost are 0).
    pub usage_reported: bool,
    pub cost_usd: Option<f64>,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub overhead_ms: f64,
    /// Failure reason, e.g. `first_byte_timeout`, `client_closed`.
    pub error: Option<String>,
    /// What the response cache did (`hit`, `miss`, `bypass`), when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// A hit: the upstream cost it saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_saved_usd: Option<f64>,
    /// The OpenTelemetry trace id (32 hex digits; with `telemetry:` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Answer checks escalated the request: the hops
    /// (`gpt-4o-mini→gpt-4o:schema_mismatch`, comma-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated: Option<String>,
    /// What the discarded answers cost (included in no other figure here:
    /// tokens and `cost_usd` are the delivered answer's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_cost_usd: Option<f64>,
    /// The delivered answer failed this check (no stronger model could
    /// serve, or `max_escalations` was reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_failed: Option<&'static str>,
    /// The virtual key's name and its hash's first 8 hex digits (never
    /// the key itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// The end user (from the key, `x-modelgate-user` or the body), when
    /// a per-user budget or rate limit is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Models skipped because they were over a rate limit counted per
    /// model (comma-separated, in the order tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<String>,
}

impl Record {
    /// The record as one JSON object, the same bytes `serde_json` writes
    /// for it (a unit test holds them equal), without serde: field names
    /// are written as they are and values escaped only when they need it
    /// (serde_json escapes ~60 strings per line byte by byte, ~9k
    /// instructions of a ~219k request).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut j = crate::jsonline::Json::new(out);
        j.str("ts", &self.ts);
        j.str("request_id", std::str::from_utf8(&self.request_id.hex()).unwrap_or_default());
        j.str("method", &self.method);
        j.str("path", &self.path);
        j.str("dialect", self.dialect);
        j.str("api", self.api);
        j.str("app", &self.app);
        j.opt_str("task", self.task.as_deref());
        j.opt_str("requested_model", self.requested_model.as_deref());
        j.opt_str("model", self.model.as_deref());
        j.opt_str("provider", self.provider.as_deref());
        j.str("route", &self.route);
        j.str("mode", self.mode);
        j.opt_num("complexity", self.complexity.map(u64::from));
        j.opt_num("est_input_tokens", self.est_input_tokens);
        j.opt_str("arm", self.arm.as_deref());
        j.opt_str("shadow_model", self.shadow_model.as_deref());
        j.opt_str("downgraded_by", self.downgraded_by.as_deref());
        j.num("status", self.status.into());
        j.num("attempts", self.attempts as u64);
        j.raw("stream", if self.stream { "true" } else { "false" });
        j.num("input_tokens", self.input_tokens);
        j.num("cached_input_tokens", self.cached_input_tokens);
        j.num("cache_write_tokens", self.cache_write_tokens);
        j.num("output_tokens", self.output_tokens);
        j.raw("usage_reported", if self.usage_reported { "true" } else { "false" });
        j.opt_float("cost_usd", self.cost_usd);
        j.float("duration_ms", self.duration_ms);
        j.opt_float("upstream_ms", self.upstream_ms);
        j.float("overhead_ms", self.overhead_ms);
        j.opt_str("error", self.error.as_deref());
        // (Left out when unset.)
        if let Some(v) = self.cache {
            j.str("cache", v);
        }
        if let Some(v) = self.cache_saved_usd {
            j.float("cache_saved_usd", v);
        }
        if let Some(v) = &self.trace_id {
            j.str("trace_id", v);
        }
        if let Some(v) = &self.escalated {
            j.str("escalated", v);
        }
        if let Some(v) = self.escalation_cost_usd {
            j.float("escalation_cost_usd", v);
        }
        if let Some(v) = self.check_failed {
            j.str("check_failed", v);
        }
        for (k, v) in [("key", &self.key), ("key_hash", &self.key_hash), ("user", &self.user), ("rate_limited", &self.rate_limited)] {
            if let Some(v) = v {
                j.str(k, v);
            }
        }
        j.end();
    }
}

/// Lines are batched: a request appends its line to a buffer, which is
/// written out within [`FLUSH_AFTER`] of its first line (by one flusher
/// thread that sleeps while nothing is pending), at once when it passes
/// [`FLUSH_BYTES`], and at shutdown ([`flush`]). No request waits for a
/// write(2) of its own.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
const FLUSH_BYTES: usize = 64 * 1024;

/// Writes records to stdout or a file, following config reloads. One per
/// process ([`logger`]).
pub struct AccessLogger {
    sink: Mutex<Sink>,
    pending: Condvar,
}

struct Sink {
    target: AccessLog,
    file: Option<File>,
    buf: Vec<u8>,
    flusher: bool,
}

static LOGGER: OnceLock<AccessLogger> = OnceLock::new();

/// The process's access logger.
pub fn logger() -> &'static AccessLogger {
    LOGGER.get_or_init(|| AccessLogger {
        sink: Mutex::new(Sink { target: AccessLog::Off, file: None, buf: Vec::new(), flusher: false }),
        pending: Condvar::new(),
    })
}

/// Write out what is buffered (at shutdown).
pub fn flush() {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut sink) = l.sink.lock() {
            sink.write_out();
        }
    }
}

thread_local! {
    /// Each thread's line, reused.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AccessLogger {
    pub fn write(&'static self, target: &AccessLog, rec: &Record) {
        if *target == AccessLog::Off {
            return;
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            rec.write_json(line);
            line.push(b'\n');
            let Ok(mut sink) = self.sink.lock() else { return };
            if sink.target != *target {
                sink.write_out();
                sink.open(target);
            }
            let was_empty = sink.buf.is_empty();
            sink.buf.extend_from_slice(line);
            if sink.buf.len() >= FLUSH_BYTES {
                sink.write_out();
            } else if was_empty {
                if !sink.flusher {
                    sink.flusher = std::thread::Builder::new().name("access-log".into()).spawn(move || self.flusher()).is_ok();
                }
                self.pending.notify_one();
            }
        });
    }

    /// Sleeps until a line is pending, gives the batch [`FLUSH_AFTER`] to
    /// fill, writes it out.
    fn flusher(&self) {
        loop {
            let Ok(sink) = self.sink.lock() else { return };
            let Ok(sink) = self.pending.wait_while(sink, |s| s.buf.is_empty()) else { return };
            drop(sink);
            std::thread::sleep(FLUSH_AFTER);
            match self.sink.lock() {
                Ok(mut sink) => sink.write_out(),
                Err(_) => return,
            }
        }
    }
}

impl Sink {
    fn open(&mut self, target: &AccessLog) {
        self.file = match target {
            AccessLog::File(p) => match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "cannot open access log; writing to stdout");
                    None
                }
            },
            _ => None,
        };
        self.target = target.clone();
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let res = match self.file.as_mut() {
            Some(f) => f.write_all(&self.buf),
            None => std::io::stdout().lock().write_all(&self.buf),
        };
        self.buf.clear();
        if let Err(e) = res {
            tracing::warn!(error = %e, "access log write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_line(r: &Record) -> String {
        serde_json::to_string(r).unwrap()
    }

    fn own_line(r: &Record) -> String {
        let mut out = Vec::new();
        r.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_line_is_what_serde_json_writes() {
        let bare = Record::default();
        assert_eq!(own_line(&bare), serde_line(&bare));
        let full = Record {
            ts: "2026-12-02T04:40:00.123Z".into(),
            request_id: crate::request_id::RequestId::parse("00ff00ff00ff00ff").unwrap(),
            method: "POST".into(),
            path: "/v1/chat/completions?x=\"q\"\\\u{1}é".into(),
            dialect: "openai",
            api: "chat",
            app: "billing\nteam".into(),
            task: Some("extraction".into()),
            requested_model: Some("gpt-4o".into()),
            model: Some("gpt-4o-mini".into()),
            provider: Some("openai".into()),
            route: "mini".into(),
            mode: "balanced",
            complexity: Some(7),
            est_input_tokens: Some(1234),
            arm: Some("b".into()),
            shadow_model: Some("gpt-5".into()),
            downgraded_by: Some("daily".into()),
            status: 200,
            attempts: 2,
            stream: true,
            input_tokens: 1200,
            cached_input_tokens: 200,
            cache_write_tokens: 3,
            output_tokens: 300,
            usage_reported: true,
            cost_usd: Some(0.0123456789),
            duration_ms: 12.5,
            upstream_ms: Some(f64::NAN),
            overhead_ms: 0.1 + 0.2,
            error: Some("client_closed".into()),
            cache: Some("miss"),
            cache_saved_usd: Some(1e-12),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            escalated: Some("gpt-4o-mini→gpt-4o:schema_mismatch".into()),
            escalation_cost_usd: Some(0.5),
            check_failed: Some("refusal"),
            key: Some("alice".into()),
            key_hash: Some("3b1f09aa".into()),
            user: Some("u\t1".into()),
            rate_limited: Some("gpt-a,gpt-b".into()),
        };
        assert_eq!(own_line(&full), serde_line(&full));
    }
}

//! One JSON line per request: who, what was asked, what served it, tokens,
//! cost, timings. Never prompt text, never keys.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::AccessLog;

#[derive(Debug, Default, Serialize)]
pub struct Record {
    pub ts: String,
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
}

/// Writes records to stdout or a file, following config reloads.
pub struct AccessLogger {
    sink: Mutex<(AccessLog, Option<File>)>,
}

impl Default for AccessLogger {
    fn default() -> Self {
        Self { sink: Mutex::new((AccessLog::Off, None)) }
    }
}

impl AccessLogger {
    pub fn write(&self, target: &AccessLog, rec: &Record) {
        if *target == AccessLog::Off {
            return;
        }
        let Ok(mut line) = serde_json::to_vec(rec) else { return };
        line.push(b'\n');
        let Ok(mut sink) = self.sink.lock() else { return };
        if sink.0 != *target {
            sink.1 = match target {
                AccessLog::File(p) => match OpenOptions::new().create(true).append(true).open(p) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::error!(path = %p.display(), error = %e, "cannot open access log; writing to stdout");
                        None
                    }
                },
                _ => None,
            };
            sink.0 = target.clone();
        }
        let res = match sink.1.as_mut() {
            Some(f) => f.write_all(&line),
            None => std::io::stdout().lock().write_all(&line),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "access log write failed");
        }
    }
}

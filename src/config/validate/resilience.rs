//! Validation of `retry:`, `breaker:`, per-model timeouts and provider
//! `health_check:`.

use std::time::Duration;

use super::super::raw::{RawBreaker, RawHealthCheck, RawRetry};
use super::Ctx;
use crate::config::*;
use crate::dialect::Dialect;

/// Check the fields a `retry:` block sets (at `path`).
pub(super) fn retry_patch(cx: &mut Ctx, path: &str, raw: &RawRetry) {
    if let Some(n) = raw.max_attempts {
        if !(1..=10).contains(&n) {
            cx.err(format!("{path}.max_attempts"), format!("must be between 1 and 10 (tries of one model before the next), got {n}"));
        }
    }
    for (field, v) in [("backoff_ms", raw.backoff_ms), ("max_backoff_ms", raw.max_backoff_ms), ("max_retry_after_ms", raw.max_retry_after_ms)] {
        if v.is_some_and(|v| v > 600_000) {
            cx.err(format!("{path}.{field}"), "must be at most 600000 (10 minutes)");
        }
    }
    for (i, s) in raw.on_status.iter().flatten().enumerate() {
        if !(400..=599).contains(s) {
            cx.err(
                format!("{path}.on_status[{i}]"),
                format!("{s} is not an error status; list 4xx/5xx statuses that should retry or fall back (default 408, 429, 500, 502, 503, 504, 529)"),
            );
        }
    }
}

/// The global `retry:`.
pub(super) fn retry_of(cx: &mut Ctx, raw: Option<RawRetry>) -> Retry {
    let raw = raw.unwrap_or_default();
    retry_patch(cx, "retry", &raw);
    Retry::default().with(&raw)
}

/// `breaker:` over `base` (the global one for models, defaults globally).
pub(super) fn breaker_of(cx: &mut Ctx, path: &str, raw: Option<&RawBreaker>, base: Breaker) -> Breaker {
    let Some(raw) = raw else { return base };
    if raw.failure_rate.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
        cx.err(format!("{path}.failure_rate"), "must be a share between 0 (exclusive) and 1, e.g. 0.5");
    }
    for (field, v) in [("window_ms", raw.window_ms), ("cooldown_ms", raw.cooldown_ms)] {
        if v == Some(0) {
            cx.err(format!("{path}.{field}"), "must be greater than 0 milliseconds");
        }
    }
    let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
    Breaker {
        failures: raw.failures.unwrap_or(base.failures),
        failure_rate: raw.failure_rate.unwrap_or(base.failure_rate),
        window: ms(raw.window_ms, base.window),
        min_requests: raw.min_requests.unwrap_or(base.min_requests),
        cooldown: ms(raw.cooldown_ms, base.cooldown),
    }
}

/// Timeouts from four optional `*_ms` fields over `base`.
pub(super) fn timeouts_of(cx: &mut Ctx, path: &str, fields: [Option<u64>; 4], base: Timeouts) -> Timeouts {
    let names = ["connect_timeout_ms", "first_byte_timeout_ms", "idle_timeout_ms", "total_timeout_ms"];
    let mut ms = |i: usize, d: Duration| match fields[i] {
        Some(0) => {
            cx.err(format!("{path}.{}", names[i]), "must be greater than 0 milliseconds");
            d
        }
        Some(v) => Duration::from_millis(v),
        None => d,
    };
    Timeouts { connect: ms(0, base.connect), first_byte: ms(1, base.first_byte), idle: ms(2, base.idle), total: ms(3, base.total) }
}

/// The provider defaults: 3 s connect, 60 s to the first byte, 30 s idle,
/// 10 minutes in all.
pub(super) const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(3_000),
    first_byte: Duration::from_millis(60_000),
    idle: Duration::from_millis(30_000),
    total: Duration::from_millis(600_000),
};

/// A provider's `health_check:`; the default path lists models.
pub(super) fn health_check_of(cx: &mut Ctx, path: &str, raw: Option<RawHealthCheck>, kind: Dialect, base_path: &str) -> Option<HealthCheck> {
    let raw = raw?;
    let path_default = kind.spec().health_path(base_path);
    let check_path = raw.path.unwrap_or(path_default);
    if !check_path.starts_with('/') {
        cx.err(
            format!("{path}.health_check.path"),
            format!("`{check_path}` must start with / (a path from the provider's host root, e.g. /v1/models or /api/tags)"),
        );
    }
    for (field, v) in [("interval_ms", raw.interval_ms), ("timeout_ms", raw.timeout_ms)] {
        if v == Some(0) {
            cx.err(format!("{path}.health_check.{field}"), "must be greater than 0 milliseconds");
        }
    }
    Some(HealthCheck {
        path: check_path,
        interval: Duration::from_millis(raw.interval_ms.unwrap_or(30_000)),
        timeout: Duration::from_millis(raw.timeout_ms.unwrap_or(2_000)),
    })
}

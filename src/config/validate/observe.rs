//! Validation of `metrics:` and `alerts:`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::super::raw::{RawAlerts, RawDelivery, RawMetrics, RawRule, RawSink, RawTelemetry};
use super::Ctx;
use crate::config::*;
use crate::upstream::endpoint::Endpoint;

/// `metrics:`, with every app and task name the config itself uses.
pub(super) fn metric_labels_of(cx: &mut Ctx, raw: RawMetrics, routing: &Routing, routes: &[Route], budgets: &[Budget]) -> MetricLabels {
    let mut labels = MetricLabels::default();
    for (field, list) in [("app_labels", &raw.app_labels), ("task_labels", &raw.task_labels)] {
        for (i, v) in list.iter().enumerate() {
            if v.trim().is_empty() {
                cx.err(format!("metrics.{field}[{i}]"), "must not be empty");
            }
        }
    }
    labels.apps.extend(raw.app_labels);
    labels.apps.extend(routing.app_keys.values().cloned());
    labels.apps.extend(budgets.iter().filter_map(|b| b.scope.app.clone()));
    labels.tasks.extend(raw.task_labels);
    labels.tasks.extend(routing.tasks.iter().map(|t| t.task.clone()));
    labels.tasks.extend(routes.iter().filter_map(|r| r.matcher.task.clone()));
    labels.tasks.extend(budgets.iter().filter_map(|b| b.scope.task.clone()));
    match raw.auto_labels {
        Some(n) if n > 1000 => cx.err(
            "metrics.auto_labels",
            format!("{n} is too many label values per label (every one is a set of series); use at most 1000, or list the names in app_labels / task_labels"),
        ),
        Some(n) => labels.auto = n,
        None => {}
    }
    labels
}

/// `alerts:`.
pub(super) fn alerts_of(cx: &mut Ctx, raw: Option<RawAlerts>) -> Alerts {
    let mut alerts = Alerts::default();
    let Some(raw) = raw else { return alerts };
    if let Some(i) = raw.instance {
        if i.trim().is_empty() {
            cx.err("alerts.instance", "must not be empty (leave it out to use the host name)");
        } else {
            alerts.instance = i;
        }
    }
    if let Some(link) = raw.link {
        if !(link.starts_with("https://") || link.starts_with("http://")) {
            cx.err("alerts.link", "must be an http:// or https:// URL template, e.g. https://grafana.example.com/d/modelgate?var-alert={id}");
        }
        alerts.link = Some(link);
    }
    let mut names = HashSet::new();
    for (i, v) in raw.sinks.into_iter().enumerate() {
        let path = format!("alerts.sinks[{i}]");
        let Some(s) = cx.section::<RawSink>(&path, v) else { continue };
        if let Some(sink) = sink_of(cx, &path, s, &mut names) {
            alerts.sinks.push(Arc::new(sink));
        }
    }
    for (name, v) in raw.rules {
        let path = format!("alerts.rules.{name}");
        let Some(kind) = RuleKind::parse(&name) else {
            cx.err(&path, format!("unknown rule `{name}`; expected one of: {}", RuleKind::names()));
            continue;
        };
        // `budget_warn:` with nothing after it: the rule with its defaults.
        let r = if v.is_null() { Some(RawRule::default()) } else { cx.section::<RawRule>(&path, v) };
        if let Some(r) = r {
            alerts.rules[kind as usize] = rule_of(cx, &path, kind, r);
        }
    }
    if let Some(d) = raw.delivery {
        alerts.delivery = delivery_of(cx, d);
    }
    match raw.eval_interval_ms {
        Some(ms) if !(50..=3_600_000).contains(&ms) => cx.err("alerts.eval_interval_ms", format!("must be between 50 and 3600000 ms, got {ms}")),
        Some(ms) => alerts.eval_interval = Duration::from_millis(ms),
        None => {}
    }
    alerts
}

fn sink_of(cx: &mut Ctx, path: &str, raw: RawSink, names: &mut HashSet<String>) -> Option<Sink> {
    let before = cx.errors.len();
    if raw.name.trim().is_empty() {
        cx.err(format!("{path}.name"), "must not be empty");
    } else if !names.insert(raw.name.clone()) {
        cx.err(format!("{path}.name"), format!("sink name `{}` is used twice; names must be unique", raw.name));
    }
    let kind = match raw.kind.as_str() {
        "webhook" => SinkKind::Webhook,
        "slack" => SinkKind::Slack,
        other => {
            cx.err(format!("{path}.kind"), format!("unknown sink kind `{other}`; expected webhook (generic JSON) or slack (Slack incoming webhook)"));
            SinkKind::Webhook
        }
    };
    let target = match webhook_url(&raw.url) {
        Ok(t) => Some(t),
        Err(e) => {
            cx.err(format!("{path}.url"), e);
            None
        }
    };
    let mut headers = Vec::new();
    for (k, v) in raw.headers {
        let lower = k.to_ascii_lowercase();
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            cx.err(format!("{path}.headers.{k}"), "is not a valid header name");
        } else if matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
            cx.err(format!("{path}.headers.{k}"), "is set by modelgate; remove it");
        } else if http::HeaderValue::from_str(&v).is_err() {
            cx.err(format!("{path}.headers.{k}"), "has a value that is not a valid header value (control characters?)");
        } else {
            headers.push((lower, Secret(v)));
        }
    }
    let timeout = match raw.timeout_ms {
        Some(0) => {
            cx.err(format!("{path}.timeout_ms"), "must be greater than 0");
            Duration::from_secs(5)
        }
        Some(ms) => Duration::from_millis(ms),
        None => Duration::from_secs(5),
    };
    let rules = raw.rules.map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let k = RuleKind::parse(r);
                if k.is_none() {
                    cx.err(format!("{path}.rules[{i}]"), format!("unknown rule `{r}`; expected one of: {}", RuleKind::names()));
                }
                k
            })
            .collect()
    });
    let (endpoint, request_path) = target?;
    (cx.errors.len() == before).then(|| Sink { name: raw.name, kind, endpoint: Arc::new(endpoint), path: request_path, headers, timeout, rules })
}

/// A webhook URL: its endpoint and the request line's path and query.
pub fn webhook_url(url: &str) -> Result<(Endpoint, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(format!("`{url}` must start with https:// (or http://)")),
    };
    let authority = uri.authority().filter(|a| !a.host().is_empty()).ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("the URL must not carry user:password@; put credentials in `headers`".into());
    }
    let endpoint = Endpoint::parse(&format!("{scheme}://{authority}"), None)?;
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    Ok((endpoint, path))
}

fn rule_of(cx: &mut Ctx, path: &str, kind: RuleKind, r: RawRule) -> Rule {
    let mut rule = Rule::default_for(kind);
    let fields = [
        ("window_s", r.window_s.is_some()),
        ("threshold", r.threshold.is_some()),
        ("threshold_ms", r.threshold_ms.is_some()),
        ("threshold_usd", r.threshold_usd.is_some()),
        ("min_requests", r.min_requests.is_some()),
        ("of", r.of.is_some()),
    ];
    let allowed: &[&str] = match kind {
        RuleKind::BudgetWarn | RuleKind::BudgetExceeded => &[],
        RuleKind::SpendSpike | RuleKind::BreakerOpen | RuleKind::RouteDown => &["window_s"],
        RuleKind::ErrorRate => &["window_s", "threshold", "min_requests"],
        RuleKind::LatencyP95 => &["window_s", "threshold_ms", "min_requests", "of"],
        RuleKind::CostPerHour => &["window_s", "threshold_usd"],
    };
    for (field, set) in fields {
        if set && !allowed.contains(&field) {
            let why = if matches!(kind, RuleKind::BudgetWarn | RuleKind::BudgetExceeded) {
                "a budget alert fires once per budget window; its thresholds are the budget's warn_at and limits".to_string()
            } else {
                format!("{} takes: enabled, severity, {}", kind.as_str(), allowed.join(", "))
            };
            cx.err(format!("{path}.{field}"), format!("does not apply to {}: {why}", kind.as_str()));
        }
    }
    if let Some(s) = r.severity {
        match Severity::parse(&s) {
            Some(v) => rule.severity = v,
            None => cx.err(format!("{path}.severity"), format!("unknown severity `{s}`; expected info, warning or critical")),
        }
    }
    match r.window_s {
        Some(0) => cx.err(format!("{path}.window_s"), "must be at least 1 second"),
        Some(s) if s > 31 * 86_400 => cx.err(format!("{path}.window_s"), "must be at most 31 days (2678400 s)"),
        Some(s) => rule.window = Duration::from_secs(s),
        None => {}
    }
    if let Some(n) = r.min_requests {
        rule.min_requests = n;
    }
    let threshold = match kind {
        RuleKind::ErrorRate => r.threshold.inspect(|&t| {
            if !(t > 0.0 && t <= 1.0) {
                cx.err(format!("{path}.threshold"), format!("is a share of requests between 0 and 1 (0.05 = 5%), got {t}"));
            }
        }),
        RuleKind::LatencyP95 => r.threshold_ms.map(|ms| {
            if ms == 0 {
                cx.err(format!("{path}.threshold_ms"), "must be greater than 0");
            }
            ms as f64 / 1000.0
        }),
        RuleKind::CostPerHour => r.threshold_usd.inspect(|&v| {
            if !(v.is_finite() && v > 0.0) {
                cx.err(format!("{path}.threshold_usd"), format!("must be a positive amount of USD, got {v}"));
            }
        }),
        _ => None,
    };
    if let Some(of) = r.of {
        match of.as_str() {
            "upstream" => rule.of = LatencyOf::Upstream,
            "ttft" => rule.of = LatencyOf::Ttft,
            other => cx.err(
                format!("{path}.of"),
                format!("unknown latency `{other}`; expected upstream (the whole upstream call) or ttft (time to a stream's first event)"),
            ),
        }
    }
    let enabled = r.enabled.unwrap_or(true);
    if kind.needs_threshold() {
        match threshold {
            Some(t) => rule.threshold = t,
            None if enabled => {
                let field = match kind {
                    RuleKind::ErrorRate => "threshold: 0.05",
                    RuleKind::LatencyP95 => "threshold_ms: 10000",
                    _ => "threshold_usd: 50",
                };
                cx.err(path, format!("{} needs a threshold, e.g. `{field}`", kind.as_str()));
            }
            None => {}
        }
    }
    rule.enabled = enabled;
    rule
}

fn delivery_of(cx: &mut Ctx, raw: RawDelivery) -> Delivery {
    let mut d = Delivery::default();
    if let Some(ms) = raw.backoff_ms {
        if ms == 0 {
            cx.err("alerts.delivery.backoff_ms", "must be greater than 0");
        }
        d.backoff = Duration::from_millis(ms);
    }
    if let Some(ms) = raw.max_backoff_ms {
        d.max_backoff = Duration::from_millis(ms);
    }
    if d.max_backoff < d.backoff {
        cx.err("alerts.delivery.max_backoff_ms", "must be at least backoff_ms");
    }
    match raw.give_up_after_s {
        Some(0) => cx.err("alerts.delivery.give_up_after_s", "must be at least 1 second"),
        Some(s) => d.give_up_after = Duration::from_secs(s),
        None => {}
    }
    match raw.queue {
        Some(0) => cx.err("alerts.delivery.queue", "must hold at least 1 alert"),
        Some(n) if n > 100_000 => cx.err("alerts.delivery.queue", "must be at most 100000 alerts"),
        Some(n) => d.queue = n,
        None => {}
    }
    d
}

/// `telemetry:` (absent: traces off).
pub(super) fn telemetry_of(cx: &mut Ctx, raw: Option<RawTelemetry>) -> Option<Arc<Telemetry>> {
    let raw = raw?;
    let before = cx.errors.len();
    let target = match otlp_url(&raw.otlp_endpoint) {
        Ok(t) => Some(t),
        Err(e) => {
            cx.err("telemetry.otlp_endpoint", e);
            None
        }
    };
    let service_name = raw.service_name.unwrap_or_else(|| "modelgate".into());
    if service_name.trim().is_empty() {
        cx.err("telemetry.service_name", "must not be empty (leave it out for `modelgate`)");
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        cx.err("telemetry.sample_ratio", format!("must be between 0.0 and 1.0 (the share of new traces recorded), got {sample_ratio}"));
    }
    let mut headers = Vec::new();
    for (k, v) in raw.headers {
        let lower = k.to_ascii_lowercase();
        let path = format!("telemetry.headers.{k}");
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            cx.err(path, "is not a valid header name");
        } else if matches!(lower.as_str(), "host" | "content-length" | "content-type" | "transfer-encoding" | "connection") {
            cx.err(path, "is set by modelgate; remove it");
        } else if http::HeaderValue::from_str(&v).is_err() {
            cx.err(path, "has a value that is not a valid header value (control characters?)");
        } else {
            headers.push((lower, Secret(v)));
        }
    }
    let mut ms = |field: &str, v: Option<u64>, default: u64, range: std::ops::RangeInclusive<u64>| match v {
        Some(n) if !range.contains(&n) => {
            cx.err(format!("telemetry.{field}"), format!("must be between {} and {} ms, got {n}", range.start(), range.end()));
            Duration::from_millis(default)
        }
        Some(n) => Duration::from_millis(n),
        None => Duration::from_millis(default),
    };
    let timeout = ms("timeout_ms", raw.timeout_ms, 10_000, 100..=120_000);
    let batch_delay = ms("batch_delay_ms", raw.batch_delay_ms, 1_000, 10..=60_000);
    let batch_size = raw.batch_size.unwrap_or(512);
    if !(1..=10_000).contains(&batch_size) {
        cx.err("telemetry.batch_size", format!("must be between 1 and 10000 spans, got {batch_size}"));
    }
    let queue = raw.queue.unwrap_or(DEFAULT_TRACE_QUEUE);
    if !(1..=1_000_000).contains(&queue) {
        cx.err("telemetry.queue", format!("must be between 1 and 1000000 requests, got {queue}"));
    }
    let (endpoint, path) = target?;
    (cx.errors.len() == before)
        .then(|| Arc::new(Telemetry { endpoint: Arc::new(endpoint), path, service_name, sample_ratio, headers, timeout, batch_delay, batch_size, queue }))
}

/// An OTLP/HTTP base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`): its endpoint,
/// and the export path (`/v1/traces` appended unless it ends with it).
fn otlp_url(url: &str) -> Result<(Endpoint, String), String> {
    let (endpoint, path) = webhook_url(url).map_err(|e| format!("{e} (the collector's OTLP/HTTP address, e.g. http://localhost:4318)"))?;
    if path.contains('?') {
        return Err(format!("`{url}` must not have a query string"));
    }
    let base = path.trim_end_matches('/');
    let path = if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") };
    Ok((endpoint, path))
}

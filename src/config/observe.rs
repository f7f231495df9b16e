//! What operators watch, as configured: `metrics:` (which app and task
//! names may become metric labels) and `alerts:` (where alerts go, which
//! rules fire, how delivery retries). Data only; `crate::metrics` and
//! `crate::alerts` act on it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Secret;
use crate::upstream::endpoint::Endpoint;

/// `metrics:` — the bounds on the `app` and `task` label values, so a client
/// sending a new `x-modelgate-app` per request cannot grow the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLabels {
    /// App names kept as they are: `metrics.app_labels` plus every app the
    /// config names (`routing.app_keys`, budget scopes) and `default`.
    pub apps: HashSet<String>,
    /// Task names kept as they are: `metrics.task_labels` plus every task
    /// the config names (`routing.tasks`, route matches, budget scopes).
    pub tasks: HashSet<String>,
    /// Per label, how many further values (the first seen since start)
    /// keep their name; the rest are `other`.
    pub auto: usize,
}

impl Default for MetricLabels {
    fn default() -> Self {
        MetricLabels { apps: HashSet::from(["default".to_string()]), tasks: HashSet::new(), auto: DEFAULT_AUTO_LABELS }
    }
}

pub const DEFAULT_AUTO_LABELS: usize = 20;

/// The alert rules modelgate evaluates (the `rule` of an alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    BudgetWarn,
    BudgetExceeded,
    SpendSpike,
    BreakerOpen,
    RouteDown,
    ErrorRate,
    LatencyP95,
    CostPerHour,
}

impl RuleKind {
    pub const ALL: [RuleKind; 8] = [
        RuleKind::BudgetWarn,
        RuleKind::BudgetExceeded,
        RuleKind::SpendSpike,
        RuleKind::BreakerOpen,
        RuleKind::RouteDown,
        RuleKind::ErrorRate,
        RuleKind::LatencyP95,
        RuleKind::CostPerHour,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::BudgetWarn => "budget_warn",
            RuleKind::BudgetExceeded => "budget_exceeded",
            RuleKind::SpendSpike => "spend_spike",
            RuleKind::BreakerOpen => "breaker_open",
            RuleKind::RouteDown => "route_down",
            RuleKind::ErrorRate => "error_rate",
            RuleKind::LatencyP95 => "latency_p95",
            RuleKind::CostPerHour => "cost_per_hour",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn names() -> String {
        Self::ALL.map(RuleKind::as_str).join(", ")
    }

    /// Rules on a threshold: off until the config gives one.
    pub fn needs_threshold(self) -> bool {
        matches!(self, RuleKind::ErrorRate | RuleKind::LatencyP95 | RuleKind::CostPerHour)
    }

    fn default_severity(self) -> Severity {
        match self {
            RuleKind::BudgetExceeded | RuleKind::RouteDown | RuleKind::ErrorRate => Severity::Critical,
            _ => Severity::Warning,
        }
    }

    /// How long an alert of this rule about the same subject stays quiet
    /// after it fired (budget rules: the budget's window instead).
    fn default_window(self) -> Duration {
        match self {
            RuleKind::ErrorRate | RuleKind::LatencyP95 => Duration::from_secs(300),
            RuleKind::BreakerOpen | RuleKind::RouteDown => Duration::from_secs(600),
            _ => Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical].into_iter().find(|v| v.as_str() == s)
    }
}

/// Which latency `latency_p95` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyOf {
    /// The whole upstream exchange (a stream: until its end).
    Upstream,
    /// Streams: until the first event.
    Ttft,
}

/// One rule as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub enabled: bool,
    pub severity: Severity,
    /// Evaluation window of a threshold rule, and how long the same alert
    /// stays quiet after it fired.
    pub window: Duration,
    /// error_rate: a share (0.05); latency_p95: seconds; cost_per_hour: USD.
    pub threshold: f64,
    /// error_rate and latency_p95: no alert on fewer requests in the window.
    pub min_requests: u64,
    pub of: LatencyOf,
}

impl Rule {
    pub fn default_for(kind: RuleKind) -> Rule {
        Rule {
            enabled: !kind.needs_threshold(),
            severity: kind.default_severity(),
            window: kind.default_window(),
            threshold: 0.0,
            min_requests: 20,
            of: LatencyOf::Upstream,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// The generic JSON body (README "Alerts").
    Webhook,
    /// A Slack incoming-webhook body (`text` and `blocks`).
    Slack,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
        }
    }
}

/// Where alerts are posted.
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
    /// Where the URL points (logs show only scheme://host[:port] of it).
    pub endpoint: Arc<Endpoint>,
    /// Path and query of the request line: a Slack webhook's secret, never
    /// logged (and so not kept with the rest of the URL).
    pub path: String,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    /// Rules this sink gets (`None`: all).
    pub rules: Option<Vec<RuleKind>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.shown())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Sink {
    pub fn wants(&self, rule: RuleKind) -> bool {
        self.rules.as_ref().is_none_or(|r| r.contains(&rule))
    }

    /// `scheme://host[:port]`: what logs and `alerts test` show of the URL
    /// (a Slack webhook's path is its secret).
    pub fn shown(&self) -> String {
        format!("{}://{}", if self.endpoint.tls { "https" } else { "http" }, self.endpoint.authority)
    }
}

/// How a failing sink is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Wait after the first failed try; doubles per try …
    pub backoff: Duration,
    /// … up to this.
    pub max_backoff: Duration,
    /// An alert not delivered within this is dropped (and counted).
    pub give_up_after: Duration,
    /// Alerts waiting per sink; beyond it the oldest is dropped.
    pub queue: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery { backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(60), give_up_after: Duration::from_secs(3600), queue: 1000 }
    }
}

/// `alerts:`. Without sinks nothing is sent (rules still log).
#[derive(Debug)]
pub struct Alerts {
    /// Names this modelgate in every alert (default: the host name).
    pub instance: String,
    /// A URL template for an alert's `link` (`{id}`, `{rule}`, `{subject}`).
    pub link: Option<String>,
    pub sinks: Vec<Arc<Sink>>,
    /// Indexed by `RuleKind as usize`.
    pub rules: [Rule; 8],
    pub delivery: Delivery,
    /// How often the threshold rules and route health are evaluated.
    pub eval_interval: Duration,
}

impl Alerts {
    pub fn rule(&self, kind: RuleKind) -> &Rule {
        &self.rules[kind as usize]
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            instance: host_name(),
            link: None,
            sinks: Vec::new(),
            rules: RuleKind::ALL.map(Rule::default_for),
            delivery: Delivery::default(),
            eval_interval: Duration::from_secs(10),
        }
    }
}

/// This host's name (for `alerts.instance`), else `modelgate`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 { String::from_utf8_lossy(buf.split(|b| *b == 0).next().unwrap_or_default()).into_owned() } else { String::new() };
    if name.is_empty() {
        "modelgate".into()
    } else {
        name
    }
}

/// `telemetry:` — OpenTelemetry traces exported over OTLP/HTTP (protobuf).
pub struct Telemetry {
    /// The collector's address (logs show only scheme://host[:port]).
    pub endpoint: Arc<Endpoint>,
    /// Path of the export request: the endpoint's path + `/v1/traces`
    /// (unless the URL already ends with it).
    pub path: String,
    /// `service.name` of the resource every span belongs to.
    pub service_name: String,
    /// Share of new traces recorded (0.0–1.0); a client's `traceparent`
    /// decides for the traces it starts.
    pub sample_ratio: f64,
    /// Sent with every export (auth: `Authorization: Bearer ${TOKEN}`).
    pub headers: Vec<(String, Secret)>,
    /// One export request's limit.
    pub timeout: Duration,
    /// How long a finished span may wait for its batch.
    pub batch_delay: Duration,
    /// Spans per export request.
    pub batch_size: usize,
    /// Requests' spans waiting for export; beyond, dropped and counted
    /// (applied at start).
    pub queue: usize,
}

pub const DEFAULT_TRACE_QUEUE: usize = 4096;

impl Telemetry {
    /// scheme://host[:port] of the collector (what logs and `check` show).
    pub fn shown(&self) -> String {
        format!("{}://{}", if self.endpoint.tls { "https" } else { "http" }, self.endpoint.authority)
    }

    /// Whether `other` exports to the same place the same way (a reload
    /// that changes none of this keeps the running exporter).
    pub fn same_exporter(&self, other: &Telemetry) -> bool {
        let headers = |t: &Telemetry| t.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect::<Vec<_>>();
        self.shown() == other.shown()
            && self.path == other.path
            && self.service_name == other.service_name
            && self.timeout == other.timeout
            && headers(self) == headers(other)
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("endpoint", &self.shown())
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

//! Runtime routing config: routes with their targets, routing modes and
//! weights, and the request classification rules (apps, tasks, complexity).

use std::collections::HashMap;
use std::fmt;

use wildmatch::WildMatch;

use super::Capability;
use crate::dialect::Dialect;

/// How cloud and local models are weighed (the seeds' routing modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never leave the host: only models of `local: true` providers.
    LocalOnly = 0,
    /// Local models first (by score), cloud ones only after them.
    LocalPreferred = 1,
    Balanced = 2,
    Performance = 3,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::LocalOnly, Mode::LocalPreferred, Mode::Balanced, Mode::Performance];

    pub fn parse(s: &str) -> Option<Mode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::LocalOnly => "local-only",
            Mode::LocalPreferred => "local-preferred",
            Mode::Balanced => "balanced",
            Mode::Performance => "performance",
        }
    }

    pub fn names() -> String {
        Self::ALL.map(Mode::as_str).join(", ")
    }

    /// The seed's default weights (local-only scores like local-preferred).
    pub fn default_weights(self) -> Weights {
        match self {
            Mode::LocalOnly | Mode::LocalPreferred => Weights { cost: 0.6, quality: 0.25, latency: 0.15 },
            Mode::Balanced => Weights { cost: 0.4, quality: 0.4, latency: 0.2 },
            Mode::Performance => Weights { cost: 0.2, quality: 0.6, latency: 0.2 },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Score weights, normalised so they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub cost: f64,
    pub quality: f64,
    pub latency: f64,
}

/// An inclusive integer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub fn contains(&self, v: u64) -> bool {
        self.min <= v && v <= self.max
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (a, b) if a == b => write!(f, "{a}"),
            (0, b) => write!(f, "<={b}"),
            (a, u64::MAX) => write!(f, ">={a}"),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

#[derive(Debug)]
pub struct RouteMatch {
    pub model: Option<WildMatch>,
    pub app: Option<WildMatch>,
    pub task: Option<String>,
    pub dialect: Option<Dialect>,
    pub complexity: Option<Range>,
    pub tokens: Option<Range>,
    pub stream: Option<bool>,
    pub tools: Option<bool>,
    /// Request headers that must be present with exactly these values
    /// (names lowercase).
    pub header: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub max_complexity: u8,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct Select {
    pub candidates: Vec<String>,
    pub require: Vec<Capability>,
    /// Highest blended price allowed: (3 × input + output) / 4, USD per Mtok.
    pub max_usd_per_mtok: Option<f64>,
    pub local_only: bool,
}

#[derive(Debug, Clone)]
pub struct Arm {
    /// Shown in headers, log and metrics; defaults to the model name.
    pub name: String,
    pub model: String,
    pub weight: f64,
}

/// What a route sends its requests to.
#[derive(Debug, Clone)]
pub enum Target {
    Model(String),
    /// Ascending `max_complexity`; the last one is 10.
    Tiers(Vec<Tier>),
    Select(Select),
    Split(Vec<Arm>),
}

impl Target {
    /// Every model the target can pick, in config order.
    pub fn models(&self) -> Vec<&str> {
        match self {
            Target::Model(m) => vec![m.as_str()],
            Target::Tiers(t) => t.iter().map(|t| t.model.as_str()).collect(),
            Target::Select(s) => s.candidates.iter().map(String::as_str).collect(),
            Target::Split(a) => a.iter().map(|a| a.model.as_str()).collect(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Model(_) => "target",
            Target::Tiers(_) => "tiers",
            Target::Select(_) => "select",
            Target::Split(_) => "split",
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub target: Target,
    pub fallbacks: Vec<String>,
    pub shadow: bool,
    pub mode: Option<Mode>,
    /// Models a client may ask for with `x-modelgate-model` when this route
    /// matches (`None`: the global `routing.client_models`).
    pub client_models: Option<Vec<WildMatch>>,
    /// Request dialects the route applies to: `match.dialect`, else all.
    pub dialects: [bool; Dialect::COUNT],
    /// Dialects its target models speak (a request of another dialect is
    /// translated where its API allows).
    pub speaks: [bool; Dialect::COUNT],
    /// Fields of `retry:` set on this route.
    pub retry: Option<super::RawRetry>,
    /// The route's `cache:`.
    pub cache: super::RouteCache,
    /// Answer checks that re-send to a stronger model (`escalate_on`).
    pub escalate: Option<Box<Escalation>>,
    /// A request for a stronger model than the route picks is honoured
    /// (`client_escalation`).
    pub client_escalation: Option<ClientEscalation>,
}

/// A rule that names the task of requests that carry no `x-modelgate-task`.
#[derive(Debug)]
pub struct TaskRule {
    pub task: String,
    pub path: Option<WildMatch>,
    pub model: Option<WildMatch>,
    /// Lowercase; compared with the lowercased system prompt.
    pub system_contains: Option<String>,
    pub system_regex: Option<regex::Regex>,
    pub tools: Option<bool>,
    pub response_format: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordMatch {
    /// Anywhere in the text, as the seed's `w in message.lower()`.
    Substring,
    /// Whole words only.
    Word,
}

/// `add` when the measured quantity is over `over`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bump {
    pub over: u64,
    pub add: u8,
}

/// All keyword groups in one automaton (over lowercased text): pattern `i`
/// is `owner[i]` = (group, keyword), in group order then keyword order, so
/// the least pattern found is the first group's first keyword. `None` when
/// it cannot be built (the scorer then scans keyword by keyword).
#[derive(Debug, Clone)]
pub struct KeywordIndex {
    pub automaton: Option<aho_corasick::AhoCorasick>,
    pub owner: Vec<(usize, usize)>,
}

/// The complexity scorer's rules (defaults reproduce the seed's heuristic).
#[derive(Debug, Clone)]
pub struct Complexity {
    pub keyword_match: KeywordMatch,
    /// Tried in order; the first group with a keyword in the last user
    /// message sets the base score. Keywords are lowercase.
    pub groups: Vec<(u8, Vec<String>)>,
    pub default_score: u8,
    /// Messages in the conversation (system prompts not counted).
    pub long_conversation: Bump,
    /// Question marks in the last user message.
    pub many_questions: Bump,
    /// Characters in the last user message.
    pub long_message: Bump,
    /// One automaton over every group's keywords, built on first use
    /// (`policy::complexity`).
    pub index: std::sync::OnceLock<KeywordIndex>,
}

impl Default for Complexity {
    fn default() -> Self {
        let g = |score, words: &[&str]| (score, words.iter().map(|w| w.to_string()).collect());
        Complexity {
            keyword_match: KeywordMatch::Substring,
            groups: vec![
                g(2, &["add", "create", "new", "delete", "remove", "mark"]),
                g(4, &["show", "list", "get", "find", "what", "which"]),
                g(9, &["analyze", "why", "how", "explain", "suggest", "compare"]),
            ],
            default_score: 5,
            long_conversation: Bump { over: 10, add: 2 },
            many_questions: Bump { over: 1, add: 2 },
            long_message: Bump { over: 200, add: 1 },
            index: std::sync::OnceLock::new(),
        }
    }
}

#[derive(Debug)]
pub struct Routing {
    pub mode: Mode,
    /// Indexed by `Mode as usize`.
    pub weights: [Weights; 4],
    pub shadow: bool,
    /// Lowercase hex SHA-256 of a client API key → app name.
    pub app_keys: HashMap<String, String>,
    pub tasks: Vec<TaskRule>,
    pub complexity: Complexity,
    pub client_models: Vec<WildMatch>,
}

impl Routing {
    pub fn weights(&self, mode: Mode) -> Weights {
        self.weights[mode as usize]
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            mode: Mode::Balanced,
            weights: Mode::ALL.map(Mode::default_weights),
            shadow: false,
            app_keys: HashMap::new(),
            tasks: Vec::new(),
            complexity: Complexity::default(),
            client_models: Vec::new(),
        }
    }
}

// === Answer checks and escalation (a route's `escalate_on`) ===

/// What an answer can fail (`escalate_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// JSON mode was asked and the answer is not JSON.
    InvalidJson,
    /// A JSON schema was asked and the answer does not follow it.
    SchemaMismatch,
    /// The model declined (the provider's refusal signal, or a
    /// `refusal_patterns` match).
    Refusal,
    /// Stopped at the output limit with nothing usable.
    Truncated,
    /// No text, no tool call.
    Empty,
    /// The answer's average token log-probability is under
    /// `min_avg_logprob` (only when the request asked for logprobs).
    LowLogprob,
}

impl Check {
    pub const ALL: [Check; 6] = [Check::InvalidJson, Check::SchemaMismatch, Check::Refusal, Check::Truncated, Check::Empty, Check::LowLogprob];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::InvalidJson => "invalid_json",
            Check::SchemaMismatch => "schema_mismatch",
            Check::Refusal => "refusal",
            Check::Truncated => "truncated",
            Check::Empty => "empty",
            Check::LowLogprob => "low_logprob",
        }
    }

    pub fn parse(s: &str) -> Option<Check> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn names() -> String {
        Self::ALL.map(Check::as_str).join(", ")
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route's answer checks and where a failing answer escalates to.
#[derive(Debug)]
pub struct Escalation {
    /// The checks, in config order (each at most once).
    pub on: Vec<Check>,
    /// Where to escalate, in order (`escalate_to`); empty: the next
    /// stronger models the route names.
    pub to: Vec<String>,
    /// At most this many re-sends per request (0: check and mark only).
    pub max: u32,
    pub min_avg_logprob: Option<f64>,
    /// Answer texts that count as refusals, besides the provider's signal.
    pub refusal_patterns: Option<regex::RegexSet>,
    /// Buffer streamed answers to check them (`check_streams`): the
    /// client sees nothing until the answer passed.
    pub streams: bool,
}

impl Escalation {
    pub fn checks(&self, c: Check) -> bool {
        self.on.contains(&c)
    }
}

/// When a request naming a stronger model than the route's pick is
/// served by that model (`client_escalation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEscalation {
    /// Always (the app names its usual model as a weak one).
    Always,
    /// Only when this route answered the same conversation within
    /// `window` (the app asks again, naming a stronger model).
    OnRetry { window: std::time::Duration },
}

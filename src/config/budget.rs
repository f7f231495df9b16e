//! Runtime budget config: budgets, where spend is kept, calendar windows.
//! Data only: matching a scope, amount arithmetic and limit checks live
//! in `crate::budget`.

use std::fmt;
use std::time::Duration;

use crate::budget::amount::Limits;

/// Which requests a budget counts: every field given must match (none given
/// is global).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub app: Option<String>,
    pub task: Option<String>,
    /// A virtual key's name (a key's own budgets).
    pub key: Option<String>,
    /// One end user (`scope: { user: X }`).
    pub user: Option<String>,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            [("provider", &self.provider), ("model", &self.model), ("app", &self.app), ("task", &self.task), ("key", &self.key), ("user", &self.user)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
        if parts.is_empty() {
            f.write_str("global")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// A calendar window in the configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Hour,
    Day,
    /// Monday 00:00 to Monday 00:00.
    Week,
    Month,
}

impl Window {
    pub const ALL: [Window; 4] = [Window::Hour, Window::Day, Window::Week, Window::Month];

    pub fn parse(s: &str) -> Option<Window> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downgrade {
    Model(String),
    /// The cheapest model the request's route allows.
    Cheapest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnExceed {
    Warn,
    Downgrade(Downgrade),
    Reject,
}

impl OnExceed {
    pub fn as_str(&self) -> &'static str {
        match self {
            OnExceed::Warn => "warn",
            OnExceed::Downgrade(_) => "downgrade",
            OnExceed::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    pub scope: Scope,
    pub window: Window,
    pub limits: Limits,
    /// Fraction of a limit at which a warning is logged (0 < warn_at ≤ 1).
    pub warn_at: f64,
    pub on_exceed: OnExceed,
    /// `per: user`: one budget per distinct user, keeping counts for at
    /// most this many users per window (`max_users`).
    pub per_user: Option<usize>,
}

/// What happens to requests while a shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Keep serving with local accounting; reconcile when it returns.
    FailOpen,
    /// Refuse requests that a budget applies to.
    FailClosed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    File,
    Redis { url: String, on_unavailable: OnUnavailable, timeout: Duration, key_prefix: String },
}

/// What to do at start when the ledger cannot be read completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLedgerError {
    /// Do not start (the default): spend would silently look lower.
    #[default]
    Refuse,
    /// Start, but refuse requests that a budget applies to until repaired.
    FailClosed,
    /// Start from the readable entries; damaged files are moved aside.
    Reset,
}

impl OnLedgerError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLedgerError::Refuse => "refuse",
            OnLedgerError::FailClosed => "fail_closed",
            OnLedgerError::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStore {
    pub kind: StoreKind,
    /// How often the ledger is fsynced (zero: after every entry).
    pub fsync_interval: Duration,
    pub on_ledger_error: OnLedgerError,
}

impl Default for BudgetStore {
    fn default() -> Self {
        Self { kind: StoreKind::File, fsync_interval: Duration::from_millis(1000), on_ledger_error: OnLedgerError::Refuse }
    }
}

/// Spend-spike alerting: last hour's spend over `factor` × the average hour
/// of the `baseline_hours` before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub factor: f64,
    pub baseline_hours: u32,
    /// Below this last-hour spend no alert fires.
    pub min_usd: f64,
}

impl Default for Spike {
    fn default() -> Self {
        Self { factor: 2.0, baseline_hours: 24, min_usd: 0.0 }
    }
}

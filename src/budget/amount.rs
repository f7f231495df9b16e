//! Spend amounts and limits: USD in nano-dollars (exact integer sums),
//! tokens and requests, the arithmetic on them and which limit an amount
//! goes over.
//!
//! A leaf: it imports nothing from the rest of the crate, so `config` can
//! hold [`Limits`] and convert `limit_usd` without importing budgets back.
//! It must not know about budgets, windows or scopes.

/// A spend amount: USD in nano-dollars (exact integer sums), tokens, requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub nanos: u64,
    pub tokens: u64,
    pub requests: u64,
}

/// Saturating: counts never wrap.
impl std::ops::Add for Amounts {
    type Output = Amounts;
    fn add(self, o: Amounts) -> Amounts {
        Amounts { nanos: self.nanos.saturating_add(o.nanos), tokens: self.tokens.saturating_add(o.tokens), requests: self.requests.saturating_add(o.requests) }
    }
}

/// Saturating: a release never takes a count below zero.
impl std::ops::Sub for Amounts {
    type Output = Amounts;
    fn sub(self, o: Amounts) -> Amounts {
        Amounts { nanos: self.nanos.saturating_sub(o.nanos), tokens: self.tokens.saturating_sub(o.tokens), requests: self.requests.saturating_sub(o.requests) }
    }
}

/// USD → nano-dollars (rounded; negative and NaN become 0).
pub fn nanos(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round() as u64
    } else {
        0
    }
}

pub fn usd(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// One kind of limit a budget can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Usd,
    Tokens,
    Requests,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Usd, Limit::Tokens, Limit::Requests];

    /// This kind's part of `a` (nano-USD for [`Limit::Usd`]).
    pub fn of(self, a: Amounts) -> u64 {
        match self {
            Limit::Usd => a.nanos,
            Limit::Tokens => a.tokens,
            Limit::Requests => a.requests,
        }
    }

    /// The config field that sets it.
    pub fn field(self) -> &'static str {
        match self {
            Limit::Usd => "limit_usd",
            Limit::Tokens => "limit_tokens",
            Limit::Requests => "limit_requests",
        }
    }

    /// `n` of this kind for a person: `$1.2345`, `300 tokens`, `5 requests`.
    pub fn show(self, n: u64) -> String {
        match self {
            Limit::Usd => money(n),
            Limit::Tokens => format!("{n} tokens"),
            Limit::Requests => format!("{n} requests"),
        }
    }
}

fn money(n: u64) -> String {
    let v = usd(n);
    if v >= 100.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// Limits of one budget; `None` is unlimited. At least one is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub nanos: Option<u64>,
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
}

impl Limits {
    /// The limit of kind `k`, if set.
    pub fn get(&self, k: Limit) -> Option<u64> {
        match k {
            Limit::Usd => self.nanos,
            Limit::Tokens => self.tokens,
            Limit::Requests => self.requests,
        }
    }

    /// These limits, or (`requests_only`) only the request limit.
    pub fn only(self, requests_only: bool) -> Limits {
        match requests_only {
            true => Limits { nanos: None, tokens: None, requests: self.requests },
            false => self,
        }
    }

    /// The first limit `a` goes over (USD, then tokens, then requests), as
    /// (kind, limit).
    pub fn over(&self, a: Amounts) -> Option<(Limit, u64)> {
        Limit::ALL.into_iter().find_map(|k| self.get(k).filter(|l| k.of(a) > *l).map(|l| (k, l)))
    }

    /// The highest used fraction of any limit.
    pub fn fraction(&self, a: Amounts) -> f64 {
        Limit::ALL.into_iter().filter_map(|k| self.get(k).map(|l| if l == 0 { f64::INFINITY } else { k.of(a) as f64 / l as f64 })).fold(0.0, f64::max)
    }
}

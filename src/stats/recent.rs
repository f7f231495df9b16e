//! The last requests' metadata (`GET /admin/requests`, the dashboard's
//! Requests view): access-log records, newest last, at most
//! `dashboard.recent_requests` of them. Records hold no prompt text and no
//! keys (see `accesslog::Record`).

use std::collections::VecDeque;

use serde::Serialize;

use crate::accesslog::Record;

#[derive(Default)]
pub struct Recent {
    ring: VecDeque<Record>,
    /// Records seen since the start (kept or not).
    total: u64,
}

impl Recent {
    /// Keep `r`, dropping the oldest beyond `cap` (0: keep none).
    pub fn push(&mut self, r: Record, cap: usize) {
        self.total += 1;
        while self.ring.len() >= cap.max(1) {
            self.ring.pop_front();
        }
        if cap > 0 {
            self.ring.push_back(r);
        }
    }

    /// The records `f` selects, newest first, at most `f.limit`.
    pub fn query(&self, f: &Filter, cap: usize) -> RecentReport<'_> {
        let requests: Vec<&Record> = self.ring.iter().rev().filter(|r| f.matches(r)).take(f.limit).collect();
        RecentReport { size: cap, kept: self.ring.len(), seen: self.total, requests }
    }
}

/// `GET /admin/requests`.
#[derive(Serialize)]
pub struct RecentReport<'a> {
    /// `dashboard.recent_requests`.
    pub size: usize,
    /// Records kept now.
    pub kept: usize,
    /// Requests answered since the start.
    pub seen: u64,
    /// Newest first, as the access log writes them.
    pub requests: Vec<&'a Record>,
}

/// Which statuses a filter keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatusFilter {
    /// `2xx`, `4xx`, …: the hundreds digit.
    Class(u16),
    Code(u16),
    /// Status ≥ 400 or a failure after the answer started.
    Errors,
}

/// `GET /admin/requests?app=&model=&route=&status=&limit=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub app: Option<String>,
    /// The model that served or the one asked for.
    pub model: Option<String>,
    pub route: Option<String>,
    pub status: Option<StatusFilter>,
    pub limit: usize,
}

pub const DEFAULT_LIMIT: usize = 100;

impl Default for Filter {
    fn default() -> Self {
        Filter { app: None, model: None, route: None, status: None, limit: DEFAULT_LIMIT }
    }
}

fn decode(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned()
}

impl Filter {
    /// Parse a query string; the error says which parameter is wrong and
    /// what it takes.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = decode(v);
            let set = |v: String| (!v.is_empty()).then_some(v);
            match k {
                "app" => f.app = set(v),
                "model" => f.model = set(v),
                "route" => f.route = set(v),
                "status" => f.status = if v.is_empty() { None } else { Some(status_filter(&v)?) },
                "limit" => {
                    f.limit = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("limit `{v}`: give a number of requests ≥ 1, e.g. limit=50"))?;
                }
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; filter with app=, model=, route=, status= (2xx, 4xx, 5xx, errors or a code such as 429) and limit="
                    ))
                }
            }
        }
        Ok(f)
    }

    pub fn matches(&self, r: &Record) -> bool {
        self.app.as_ref().is_none_or(|a| *a == r.app)
            && self.model.as_ref().is_none_or(|m| r.model.as_ref() == Some(m) || r.requested_model.as_ref() == Some(m))
            && self.route.as_ref().is_none_or(|x| *x == r.route)
            && self.status.is_none_or(|s| match s {
                StatusFilter::Class(c) => r.status / 100 == c,
                StatusFilter::Code(c) => r.status == c,
                StatusFilter::Errors => r.status >= 400 || r.error.is_some(),
            })
    }
}

fn status_filter(v: &str) -> Result<StatusFilter, String> {
    let bad = || format!("status `{v}`: use 2xx, 3xx, 4xx, 5xx, errors, or a status code such as 429");
    let lower = v.to_ascii_lowercase();
    if lower == "errors" || lower == "error" {
        return Ok(StatusFilter::Errors);
    }
    if let Some(d) = lower.strip_suffix("xx") {
        return d.parse::<u16>().ok().filter(|d| (1..=5).contains(d)).map(StatusFilter::Class).ok_or_else(bad);
    }
    lower.parse::<u16>().ok().filter(|c| (100..=599).contains(c)).map(StatusFilter::Code).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(app: &str, model: &str, status: u16) -> Record {
        Record { app: app.into(), model: Some(model.into()), route: "r".into(), status, ..Record::default() }
    }

    #[test]
    fn the_ring_keeps_the_last_n_and_filters() {
        let mut r = Recent::default();
        for i in 0..10u16 {
            r.push(rec(if i % 2 == 0 { "even" } else { "odd" }, "m", if i == 9 { 502 } else { 200 }), 4);
        }
        let all = r.query(&Filter::default(), 4);
        assert_eq!((all.kept, all.seen, all.requests.len()), (4, 10, 4));
        assert_eq!(all.requests[0].status, 502, "newest first");
        let f = Filter::parse("app=odd&status=5xx").unwrap();
        assert_eq!(r.query(&f, 4).requests.len(), 1);
        let f = Filter::parse("status=errors&limit=1").unwrap();
        assert_eq!(r.query(&f, 4).requests.len(), 1);
        assert_eq!(Filter::parse("model=gpt+4o%2Dmini").unwrap().model.as_deref(), Some("gpt 4o-mini"));
        // Size 0 keeps nothing but still counts.
        let mut none = Recent::default();
        none.push(rec("a", "m", 200), 0);
        assert_eq!(none.query(&Filter::default(), 0).requests.len(), 0);
        assert_eq!(none.total, 1);
    }

    #[test]
    fn bad_filters_say_what_to_send() {
        for (q, want) in [("status=abc", "use 2xx"), ("status=7xx", "use 2xx"), ("limit=0", "limit `0`"), ("colour=red", "unknown parameter `colour`")] {
            let e = Filter::parse(q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
        assert_eq!(Filter::parse("status=429").unwrap().status, Some(StatusFilter::Code(429)));
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
    }
}

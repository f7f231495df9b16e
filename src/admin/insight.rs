//! The dashboard's data endpoints (the CLI may use them too):
//! `GET /admin/requests` (the last requests' metadata, filtered),
//! `GET /admin/series` (hourly or daily counts), `GET /admin/traffic`
//! (the day's or month's requests, errors and latency by model and route)
//! and `GET /admin/experiments` (split arms: cost from the ledger, errors,
//! latency and ratings). Also the fallbacks counted in `/metrics`, which
//! `/admin/health` lists.

use http::StatusCode;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::{error, reply, serialized_reply, Admin, Reply};
use crate::config::{Snapshot, Window};
use crate::stats::recent::Filter;

/// The value of `key` in a query string (the first one).
fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Refuse parameters other than `allowed`, naming what is accepted.
#[allow(clippy::result_large_err)]
fn only(query: &str, allowed: &[&str], hint: &str) -> Result<(), Reply> {
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let k = kv.split('=').next().unwrap_or_default();
        if !allowed.contains(&k) {
            return Err(error(StatusCode::BAD_REQUEST, format!("unknown parameter `{k}`; {hint}")));
        }
    }
    Ok(())
}

#[allow(clippy::result_large_err)]
fn window(query: &str, default: Window, endpoint: &str) -> Result<Window, Reply> {
    only(query, &["window"], &format!("{endpoint} takes ?window=day or ?window=month"))?;
    let w = param(query, "window").unwrap_or(default.as_str());
    Window::parse(w)
        .filter(|w| matches!(w, Window::Day | Window::Month))
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("window `{w}`: use ?window=day or ?window=month")))
}

fn no_store(mut r: Reply) -> Reply {
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

impl Admin {
    /// `GET /admin/requests|series|traffic|experiments`.
    pub(super) fn insight(&self, snap: &Snapshot, path: &str, query: &str) -> Reply {
        let r = match path {
            "/admin/requests" => self.requests(snap, query),
            "/admin/series" => self.series(snap, query),
            "/admin/traffic" => self.traffic(snap, query),
            _ => self.experiments(snap, query),
        };
        no_store(r.unwrap_or_else(|e| e))
    }

    #[allow(clippy::result_large_err)]
    fn requests(&self, snap: &Snapshot, query: &str) -> Result<Reply, Reply> {
        let f = Filter::parse(query).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let data = self.stats.catch_up();
        let report = data.recent.query(&f, snap.dashboard.recent_requests);
        Ok(match serde_json::to_vec(&report) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render the report: {e}")),
        })
    }

    #[allow(clippy::result_large_err)]
    fn series(&self, snap: &Snapshot, query: &str) -> Result<Reply, Reply> {
        only(query, &["step"], "/admin/series takes ?step=hour or ?step=day")?;
        let step = match param(query, "step").unwrap_or("hour") {
            "hour" => Window::Hour,
            "day" => Window::Day,
            other => return Err(error(StatusCode::BAD_REQUEST, format!("step `{other}`: use ?step=hour (the last 24 hours) or ?step=day (the last 30 days)"))),
        };
        let report = self.stats.catch_up().series(step, snap, Timestamp::now(), self.stats.started());
        Ok(serialized_reply(StatusCode::OK, &report))
    }

    #[allow(clippy::result_large_err)]
    fn traffic(&self, snap: &Snapshot, query: &str) -> Result<Reply, Reply> {
        let w = window(query, Window::Day, "/admin/traffic")?;
        let report = self.stats.catch_up().traffic(w, snap, Timestamp::now(), self.stats.started());
        Ok(serialized_reply(StatusCode::OK, &report))
    }

    #[allow(clippy::result_large_err)]
    fn experiments(&self, snap: &Snapshot, query: &str) -> Result<Reply, Reply> {
        let w = window(query, Window::Month, "/admin/experiments")?;
        let usage = self.budgets.usage(w);
        let report = self.stats.catch_up().experiments(w, snap, &usage, Timestamp::now(), self.stats.started());
        Ok(serialized_reply(StatusCode::OK, &report))
    }
}

/// A Prometheus label value, unescaped; returns it and the rest after its
/// closing quote.
fn label_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Labels and value of one sample line `name{a="x",b="y"} 3`.
fn sample(line: &str, name: &str) -> Option<(Vec<(String, String)>, f64)> {
    let mut rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r.split_whitespace().next()?.parse().ok()?));
        }
        let (key, r) = rest.split_once("=\"")?;
        let (value, r) = label_value(r)?;
        labels.push((key.to_string(), value));
        rest = r;
    }
}

/// `modelgate_fallbacks_total` since the start: from, to, reason, count;
/// most first.
pub(super) fn fallbacks(metrics: &str) -> Value {
    let mut rows: Vec<(String, String, String, f64)> = metrics
        .lines()
        .filter_map(|l| sample(l, crate::metrics::FALLBACKS))
        .map(|(labels, v)| {
            let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("from"), get("to"), get("reason"), v)
        })
        .filter(|r| r.3 > 0.0)
        .collect();
    rows.sort_by(|a, b| b.3.partial_cmp(&a.3).unwrap_or(std::cmp::Ordering::Equal).then_with(|| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2))));
    Value::Array(rows.into_iter().map(|(from, to, reason, n)| json!({"from": from, "to": to, "reason": reason, "count": n as u64})).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_are_read_from_the_metrics_text() {
        let text = "# TYPE modelgate_fallbacks_total counter\n\
            modelgate_fallbacks_total{from=\"gpt-4o\",to=\"gpt-4o-mini\",reason=\"5xx\"} 3\n\
            modelgate_fallbacks_total{from=\"we\\\"ird\",to=\"b\",reason=\"429\"} 7\n\
            modelgate_retries_total{model=\"gpt-4o\",reason=\"5xx\"} 9\n";
        let v = fallbacks(text);
        assert_eq!(
            v,
            json!([{"from": "we\"ird", "to": "b", "reason": "429", "count": 7}, {"from": "gpt-4o", "to": "gpt-4o-mini", "reason": "5xx", "count": 3}])
        );
        assert_eq!(param("a=1&window=day", "window"), Some("day"));
        assert_eq!(param("windows=day", "window"), None);
    }
}

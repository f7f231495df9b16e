//! Quality feedback on split-routed requests (`POST /admin/feedback`): which
//! requests may still be rated ([`Index`]: the last
//! `dashboard.feedback_requests` split requests, by request id), what an
//! app may send ([`Given`]), and the ratings on disk
//! (`state_dir/feedback-YYYY-MM.jsonl`, one JSON line per rating, by the
//! month it was given), read back at start so an arm's quality survives
//! restarts like its cost (which the ledger keeps).

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::buckets::Score;
use crate::request_id::RequestId;

/// A rating: a score from 0 (bad) to 1 (good), or thumbs up / down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Given {
    Score(f64),
    Thumbs(bool),
}

impl Given {
    /// As counted: one rating, its value (thumbs: 1 or 0) and thumbs.
    pub fn score(self) -> Score {
        match self {
            Given::Score(s) => Score { ratings: 1, sum: s, up: 0, down: 0 },
            Given::Thumbs(up) => Score { ratings: 1, sum: if up { 1.0 } else { 0.0 }, up: u64::from(up), down: u64::from(!up) },
        }
    }
}

/// A split-routed request that may be rated.
#[derive(Debug, Clone)]
pub struct Rated {
    pub route: Arc<str>,
    pub arm: Arc<str>,
    pub model: Arc<str>,
    /// When it was answered (Unix seconds): the day its rating counts in.
    pub at: i64,
    /// The rating it has, if any (a new one replaces it).
    pub given: Option<Given>,
}

/// Request id → split request, the oldest forgotten first.
#[derive(Debug, Default)]
pub struct Index {
    map: HashMap<u64, Rated>,
    order: VecDeque<u64>,
    /// Route, arm and model names, shared by every entry.
    names: HashSet<Arc<str>>,
}

impl Index {
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.names.insert(n.clone());
        n
    }

    /// Remember a split request answered now.
    pub fn remember(&mut self, id: RequestId, route: &str, arm: &str, model: &str, at: i64, cap: usize) {
        let r = Rated { route: self.name(route), arm: self.name(arm), model: self.name(model), at, given: None };
        if self.map.insert(id.0, r).is_none() {
            self.order.push_back(id.0);
        }
        self.trim(cap);
    }

    /// Add requests answered before this process started (from the
    /// ledger, oldest first), behind the ones remembered since.
    pub fn seed(&mut self, older: Vec<(RequestId, String, String, String, i64, Option<Given>)>, cap: usize) {
        for (id, route, arm, model, at, given) in older.into_iter().rev() {
            if self.map.contains_key(&id.0) {
                continue;
            }
            let r = Rated { route: self.name(&route), arm: self.name(&arm), model: self.name(&model), at, given };
            self.map.insert(id.0, r);
            self.order.push_front(id.0);
        }
        self.trim(cap);
    }

    fn trim(&mut self, cap: usize) {
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        if self.names.len() > 4 * self.map.len() + 64 {
            let live: HashSet<Arc<str>> = self.map.values().flat_map(|r| [r.route.clone(), r.arm.clone(), r.model.clone()]).collect();
            self.names = live;
        }
    }

    pub fn get_mut(&mut self, id: RequestId) -> Option<&mut Rated> {
        self.map.get_mut(&id.0)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One rating on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Line {
    /// When it was given.
    pub ts: String,
    pub request_id: RequestId,
    /// When the request was answered.
    pub request_ts: String,
    pub route: String,
    pub arm: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// `up` or `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbs: Option<String>,
}

impl Line {
    pub fn given(&self) -> Option<Given> {
        match (self.score, self.thumbs.as_deref()) {
            (Some(s), None) if (0.0..=1.0).contains(&s) => Some(Given::Score(s)),
            (None, Some("up")) => Some(Given::Thumbs(true)),
            (None, Some("down")) => Some(Given::Thumbs(false)),
            _ => None,
        }
    }
}

fn file_name(month: &str) -> String {
    format!("feedback-{month}.jsonl")
}

/// Append `line` to the file of the month it was given (UTC).
pub fn append(dir: &Path, at: jiff::Timestamp, line: &Line) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(file_name(&at.strftime("%Y-%m").to_string())))?;
    f.write_all(&text)
}

/// Ratings given from `since` (Unix seconds) to before `until`, the latest
/// per request id. Lines that do not parse are skipped (a torn last line
/// after a crash).
pub fn read(dir: &Path, since: i64, until: jiff::Timestamp) -> HashMap<u64, Line> {
    let mut latest: HashMap<u64, Line> = HashMap::new();
    let Ok(first) = jiff::Timestamp::from_second(since) else { return latest };
    let first = file_name(&first.strftime("%Y-%m").to_string());
    let Ok(entries) = std::fs::read_dir(dir) else { return latest };
    let mut files: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("feedback-") && n.ends_with(".jsonl") && n.as_str() >= first.as_str())
        .collect();
    files.sort();
    for name in files {
        let Ok(f) = std::fs::File::open(dir.join(&name)) else { continue };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            let Ok(l) = serde_json::from_str::<Line>(&line) else { continue };
            let Ok(at) = l.ts.parse::<jiff::Timestamp>() else { continue };
            if at.as_second() >= since && at < until && l.given().is_some() {
                latest.insert(l.request_id.0, l);
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_forgets_the_oldest_and_seeds_behind() {
        let mut ix = Index::default();
        for i in 0..5 {
            ix.remember(RequestId(i), "r", "a", "m", 100 + i as i64, 3);
        }
        assert_eq!(ix.len(), 3);
        assert!(ix.get_mut(RequestId(1)).is_none());
        assert!(ix.get_mut(RequestId(4)).is_some());
        ix.seed(vec![(RequestId(90), "r".into(), "b".into(), "m".into(), 1, Some(Given::Thumbs(true)))], 4);
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.get_mut(RequestId(90)).unwrap().given, Some(Given::Thumbs(true)));
        // The seeded one is the oldest: the next request pushes it out.
        ix.remember(RequestId(5), "r", "a", "m", 105, 4);
        assert!(ix.get_mut(RequestId(90)).is_none());
    }

    #[test]
    fn ratings_read_back_latest_first() {
        let dir = tempfile::tempdir().unwrap();
        let at: jiff::Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let line = |id: u64, ts: &str, score: Option<f64>, thumbs: Option<&str>| Line {
            ts: ts.into(),
            request_id: RequestId(id),
            request_ts: "2026-11-25T09:59:59Z".into(),
            route: "r".into(),
            arm: "a".into(),
            model: "m".into(),
            score,
            thumbs: thumbs.map(str::to_string),
        };
        append(dir.path(), at, &line(1, "2026-11-25T10:00:00Z", Some(0.2), None)).unwrap();
        append(dir.path(), at, &line(1, "2026-11-25T10:00:01Z", None, Some("up"))).unwrap();
        append(dir.path(), at, &line(2, "2026-11-25T10:00:02Z", Some(7.0), None)).unwrap();
        std::fs::OpenOptions::new().append(true).open(dir.path().join("feedback-2026-11.jsonl")).unwrap().write_all(b"{\"ts\":\"torn").unwrap();
        let got = read(dir.path(), at.as_second() - 10, at + jiff::SignedDuration::from_secs(10));
        assert_eq!(got.len(), 1, "the out-of-range score is not a rating");
        assert_eq!(got[&1].given(), Some(Given::Thumbs(true)));
        assert_eq!(Given::Thumbs(false).score(), Score { ratings: 1, sum: 0.0, up: 0, down: 1 });
    }
}

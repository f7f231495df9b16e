//! Conversations a route answered lately, for `client_escalation:
//! { requested_model: on_retry }`: the same conversation asked again within
//! the window, naming a stronger model than the route picks, is the app's
//! "try again with the better model" (seed 003's button).
//!
//! A conversation is its route, app, end user, API and the body's
//! conversation fields (`messages`, `system`, `input`, `instructions`,
//! `contents`, `systemInstruction`, `tools`) as sent; the model, `stream`
//! and sampling parameters are not part of it. Only a keyed hash and the
//! time are kept, in memory, bounded; nothing is read or kept for routes
//! without the rule.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, Instant};

use super::Facts;

/// The most conversations remembered (oldest go first).
const CAPACITY: u64 = 100_000;
/// The longest window a route may set (`window_s` ≤ 86400).
const LONGEST: Duration = Duration::from_secs(86_400);

/// The body fields that make a conversation.
const FIELDS: [&str; 7] = ["messages", "system", "input", "instructions", "contents", "systemInstruction", "tools"];

pub struct Conversations {
    seen: moka::sync::Cache<u64, Instant>,
    keys: RandomState,
}

impl Default for Conversations {
    fn default() -> Self {
        Conversations { seen: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(LONGEST).build(), keys: RandomState::new() }
    }
}

impl Conversations {
    /// The key of `f`'s conversation on `route` (`None`: no JSON body).
    fn key(&self, route: &str, f: &Facts<'_>) -> Option<u64> {
        let body = f.body()?;
        let mut h = self.keys.build_hasher();
        h.write(route.as_bytes());
        h.write_u8(0);
        h.write(f.app.as_bytes());
        h.write_u8(0);
        h.write(f.user.as_deref().unwrap_or("").as_bytes());
        h.write_u8(0);
        h.write(f.api.as_str().as_bytes());
        for name in FIELDS {
            if let Some(v) = body.field(name) {
                h.write(name.as_bytes());
                h.write_u8(b'=');
                h.write(v.get().as_bytes());
                h.write_u8(0);
            }
        }
        Some(h.finish())
    }

    /// `route` answered this conversation within `window`.
    pub fn answered_within(&self, route: &str, f: &Facts<'_>, window: Duration) -> bool {
        self.key(route, f).and_then(|k| self.seen.get(&k)).is_some_and(|at| at.elapsed() <= window)
    }

    /// `route` answered this conversation now.
    pub fn answered(&self, route: &str, f: &Facts<'_>) {
        if let Some(k) = self.key(route, f) {
            self.seen.insert(k, Instant::now());
        }
    }
}

//! Admin overrides shared by a fleet: the background service that keeps
//! this sidecar's [`OverrideStore`] equal to the fleet's store in Redis, and
//! the store's up/down state shown by `/admin/overrides`.
//!
//! Changes arrive on a Redis subscription within milliseconds; a re-read
//! every [`BACKSTOP`] catches anything a subscription missed (a notice lost
//! while reconnecting), and every [`POLL`] while there is no subscription
//! (Redis down, or a Redis older than 6 without RESP3). While Redis is away
//! the last known overrides stay in force (and saved in `state_dir`), and
//! changes are refused rather than made on one sidecar only.
//!
//! It must not validate overrides against the config: that stays with
//! [`OverrideStore`], which applies what arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::json;

use super::overrides::OverrideStore;
use crate::budget::{OverrideChannel, Subscription};
use crate::config::Snapshot;

/// Re-read period while subscribed.
pub const BACKSTOP: Duration = Duration::from_secs(5);
/// Re-read (and re-subscribe) period without a subscription.
pub const POLL: Duration = Duration::from_secs(1);
/// How long to wait before subscribing again when Redis answers reads but
/// refuses the subscription (an old Redis): reads every [`POLL`] carry on.
const RESUBSCRIBE_WHILE_UP: Duration = Duration::from_secs(30);

/// The fleet's store as this sidecar sees it.
pub struct Fleet {
    pub(super) channel: OverrideChannel,
    status: Mutex<Status>,
}

struct Status {
    state: State,
    /// Since when `state` holds.
    since: SystemTime,
    /// The last successful read or change.
    synced_at: Option<SystemTime>,
    /// The last failure, while down.
    error: Option<String>,
    subscribed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not read yet since the start: the file's copy is in force.
    Connecting,
    Up,
    Down,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Fleet {
    pub(super) fn new(channel: OverrideChannel) -> Self {
        let status = Status { state: State::Connecting, since: SystemTime::now(), synced_at: None, error: None, subscribed: false };
        Self { channel, status: Mutex::new(status) }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn synced(&self) {
        let mut s = self.status();
        let now = SystemTime::now();
        if s.state != State::Up {
            if s.state == State::Down {
                tracing::info!(url = %self.channel.url(), "fleet override store (Redis) answers again; overrides are in sync");
            }
            s.state = State::Up;
            s.since = now;
        }
        s.synced_at = Some(now);
        s.error = None;
    }

    pub(super) fn failed(&self, error: &str) {
        let mut s = self.status();
        if s.state != State::Down {
            tracing::warn!(url = %self.channel.url(), error, "fleet override store (Redis) unavailable; the last known overrides stay in force and changes are refused until it answers");
            s.state = State::Down;
            s.since = SystemTime::now();
        }
        s.error = Some(error.to_string());
    }

    fn set_subscribed(&self, on: bool) {
        self.status().subscribed = on;
    }

    fn is_up(&self) -> bool {
        self.status().state == State::Up
    }

    /// `{"kind": "redis", "state": "up"|"down"|"connecting", "since", …}`.
    pub(super) fn report(&self) -> serde_json::Value {
        let s = self.status();
        // A budget call may have found Redis gone before this service's
        // next read: one process, one view of Redis.
        let (state, since) = match self.channel.down_since() {
            Some(at) if s.state != State::Down => (State::Down, SystemTime::now().checked_sub(at.elapsed()).unwrap_or(s.since)),
            _ => (s.state, s.since),
        };
        let mut v = json!({
            "kind": "redis",
            "state": state.as_str(),
            "since": rfc3339(since),
            "synced_at": s.synced_at.map(rfc3339),
            "subscribed": s.subscribed,
        });
        match state {
            State::Up => {}
            State::Down => {
                v["error"] = json!(s.error.clone().unwrap_or_else(|| format!("Redis at {} is unreachable", self.channel.url())));
                v["note"] = json!("the last known overrides stay in force; PUT and DELETE are refused until Redis answers");
            }
            State::Connecting => v["note"] = json!("not read from Redis yet: the overrides saved in state_dir are in force"),
        }
        v
    }
}

/// The sync service for `store`, when its overrides are the fleet's.
pub fn service(store: &Arc<OverrideStore>, state: &Arc<ArcSwap<Snapshot>>) -> Option<FleetSync> {
    store.fleet().is_some().then(|| FleetSync { store: store.clone(), state: state.clone() })
}

/// Background work: subscribe to changes, apply each, re-read as a backstop.
pub struct FleetSync {
    store: Arc<OverrideStore>,
    state: Arc<ArcSwap<Snapshot>>,
}

async fn notice(sub: &mut Option<Subscription>) -> bool {
    match sub {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FleetSync {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(fleet) = self.store.fleet() else { return };
        let mut sub: Option<Subscription> = None;
        let mut next_subscribe = Instant::now();
        let mut subscribed_at = Instant::now();
        let mut warned_subscribe = false;
        loop {
            // Subscribe before reading, so no change falls between the two.
            if sub.is_none() && Instant::now() >= next_subscribe {
                match fleet.channel.subscribe().await {
                    Ok(s) => {
                        sub = Some(s);
                        subscribed_at = Instant::now();
                        warned_subscribe = false;
                    }
                    Err(e) => {
                        // Down: the reads say so. Up: an old Redis, say it once.
                        let up = fleet.is_up();
                        if up && !warned_subscribe {
                            tracing::warn!(error = %e, "cannot subscribe to override changes (Redis 6 or later is needed for RESP3); re-reading the overrides every second instead");
                            warned_subscribe = true;
                        }
                        next_subscribe = Instant::now() + if up { RESUBSCRIBE_WHILE_UP } else { POLL };
                    }
                }
                fleet.set_subscribed(sub.is_some());
            }
            self.store.refresh(&self.state.load()).await;
            if !fleet.is_up() && sub.is_some() {
                // A subscription that outlived a failed read (a silent
                // network partition) may be dead: make a fresh one.
                sub = None;
                fleet.set_subscribed(false);
            }
            let wait = if sub.is_some() && fleet.is_up() { BACKSTOP } else { POLL };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
                alive = notice(&mut sub) => {
                    if !alive {
                        sub = None;
                        // At once, unless subscriptions keep dropping.
                        next_subscribe = if subscribed_at.elapsed() < POLL { Instant::now() + POLL } else { Instant::now() };
                        fleet.set_subscribed(false);
                    }
                }
            }
        }
    }
}

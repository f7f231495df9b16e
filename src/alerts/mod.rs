//! Alerts that reach a person: budget warnings and overruns, spend spikes,
//! breakers opening, routes with no usable model, error rate, p95 latency
//! and cost per hour over a threshold, delivered to webhooks (generic JSON
//! or Slack) with retries.
//!
//! The request path never waits on an alert. Budgets, the spike watch and
//! the breakers call [`emit`], a non-blocking `try_send` on a bounded
//! channel (a full channel drops the event and counts it); per-model
//! figures for the threshold rules are atomics updated next to the request
//! metrics (`stats`). Everything else runs in the alerts background
//! service (`service`): it turns events into alerts once per condition per
//! window, evaluates the threshold rules on a timer (`eval`), and hands
//! alerts to one delivery worker per sink (`deliver`), which retries a
//! failing sink with exponential backoff.
//!
//! - `event`: what happened, with its figures (what the emitters send);
//! - `alert`: an event in words — summary, detail, figures, id, link;
//! - `payload`: the generic JSON and Slack bodies;
//! - `deliver`: posting to sinks, retries, `modelgate alerts test`;
//! - `eval`: threshold rules over rolling windows;
//! - `stats`: per-model counts the request path updates;
//! - `service`: the background service tying them together.

mod alert;
mod deliver;
pub mod eval;
mod event;
mod payload;
mod service;
pub mod stats;

use std::sync::OnceLock;

use tokio::sync::mpsc;

pub use alert::Alert;
pub use deliver::send_test;
pub use event::{BudgetFigures, Event, SpikeFigures};
pub use payload::{generic, slack};
pub use service::Service;

/// Events waiting for the alerts service; beyond this they are dropped.
const EVENT_QUEUE: usize = 4096;

static EVENTS: OnceLock<mpsc::Sender<Event>> = OnceLock::new();

/// Hand an event to the alerts service without waiting. A no-op until
/// [`channel`] was called (the CLI, unit tests).
pub fn emit(e: Event) {
    let Some(tx) = EVENTS.get() else { return };
    if let Err(e) = tx.try_send(e) {
        crate::metrics::alert_dropped("", "queue_full");
        tracing::warn!(event = ?e, "alert event dropped: the alerts queue is full");
    }
}

/// Open the process's event channel (once); the receiver goes to the
/// alerts [`Service`]. `None` when it was opened before.
pub fn channel() -> Option<mpsc::Receiver<Event>> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    EVENTS.set(tx).ok().map(|_| rx)
}

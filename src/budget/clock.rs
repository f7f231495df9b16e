//! The time budgets see: windows, hold timestamps, spike minutes, reports,
//! the shared store's hold expiries and tombstones, and the ledger's file
//! months and repair stamps all read it through [`Clock`], so tests move
//! time instead of sleeping.
//!
//! It must not be used for timeouts or I/O deadlines (those are tokio's).

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told (tests, replays).
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        ManualClock { micros: AtomicI64::new(t.as_microsecond()) }
    }

    pub fn set(&self, t: Timestamp) {
        self.micros.store(t.as_microsecond(), Ordering::SeqCst);
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.micros.fetch_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.micros.load(Ordering::SeqCst)).unwrap_or(Timestamp::MAX)
    }
}

//! Settlements in the shared store: release a hold and add the actual
//! spend, at once or queued while Redis is away (replayed in order, at
//! most `MAX_PENDING` kept). It must not decide admission.

use super::super::amount::Amounts;
use super::{counts, epoch, int, Counts, Pending, Shared, KEY_GRACE_SECS, MAX_PENDING, TOMB_TTL};

impl Shared {
    /// Release a reservation (`remote`: it was made in Redis) and add
    /// `actual` to spent. When Redis is away the settlement is queued and
    /// `None` returned.
    pub async fn settle(&self, id: String, remote: bool, held: Amounts, keys: Vec<(String, i64, i64)>, actual: Amounts) -> Option<Counts> {
        let member = if remote { format!("{id}|{}|{}|{}", held.nanos, held.tokens, held.requests) } else { String::new() };
        let p = Pending { id, member, held, keys, actual };
        match self.apply(&p).await {
            Ok(c) => Some(c),
            Err(_) => {
                self.queue(p);
                None
            }
        }
    }

    /// `settle` from a context that cannot wait (a dropped hold).
    pub fn settle_later(&self, id: String, held: Amounts, keys: Vec<(String, i64, i64)>, actual: Amounts) {
        let member = format!("{id}|{}|{}|{}", held.nanos, held.tokens, held.requests);
        self.queue(Pending { id, member, held, keys, actual });
        // Apply now if Redis is up; otherwise reconcile will.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let me = self.handle();
            h.spawn(async move { me.drain().await });
        }
    }

    /// A reservation whose answer never came may still be made in Redis:
    /// release it (retried until Redis answers; harmless if it never ran,
    /// and its tombstone stops it if it runs after the release).
    pub fn release_later(&self, id: &str, worst: Amounts, keys: Vec<(String, i64, i64)>) {
        self.settle_later(id.to_string(), worst, keys, Amounts::default());
    }

    fn queue(&self, p: Pending) {
        let mut s = self.state();
        if s.pending.len() >= MAX_PENDING {
            s.pending.pop_front();
            tracing::error!("too many settlements waiting for Redis; dropping the oldest");
        }
        s.pending.push_back(p);
    }

    async fn apply(&self, p: &Pending) -> Result<Counts, String> {
        let mut inv = self.settle.prepare_invoke();
        for (name, start, _) in &p.keys {
            for k in self.keys(name, *start) {
                inv.key(k);
            }
        }
        let tomb = self.clock.now().as_millisecond() + TOMB_TTL.as_millis() as i64;
        inv.arg(&p.id)
            .arg(&p.member)
            .arg(int(p.held.nanos))
            .arg(int(p.held.tokens))
            .arg(int(p.held.requests))
            .arg(int(p.actual.nanos))
            .arg(int(p.actual.tokens))
            .arg(int(p.actual.requests));
        inv.arg(tomb).arg(epoch());
        for (_, _, end) in &p.keys {
            inv.arg(end + KEY_GRACE_SECS);
        }
        let v = self.run(inv).await.map_err(|e| e.message)?;
        let (c, epochs) = counts(&v);
        self.observe(&p.keys, &epochs, Some(p.actual));
        Ok(c)
    }

    /// Apply queued settlements in order while Redis answers.
    pub(super) async fn drain(&self) {
        loop {
            let Some(p) = self.state().pending.pop_front() else { return };
            if self.apply(&p).await.is_err() {
                self.state().pending.push_front(p);
                return;
            }
        }
    }
}

//! A stream on its way to the client: split and read by the stream tap,
//! translated when the client speaks another format.

use bytes::{Bytes, BytesMut};

use super::Answering;
use crate::dialect::sse::StreamTap;
use crate::dialect::{Dialect, GatewayError};
use crate::translate::{self, Wire};

/// A stream on its way through: split and observed (usage, end, errors),
/// translated when the client speaks another format.
pub(super) struct Pump {
    pub tap: Box<StreamTap>,
    tr: Option<translate::Translator>,
    max_event: usize,
    pub settled: bool,
    /// The upstream ended (cleanly or not).
    pub ended: bool,
    /// Why the stream failed after it was committed, if it did.
    pub failed: Option<(&'static str, String)>,
    /// What the tap passed on (before translation), for the response cache.
    pub rec: Option<crate::cache::Recording>,
}

impl Pump {
    /// A pump going on with `tap`; what to send the client of what it
    /// has read so far (`first`: what it passed on).
    pub(super) fn new(a: &Answering<'_, '_>, tap: Box<StreamTap>, first: Bytes, rec: Option<crate::cache::Recording>) -> (Self, Bytes) {
        let tr = a.translated.as_ref().map(|(client, chat)| translate::Translator::new(Wire::of_provider(a.provider.kind), *client, chat));
        let mut pump = Pump { tap, tr, max_event: a.snap.limits.max_event_bytes, settled: false, ended: false, failed: None, rec };
        let out = pump.pass(first);
        (pump, out)
    }

    /// What to send the client for a piece of the upstream stream.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let out = self.tap.feed(chunk);
        self.pass(out)
    }

    /// What to send of what the tap passed on (translated when needed);
    /// notes a malformed or oversized event.
    fn pass(&mut self, mut out: Bytes) -> Bytes {
        if let Some(r) = self.rec.as_mut() {
            r.push(&out);
        }
        if let Some(t) = self.tr.as_mut() {
            out = t.feed_data(self.tap.take_data());
        }
        if self.tap.malformed {
            self.failed = Some(("malformed", "the provider sent an event that is not valid JSON".into()));
        } else if self.tap.pending() > self.max_event {
            self.failed = Some(("event_too_large", format!("the provider sent an event larger than {} bytes (limits.max_event_bytes)", self.max_event)));
        }
        out
    }

    /// The upstream stream ended: its tail (and the client format's
    /// closing events when it ended properly), or a cut.
    pub(super) fn end(&mut self) -> Bytes {
        self.ended = true;
        let mut tail = self.tap.finish();
        if let Some(r) = self.rec.as_mut() {
            r.push(&tail);
        }
        if let Some(t) = self.tr.as_mut() {
            // An unterminated last event is not translated (it may be cut).
            self.tap.take_data();
            let mut b = BytesMut::new();
            // Close the client's stream only when the provider's ended properly.
            if self.tap.terminal {
                b.extend_from_slice(&t.finish());
            }
            tail = b.freeze();
        }
        if !self.tap.terminal && !self.tap.error_event {
            self.failed = Some(("cut", "the provider's stream ended before the answer was complete".into()));
        }
        tail
    }
}

/// An error event that ends a stream, in the client's dialect.
pub(super) fn stream_error_event(dialect: Dialect, e: &GatewayError) -> Bytes {
    Bytes::from(dialect.spec().error_event(&String::from_utf8_lossy(&e.body(dialect))))
}

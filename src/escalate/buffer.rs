//! A streamed answer held whole before the client sees it (a route with
//! `check_streams: true`): the relay then replays it from memory, through
//! the same tap and translation as a live stream. Time to first token
//! becomes the time to the last.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::drain::AbortSignal;
use crate::relay::{Canned, Source};
use crate::upstream::{AttemptError, Connector};

/// A stream read ahead: its chunks, then (when it broke while being read)
/// its error, then the rest of the live stream (when it was too large to
/// hold whole).
pub struct Held {
    inner: Box<dyn Source>,
    chunks: VecDeque<Bytes>,
    error: Option<AttemptError>,
    /// The upstream has more (the buffer stopped at its limit).
    live: bool,
}

#[async_trait]
impl Source for Held {
    fn header(&self) -> &ResponseHeader {
        self.inner.header()
    }
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        if let Some(c) = self.chunks.pop_front() {
            return Ok(Some(c));
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.live {
            true => self.inner.chunk().await,
            false => Ok(None),
        }
    }
    fn elapsed(&self) -> Duration {
        self.inner.elapsed()
    }
    async fn finish(self: Box<Self>, connector: &Connector) {
        self.inner.finish(connector).await
    }
}

/// A stand-in while the real source is being read.
pub(super) fn placeholder() -> Box<dyn Source> {
    Box::new(Canned::new(crate::proxy::head::response(http::StatusCode::OK, http::HeaderMap::new()), []))
}

/// Read `src` to its end (at most `max` bytes): the source to relay, and
/// the whole answer's bytes (`first` included) when it ended cleanly
/// within the limit.
pub(super) async fn hold(mut inner: Box<dyn Source>, first: &Bytes, max: usize, abort: &mut AbortSignal) -> (Box<dyn Source>, Option<Bytes>) {
    let mut chunks = Vec::new();
    let mut size = first.len();
    let mut error = None;
    let mut live = false;
    loop {
        let next = tokio::select! {
            c = inner.chunk() => c,
            _ = abort.fired() => Err(AttemptError::Shutdown),
        };
        match next {
            Ok(Some(c)) => {
                size += c.len();
                chunks.push(c);
                if size > max {
                    live = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let whole = (error.is_none() && !live).then(|| super::joined(first, &chunks));
    (Box::new(Held { inner, chunks: chunks.into(), error, live }), whole)
}

//! Where a relayed response's bytes come from: a live upstream
//! [`Exchange`], or a response held in memory ([`Canned`]: a cached or
//! canned answer), which then goes through the same relay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::upstream::Connector;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::dialect::sse::StreamTap;
use crate::upstream::retry::Fetched;
use crate::upstream::{AttemptError, Exchange, Live};
use crate::usage::RawUsage;

/// Where a relayed response's bytes come from.
#[async_trait]
pub trait Source: Send {
    fn header(&self) -> &ResponseHeader;
    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError>;
    /// How long the exchange has run.
    fn elapsed(&self) -> Duration;
    /// Done with it (a live exchange goes back to the connection pool when
    /// it was read to the end).
    async fn finish(self: Box<Self>, connector: &Connector);
}

#[async_trait]
impl Source for Exchange {
    fn header(&self) -> &ResponseHeader {
        Live::header(self)
    }
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        Exchange::chunk(self).await
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    async fn finish(self: Box<Self>, connector: &Connector) {
        Exchange::finish(*self, connector).await
    }
}

/// A response held in memory (a cached or canned answer).
pub struct Canned {
    header: ResponseHeader,
    chunks: VecDeque<Bytes>,
    started: Instant,
}

impl Canned {
    pub fn new(header: ResponseHeader, chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Canned { header, chunks: chunks.into_iter().collect(), started: Instant::now() }
    }
}

#[async_trait]
impl Source for Canned {
    fn header(&self) -> &ResponseHeader {
        &self.header
    }
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        Ok(self.chunks.pop_front())
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    async fn finish(self: Box<Self>, _connector: &Connector) {}
}

/// An accepted response: read whole (JSON), or a stream whose first event
/// has been read.
pub enum Response {
    /// `usage`: already read from the body (else the relay reads it).
    Whole { src: Box<dyn Source>, body: Bytes, usage: Option<RawUsage> },
    /// `tap` has split and read what came so far; `first` is what it passed on.
    Stream { src: Box<dyn Source>, tap: Box<StreamTap>, first: Bytes },
}

impl From<Fetched> for Response {
    fn from(f: Fetched) -> Self {
        match f {
            Fetched::Body { ex, body, usage } => Response::Whole { src: Box::new(ex), body, usage },
            Fetched::Stream { ex, tap, first } => Response::Stream { src: Box::new(ex), tap, first },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_canned_source_replays_its_header_and_chunks_in_order() {
        let header = ResponseHeader::build(200, None).unwrap();
        let mut src: Box<dyn Source> = Box::new(Canned::new(header, [Bytes::from_static(b"data: a\n\n"), Bytes::from_static(b"data: b\n\n")]));
        assert_eq!(src.header().status.as_u16(), 200);
        assert_eq!(src.chunk().await.unwrap().as_deref(), Some(&b"data: a\n\n"[..]));
        assert_eq!(src.chunk().await.unwrap().as_deref(), Some(&b"data: b\n\n"[..]));
        assert!(src.chunk().await.unwrap().is_none());
        src.finish(&Connector::new(None)).await;
    }
}

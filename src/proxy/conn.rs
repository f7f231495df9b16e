//! The gateway's client connections: a request head must arrive whole
//! within `client_timeouts.header_ms` of its first byte (or of the
//! connection's start), however slowly it trickles in.
//!
//! Pingora times each read of a request head separately (a client sending
//! a byte every few seconds never trips it), so the listener wraps each
//! connection in [`Guarded`], which watches for the end of the head
//! (`\r\n\r\n`) and fails the read once the head is late. The body's idle
//! and total limits and the keep-alive idle time are set per request by
//! the gateway (`set_read_timeout`, `set_keepalive`, a total deadline).
//! HTTP/2 connections are framed by the h2 library and pass unwatched.
//!
//! At shutdown (or a hand-over) Pingora stops the listener and then closes
//! every connection waiting for a request, among them one it accepted a
//! moment ago whose request is still on the way. Each connection is
//! therefore [`Fresh`] until its first answer starts; the listener's
//! cleanup gives such connections a moment to send their request first,
//! and the drain counts them as running.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, TimingDigest, UniqueID, UniqueIDType};
use pingora::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Snapshot;
use crate::drain::{Drain, Fresh};
use crate::proxy::gateway::Gateway;

/// The gateway listener: each connection guarded, then Pingora's HTTP.
pub struct GatewayApp {
    pub http: Arc<HttpProxy<Gateway>>,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub drain: Drain,
}

#[async_trait]
impl ServerApp for GatewayApp {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let header = self.state.load().client_timeouts.header;
        let conn = Guarded::new(io, header).fresh(self.drain.fresh());
        let reused = self.http.process_new(Box::new(conn), shutdown).await;
        if reused.is_none() {
            crate::memory::connection_closed();
        }
        reused
    }

    async fn cleanup(&self) {
        self.drain.settle_fresh().await;
        self.http.cleanup().await;
    }
}

/// A client connection whose request heads have a deadline.
pub struct Guarded {
    inner: Stream,
    limit: Duration,
    /// When the head being read must be complete; `None` between requests
    /// (after a response was written, until the next request's first byte)
    /// and while a body is read.
    due: Option<Instant>,
    /// Reading a request head (as opposed to its body).
    in_head: bool,
    /// The last bytes of the head read so far (a `\r\n\r\n` may straddle reads).
    tail: [u8; 3],
    timer: Pin<Box<Sleep>>,
    /// Until the first answer starts (see the module's doc).
    fresh: Option<Fresh>,
    /// Whether heads have a deadline (the forward proxy times its own).
    timed: bool,
}

impl Guarded {
    pub fn new(inner: Stream, limit: Duration) -> Self {
        let due = Instant::now() + limit;
        Guarded { inner, limit, due: Some(due), in_head: true, tail: [0; 3], timer: Box::pin(tokio::time::sleep_until(due)), fresh: None, timed: true }
    }

    /// A connection whose heads have no deadline here (only [`Fresh`]).
    pub fn untimed(inner: Stream) -> Self {
        Guarded { due: None, timed: false, ..Self::new(inner, Duration::ZERO) }
    }

    pub fn fresh(mut self, fresh: Fresh) -> Self {
        self.fresh = Some(fresh);
        self
    }

    /// An answer is being written: the next bytes read start a new request
    /// head, and the connection's first request has entered.
    fn answering(&mut self) {
        self.in_head = true;
        self.due = None;
        self.fresh = None;
    }

    /// Look through freshly read head bytes for the blank line that ends it.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.due.is_none() {
            // The first byte of a kept-alive connection's next request.
            self.due = Some(Instant::now() + self.limit);
        }
        // The blank line may straddle this read and the last one.
        let mut seam = [0u8; 6];
        let k = bytes.len().min(3);
        seam[..3].copy_from_slice(&self.tail);
        seam[3..3 + k].copy_from_slice(&bytes[..k]);
        let ended = memchr::memmem::find(&seam[..3 + k], b"\r\n\r\n").is_some() || memchr::memmem::find(bytes, b"\r\n\r\n").is_some();
        if ended {
            self.in_head = false;
            self.due = None;
            self.tail = [0; 3];
            return;
        }
        // Keep the last 3 bytes seen.
        self.tail.rotate_left(k);
        self.tail[3 - k..].copy_from_slice(&bytes[bytes.len() - k..]);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if self.in_head && self.timed {
                    self.saw(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(due) = self.due.filter(|_| self.in_head) else { return Poll::Pending };
                if self.timer.deadline() != due {
                    self.timer.as_mut().reset(due);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::info!(
                            limit_ms = self.limit.as_millis() as u64,
                            "client did not send its request header in time (client_timeouts.header_ms); closing"
                        );
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request header timeout")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // A response going out: whatever is read next is a new request head.
        self.answering();
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.answering();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded").field("inner", &self.inner).finish()
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_trickled_head_fails_at_its_deadline() {
        let (client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(Box::new(server), Duration::from_millis(200));
        let mut client = client;
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for b in b"POST / HTTP/1.1\r\nHost: x\r\n" {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut buf = [0u8; 64];
        let err = loop {
            match g.read(&mut buf).await {
                Ok(0) => panic!("closed"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190) && took < Duration::from_millis(600), "{took:?}");
        writer.abort();
    }

    #[tokio::test]
    async fn a_complete_head_disarms_and_a_response_rearms_on_the_next_byte() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(Box::new(server), Duration::from_millis(100));
        let (a, b) = (&b"GET / HTTP/1.1\r\nHost: x\r"[..], &b"\n\r\n"[..]);
        client.write_all(a).await.unwrap();
        client.write_all(b).await.unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < a.len() + b.len() {
            got += g.read(&mut buf[got..]).await.unwrap();
        }
        assert!(!g.in_head, "the head ended across two writes");
        g.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // Idle between requests: no deadline until the next byte.
        assert!(g.in_head && g.due.is_none());
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 1);
        assert!(g.due.is_some());
    }
}

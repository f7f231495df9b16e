//! Calls to providers through Pingora's connector (same pool and TLS stack
//! as the proxy). The gateway drives attempts itself (DESIGN.md decision 1);
//! this module owns one attempt: connect, send the whole body, wait for the
//! response header, then hand out body chunks under the idle/total timeouts.
//!
//! It never decides about fallback; it classifies what went wrong so the
//! caller can. `endpoint` holds the leaf types config keeps per provider
//! (address, timeouts), `retry` the waits between tries, `health` the
//! breakers and health checks.

pub mod attempts;
pub mod breaker;
pub mod endpoint;
pub mod health;
pub mod progress;
pub mod request;
pub mod retry;
pub mod tls;

use std::time::{Duration, Instant};

use bytes::Bytes;
/// Upstream calls are HTTP/1.1 (no peer asks for ALPN h2), so the H1
/// connector is used directly: its pool can be asked for a reused
/// connection without building the connect future.
pub use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use tokio::time::timeout;

pub use endpoint::{Endpoint, Timeouts};

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why one attempt failed. `reason()` is the metrics/log label.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("connect timeout")]
    ConnectTimeout,
    #[error("no response header within the first-byte timeout")]
    FirstByteTimeout,
    #[error("no data within the idle timeout")]
    IdleTimeout,
    #[error("total timeout reached")]
    TotalTimeout,
    #[error("upstream connection failed: {0}")]
    Io(String),
    #[error("modelgate is shutting down")]
    Shutdown,
}

impl AttemptError {
    pub fn reason(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect",
            AttemptError::ConnectTimeout => "connect_timeout",
            AttemptError::FirstByteTimeout => "first_byte_timeout",
            AttemptError::IdleTimeout => "idle_timeout",
            AttemptError::TotalTimeout => "total_timeout",
            AttemptError::Io(_) => "io",
            AttemptError::Shutdown => "shutdown",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::FirstByteTimeout | Self::IdleTimeout | Self::TotalTimeout)
    }
}

/// An upstream response whose header has arrived; the body is read on demand.
///
/// Boxed: it is passed by value through the retry policy and the relay, and
/// every async fn that takes it holds it (twice, as argument and local) in
/// its future; inline, its 1.4 KB made each request's future ~17 KB, which
/// Pingora and the runtime copy several times per request.
pub struct Exchange(Box<Live>);

/// The connection and response head behind an [`Exchange`].
pub struct Live {
    /// Its response header is read (`send` returns no exchange otherwise).
    session: HttpSession,
    peer: HttpPeer,
    idle: Duration,
    deadline: Instant,
    pub started: Instant,
}

/// Send one request and wait for the response header.
///
/// A pooled connection that the server already closed fails on first use;
/// that is retried once on a fresh connection, since the body is in memory.
pub async fn send(connector: &Connector, endpoint: &Endpoint, t: &Timeouts, req: &RequestHeader, body: &Bytes) -> Result<Exchange, AttemptError> {
    let started = Instant::now();
    let deadline = started + t.total;
    let peer = endpoint.peer(t).await?;
    let mut tries = 0;
    loop {
        tries += 1;
        // A pooled connection first: its future is small. Connecting (TCP,
        // TLS) is an 8.8 KB future, boxed so that it sizes no other future
        // and is only built when a connection must be made.
        let (mut session, reused) = match connector.reused_http_session(&peer).await {
            Some(h1) => (HttpSession::H1(h1), true),
            None => match timeout(t.connect, Box::pin(connector.get_http_session(&peer))).await {
                Err(_) => return Err(AttemptError::ConnectTimeout),
                Ok(Err(e)) if e.etype() == &pingora::ErrorType::ConnectTimedout => return Err(AttemptError::ConnectTimeout),
                Ok(Err(e)) => return Err(AttemptError::Connect(e.to_string())),
                Ok(Ok((h1, reused))) => (HttpSession::H1(h1), reused),
            },
        };
        let first_byte = t.first_byte.min(deadline.saturating_duration_since(Instant::now()));
        let sent = async {
            session.write_request_header(Box::new(req.clone())).await?;
            if !body.is_empty() {
                session.write_request_body(body.clone(), true).await?;
            }
            session.finish_request_body().await?;
            session.read_response_header().await
        };
        match timeout(first_byte, sent).await {
            Err(_) => {
                return Err(if first_byte < t.first_byte { AttemptError::TotalTimeout } else { AttemptError::FirstByteTimeout });
            }
            Ok(Err(e)) if reused && tries == 1 => {
                tracing::debug!(error = %e, "pooled upstream connection failed; retrying on a new one");
                continue;
            }
            Ok(Err(e)) => return Err(AttemptError::Io(e.to_string())),
            Ok(Ok(())) => {}
        }
        if session.response_header().is_none() {
            return Err(AttemptError::Io("response without header".into()));
        }
        return Ok(Exchange(Box::new(Live { session, peer, idle: t.idle, deadline, started })));
    }
}

impl std::ops::Deref for Exchange {
    type Target = Live;
    fn deref(&self) -> &Live {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut Live {
        &mut self.0
    }
}

impl Live {
    /// The response header (read by Pingora's client session; not copied).
    pub fn header(&self) -> &ResponseHeader {
        self.session.response_header().unwrap_or(&NO_HEADER)
    }
}

/// Never shown: an exchange exists only once its header was read.
static NO_HEADER: std::sync::LazyLock<ResponseHeader> =
    std::sync::LazyLock::new(|| crate::proxy::head::response(http::StatusCode::BAD_GATEWAY, http::HeaderMap::new()));

impl Exchange {
    /// Next body chunk; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        let live = &mut *self.0;
        let session = &mut live.session;
        let left = live.deadline.saturating_duration_since(Instant::now());
        let wait = live.idle.min(left);
        match timeout(wait, session.read_response_body()).await {
            Err(_) if wait < live.idle => Err(AttemptError::TotalTimeout),
            Err(_) => Err(AttemptError::IdleTimeout),
            Ok(Err(e)) => Err(AttemptError::Io(e.to_string())),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// Return the connection to the pool when its response was read to the
    /// end; otherwise it is closed (dropping a half-read connection is the
    /// only safe choice).
    pub async fn finish(self, connector: &Connector) {
        let Live { session, peer, .. } = *self.0;
        match session {
            HttpSession::H1(mut h1) => match h1.is_body_done() {
                true => connector.release_http_session(h1, &peer, Some(POOL_IDLE)).await,
                false => h1.shutdown().await,
            },
            mut session => session.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse() {
        let e = Endpoint::parse("https://api.openai.com/v1/", None).unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port, e.base_path.as_str(), e.authority.as_str()), (true, "api.openai.com", 443, "/v1", "api.openai.com"));
        let e = Endpoint::parse("http://127.0.0.1:11434/v1", None).unwrap();
        assert_eq!((e.tls, e.port, e.authority.as_str()), (false, 11434, "127.0.0.1:11434"));
        let e = Endpoint::parse("https://api.anthropic.com", None).unwrap();
        assert_eq!(e.base_path, "");
        assert!(Endpoint::parse("ftp://x", None).is_err());
        assert!(Endpoint::parse("api.openai.com/v1", None).is_err());
    }
}

//! Leaf types of a provider connection: its address ([`Endpoint`], parsed
//! from `base_url`, resolved with a short DNS cache) and how long each
//! phase of an attempt may take ([`Timeouts`]). `config` holds them in a
//! provider; they must not import `config` back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;

use super::AttemptError;

/// How long a resolved provider address is reused before asking DNS again.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Connect, first byte, idle between chunks, and whole-attempt limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

/// A provider's network address, parsed from its `base_url`.
#[derive(Debug)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix from the base URL, without trailing slash (`/v1` or ``).
    pub base_path: String,
    /// Value for the `Host` header.
    pub authority: String,
    ca: Option<Arc<CaType>>,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
}

impl Endpoint {
    pub fn parse(url: &str, ca: Option<Arc<CaType>>) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{url}` must start with https:// (or http:// for a local provider)")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("`{url}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{url}` must not have a query string"));
        }
        let default_port = if tls { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if port == default_port { host.to_string() } else { format!("{host}:{port}") };
        Ok(Self {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
            authority,
            ca,
            resolved: Mutex::new(None),
        })
    }

    async fn address(&self) -> Result<SocketAddr, AttemptError> {
        if let Ok(guard) = self.resolved.lock() {
            if let Some((at, addr)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| AttemptError::Connect(format!("cannot resolve {}", self.host)))?;
        if let Ok(mut guard) = self.resolved.lock() {
            *guard = Some((Instant::now(), addr));
        }
        Ok(addr)
    }

    pub(super) async fn peer(&self, t: &Timeouts) -> Result<HttpPeer, AttemptError> {
        let mut peer = HttpPeer::new(self.address().await?, self.tls, self.host.clone());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.ca = self.ca.clone();
        Ok(peer)
    }
}

//! Transparent mode: the `HTTPS_PROXY` listener (DESIGN.md decision 6).
//!
//! `CONNECT host:port` to a host on the intercept list is answered 200 and
//! TLS-terminated with a leaf certificate from the local CA; the decrypted
//! requests go to the same gateway pipeline as base-URL mode (routing,
//! budgets, fallback, metrics), in its forward mode, which maps the host to
//! its provider. Every other host is tunnelled byte for byte to a checked
//! address (`target`: no loopback, link-local or private targets unless
//! allowed), or refused when `forward_proxy.tunnel` is off. Plain `http://`
//! absolute-form requests (HTTP_PROXY) go to the gateway directly, which
//! checks `Proxy-Authorization` on each of them.
//!
//! Every place a client can stall has a deadline: the request head
//! (`head_timeout_ms`), the TLS handshake of an intercepted host
//! (`tls_handshake_timeout_ms`) and an idle tunnel (`tunnel_idle_timeout_ms`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert, ServerConfig};
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::ca::Ca;
use crate::config::{ForwardProxy, Snapshot};
use crate::drain::{Drain, Fresh};
use crate::proxy::conn::Guarded;
use crate::proxy::gateway::Gateway;
use crate::proxy::target::{self, Host};
use crate::proxy::tunnel::{open_tunnel, relay, Refusal};

/// Largest CONNECT request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long a blind tunnel may take to resolve and connect.
const TUNNEL_CONNECT: Duration = Duration::from_secs(10);

pub struct Forward {
    state: Arc<ArcSwap<Snapshot>>,
    /// The gateway in forward mode, for decrypted and plain requests.
    http: Arc<HttpProxy<Gateway>>,
    acceptor: Acceptor,
    drain: Drain,
}

/// What the first bytes of a proxy connection are.
enum Head {
    /// A CONNECT request head, up to and with its blank line; bytes after
    /// it were put back into the stream.
    Connect(Vec<u8>),
    /// Anything else (plain HTTP proxying); every byte was put back.
    Plain,
}

impl Forward {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, http: HttpProxy<Gateway>, ca: Arc<Ca>, drain: Drain) -> Self {
        pingora::tls::install_default_crypto_provider();
        let resolver = Resolver { ca, state: state.clone() };
        let mut cfg = ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(resolver));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Forward { state, http: Arc::new(http), acceptor: Acceptor::from_server_config(Arc::new(cfg)), drain }
    }

    /// `fresh` (see `proxy::conn`) goes with the connection into the
    /// pipeline when the host is intercepted; a blind tunnel is no request.
    async fn connect(&self, mut io: Box<L4Stream>, head: &[u8], fp: &ForwardProxy, shutdown: &ShutdownWatch, fresh: Fresh) -> Option<Stream> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            return respond(io, 400, "malformed CONNECT request").await;
        }
        let target = req.path.unwrap_or_default().to_string();
        if let Err(why) = fp.authorize(req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("proxy-authorization")).map(|h| h.value)) {
            tracing::info!(target = %target, "forward proxy: CONNECT without valid Proxy-Authorization");
            return respond(io, 407, &why).await;
        }
        let Some((raw_host, port)) = split_host_port(&target) else {
            return respond(io, 400, &format!("CONNECT target `{target}` is not host:port")).await;
        };
        let host = match target::parse_host(raw_host) {
            Ok(h) => h,
            Err(why) => return respond(io, 400, &format!("CONNECT target `{target}`: {why}")).await,
        };
        if !fp.allow_ports.contains(&port) {
            return respond(io, 403, &format!("CONNECT to port {port} is not allowed (forward_proxy.allow_ports: {:?})", fp.allow_ports)).await;
        }
        let name = match &host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        if fp.intercepts(&name) {
            if !established(&mut io).await {
                return None;
            }
            let tls = match tokio::time::timeout(fp.timeouts.tls_handshake, self.acceptor.tls_handshake(*io)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    // Usually a client that does not trust the local CA yet.
                    tracing::warn!(host = %name, error = %e, "forward proxy: TLS handshake with the client failed (does it trust modelgate's CA? see `modelgate ca show`)");
                    return None;
                }
                Err(_) => {
                    tracing::info!(host = %name, timeout_ms = fp.timeouts.tls_handshake.as_millis() as u64, "forward proxy: the client did not complete its TLS handshake in time (forward_proxy.tls_handshake_timeout_ms); closed");
                    return None;
                }
            };
            return self.http.process_new(Box::new(Guarded::untimed(Box::new(tls)).fresh(fresh)), shutdown).await;
        }
        if !fp.tunnel {
            return respond(io, 403, &format!("{name} is not on forward_proxy.intercept and forward_proxy.tunnel is off")).await;
        }
        let mut upstream = match tokio::time::timeout(TUNNEL_CONNECT, open_tunnel(fp, &host, port)).await {
            Ok(Ok(s)) => s,
            Ok(Err(Refusal::Policy)) => {
                tracing::warn!(target = %target, "forward proxy: CONNECT to an internal address refused (forward_proxy.allow_internal)");
                return respond(
                    io,
                    403,
                    &format!("CONNECT to {target} is refused: it is, or resolves to, an internal address (loopback, link-local, private or unspecified). To allow it, list it in forward_proxy.allow_internal (private networks: forward_proxy.allow_private: true)"),
                )
                .await;
            }
            Ok(Err(Refusal::Unreachable(why))) => return respond(io, 502, &format!("cannot connect to {target}: {why}")).await,
            Err(_) => return respond(io, 504, &format!("connecting to {target} timed out")).await,
        };
        drop(fresh);
        if !established(&mut io).await {
            return None;
        }
        let idle = fp.timeouts.tunnel_idle;
        let (up, down, idled) = relay(&mut *io, &mut upstream, idle).await;
        tracing::debug!(target = %target, bytes_up = up, bytes_down = down, idled, "forward proxy: tunnel closed");
        if idled {
            tracing::info!(target = %target, idle_ms = idle.as_millis() as u64, "forward proxy: tunnel idle past forward_proxy.tunnel_idle_timeout_ms; closed");
        }
        None
    }
}

#[async_trait]
impl ServerApp for Forward {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let fresh = self.drain.fresh();
        let snap = self.state.load_full();
        let fp = &snap.forward_proxy;
        let peer = io.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if let Some(ip) = peer {
            if !fp.admits(ip) {
                tracing::warn!(%ip, "forward proxy: client not on forward_proxy.allow_clients");
                return respond(io, 403, "this client may not use the proxy (forward_proxy.allow_clients)").await;
            }
        }
        // The listener's own TCP stream: bytes read to tell CONNECT from
        // plain HTTP are put back (rewound) for whoever reads next.
        let Ok(mut io) = io.into_any().downcast::<L4Stream>() else {
            tracing::error!("forward proxy: the client connection is not a TCP stream");
            return None;
        };
        let deadline = Instant::now() + fp.timeouts.head;
        match read_head(&mut io, deadline).await {
            Ok(Head::Plain) => self.http.process_new(Box::new(Guarded::untimed(io).fresh(fresh)), shutdown).await,
            Ok(Head::Connect(head)) => self.connect(io, &head, fp, shutdown, fresh).await,
            Err(HeadError::Closed) => None,
            Err(HeadError::TooLarge) => respond(io, 400, &format!("CONNECT request head over {MAX_HEAD} bytes")).await,
            Err(HeadError::Timeout) => {
                let ms = fp.timeouts.head.as_millis();
                tracing::info!(?peer, timeout_ms = ms as u64, "forward proxy: no complete request head in time (forward_proxy.head_timeout_ms); closed");
                respond(io, 408, &format!("no complete request head within {ms} ms")).await
            }
        }
    }

    async fn cleanup(&self) {
        self.drain.settle_fresh().await;
        self.http.cleanup().await;
    }
}

enum HeadError {
    Closed,
    TooLarge,
    Timeout,
}

/// Read until the bytes show a plain request, or a whole CONNECT head has
/// arrived, by `deadline`. Reads in blocks; whatever was read past the head
/// is put back into the stream, so the tunnel or TLS sees it.
async fn read_head(io: &mut L4Stream, deadline: Instant) -> Result<Head, HeadError> {
    const CONNECT: &[u8] = b"CONNECT ";
    let mut buf = Vec::with_capacity(1024);
    let mut block = [0u8; 4096];
    loop {
        let seen = buf.len().min(CONNECT.len());
        if buf[..seen] != CONNECT[..seen] {
            io.rewind(&buf);
            return Ok(Head::Plain);
        }
        if seen == CONNECT.len() {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
                io.rewind(&buf[end..]);
                buf.truncate(end);
                return Ok(Head::Connect(buf));
            }
            if buf.len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
        }
        match tokio::time::timeout_at(deadline, io.read(&mut block)).await {
            Err(_) => return Err(HeadError::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&block[..n]),
        }
    }
}

/// Tell the client its tunnel is open (the stream buffers writes: flush).
async fn established<W: AsyncWrite + Unpin>(io: &mut W) -> bool {
    io.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() && io.flush().await.is_ok()
}

/// Answer the proxy client and close.
async fn respond<W: AsyncWrite + Unpin>(mut io: W, status: u16, message: &str) -> Option<Stream> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("modelgate forward proxy: {message}\n");
    let auth = if status == 407 { "Proxy-Authenticate: Basic realm=\"modelgate\"\r\n" } else { "" };
    let head = format!("HTTP/1.1 {status} {reason}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.write_all(body.as_bytes()).await;
    let _ = io.flush().await;
    None
}

/// `host:port`, `[v6]:port` (the host as written, brackets kept).
fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    if host.is_empty() || host == "[]" {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Mints (or reuses) the leaf certificate for an intercepted SNI.
struct Resolver {
    ca: Arc<Ca>,
    state: Arc<ArcSwap<Snapshot>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        if !self.state.load().forward_proxy.intercepts(sni) {
            return None;
        }
        match self.ca.leaf(sni) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(host = sni, error = %e, "forward proxy: cannot mint a certificate");
                None
            }
        }
    }
}

impl ForwardProxy {
    /// Whether `host` (any case, trailing dot or not) is intercepted.
    pub fn intercepts(&self, host: &str) -> bool {
        let host = target::normalize_host(host);
        self.intercept.contains(&host)
    }

    /// Whether a client at `ip` may use the proxy.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.allow_clients.is_empty() {
            return ip.is_loopback();
        }
        self.allow_clients.iter().any(|net| net.contains(&ip))
    }

    /// Check `Proxy-Authorization` (Basic, any user, the password from
    /// `auth_env`) when the proxy requires it.
    pub fn authorize(&self, header: Option<&[u8]>) -> Result<(), String> {
        let Some((var, secret)) = &self.auth else { return Ok(()) };
        let Some(secret) = secret else {
            return Err(format!("the proxy requires authentication but {var} (forward_proxy.auth_env) is not set in modelgate's environment"));
        };
        let given = header.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| h.trim().strip_prefix("Basic ")).and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()
        });
        let password = given.as_deref().and_then(|g| std::str::from_utf8(g).ok()).and_then(|g| g.split_once(':')).map(|(_, p)| p.to_string());
        match password {
            Some(p) if crate::admin::same_secret(p.as_bytes(), secret.expose().as_bytes()) => Ok(()),
            _ => Err("send Proxy-Authorization: Basic with the proxy password (e.g. HTTPS_PROXY=http://user:PASSWORD@host:port)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_parse() {
        assert_eq!(split_host_port("api.openai.com:443"), Some(("api.openai.com", 443)));
        assert_eq!(split_host_port("[::1]:8443"), Some(("[::1]", 8443)));
        assert_eq!(target::parse_host(split_host_port("[::1]:8443").unwrap().0), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(target::parse_host(split_host_port("API.OpenAI.com.:443").unwrap().0), Ok(Host::Name("api.openai.com".into())));
        assert!(split_host_port("nohost").is_none());
        assert!(split_host_port(":443").is_none());
        assert!(split_host_port("[]:443").is_none());
        assert!(split_host_port("h:99999").is_none());
    }

    #[test]
    fn intercept_matches_any_case_and_a_trailing_dot() {
        let fp = ForwardProxy::default();
        assert!(fp.intercepts("api.openai.com") && fp.intercepts("API.OpenAI.COM.") && !fp.intercepts("api.openai.com.evil"));
    }
}

//! Transparent mode: the `HTTPS_PROXY` listener (DESIGN.md decision 6).
//!
//! `CONNECT host:port` to a host on the intercept list is answered 200 and
//! TLS-terminated with a leaf certificate from the local CA; the decrypted
//! requests go to the same gateway pipeline as base-URL mode (routing,
//! budgets, fallback, metrics), in its forward mode, which maps the host to
//! its provider. Every other host is tunnelled byte for byte (or refused
//! when `forward_proxy.tunnel` is off). Plain `http://` absolute-form
//! requests (HTTP_PROXY) go to the gateway directly.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ca::Ca;
use crate::config::{ForwardProxy, Snapshot};
use crate::proxy::gateway::Gateway;

/// Largest CONNECT request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long a blind tunnel may take to connect.
const TUNNEL_CONNECT: Duration = Duration::from_secs(10);

pub struct Forward {
    state: Arc<ArcSwap<Snapshot>>,
    /// The gateway in forward mode, for decrypted and plain requests.
    http: Arc<HttpProxy<Gateway>>,
    acceptor: Acceptor,
}

impl Forward {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, http: HttpProxy<Gateway>, ca: Arc<Ca>) -> Self {
        pingora::tls::install_default_crypto_provider();
        let resolver = Resolver { ca, state: state.clone() };
        let mut cfg = ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(resolver));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Forward { state, http: Arc::new(http), acceptor: Acceptor::from_server_config(Arc::new(cfg)) }
    }

    async fn connect(&self, mut io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let snap = self.state.load_full();
        let fp = &snap.forward_proxy;
        let head = match read_head(&mut io).await {
            Ok(h) => h,
            Err(why) => return respond(io, 400, &why).await,
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return respond(io, 400, "malformed CONNECT request").await;
        }
        let target = req.path.unwrap_or_default().to_string();
        if let Err(why) = fp.authorize(req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("proxy-authorization")).map(|h| h.value)) {
            tracing::info!(target = %target, "forward proxy: CONNECT without valid Proxy-Authorization");
            return respond(io, 407, &why).await;
        }
        let Some((host, port)) = split_host_port(&target) else {
            return respond(io, 400, &format!("CONNECT target `{target}` is not host:port")).await;
        };
        if !fp.allow_ports.contains(&port) {
            return respond(io, 403, &format!("CONNECT to port {port} is not allowed (forward_proxy.allow_ports: {:?})", fp.allow_ports)).await;
        }
        if fp.intercepts(&host) {
            if !established(&mut io).await {
                return None;
            }
            // The listener's own TCP stream, to put TLS on.
            let Ok(tcp) = io.into_any().downcast::<L4Stream>() else {
                tracing::error!("forward proxy: the client connection is not a TCP stream");
                return None;
            };
            let tls = match self.acceptor.tls_handshake(*tcp).await {
                Ok(t) => t,
                Err(e) => {
                    // Usually a client that does not trust the local CA yet.
                    tracing::warn!(host = %host, error = %e, "forward proxy: TLS handshake with the client failed (does it trust modelgate's CA? see `modelgate ca show`)");
                    return None;
                }
            };
            return self.http.process_new(Box::new(tls), shutdown).await;
        }
        if !fp.tunnel {
            return respond(io, 403, &format!("{host} is not on forward_proxy.intercept and forward_proxy.tunnel is off")).await;
        }
        let upstream = match tokio::time::timeout(TUNNEL_CONNECT, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return respond(io, 502, &format!("cannot connect to {target}: {e}")).await,
            Err(_) => return respond(io, 504, &format!("connecting to {target} timed out")).await,
        };
        if !established(&mut io).await {
            return None;
        }
        let mut upstream = upstream;
        let copied = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
        tracing::debug!(target = %target, ?copied, "forward proxy: tunnel closed");
        None
    }
}

#[async_trait]
impl ServerApp for Forward {
    async fn process_new(self: &Arc<Self>, mut io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let snap = self.state.load_full();
        let peer = io.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if let Some(ip) = peer {
            if !snap.forward_proxy.admits(ip) {
                tracing::warn!(%ip, "forward proxy: client not on forward_proxy.allow_clients");
                return respond(io, 403, "this client may not use the proxy (forward_proxy.allow_clients)").await;
            }
        }
        let mut first = [0u8; 8];
        match io.try_peek(&mut first).await {
            Ok(true) if &first == b"CONNECT " => self.connect(io, shutdown).await,
            // Plain HTTP (absolute-form), or a stream that cannot peek (TLS,
            // a kept-alive intercepted connection): the gateway reads it.
            Ok(_) => self.http.process_new(io, shutdown).await,
            Err(_) => None,
        }
    }
}

/// Read a request head up to its blank line (the client waits for our
/// answer before sending more, so nothing past it is consumed).
async fn read_head(io: &mut Stream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD {
            return Err("CONNECT request head too large".into());
        }
        match io.read(&mut byte).await {
            Ok(0) | Err(_) => return Err("connection closed in the CONNECT request".into()),
            Ok(_) => buf.push(byte[0]),
        }
    }
    Ok(buf)
}

/// Tell the client its tunnel is open (the stream buffers writes: flush).
async fn established(io: &mut Stream) -> bool {
    io.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() && io.flush().await.is_ok()
}

/// Answer the proxy client and close.
async fn respond(mut io: Stream, status: u16, message: &str) -> Option<Stream> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
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

/// `host:port`, `[v6]:port`.
fn split_host_port(target: &str) -> Option<(String, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
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
    pub fn intercepts(&self, host: &str) -> bool {
        self.intercept.iter().any(|h| h.eq_ignore_ascii_case(host))
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
        assert_eq!(split_host_port("api.openai.com:443"), Some(("api.openai.com".into(), 443)));
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1".into(), 8443)));
        assert_eq!(split_host_port("API.OpenAI.com:443").unwrap().0, "api.openai.com");
        assert!(split_host_port("nohost").is_none());
        assert!(split_host_port(":443").is_none());
        assert!(split_host_port("h:99999").is_none());
    }
}

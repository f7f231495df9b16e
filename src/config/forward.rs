//! `forward_proxy:` as runtime data: which hosts the `HTTPS_PROXY`
//! listener intercepts, who may use it, where blind tunnels may go and
//! where a client may stall. Validation is `validate`'s; the behaviour is
//! `crate::proxy::forward`'s.

use std::time::Duration;

use super::Secret;

/// `forward_proxy:` — what the transparent-mode listener does.
#[derive(Debug, Clone)]
pub struct ForwardProxy {
    /// Hosts whose TLS is terminated and whose requests go through modelgate.
    pub intercept: Vec<String>,
    /// Ports CONNECT may reach.
    pub allow_ports: Vec<u16>,
    /// Tunnel other hosts blind (else refuse them).
    pub tunnel: bool,
    /// Client networks allowed to use the proxy (empty: loopback only).
    pub allow_clients: Vec<ipnet::IpNet>,
    /// `Proxy-Authorization` password: the variable and its value.
    pub auth: Option<(String, Option<Secret>)>,
    /// Which internal addresses a blind tunnel may reach
    /// (`allow_internal`, `allow_private`).
    pub targets: crate::proxy::target::Policy,
    pub timeouts: ForwardTimeouts,
}

/// Where a forward-proxy client can stall, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardTimeouts {
    /// From accept until the CONNECT request head is read (or a plain
    /// request is recognised): `head_timeout_ms`.
    pub head: Duration,
    /// The client's TLS handshake on an intercepted host: `tls_handshake_timeout_ms`.
    pub tls_handshake: Duration,
    /// A blind tunnel with no byte either way: `tunnel_idle_timeout_ms`.
    pub tunnel_idle: Duration,
}

impl Default for ForwardTimeouts {
    fn default() -> Self {
        ForwardTimeouts { head: Duration::from_secs(10), tls_handshake: Duration::from_secs(10), tunnel_idle: Duration::from_secs(300) }
    }
}

impl Default for ForwardProxy {
    fn default() -> Self {
        ForwardProxy {
            intercept: DEFAULT_INTERCEPT.iter().map(|h| h.to_string()).collect(),
            allow_ports: vec![443],
            tunnel: true,
            allow_clients: Vec::new(),
            auth: None,
            targets: crate::proxy::target::Policy::default(),
            timeouts: ForwardTimeouts::default(),
        }
    }
}

/// The provider API hosts intercepted by default.
pub const DEFAULT_INTERCEPT: &[&str] = &["api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "openrouter.ai"];

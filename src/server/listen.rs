//! Listeners: checked before the server starts, announced once they serve.
//!
//! Pingora binds lazily, in each service's runtime, and retries a busy
//! address for 30 s before a listener thread panics while the process
//! lives on serving nothing. So every address is test-bound here first
//! (bind, then release): a busy or forbidden one ends the start with one
//! line naming the listener. "listening" is logged, and `READY=1` sent,
//! only once every listener accepts connections; until then `/readyz`
//! answers 503 (`"listening": false`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Listen;

/// The listeners of `listen`: (name, address).
pub fn listeners(listen: &Listen) -> Vec<(&'static str, SocketAddr)> {
    let mut l = vec![("gateway", listen.gateway), ("admin", listen.admin)];
    if let Some(f) = listen.forward_proxy {
        l.push(("forward proxy", f));
    }
    l
}

/// Bind each listener's address once and release it; the first that
/// cannot be bound is the error.
pub fn check_free(listen: &Listen) -> Result<(), String> {
    let all = listeners(listen);
    for (i, (name, addr)) in all.iter().enumerate() {
        if let Some((other, _)) = all[..i].iter().find(|(_, a)| a == addr) {
            return Err(format!("the {name} listener and the {other} listener are both set to {addr} (listen: in the config); give each its own port"));
        }
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => "the address is already in use (another process listens there; `ss -ltnp` shows which)".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".to_string(),
                std::io::ErrorKind::AddrNotAvailable => "no network interface has this address".to_string(),
                _ => e.to_string(),
            };
            return Err(format!("cannot listen on {addr} for the {name}: {why}"));
        }
    }
    Ok(())
}

static LISTENING: AtomicBool = AtomicBool::new(false);

/// Whether every listener has accepted a connection (`/readyz`).
pub fn listening() -> bool {
    LISTENING.load(Ordering::Relaxed)
}

/// Waits until every listener accepts connections, then logs "listening"
/// and tells the service manager (`READY=1`).
pub struct Announce {
    pub listen: Listen,
    /// A binary upgrade's new process: name ourselves the main process.
    pub takes_over: bool,
}

#[async_trait]
impl BackgroundService for Announce {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let all = listeners(&self.listen);
        let started = tokio::time::Instant::now();
        let mut warned = false;
        for (name, addr) in &all {
            let probe = if addr.ip().is_unspecified() { SocketAddr::new(loopback(addr), addr.port()) } else { *addr };
            loop {
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(probe)).await {
                    break;
                }
                if !warned && started.elapsed() > Duration::from_secs(10) {
                    warned = true;
                    tracing::warn!(listener = name, %addr, "still not accepting connections after 10 s");
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
        LISTENING.store(true, Ordering::Relaxed);
        tracing::info!(gateway = %self.listen.gateway, admin = %self.listen.admin, forward_proxy = ?self.listen.forward_proxy, "modelgate listening");
        super::notify::ready(self.takes_over);
    }
}

fn loopback(addr: &SocketAddr) -> std::net::IpAddr {
    if addr.is_ipv6() {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    }
}

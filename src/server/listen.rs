//! Listeners: checked before the server starts, announced once they serve.
//!
//! Pingora binds lazily, in each service's runtime, and retries a busy
//! address for 30 s before a listener thread panics while the process
//! lives on serving nothing. So every address is test-bound here first
//! (bind, then release): a busy or forbidden one ends the start with one
//! line naming the listener. "listening" is logged, and `READY=1` sent,
//! only once every listener accepts connections and is this process's
//! own (another process may take an address between that check and
//! Pingora's bind); until then `/readyz` answers 503 (`"listening": false`).

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
                // Something accepts there, and it is this process: another
                // process may have taken the address between the check at
                // start and Pingora's bind (which then retries for 30 s).
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(probe)).await {
                    if held_here(addr) != Some(false) {
                        break;
                    }
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

/// Whether this process holds a socket listening on `addr` (read from
/// Linux's /proc); `None` where that cannot be read.
fn held_here(addr: &SocketAddr) -> Option<bool> {
    use std::io::BufRead;
    let table = std::fs::File::open(if addr.is_ipv6() { "/proc/self/net/tcp6" } else { "/proc/self/net/tcp" }).ok()?;
    // Rows: sl, local address, remote address, state (0A: listening), …,
    // inode (10th). Read a row at a time: on a busy host the table holds
    // every socket of the network namespace.
    let mut inodes = Vec::new();
    let mut rows = std::io::BufReader::new(table);
    let mut row = String::new();
    while rows.read_line(&mut row).ok()? > 0 {
        let mut f = row.split_whitespace();
        let (local, state, inode) = (f.nth(1), f.nth(1), f.nth(5));
        if state == Some("0A") && local.and_then(proc_addr) == Some(*addr) {
            inodes.extend(inode.and_then(|i| i.parse::<u64>().ok()));
        }
        row.clear();
    }
    if inodes.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(fds.flatten().any(|fd| {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        target.to_str().and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()).is_some_and(|i| inodes.contains(&i))
    }))
}

/// A local address as /proc/net/tcp{,6} writes it: the address's 32-bit
/// words in hex, each in the machine's byte order, then `:` and the port.
fn proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let word = |i: usize| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip: std::net::IpAddr = match ip.len() {
        8 => std::net::Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            std::net::Ipv6Addr::from(b).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?))
}

fn loopback(addr: &SocketAddr) -> std::net::IpAddr {
    if addr.is_ipv6() {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_read_as_the_kernel_writes_them() {
        assert_eq!(proc_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(proc_addr("00000000:0050"), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(proc_addr("00000000000000000000000001000000:1F90"), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(proc_addr("zz:1"), None);
    }

    #[test]
    fn a_listener_is_found_held_here_and_a_free_address_is_not() {
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(any) else { continue };
            let addr = l.local_addr().unwrap();
            assert_eq!(held_here(&addr), Some(true), "{addr}");
            drop(l);
            assert_eq!(held_here(&addr), Some(false), "{addr} after it was closed");
        }
    }
}

//! Blind tunnels of the forward proxy: the target resolved once and
//! connected only at the addresses the policy permits (`proxy::target`),
//! then bytes copied both ways until both sides are done or the tunnel
//! idles past its limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ForwardProxy;
use crate::proxy::target::Host;

/// Why a tunnel was not opened.
pub enum Refusal {
    /// Every address of the target is internal and not allowed. One
    /// answer for all such targets, given before any connection attempt,
    /// so it says nothing about whether a port is open.
    Policy,
    /// An allowed target that cannot be resolved or reached.
    Unreachable(String),
}

/// Resolve the target once, keep the addresses the policy permits, and
/// connect to one of those (never resolving again).
pub async fn open_tunnel(fp: &ForwardProxy, host: &Host, port: u16) -> Result<TcpStream, Refusal> {
    let (addrs, by_name): (Vec<SocketAddr>, bool) = match host {
        Host::Ip(ip) => (vec![SocketAddr::new(*ip, port)], false),
        Host::Name(n) => {
            let found = tokio::net::lookup_host((n.as_str(), port)).await.map_err(|e| Refusal::Unreachable(format!("cannot resolve {n}: {e}")))?;
            (found.collect(), fp.targets.allows_name(n))
        }
    };
    let permitted: Vec<SocketAddr> = addrs.iter().copied().filter(|a| by_name || fp.targets.permits(a.ip())).collect();
    if permitted.is_empty() {
        return Err(if addrs.is_empty() { Refusal::Unreachable("the name has no addresses".into()) } else { Refusal::Policy });
    }
    let mut last = String::new();
    for a in permitted {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Refusal::Unreachable(last))
}

/// Copy bytes both ways until both sides are done, an error, or `idle`
/// passes with no byte either way. Returns (client→upstream bytes,
/// upstream→client bytes, closed for idleness).
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, idle: Duration) -> (u64, u64, bool)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    enum Ev {
        FromClient(std::io::Result<usize>),
        FromUpstream(std::io::Result<usize>),
        Idle,
    }
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    let (mut client_open, mut upstream_open) = (true, true);
    let (mut up, mut down) = (0u64, 0u64);
    while client_open || upstream_open {
        let ev = tokio::select! {
            r = client.read(&mut a), if client_open => Ev::FromClient(r),
            r = upstream.read(&mut b), if upstream_open => Ev::FromUpstream(r),
            _ = tokio::time::sleep(idle) => Ev::Idle,
        };
        match ev {
            Ev::Idle => return (up, down, true),
            Ev::FromClient(Ok(0)) => {
                client_open = false;
                let _ = upstream.shutdown().await;
            }
            Ev::FromUpstream(Ok(0)) => {
                upstream_open = false;
                let _ = client.shutdown().await;
            }
            Ev::FromClient(Err(_)) | Ev::FromUpstream(Err(_)) => break,
            // A peer that stops reading stalls the write: the same limit.
            Ev::FromClient(Ok(n)) => {
                if !write_within(upstream, &a[..n], idle).await {
                    break;
                }
                up += n as u64;
            }
            Ev::FromUpstream(Ok(n)) => {
                if !write_within(client, &b[..n], idle).await {
                    break;
                }
                down += n as u64;
            }
        }
    }
    (up, down, false)
}

/// Write and flush `data` within `limit`; false when the peer failed or stalled.
async fn write_within<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_tunnel_is_closed_and_traffic_keeps_it_open() {
        let (mut client, mut client_end) = tokio::io::duplex(1024);
        let (mut upstream, mut upstream_end) = tokio::io::duplex(1024);
        let idle = Duration::from_millis(200);
        let task = tokio::spawn(async move { relay(&mut client_end, &mut upstream_end, idle).await });
        let started = std::time::Instant::now();
        let mut last = started;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            upstream.write_all(b"pong").await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            last = std::time::Instant::now();
        }
        assert!(last - started > 2 * idle, "traffic kept the tunnel open past the idle limit");
        let (up, down, idled) = task.await.unwrap();
        assert!(idled && up == 16 && down == 16, "{up} {down} {idled}");
        let quiet = last.elapsed();
        assert!(quiet >= idle - Duration::from_millis(20) && quiet < idle + Duration::from_millis(400), "closed {quiet:?} after the last byte");
    }
}

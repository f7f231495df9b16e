//! Validation of `listen:`, the admin token and its exposure,
//! `access_log:` and `forward_proxy:`: where modelgate listens and who may
//! reach it.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::super::raw::{RawForwardProxy, RawListen};
use super::Ctx;
use crate::config::*;

/// `admin_token_env` and whether it guards reads too, with the exposure
/// checks of the admin listener.
pub(super) fn admin_of(
    cx: &mut Ctx,
    listen: &Listen,
    token_env: Option<String>,
    read_requires_token: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, Option<Secret>)> {
    let has_admin_token = token_env.is_some();
    let admin_token = match token_env {
        Some(var) if var.trim().is_empty() => {
            cx.err("admin_token_env", "must name an environment variable holding the admin bearer token");
            None
        }
        Some(var) => Some((var.clone(), env(&var).filter(|t| !t.is_empty()).map(Secret))),
        None => None,
    };
    admin_exposure(cx, listen, has_admin_token, read_requires_token);
    admin_token
}

pub(super) fn access_log_of(cx: &mut Ctx, access_log: &str) -> AccessLog {
    match access_log {
        "stdout" => AccessLog::Stdout,
        "off" => AccessLog::Off,
        "" => {
            cx.err("access_log", "must be `stdout`, `off`, or a file path");
            AccessLog::Off
        }
        path => AccessLog::File(PathBuf::from(path)),
    }
}

/// `forward_proxy:`; a listener on a non-loopback address needs an
/// explicit `allow_clients` (no accidental open proxy). Intercepted hosts
/// are those on the list some provider answers for; others are tunnelled.
pub(super) fn forward_proxy_of(
    cx: &mut Ctx,
    raw: RawForwardProxy,
    listen: &Listen,
    providers: &[Provider],
    env: &dyn Fn(&str) -> Option<String>,
) -> ForwardProxy {
    let mut fp = ForwardProxy::default();
    if let Some(list) = raw.intercept {
        fp.intercept = list.iter().map(|h| normalize_host(h)).collect();
    }
    fp.intercept.retain(|h| providers.iter().any(|p| p.hosts.contains(h)));
    if let Some(ports) = raw.allow_ports {
        if ports.is_empty() || ports.contains(&0) {
            cx.err("forward_proxy.allow_ports", "list the ports CONNECT may reach (1–65535), e.g. [443]");
        }
        fp.allow_ports = ports;
    }
    fp.tunnel = raw.tunnel.unwrap_or(true);
    for (i, c) in raw.allow_clients.iter().flatten().enumerate() {
        let parsed = c.parse::<ipnet::IpNet>().or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => fp.allow_clients.push(n),
            Err(_) => cx.err(format!("forward_proxy.allow_clients[{i}]"), format!("`{c}` is not an IP address or network (e.g. 10.0.0.0/8)")),
        }
    }
    if let Some(addr) = listen.forward_proxy {
        if !addr.ip().is_loopback() && fp.allow_clients.is_empty() {
            cx.err(
                "listen.forward_proxy",
                format!("the forward proxy would listen on {addr}, reachable from other machines, without forward_proxy.allow_clients; list the client networks allowed to use it (e.g. [10.0.0.0/8]) or listen on 127.0.0.1 — modelgate will not run an open proxy"),
            );
        }
    }
    fp.auth = match raw.auth_env {
        Some(var) if var.trim().is_empty() => {
            cx.err("forward_proxy.auth_env", "must name an environment variable holding the proxy password");
            None
        }
        Some(var) => Some((var.clone(), env(&var).filter(|t| !t.is_empty()).map(Secret))),
        None => None,
    };
    for (i, entry) in raw.allow_internal.iter().flatten().enumerate() {
        if let Err(why) = fp.targets.add(entry) {
            cx.err(format!("forward_proxy.allow_internal[{i}]"), why);
        }
    }
    fp.targets.allow_private = raw.allow_private.unwrap_or(false);
    let mut ms = |field: &str, v: Option<u64>, default: Duration| match v {
        Some(0) => {
            cx.err(format!("forward_proxy.{field}"), "must be greater than 0 (milliseconds)");
            default
        }
        Some(ms) => Duration::from_millis(ms),
        None => default,
    };
    let d = ForwardTimeouts::default();
    fp.timeouts = ForwardTimeouts {
        head: ms("head_timeout_ms", raw.head_timeout_ms, d.head),
        tls_handshake: ms("tls_handshake_timeout_ms", raw.tls_handshake_timeout_ms, d.tls_handshake),
        tunnel_idle: ms("tunnel_idle_timeout_ms", raw.tunnel_idle_timeout_ms, d.tunnel_idle),
    };
    fp
}

/// A non-loopback admin listener needs a token: its mutating endpoints
/// change routing, and without `admin_read_requires_token` anyone who can
/// reach it reads spend and usage.
pub(super) fn admin_exposure(cx: &mut Ctx, listen: &Listen, has_token: bool, read_requires_token: bool) {
    let addr = listen.admin;
    if !addr.ip().is_loopback() && !has_token {
        cx.err(
            "listen.admin",
            format!(
                "the admin listener would listen on {addr}, reachable from other machines, without admin_token_env; set `admin_token_env: MODELGATE_ADMIN_TOKEN` (and `admin_read_requires_token: true` to protect /metrics and the read-only /admin endpoints too), or listen on 127.0.0.1:{}",
                addr.port()
            ),
        );
    }
    if read_requires_token && !has_token {
        cx.err("admin_read_requires_token", "needs admin_token_env: name the environment variable that holds the admin bearer token");
    }
}

/// Hosts compared in one form (lowercase, no trailing dot).
pub(super) fn normalize_host(h: &str) -> String {
    crate::proxy::target::normalize_host(h)
}

fn addr(cx: &mut Ctx, path: &str, value: Option<String>, default: &str) -> SocketAddr {
    let v = value.unwrap_or_else(|| default.to_string());
    v.parse().unwrap_or_else(|_| {
        cx.err(path, format!("`{v}` is not a listen address; write IP:PORT, e.g. {default}"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

pub(super) fn listen_of(cx: &mut Ctx, raw: RawListen) -> Listen {
    let gateway = addr(cx, "listen.gateway", raw.gateway, "127.0.0.1:8080");
    let admin = addr(cx, "listen.admin", raw.admin, "127.0.0.1:9090");
    if gateway == admin && gateway.port() != 0 {
        cx.err("listen.admin", format!("admin and gateway both listen on {gateway}; give them different ports"));
    }
    let forward_proxy = raw.forward_proxy.map(|f| addr(cx, "listen.forward_proxy", Some(f), "127.0.0.1:8081"));
    if forward_proxy.is_some_and(|f| f.port() != 0 && (f == gateway || f == admin)) {
        cx.err("listen.forward_proxy", "the forward proxy needs its own port (not the gateway's or the admin's)");
    }
    Listen { gateway, admin, forward_proxy }
}

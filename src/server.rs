//! Assemble and run the Pingora server: gateway and admin listeners, and the
//! config watcher as a background service (threads started before
//! `run_forever` would be lost when daemonising).
//!
//! `listen` checks the listeners before the start and announces them once
//! they serve; `notify` talks to systemd; `upgrade` hands the listening
//! sockets of a running process to a new one.

pub mod listen;
pub mod notify;
pub mod upgrade;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::budget::Budgets;
use crate::config::{Listen, Snapshot};
use crate::drain::{Drain, DrainService, Signals};
use crate::policy::OverrideStore;
use crate::proxy::forward::Forward;
use crate::proxy::gateway::Gateway;
use crate::reload::Reloader;
use crate::upstream::health::Health;
use metrics_exporter_prometheus::PrometheusHandle;

/// Start serving `snap`; `config_path` enables hot reload; `upgrade` takes
/// the listening sockets over from the modelgate running on the same
/// state_dir. Returns when the server has shut down (SIGINT; SIGTERM ends
/// the process from the drain); an `Err` means it could not start.
pub fn run(snap: Snapshot, config_path: Option<PathBuf>, upgrade: bool) -> Result<(), String> {
    // One process per state_dir, for as long as this one runs (held until
    // `run` returns or the process exits) — or, taking over, from when the
    // old one has exited (`upgrade::Handover`).
    let (_state_lock, old_pid) = match upgrade::start(&snap.state_dir, upgrade)? {
        upgrade::Start::Alone(l) => (Some(l), None),
        upgrade::Start::TakeOver { old_pid } => (None, Some(old_pid)),
    };
    // Taking over, the addresses are the old process's (in use by design).
    if old_pid.is_none() {
        listen::check_free(&snap.listen)?;
    }
    let upgrade_sock = upgrade::sock_path(&snap.state_dir)?;
    // Until the config watcher and Pingora install their handlers, SIGHUP
    // (default: terminate) and SIGQUIT (default: core dump) would kill a
    // process that already serves; ignored meanwhile, they cost at most a
    // reload that the file watcher makes anyway.
    // SAFETY: SIG_IGN is a valid disposition; tokio replaces it later.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    for (provider, env) in snap.missing_keys() {
        tracing::warn!(provider, env, "api_key_env is not set; requests to this provider will fail with 401 until it is set and modelgate restarted");
    }
    let overrides = OverrideStore::open(&snap.state_dir)?;
    for (route, o) in overrides.load().iter() {
        if let Err(e) = crate::policy::overrides::check(&snap, route, &o.target) {
            tracing::warn!(route, target = %o.target, problem = %e, "saved route override does not apply to this config; it stays saved but inactive");
        }
    }
    let metrics = crate::metrics::install()?;
    let budgets = Budgets::open(&snap)?;
    let cache = crate::cache::Cache::start(&snap)?;
    let keys = crate::keys::KeyStore::open(&snap)?;
    let limiter = crate::ratelimit::Limiter::open(&snap)?;
    // With a Redis budget store the overrides are the fleet's (same Redis).
    let overrides = Arc::new(overrides.shared_by(budgets.override_channel()));
    let listen = snap.listen;
    let grace = snap.shutdown_grace;
    let threads = snap.threads;
    let state = Arc::new(ArcSwap::from_pointee(snap));
    {
        let (budgets, state) = (budgets.clone(), state.clone());
        keys.on_budgets(move |defs| budgets.set_key_budgets(defs, &state.load()));
    }

    let conf = ServerConf {
        threads,
        // SIGTERM: Pingora stops accepting at once; the drain service lets
        // in-flight requests finish (up to `grace`), settles and exits the
        // process. Pingora's own grace period is only a backstop (after it,
        // tokio drops whatever still runs).
        grace_period_seconds: Some(grace.as_secs() + 10),
        graceful_shutdown_timeout_seconds: Some(1),
        // SIGQUIT hands the listening sockets to `modelgate run --upgrade`
        // on this socket (one per state_dir, like the process itself).
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = old_pid.map(|_| pingora::server::configuration::Opt { upgrade: true, ..Default::default() });
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if let Some(pid) = old_pid {
        // A socket left by a crashed attempt would make us signal too early.
        let _ = std::fs::remove_file(&upgrade_sock);
        upgrade::signal_old_when_listening(upgrade_sock.clone(), pid);
    }
    // Taking over, this blocks until the old process sent its sockets
    // (Pingora gives up, logs why and exits 1 after ~5 s).
    server.bootstrap();
    if let Some(pid) = old_pid {
        tracing::info!(old_pid = pid, "received the listening sockets; the previous modelgate drains its requests in flight");
    }

    let shared = Shared { state, overrides, budgets, health: crate::upstream::health::Health::default(), drain: Drain::default(), cache, keys, limiter };
    add_listeners(&mut server, &shared, listen, metrics.clone())?;
    add_background(&mut server, &shared, metrics, grace, old_pid, config_path, listen);
    let Shared { drain, budgets, .. } = shared;
    server.run(RunArgs { shutdown_signal: Box::new(Signals { drain, budgets, upgrade_sock }) });
    crate::accesslog::flush();
    crate::cache::at_exit();
    Ok(())
}

/// What the services share.
struct Shared {
    state: Arc<ArcSwap<Snapshot>>,
    overrides: Arc<OverrideStore>,
    budgets: Budgets,
    health: Health,
    drain: Drain,
    cache: crate::cache::Cache,
    keys: crate::keys::KeyStore,
    limiter: crate::ratelimit::Limiter,
}

/// The gateway, admin and (when configured) forward-proxy listeners.
fn add_listeners(server: &mut Server, s: &Shared, listen: Listen, metrics: PrometheusHandle) -> Result<(), String> {
    let gateway = Gateway::new(s.state.clone(), s.overrides.clone(), s.budgets.clone(), s.health.clone(), s.drain.clone())
        .with_cache(s.cache.clone())
        .with_access(s.keys.clone(), s.limiter.clone());
    if let Some(addr) = listen.forward_proxy {
        let state_dir = s.state.load().state_dir.clone();
        let ca = Arc::new(crate::ca::Ca::open(&state_dir)?);
        crate::ca::publish(&state_dir);
        crate::ca::refresh_bundle(&state_dir);
        let gw = Gateway::new(s.state.clone(), s.overrides.clone(), s.budgets.clone(), s.health.clone(), s.drain.clone())
            .with_cache(s.cache.clone())
            .with_access(s.keys.clone(), s.limiter.clone())
            .forward();
        let mut http = pingora_proxy::HttpProxy::new(gw, server.configuration.clone());
        http.handle_init_modules();
        let mut svc = Service::new("forward proxy".to_string(), Forward::new(s.state.clone(), http, ca, s.drain.clone()));
        svc.add_listener(pingora::listeners::ListenerConfig::tcp(addr.to_string()).l4_buffer(unbuffered_reads()));
        server.add_service(svc);
    }
    let mut http = pingora_proxy::HttpProxy::new(gateway, server.configuration.clone());
    http.handle_init_modules();
    let mut gateway =
        Service::new("gateway".to_string(), crate::proxy::conn::GatewayApp { http: Arc::new(http), state: s.state.clone(), drain: s.drain.clone() });
    gateway.add_listener(pingora::listeners::ListenerConfig::tcp(listen.gateway.to_string()).l4_buffer(unbuffered_reads()));
    let stats = crate::stats::init(s.state.clone());
    let admin = Admin {
        metrics,
        state: s.state.clone(),
        overrides: s.overrides.clone(),
        budgets: s.budgets.clone(),
        health: s.health.clone(),
        cache: s.cache.clone(),
        stats,
        keys: s.keys.clone(),
    };
    let mut admin = Service::new("admin".to_string(), admin);
    admin.add_tcp(&listen.admin.to_string());
    // Scrapes and admin calls are rare: one thread (the gateway has `threads`).
    admin.threads = Some(1);
    server.add_service(gateway);
    server.add_service(admin);
    Ok(())
}

/// Client connections get no read buffer under Pingora's own. Its default,
/// 64 KiB per connection (tokio's `BufReader`, zero-filled: resident once
/// the memory is reused), made 3,000 idle clients cost ~300 MB, and 16 KiB
/// still ~48 MB; Pingora reads request heads and bodies into buffers of its
/// own anyway, so the L4 buffer only added a copy.
fn unbuffered_reads() -> pingora::protocols::l4::stream::L4BufferSettings {
    pingora::protocols::l4::stream::L4BufferSettings::new(0, pingora::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE)
}

/// Upkeep, health checks, the drain, the config watcher, the take-over of
/// an upgrade, and the readiness announcement.
fn add_background(
    server: &mut Server,
    s: &Shared,
    metrics: PrometheusHandle,
    grace: std::time::Duration,
    old_pid: Option<u32>,
    config_path: Option<PathBuf>,
    listen: Listen,
) {
    let state = &s.state;
    let ids: Vec<String> = state.load().models.values().map(|m| m.id.clone()).collect();
    let loader = std::thread::Builder::new().name("tokenizer".into()).spawn(move || crate::policy::tokens::preload(ids.iter().map(String::as_str)));
    if let Err(e) = loader {
        tracing::warn!(error = %e, "cannot load the tokenizer in the background; the first request that counts tokens loads it");
    }
    server.add_service(background_service("metrics upkeep", crate::metrics::Upkeep(metrics)));
    server.add_service(background_service("cache upkeep", crate::cache::Upkeep(s.cache.clone())));
    server.add_service(background_service("fleet keys", crate::keys::Refresh(s.keys.clone(), s.state.clone())));
    server.add_service(background_service("memory reclaim", crate::memory::Reclaim));
    server.add_service(background_service("health checks", crate::upstream::health::Checker { state: state.clone(), health: s.health.clone() }));
    if let Some(events) = crate::alerts::channel() {
        let alerts =
            crate::alerts::Service { state: state.clone(), budgets: s.budgets.clone(), health: s.health.clone(), events: std::sync::Mutex::new(Some(events)) };
        server.add_service(background_service("alerts", alerts));
    }
    let queue = state.load().telemetry.as_ref().map_or(crate::config::DEFAULT_TRACE_QUEUE, |t| t.queue);
    if let Some(rx) = crate::telemetry::channel(queue) {
        let telemetry = crate::telemetry::Service { state: state.clone(), queue: std::sync::Mutex::new(Some(rx)) };
        server.add_service(background_service("telemetry", telemetry));
    }
    let fsync = state.load().budget_store.fsync_interval;
    server.add_service(background_service("budget upkeep", crate::budget::Upkeep { budgets: s.budgets.clone(), fsync }));
    if let Some(sync) = crate::policy::overrides_fleet::service(&s.overrides, state) {
        server.add_service(background_service("fleet overrides", sync));
    }
    server.add_service(background_service("shutdown drain", DrainService { drain: s.drain.clone(), budgets: s.budgets.clone(), grace }));
    if let Some(old_pid) = old_pid {
        let handover = upgrade::Handover { state_dir: state.load().state_dir.clone(), old_pid, budgets: s.budgets.clone(), state: state.clone() };
        server.add_service(background_service("state handover", handover));
    }
    let watcher =
        config_path.map(|path| server.add_service(background_service("config watcher", Reloader { path, state: state.clone(), budgets: s.budgets.clone() })));
    // "listening" and READY=1 once every listener accepts connections (and
    // SIGHUP is handled).
    let announce = server.add_service(background_service("readiness", listen::Announce { listen, takes_over: old_pid.is_some() }));
    if let Some(w) = watcher {
        announce.add_dependency(&w);
    }
}

//! Assemble and run the Pingora server: gateway and admin listeners, and the
//! config watcher as a background service (threads started before
//! `run_forever` would be lost when daemonising).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::budget::Budgets;
use crate::config::Snapshot;
use crate::policy::OverrideStore;
use crate::proxy::forward::Forward;
use crate::proxy::gateway::Gateway;
use crate::reload::Reloader;

/// Start serving `snap`; `config_path` enables hot reload. Never returns
/// while the server runs; an `Err` means it could not start.
pub fn run(snap: Snapshot, config_path: Option<PathBuf>) -> Result<(), String> {
    for (provider, env) in snap.missing_keys() {
        tracing::warn!(provider, env, "api_key_env is not set; requests to this provider will fail with 401 until it is set and modelgate restarted");
    }
    // One process per state_dir, for as long as this one runs
    // (`run_forever` never returns, so the lock is never dropped).
    let _state_lock = crate::budget::lock::lock_state_dir(&snap.state_dir)?;
    let overrides = Arc::new(OverrideStore::open(&snap.state_dir)?);
    for (route, o) in overrides.load().iter() {
        if let Err(e) = crate::policy::overrides::check(&snap, route, &o.target) {
            tracing::warn!(route, target = %o.target, problem = %e, "saved route override does not apply to this config; it stays saved but inactive");
        }
    }
    let metrics = crate::metrics::install()?;
    let budgets = Budgets::open(&snap)?;
    let listen = snap.listen;
    let state = Arc::new(ArcSwap::from_pointee(snap));

    let conf = ServerConf {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        // Stop accepting at once on SIGTERM, then give in-flight streams time.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(30),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let health = crate::upstream::health::Health::default();
    let gateway = Gateway::new(state.clone(), overrides.clone(), budgets.clone(), health.clone());
    let forward = match listen.forward_proxy {
        Some(addr) => {
            let ca = Arc::new(crate::ca::Ca::open(&state.load().state_dir)?);
            let gw = Gateway::new(state.clone(), overrides.clone(), budgets.clone(), health.clone()).forward();
            let mut http = pingora_proxy::HttpProxy::new(gw, server.configuration.clone());
            http.handle_init_modules();
            let mut svc = Service::new("forward proxy".to_string(), Forward::new(state.clone(), http, ca));
            svc.add_tcp(&addr.to_string());
            Some(svc)
        }
        None => None,
    };
    let mut gateway = pingora_proxy::http_proxy_service_with_name(&server.configuration, gateway, "gateway");
    gateway.add_tcp(&listen.gateway.to_string());
    let mut admin = Service::new("admin".to_string(), Admin { metrics: metrics.clone(), state: state.clone(), overrides, budgets: budgets.clone(), health: health.clone() });
    admin.add_tcp(&listen.admin.to_string());
    server.add_service(gateway);
    server.add_service(admin);
    if let Some(f) = forward {
        server.add_service(f);
    }
    server.add_service(background_service("metrics upkeep", crate::metrics::Upkeep(metrics)));
    server.add_service(background_service("health checks", crate::upstream::health::Checker { state: state.clone(), health }));
    let fsync = state.load().budget_store.fsync_interval;
    server.add_service(background_service("budget upkeep", crate::budget::Upkeep { budgets: budgets.clone(), fsync }));
    if let Some(path) = config_path {
        server.add_service(background_service("config watcher", Reloader { path, state, budgets }));
    }
    tracing::info!(gateway = %listen.gateway, admin = %listen.admin, forward_proxy = ?listen.forward_proxy, "modelgate listening");
    server.run_forever()
}

//! modelgate: a sidecar reverse proxy that governs an application's outbound
//! LLM API traffic. See README.md for the user view and DESIGN notes in the
//! module docs; folders follow the request pipeline:
//! `proxy` (listeners) → `dialect` (what the client speaks) → `policy`
//! (which model) → `upstream` (the call) → `usage` (tokens and cost) →
//! `metrics` / `accesslog` / `alerts`. `config` and `reload` own the snapshot.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod accesslog;
pub mod admin;
pub mod alerts;
pub mod body;
pub mod budget;
pub mod ca;
pub mod cache;
pub mod cli_report;
pub mod config;
pub mod dialect;
pub mod drain;
pub mod escalate;
pub mod fsutil;
pub mod jsonline;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod relay;
pub mod reload;
pub mod request_id;
pub mod server;
pub mod stats;
pub mod telemetry;
#[cfg(test)]
#[path = "../tests/common/config.rs"]
pub(crate) mod test_config;
pub mod translate;
pub mod upstream;
pub mod usage;

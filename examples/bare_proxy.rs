//! The bare engine: a plain-HTTP Pingora passthrough, built with the same
//! pingora and pingora-proxy crates as modelgate, for `benches/engine.sh`
//! and `benches/callgrind.sh` to set modelgate's figures against.
//!
//! Every request goes unchanged to one fixed upstream (`upstream_peer` is
//! the only callback). Process-level choices are modelgate's, so that
//! "modelgate ÷ bare" is modelgate's own request path and not an allocator
//! or buffer setting: mimalloc as the global allocator, no transparent huge
//! pages, freed memory
//! returned to the system once a second, no read buffer under Pingora's own
//! per client connection (Pingora's default is 64 KiB; `--read-buf 65536`
//! restores it).
//!
//! ```text
//! cargo run --release --example bare_proxy -- --listen 127.0.0.1:8000 --upstream 127.0.0.1:9000 [--threads 1] [--read-buf 0]
//! ```
//!
//! Each option may also come from the environment: BARE_LISTEN,
//! BARE_UPSTREAM, BARE_THREADS, BARE_READ_BUF. The listen address needs a
//! fixed port (pick a free one first); "listening on ADDR" is printed to
//! stdout once the server is about to run.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The passthrough: one fixed plain-HTTP peer, nothing else.
struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// As modelgate's `memory::Reclaim`: ask mimalloc to return free pages once
/// a second.
struct Reclaim;

#[async_trait]
impl BackgroundService for Reclaim {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                // SAFETY: mi_collect only walks mimalloc's own structures.
                _ = tick.tick() => unsafe { libmimalloc_sys::mi_collect(true) },
            }
        }
    }
}

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
    read_buf: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!("bare_proxy: {problem}\nusage: bare_proxy --listen IP:PORT --upstream IP:PORT [--threads N] [--read-buf BYTES]");
    std::process::exit(2);
}

fn parse<T: std::str::FromStr>(name: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| usage(&format!("{name}: cannot read {v:?}")))
}

fn args() -> Args {
    const FLAGS: [&str; 4] = ["--listen", "--upstream", "--threads", "--read-buf"];
    let mut given: Vec<(String, String)> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if !FLAGS.contains(&flag.as_str()) {
            usage(&format!("unknown argument {flag:?}"));
        }
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        given.push((flag, value));
    }
    // A flag wins over its environment variable.
    let get = |flag: &str, env: &str| given.iter().rev().find(|(f, _)| f == flag).map(|(_, v)| v.clone()).or_else(|| std::env::var(env).ok());
    let required = |flag: &str, env: &str| get(flag, env).unwrap_or_else(|| usage(&format!("{flag} (or {env}) is required")));
    Args {
        listen: parse("--listen", &required("--listen", "BARE_LISTEN")),
        upstream: parse("--upstream", &required("--upstream", "BARE_UPSTREAM")),
        threads: get("--threads", "BARE_THREADS").map_or(1, |v| parse("--threads", &v)),
        read_buf: get("--read-buf", "BARE_READ_BUF").map_or(0, |v| parse("--read-buf", &v)),
    }
}

/// As modelgate's `memory::no_huge_pages`, before anything allocates.
#[used]
#[unsafe(link_section = ".init_array")]
static NO_HUGE_PAGES: extern "C" fn() = {
    extern "C" fn no_huge_pages() {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
    no_huge_pages
};

fn main() {
    let args = args();
    let conf = ServerConf {
        threads: args.threads.max(1),
        // SIGTERM ends the process within a second (benchmarks stop it often).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream: args.upstream });
    let buffers = L4BufferSettings::new(args.read_buf, DEFAULT_L4_WRITE_BUFFER_SIZE);
    proxy.add_listener(pingora::listeners::ListenerConfig::tcp(args.listen.to_string()).l4_buffer(buffers));
    server.add_service(proxy);
    server.add_service(background_service("memory reclaim", Reclaim));
    println!("listening on {}", args.listen);
    server.run_forever();
}

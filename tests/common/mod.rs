//! Test harness: start the real `modelgate` binary on free loopback ports
//! with a temp config, wait until it is ready, and kill it on drop.
#![allow(dead_code)]

pub mod config;
pub mod mock;
pub mod redis;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use config::{Config, Kind};
#[allow(unused_imports)]
pub use mock::{Mock, Script};

/// A provider served by a mock: at its root URL.
impl config::Upstream for &Mock {
    fn root(&self) -> String {
        self.url()
    }
}

/// A free loopback port (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: two tests running
    // side by side must not both be told to listen on it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Transparent mode: providers that answer for api.openai.com and
/// api.anthropic.com served by `mock`, a route gpt-4o* → gpt-4o-mini, and
/// `forward` as the body of the `forward_proxy:` section.
pub fn transparent_config(mock: &Mock, forward: &str) -> String {
    Config::new()
        .raw(&format!("forward_proxy:\n{forward}\n"))
        .provider("openai", Kind::OpenAi, mock)
        .with("hosts: [api.openai.com]")
        .provider("anthropic", Kind::Anthropic, mock)
        .with("hosts: [api.anthropic.com]")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .route(r#"name: mini, match: { model: "gpt-4o*" }, target: gpt-4o-mini"#)
        .build()
}

/// `openai` and `anthropic` served by `mock`, the standard models and
/// routes (`Config::standard_models`, `Config::standard_routes`).
pub fn standard(mock: &Mock) -> Config {
    Config::openai_anthropic(mock).standard_models().standard_routes()
}

pub struct Modelgate {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub gateway: String,
    pub admin: String,
    /// The forward proxy (`http://127.0.0.1:PORT`), when the config has a
    /// `forward_proxy:` section.
    pub forward: Option<String>,
    env: Vec<(String, String)>,
    /// Where this run's lines start in stderr.log (a restart appends).
    log_from: usize,
}

fn spawn(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Child {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stderr.log")).unwrap();
    // MODELGATE_BIN runs another build (e.g. to compare two in the load bench).
    let bin = std::env::var_os("MODELGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_modelgate")));
    let mut cmd = Command::new(bin);
    cmd.args(["run", "-c"]).arg(config).stdout(Stdio::null()).stderr(stderr).env("MODELGATE_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn modelgate")
}

impl Modelgate {
    /// Start with `yaml` (without `listen:`, which is added) and `env`.
    pub fn start(yaml: &str) -> Modelgate {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Modelgate {
        // A port picked by binding :0 can be taken again before modelgate
        // binds it; try a few times with fresh ports.
        for _ in 0..5 {
            if let Some(mg) = Self::try_start(yaml, env) {
                return mg;
            }
        }
        panic!("modelgate did not start; see the stderr printed above");
    }

    fn try_start(yaml: &str, env: &[(&str, &str)]) -> Option<Modelgate> {
        let dir = tempfile::tempdir().unwrap();
        let (g, a) = (free_port(), free_port());
        let f = yaml.contains("forward_proxy:").then(free_port);
        let forward_listen = f.map(|f| format!("  forward_proxy: 127.0.0.1:{f}\n")).unwrap_or_default();
        let text = format!(
            "listen:\n  gateway: 127.0.0.1:{g}\n  admin: 127.0.0.1:{a}\n{forward_listen}state_dir: {}\naccess_log: {}\n{yaml}",
            dir.path().join("state").display(),
            dir.path().join("access.log").display()
        );
        let config = dir.path().join("modelgate.yaml");
        std::fs::write(&config, text).unwrap();
        let child = spawn(&config, dir.path(), env);
        let mut mg = Modelgate {
            child,
            dir,
            config,
            gateway: format!("http://127.0.0.1:{g}"),
            admin: format!("http://127.0.0.1:{a}"),
            forward: f.map(|f| format!("http://127.0.0.1:{f}")),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_from: 0,
        };
        mg.wait_ready().then_some(mg)
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("modelgate exited early:\n{}", self.stderr());
                return false;
            }
            // Ports are picked by binding :0 and released, so another
            // test's process may hold one of them and answer /readyz; only
            // this process's "listening" line (all its listeners bound)
            // makes a 200 its own.
            let listening = self.stderr().get(self.log_from..).is_some_and(|s| s.contains("modelgate listening"));
            if listening && http_get(&format!("{}/readyz", self.admin)).is_some_and(|(s, _)| s == 200) {
                // Ready means serving: every listener accepts from now on.
                for l in std::iter::once(&self.gateway).chain(&self.forward) {
                    assert!(std::net::TcpStream::connect(&l[7..]).is_ok(), "/readyz said 200 but {l} refuses connections");
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("modelgate not ready in time:\n{}", self.stderr());
        false
    }

    /// Stop the process and start it again on the same config, ports and
    /// state directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.log_from = self.stderr().len();
        self.child = spawn(&self.config, self.dir.path(), &env);
        assert!(self.wait_ready(), "modelgate did not come back after a restart");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Access-log records written so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Wait until the access log has at least `n` records (it is written
    /// right after the response, so a client may see the answer first).
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let recs = self.access_log();
            if recs.len() >= n || Instant::now() > deadline {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.admin)).map(|(_, b)| b).unwrap_or_default()
    }

    /// The exit status, once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Modelgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking GET for readiness and metrics (no client dependency).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Sum of a Prometheus series' values whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The modelgate binary under test (`MODELGATE_BIN` selects another build).
pub fn bin() -> PathBuf {
    std::env::var_os("MODELGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_modelgate")))
}

/// A config file in `dir` with `listen:` (`gateway`, `admin`, optional
/// forward proxy), state_dir and access log in `dir`, then `yaml`.
pub fn write_config(dir: &Path, gateway: &str, admin: &str, forward: Option<&str>, yaml: &str) -> PathBuf {
    let forward = forward.map(|f| format!("  forward_proxy: {f}\n")).unwrap_or_default();
    let text = format!(
        "listen:\n  gateway: {gateway}\n  admin: {admin}\n{forward}state_dir: {}\naccess_log: {}\n{yaml}",
        dir.join("state").display(),
        dir.join("access.log").display()
    );
    let path = dir.join("modelgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The Python with the official openai and anthropic SDKs: the `.venv`
/// scripts/test makes (`MODELGATE_PYTHON` overrides it).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MODELGATE_PYTHON") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/test, which creates the venv with the openai and anthropic SDKs", p.display());
    p
}

/// Run `script` (a path, or the name of a file in tests/sdk/) with the
/// SDKs' Python against `mg` (`MG_GATEWAY`, `MG_ADMIN`, plus `env`); fails
/// the test, with both outputs and modelgate's log, when it fails. Returns
/// what it printed.
pub async fn run_python(script: &str, mg: &Modelgate, env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let out = tokio::process::Command::new(python())
        .arg(&path)
        .env("MG_GATEWAY", &mg.gateway)
        .env("MG_ADMIN", &mg.admin)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}\nmodelgate stderr:\n{}", String::from_utf8_lossy(&out.stderr), mg.stderr());
    stdout
}

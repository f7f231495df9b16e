//! The `modelgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: glibc keeps what thousands of closed
/// connections freed (RSS stayed ~285 MB up after 3,000 idle connections
/// closed); mimalloc returns freed pages to the system within moments.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use modelgate::config::{self, ConfigErrors};
use modelgate::policy::{explain, OverrideStore};

#[derive(Parser)]
#[command(name = "modelgate", version, about = "A sidecar proxy that routes, budgets and accounts for an app's LLM API calls.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground. Without --config it runs on the
    /// built-in defaults (conf/modelgate.yaml as shipped). With --config the
    /// file is watched and re-applied on change or SIGHUP.
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Take over from the modelgate running on the same state_dir
        /// without refusing a connection: it hands its listening sockets
        /// to this process (on state_dir/upgrade.sock), then drains its
        /// requests in flight and exits. Starts normally if none runs.
        #[arg(long)]
        upgrade: bool,
    },
    /// Replace the running modelgate with this binary without downtime
    /// (systemd's ExecReload): start `modelgate run --upgrade` in the
    /// background and return once it serves. Exits 1 if it did not.
    Upgrade {
        /// The YAML config file (the running one's, or its new version).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// How long to wait for the new process to serve.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout_s: u64,
    },
    /// Validate a config file and print every error with its YAML path and
    /// line. Exits 0 when valid, 1 when not. Without --config it checks the
    /// built-in defaults, the config `run` uses without one.
    Check {
        /// The YAML config file (default: the built-in defaults).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Explain how a request would be routed: classification (app, task,
    /// complexity, tokens), each route tried and why it matched or not,
    /// candidates dropped and why, scores, and the final plan. Reads saved
    /// admin overrides from the config's state_dir.
    Route {
        /// The YAML config file (default: the built-in defaults).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The request body (JSON); `-` reads standard input.
        #[arg(short, long, value_name = "FILE")]
        request: PathBuf,
        /// The request path: which API and dialect the body is for.
        #[arg(short, long, default_value = "/v1/chat/completions")]
        path: String,
        /// A request header, `Name: value` (repeatable), e.g. x-modelgate-app: billing.
        #[arg(short = 'H', long = "header", value_name = "K:V")]
        headers: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The local CA of transparent mode (HTTPS_PROXY): create it, show it
    /// with trust instructions, or write a CA bundle for runtimes that read
    /// one file.
    Ca {
        #[command(subcommand)]
        action: CaAction,
        /// The YAML config file whose state_dir holds the CA (default: the built-in defaults).
        #[arg(short, long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Print the SHA-256 of an API key read from standard input, the form
    /// `routing.app_keys` uses (the key itself is never stored).
    HashKey,
    /// Show each budget of a running modelgate: spent, reserved, limit,
    /// remaining, state and when it resets (from GET /admin/budgets).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show cost, tokens and requests by provider, model, app and route,
    /// with the savings against the models clients asked for (from GET
    /// /admin/usage).
    Cost {
        #[command(flatten)]
        admin: AdminArgs,
        /// The calendar window: day or month.
        #[arg(short, long, default_value = "day", value_parser = ["day", "month"])]
        window: String,
        /// Print the admin API's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaAction {
    /// Create the CA in state_dir/ca (key mode 0600); prints the certificate's path.
    Init {
        /// Replace an existing CA (apps must trust the new one).
        #[arg(long)]
        force: bool,
    },
    /// Print the CA certificate (PEM) and how to trust it from Python, Node,
    /// curl and the host. Never creates the CA (`ca init` does).
    Show,
    /// Write the system's trusted roots plus the CA as one PEM file (for
    /// SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE).
    Bundle {
        /// Where to write it (default: state_dir/ca/bundle.pem).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Where the running modelgate's admin API is.
#[derive(clap::Args)]
struct AdminArgs {
    /// Admin base URL, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// Read the admin address from this config (listen.admin).
    #[arg(short, long, value_name = "FILE", conflicts_with = "admin")]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn base(&self) -> Result<String, String> {
        if let Some(a) = &self.admin {
            return Ok(a.trim_end_matches('/').to_string());
        }
        let snap = load(&self.config).map_err(|e| e.to_string())?;
        let addr = snap.listen.admin;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        Ok(if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("http://[{host}]:{}", addr.port()) } else { format!("http://{host}:{}", addr.port()) })
    }
}

fn report(admin: &AdminArgs, path: &str, as_json: bool, render: fn(&serde_json::Value) -> String) -> ExitCode {
    match admin.base().and_then(|base| modelgate::cli_report::fetch(&format!("{base}{path}"))) {
        Ok(v) => {
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", render(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("modelgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("MODELGATE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !std::env::var("MODELGATE_LOG").is_ok_and(|v| v.contains("notify")) {
        // notify traces every file event in the config's folder; with the
        // log written to that folder, each line would cause another.
        if let Ok(d) = "notify=info".parse() {
            filter = filter.add_directive(d);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Debug and trace lines of libraries (Pingora, h2) print request
    // headers: credentials in them are masked before the line is written.
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(|| modelgate::redact::Redacting(std::io::stderr())).init();
}

fn print_errors(e: &ConfigErrors) {
    eprint!("{e}");
}

fn load(config: &Option<PathBuf>) -> Result<config::Snapshot, ConfigErrors> {
    match config {
        Some(path) => config::load_file(path),
        None => {
            config::load_str(config::EMBEDDED_DEFAULT, &|k| std::env::var(k).ok()).map_err(|errors| ConfigErrors { file: "<built-in defaults>".into(), errors })
        }
    }
}

fn route(config: Option<PathBuf>, request: PathBuf, path: String, headers: Vec<String>, as_json: bool) -> Result<ExitCode, String> {
    let snap = load(&config).map_err(|e| e.to_string())?;
    let body = if request.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| format!("cannot read standard input: {e}"))?;
        b
    } else {
        std::fs::read(&request).map_err(|e| format!("cannot read {}: {e}", request.display()))?
    };
    let mut map = http::HeaderMap::new();
    for h in &headers {
        let (k, v) = h.split_once(':').ok_or_else(|| format!("--header `{h}`: write it as Name: value"))?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| format!("--header `{h}`: `{}` is not a header name", k.trim()))?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| format!("--header `{h}`: invalid value"))?;
        map.append(name, value);
    }
    let overrides = OverrideStore::open(&snap.state_dir)?;
    let e = explain::explain(&snap, &overrides.load(), &path, &map, body.into());
    if as_json {
        println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        print!("{}", explain::render_text(&e));
    }
    let refused = e.get("refused").is_some() || e["decision"].get("refused").is_some();
    Ok(if refused { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn ca(action: CaAction, config: Option<PathBuf>) -> Result<ExitCode, String> {
    let snap = load(&config).map_err(|e| e.to_string())?;
    let dir = &snap.state_dir;
    match action {
        CaAction::Init { force } => {
            let (cert, created) = modelgate::ca::init(dir, force)?;
            let what = if created { "created" } else { "already there (use --force to replace it)" };
            println!("{} — {what}", cert.display());
        }
        CaAction::Show => {
            let Some(cert) = modelgate::ca::existing(dir) else {
                println!("{}", modelgate::ca::missing_note(&config_name(&config), dir, snap.listen.forward_proxy));
                return Ok(ExitCode::FAILURE);
            };
            let pem = std::fs::read_to_string(&cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
            print!("{pem}");
            println!("{}", modelgate::ca::trust_instructions(&cert, &dir.join("ca").join("bundle.pem"), snap.listen.forward_proxy));
            if snap.listen.forward_proxy.is_none() {
                println!("{}", modelgate::ca::proxy_off_note(&config_name(&config)));
            }
        }
        CaAction::Bundle { out } => {
            let (cert, _) = modelgate::ca::init(dir, false)?;
            let out = out.unwrap_or_else(|| dir.join("ca").join("bundle.pem"));
            let n = modelgate::ca::write_bundle(&cert, &out)?;
            println!("{} — {n} system roots + the modelgate CA", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How a command names its config: the file, or the built-in defaults.
fn config_name(config: &Option<PathBuf>) -> String {
    config.as_ref().map_or_else(|| "the built-in defaults".to_string(), |p| p.display().to_string())
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// `modelgate check`: every error with its YAML path, or what may need a look.
fn check(config: &Option<PathBuf>) -> ExitCode {
    match load(config) {
        Ok(s) => {
            let name = config.as_ref().map_or_else(|| "<built-in defaults>".to_string(), |p| p.display().to_string());
            println!("{name}: ok ({}, {}, {})", count(s.providers.len(), "provider"), count(s.models.len(), "model"), count(s.routes.len(), "route"));
            for (provider, env) in s.missing_keys() {
                println!("  note: provider `{provider}` reads its key from {env}, which is not set here");
            }
            for (model, fallback, provider) in s.cross_provider_fallbacks() {
                println!(
                    "  warning: `{model}` falls back to `{fallback}` on provider `{provider}`, which has no api_key_env: modelgate will not send a client's key for another provider there, so that fallback is skipped. Set api_key_env on `{provider}` (or cross_provider_client_keys: true if the same key is valid there)"
                );
            }
            for w in s.exposure_warnings() {
                println!("  warning: {w}");
            }
            let silent: Vec<&str> =
                s.models.values().filter(|m| !m.fallbacks.is_empty() && s.retry_for(None, Some(m)).on_status.is_empty()).map(|m| m.name.as_str()).collect();
            if !silent.is_empty() {
                println!(
                    "  note: retry.on_status is empty, so these models fall back only when their provider cannot be reached or times out, never on a 429 or 5xx: {} (list the statuses in retry.on_status, e.g. [429, 500, 502, 503, 504, 529])",
                    silent.join(", ")
                );
            }
            if s.budgets.iter().any(|b| b.limits.nanos.is_some() || b.limits.tokens.is_some()) {
                let open: Vec<&str> = s.models.values().filter(|m| m.max_output_tokens.is_none()).map(|m| m.name.as_str()).collect();
                if !open.is_empty() {
                    println!(
                        "  note: budgets reserve a request's worst case; without max_tokens in the request these models reserve {} output tokens (set max_output_tokens to their real maximum): {}",
                        modelgate::budget::DEFAULT_MAX_OUTPUT_TOKENS,
                        open.join(", ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_errors(&e);
            ExitCode::FAILURE
        }
    }
}

/// `modelgate help --help` (and `help run -h`): clap's built-in `help`
/// takes no flags, so they are dropped and `help` prints what was asked.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "help") {
        args.retain(|a| a != "--help" && a != "-h");
    }
    args
}

/// A panic is a bug, not an operator error: one line, no backtrace note.
/// A listener that could not be built (an address taken between the check
/// and Pingora's bind) leaves nothing serving, so that one ends the
/// process and lets a supervisor restart it.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        let msg = msg.replace('\n', " ");
        if msg.contains("Failed to build listeners") {
            eprintln!("modelgate: a listener could not be opened: {msg}");
            std::process::exit(1);
        }
        eprintln!("modelgate: internal error: {msg}{at}");
    }));
}

fn main() -> ExitCode {
    quiet_panics();
    let cli = Cli::parse_from(args());
    if !matches!(cli.command, Command::Run { .. }) {
        // A CLI piped into `head` ends quietly, as Unix tools do, instead of
        // panicking on a closed stdout. (The server keeps Rust's default of
        // ignoring SIGPIPE: a client hanging up must never kill it.)
        // SAFETY: called before any thread starts; SIG_DFL is a valid handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Upgrade { config, timeout_s } => {
            // Refuse a broken config before touching the running process.
            if let Err(e) = config::load_file(&config) {
                print_errors(&e);
                return ExitCode::FAILURE;
            }
            match modelgate::server::upgrade::spawn_and_wait(&config, std::time::Duration::from_secs(timeout_s)) {
                Ok(pid) => {
                    println!("modelgate: pid {pid} serves now; the previous process drains its requests in flight and exits");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modelgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, upgrade } => {
            init_logging();
            let snap = match load(&config) {
                Ok(s) => s,
                Err(e) => {
                    print_errors(&e);
                    return ExitCode::FAILURE;
                }
            };
            for w in snap.exposure_warnings() {
                tracing::warn!("{w}");
            }
            match modelgate::server::run(snap, config, upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modelgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Route { config, request, path, headers, json } => route(config, request, path, headers, json).unwrap_or_else(|e| {
            eprintln!("modelgate: {e}");
            ExitCode::FAILURE
        }),
        Command::Status { admin, json } => report(&admin, "/admin/budgets", json, modelgate::cli_report::render_status),
        Command::Cost { admin, window, json } => report(&admin, &format!("/admin/usage?window={window}"), json, modelgate::cli_report::render_cost),
        Command::Ca { action, config } => ca(action, config).unwrap_or_else(|e| {
            eprintln!("modelgate: {e}");
            ExitCode::FAILURE
        }),
        Command::HashKey => {
            let mut key = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut key) {
                eprintln!("modelgate: cannot read standard input: {e}");
                return ExitCode::FAILURE;
            }
            println!("sha256:{}", modelgate::policy::classify::key_hash(key.trim()));
            ExitCode::SUCCESS
        }
    }
}

//! The `modelgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
use commands::{ca, check, load, route};

/// mimalloc instead of glibc malloc: glibc keeps what thousands of closed
/// connections freed (RSS stayed ~285 MB up after 3,000 idle connections
/// closed); mimalloc returns freed pages to the system within moments.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `memory::no_huge_pages` before anything allocates: mimalloc's first
/// arena is touched before `main` runs (a constructor in `.init_array`).
#[used]
#[unsafe(link_section = ".init_array")]
static NO_HUGE_PAGES: extern "C" fn() = {
    extern "C" fn no_huge_pages() {
        modelgate::memory::no_huge_pages();
    }
    no_huge_pages
};
use modelgate::config::{self, ConfigErrors};

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
    /// Show cost, tokens and requests by provider, model, app, task, route
    /// and split arm, with the savings against the models clients asked
    /// for (from GET /admin/usage).
    Cost {
        #[command(flatten)]
        admin: AdminArgs,
        /// The calendar window: day, week (from Monday) or month.
        #[arg(short, long, default_value = "day", value_parser = ["day", "week", "month"])]
        window: String,
        /// Only this breakdown (default: all of them).
        /// (`user` and `key` are read from the ledger and only shown with --by.)
        #[arg(short, long, value_parser = ["provider", "model", "app", "task", "route", "arm", "user", "key"])]
        by: Option<String>,
        /// Print the admin API's JSON instead of tables.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV: with --by, one row per value; without, a `by` column
        /// names the breakdown of each row.
        #[arg(long)]
        csv: bool,
    },
    /// Alerts: `modelgate alerts test` sends a test alert to every sink of
    /// the config's `alerts:` and says what each answered.
    Alerts {
        #[command(subcommand)]
        action: AlertsAction,
        /// The YAML config file (default: the built-in defaults).
        #[arg(short, long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AlertsAction {
    /// Send one test alert to every sink (one try each); exits 1 if a sink
    /// did not take it.
    Test,
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
        Command::Cost { admin, window, by, json, csv } => {
            let path = match &by {
                Some(b) => format!("/admin/usage?window={window}&by={b}"),
                None => format!("/admin/usage?window={window}"),
            };
            let render = if csv { modelgate::cli_report::render_cost_csv } else { modelgate::cli_report::render_cost };
            report(&admin, &path, json, render)
        }
        Command::Alerts { action: AlertsAction::Test, config } => commands::alerts_test(&config),
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

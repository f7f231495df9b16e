//! The `modelgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    },
    /// Validate a config file and print every error with its YAML path and
    /// line. Exits 0 when valid, 1 when not.
    Check {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MODELGATE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn print_errors(e: &ConfigErrors) {
    eprint!("{e}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load_file(&config) {
            Ok(s) => {
                println!("{}: ok ({} providers, {} models, {} routes)", config.display(), s.providers.len(), s.models.len(), s.routes.len());
                for (provider, env) in s.missing_keys() {
                    println!("  note: provider `{provider}` reads its key from {env}, which is not set here");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_errors(&e);
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            init_logging();
            let loaded = match &config {
                Some(path) => config::load_file(path),
                None => config::load_str(config::EMBEDDED_DEFAULT, &|k| std::env::var(k).ok())
                    .map_err(|errors| ConfigErrors { file: "<built-in defaults>".into(), errors }),
            };
            let snap = match loaded {
                Ok(s) => s,
                Err(e) => {
                    print_errors(&e);
                    return ExitCode::FAILURE;
                }
            };
            match modelgate::server::run(snap, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modelgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

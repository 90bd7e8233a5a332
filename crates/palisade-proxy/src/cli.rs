//! Command-line entry, shared by the `palisade-proxy` binary and `palisade proxy`.

use std::path::PathBuf;
use std::process::ExitCode;

use argon2::password_hash::{PasswordHasher, SaltString};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::config::ProxyConfig;
use crate::error::Chain;
use crate::server::Proxy;
use crate::workers::{Workers, available_cores};

/// Exit status for a bad configuration (EX_CONFIG from sysexits is 78; EX_USAGE 64
/// is what linkerd and this project use for "your input is wrong").
pub const EXIT_CONFIG: u8 = 64;

const USAGE: &str = "usage:
  palisade-proxy --config FILE [--workers N]
                                        run the proxy on N threads (default:
                                        one per CPU it may run on)
  palisade-proxy check --config FILE    validate a config file and exit
  palisade-proxy hash-password          read a password on stdin, print its Argon2 hash";

/// How the command line was reached: it names the command in the usage
/// text and starts every error message. The standalone binary keeps the
/// Unix habit of naming itself (`palisade-proxy: ...`); `palisade proxy`
/// prints its errors as every other `palisade` command does (`error: ...`,
/// the CLI's and clap's prefix), so a user sees one prefix whatever the
/// command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation {
    /// The command as typed, for the usage text.
    pub command: &'static str,
    /// What every error message starts with, before `": "`.
    pub error_prefix: &'static str,
}

impl Invocation {
    /// The `palisade-proxy` binary.
    pub const STANDALONE: Self = Self {
        command: "palisade-proxy",
        error_prefix: "palisade-proxy",
    };
    /// `palisade proxy ...`.
    pub const PALISADE: Self = Self {
        command: "palisade proxy",
        error_prefix: "error",
    };

    fn usage(self) -> String {
        USAGE.replace("palisade-proxy", self.command)
    }

    /// Prints one error line to stderr.
    fn error(self, msg: impl std::fmt::Display) {
        eprintln!("{}: {msg}", self.error_prefix);
    }
}

enum Command {
    Help,
    Run(PathBuf, Option<usize>),
    Check(PathBuf),
    HashPassword,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut config = None;
    let mut verb = None;
    let mut workers = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?));
            }
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            "--workers" => {
                let n = it.next().ok_or("--workers needs a number")?;
                workers = Some(parse_workers(n)?);
            }
            s if s.starts_with("--workers=") => {
                workers = Some(parse_workers(&s["--workers=".len()..])?);
            }
            "check" | "hash-password" | "run" if verb.is_none() => verb = Some(a.clone()),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    match (verb.as_deref(), config) {
        (Some("hash-password"), _) => Ok(Command::HashPassword),
        (Some("check"), Some(c)) => Ok(Command::Check(c)),
        (None | Some("run"), Some(c)) => Ok(Command::Run(c, workers)),
        _ => Err("--config FILE is required".to_string()),
    }
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "--workers takes a number of threads from 1 to 1024, not {s:?}"
        )),
    }
}

/// Run the proxy CLI with `args` (without the program name) as the
/// `palisade-proxy` binary: [`main_as`] with [`Invocation::STANDALONE`].
pub fn main_with_args(args: &[String]) -> ExitCode {
    main_as(Invocation::STANDALONE, args)
}

/// Run the proxy CLI with `args` (without the program name), reached as
/// `inv` says. Sets up JSON logging (`RUST_LOG` filters, default `info`),
/// loads and validates the config before binding anything (exit 64 on
/// error), then serves until SIGTERM or Ctrl-C; SIGHUP reloads the config
/// file.
pub fn main_as(inv: Invocation, args: &[String]) -> ExitCode {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(msg) => {
            inv.error(msg);
            eprintln!("{}", inv.usage());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (path, workers) = match cmd {
        Command::Help => {
            println!("{}", inv.usage());
            return ExitCode::SUCCESS;
        }
        Command::HashPassword => return hash_password(inv),
        Command::Check(path) => return check(inv, &path),
        Command::Run(path, workers) => (path, workers.unwrap_or_else(available_cores)),
    };
    let config = match ProxyConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            inv.error(format_args!("{}: {}", path.display(), Chain(&e)));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging();
    // The main thread's runtime accepts and serves one share of the clients;
    // each extra worker thread serves another (see `crate::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let extra = Workers::start(workers - 1);
    let (runtime, extra) = match (runtime, extra) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => {
            inv.error(format_args!("failed to start runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, path, extra.handles()));
    drop(extra);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "proxy failed");
            inv.error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `check --config FILE`: loads and validates the file, binds nothing.
fn check(inv: Invocation, path: &std::path::Path) -> ExitCode {
    match ProxyConfig::load(path) {
        Ok(c) => {
            println!("{}: ok ({} tenants)", path.display(), c.tenants.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            inv.error(format_args!("{}: {}", path.display(), Chain(&e)));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

async fn run(config: ProxyConfig, path: PathBuf, workers: Vec<Handle>) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to bind listen address {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("failed to bind admin address {}", config.admin_listen))?;
    let proxy = Proxy::new(config)
        .with_config_file(path)
        .with_workers(workers);
    let handle = proxy.handle();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("failed to install SIGHUP handler")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install SIGTERM handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let _ = handle.reload_config_file();
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    };
    proxy.serve(listener, admin, shutdown).await?;
    Ok(())
}

fn hash_password(inv: Invocation) -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        inv.error("failed to read password from stdin");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    let salt = match SaltString::encode_b64(&rand::random::<[u8; 16]>()) {
        Ok(s) => s,
        Err(e) => {
            inv.error(format_args!("failed to make a salt: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match argon2::Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            inv.error(format_args!("failed to hash password: {e}"));
            ExitCode::FAILURE
        }
    }
}

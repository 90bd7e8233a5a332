//! The `palisade` binary: parse the command line, open the store, run one
//! command, print, exit. Also installable as `kubectl-palisade`.

mod cli;
mod dashboard_cmds;
mod kube_cmds;
mod lab_cmds;
mod output;
mod proxy_cmds;
mod state;
mod store_cmds;

use anyhow::Result;
use clap::CommandFactory;
use cli::{Cli, Command, GatewayCommand, TenantCommand};
use state::{open, state_path};
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit status of a process killed by SIGPIPE (128 + 13), as a shell
/// reports it.
const SIGPIPE_STATUS: u8 = 141;

fn main() -> ExitCode {
    let cli = Cli::command();
    // As a kubectl plugin, usage lines should read `kubectl palisade ...`.
    let invoked_as_plugin = std::env::args_os()
        .next()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("kubectl-"))
        })
        .unwrap_or(false);
    let cli = if invoked_as_plugin {
        cli.bin_name("kubectl palisade")
    } else {
        cli
    };
    let matches = cli.get_matches();
    let args = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Command::Proxy { args } = &args.command {
        // The proxy sets up its own JSON logging.
        return proxy_cmds::run_proxy(args);
    }
    init_tracing(args.verbose);
    match run(args) {
        Ok(code) => code,
        // `palisade list | head` closes stdout early. Like other Unix
        // tools, end quietly with the status of a SIGPIPE death.
        Err(e) if output::StdoutError::is_broken_pipe(&e) => ExitCode::from(SIGPIPE_STATUS),
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Picks the handler of `cli`'s command and the store it works on; each
/// handler is documented where it lives.
fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Proxy { args } => return Ok(proxy_cmds::run_proxy(args)),
        Command::EgressCheck(a) => return dashboard_cmds::egress_check(a),
        Command::Completions { shell } => {
            // clap_complete panics on a failed write; write the script ourselves.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "palisade", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
                .map_err(output::StdoutError)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if cli.store == cli::StoreKind::Kubernetes {
        store_cmds::refuse_unsupported(&cli.command)?;
        if let Command::Dashboard(a) = &cli.command {
            return dashboard_cmds::dashboard(a, None);
        }
        return run_verb(&mut palisade_backend::kube::Kube::new()?, &cli);
    }
    match &cli.command {
        Command::Init(a) => store_cmds::init(&cli, a)?,
        Command::Apply(a) => kube_cmds::apply(a, &open(&cli)?.snapshot()?)?,
        Command::Lab(a) => return lab_cmds::run(&cli, a),
        Command::Dashboard(a) => return dashboard_cmds::dashboard(a, Some(state_path(&cli)?)),
        _ => return run_verb(&mut palisade_backend::Sqlite::new(|| open(&cli)), &cli),
    }
    Ok(ExitCode::SUCCESS)
}

/// The verbs both stores serve, over `b`.
fn run_verb(b: &mut dyn palisade_backend::Backend, cli: &Cli) -> Result<ExitCode> {
    let format = cli.output;
    match &cli.command {
        Command::Create(a) => store_cmds::create(b, format, a)?,
        Command::Delete(a) => store_cmds::delete(b, a)?,
        Command::List(a) => store_cmds::list(b, format, a)?,
        Command::Stats => store_cmds::stats(b, format)?,
        Command::Tenant(TenantCommand::Create(a)) | Command::CreateTenant(a) => {
            store_cmds::tenant_create(b, a)?;
        }
        Command::Tenant(TenantCommand::Delete { tenant, cascade }) => {
            store_cmds::tenant_delete(b, tenant, *cascade)?;
        }
        Command::Tenant(TenantCommand::List) => store_cmds::tenant_list(b, format)?,
        Command::Tenant(TenantCommand::Show { tenant }) => {
            store_cmds::tenant_show(b, format, tenant)?;
        }
        Command::Gateway(GatewayCommand::Create(target)) | Command::CreateGateway(target) => {
            store_cmds::gateway_create(b, target)?;
        }
        Command::Gateway(GatewayCommand::Delete(target)) => store_cmds::gateway_delete(b, target)?,
        Command::Gateway(GatewayCommand::List) => store_cmds::gateway_list(b, format)?,
        Command::Allow(a) => store_cmds::allow(b, a)?,
        Command::Disallow(a) => store_cmds::disallow(b, a)?,
        Command::Rules(a) => store_cmds::rules(b, format, a)?,
        Command::Import(a) => store_cmds::import(b, a)?,
        Command::Check => return store_cmds::check(b),
        Command::Render(a) => kube_cmds::render(a, &b.snapshot()?)?,
        Command::ProxyConfig(a) => {
            proxy_cmds::write_config(a, &b.snapshot()?, b.domain_rules()?)?;
        }
        // `run` handles the rest before it picks a store.
        _ => anyhow::bail!("this command does not run on a store"),
    }
    Ok(ExitCode::SUCCESS)
}

//! `openledger`: initialise a chain home, run the node, verify the chain, manage keys, send OPEN
//! and call every native module from the terminal; generate and chat with a local model.

mod adapter_cmd;
mod agent_cmd;
mod ai;
mod commands;
mod datanet_cmd;
mod demo;
mod factory_cmd;
mod factory_jobs;
mod factory_publish_route;
mod gov_cmd;
mod home;
mod index_cmd;
mod openlora_cmd;
mod openlora_glue;
mod proposal_cmd;
mod publish_adapter;
mod rest;
mod rlhf_cmd;
mod sim_cmd;
mod sim_routes;
mod stake_cmd;
mod wallet;

use clap::Parser;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: the executor allocates and frees many small buffers per
/// transaction (keys, values, logs), and glibc spent 30–40% of a simulation there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (its place in mimalloc.h's `mi_option_e`): how long freed memory
/// waits before mimalloc returns it to the OS. At the default (1 s) a long simulation keeps
/// handing huge pages back and faulting them in again, zeroed (~15% of a year.toml run).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(
    name = "openledger",
    version,
    about = "OpenLedger: an AI blockchain where inference pays the data that shaped it"
)]
pub struct Cli {
    /// Chain home directory (config, genesis, data, keystore).
    #[arg(long, global = true, env = "OPENLEDGER_HOME", default_value_os_t = default_home())]
    pub home: PathBuf,
    /// JSON-RPC URL of the node (default: the rpc_addr of the home's config.toml).
    #[arg(long, global = true, env = "OPENLEDGER_RPC")]
    pub rpc: Option<String>,
    /// Key to sign with: a name from `openledger keys list`.
    #[arg(long, global = true, env = "OPENLEDGER_FROM")]
    pub from: Option<String>,
    /// Keystore password (prefer OPENLEDGER_PASSWORD or --password-file; dev keys have an empty one).
    #[arg(
        long,
        global = true,
        env = "OPENLEDGER_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// File whose first line is the keystore password.
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: commands::Command,
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".openledger")
}

fn main() {
    // SAFETY: sets a plain integer option before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    // Like other Unix tools, stop quietly when the reader of our output goes away
    // (`openledger datanet export 1 | head`) instead of failing on the closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // The demo prints its own progress; its embedded node logs only warnings unless asked.
    let default_log = match cli.command {
        commands::Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPENLEDGER_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Subcommands that need no network or keys are tested here.
#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

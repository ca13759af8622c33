//! The command line: `keepalive [serve]`, `check`, `doctor`, `config`.
//!
//! Exit codes: 0 success; 1 the server failed while running (store, listener); 64 the
//! configuration or the command line is invalid (nothing was bound). `check` and `doctor`
//! document their own.

mod check;
mod config_cmd;
mod doctor;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for an invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// keepalive: keeps web sessions alive and reports the server's health.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (its settings sit between the defaults and the environment).
    #[arg(long, global = true, value_name = "FILE", env = "KEEPALIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Probe a running server once: exit 0 healthy, 1 degraded, 2 critical, 3 unreachable.
    Check {
        /// Server to probe (`http://host:port`, or a `/health` or keepalive URL); default: this
        /// configuration's port on 127.0.0.1.
        url: Option<String>,
        /// Print JSON instead of one line.
        #[arg(long)]
        json: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Find what is wrong: configuration, Redis (host, connection, password, PING, INFO),
    /// memory, port and data directory, each with its fix.
    Doctor {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show the effective configuration and where each value comes from, secrets redacted.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    crate::outbound::ensure_crypto_provider();
    // A usage error exits 64 like any configuration error: clap's own code (2) would read as
    // "critical" to a `keepalive check` health check.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let informational = matches!(
                err.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            let _ = err.print();
            return if informational {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            };
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run(cli.config),
        Command::Config { json } => config_cmd::run(cli.config, json),
        Command::Check { url, json, timeout } => check::run(cli.config, url, json, timeout),
        Command::Doctor { json } => doctor::run(cli.config, json),
    }
}

//! The command line: `keepalive [serve]` and `keepalive config`.
//!
//! Exit codes: 0 success; 1 the server failed while running (store, listener); 64 the
//! configuration is invalid (nothing was bound).

mod config_cmd;
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
    /// Show the effective configuration and where each value comes from, secrets redacted.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run(cli.config),
        Command::Config { json } => config_cmd::run(cli.config, json),
    }
}

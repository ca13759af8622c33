//! The command line: `keepalive [serve]`, `check`, `doctor`, `config`, and the files generated
//! from this definition (`completions`, `man`).
//!
//! Exit codes: 0 success; 1 the server failed while running (store, listener); 64 the
//! configuration or the command line is invalid (nothing was bound). `check`, `doctor` and
//! `config` document their own in their help.

mod check;
mod config_cmd;
mod doctor;
mod generate;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code for an invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// The version and the commit it was built from (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KEEPALIVE_COMMIT"),
    ")"
);

/// keepalive: keeps web sessions alive and reports the server's health.
#[derive(Debug, Parser)]
#[command(name = "keepalive", version = VERSION, about, long_about = None)]
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
    Serve(ServeArgs),
    /// Probe a running server once: exit 0 healthy, 1 degraded, 2 critical, 3 unreachable.
    #[command(
        after_help = "Exit codes: 0 healthy, 1 degraded, 2 critical, 3 unreachable or \
        not a keepalive answer, 64 invalid configuration or command line."
    )]
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
    #[command(
        after_help = "Exit codes: 0 nothing wrong (warnings allowed), 1 something is \
        wrong (the first failure is named with its fix), 64 invalid configuration or command \
        line."
    )]
    Doctor {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show the effective configuration and where each value comes from, secrets redacted.
    #[command(
        after_help = "Exit codes: 0 the configuration is valid, 64 it is invalid (the \
        settings are still shown, with the error) or the command line is."
    )]
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for SHELL to standard output.
    #[command(after_help = "Examples:\n  keepalive completions bash > \
        /usr/share/bash-completion/completions/keepalive\n  keepalive completions zsh > \
        \"${fpath[1]}/_keepalive\"\n  keepalive completions fish > \
        ~/.config/fish/completions/keepalive.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write it and one page per subcommand into a directory.
    #[command(
        after_help = "Examples:\n  keepalive man > /usr/local/share/man/man1/keepalive.1\n  \
        keepalive man --dir /usr/local/share/man/man1   (keepalive.1, keepalive-serve.1...)"
    )]
    Man {
        /// Write keepalive.1 and a keepalive-SUBCOMMAND.1 per subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The settings people set on a command line; each overrides the configuration file and the
/// environment (`keepalive config` shows it as "command-line flag").
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TCP port to listen on (the setting `port`, `PORT`).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on, such as 127.0.0.1 or :: (the setting `bind`).
    #[arg(long, value_name = "ADDRESS")]
    pub bind: Option<String>,
    /// Directory of the local session store (the setting `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The flags given, as (setting, flag, value) for the configuration's top layer.
    fn settings(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut flags = Vec::new();
        if let Some(port) = self.port {
            flags.push(("port", "--port", port.to_string()));
        }
        if let Some(bind) = &self.bind {
            flags.push(("bind", "--bind", bind.clone()));
        }
        if let Some(dir) = &self.data_dir {
            flags.push(("data_dir", "--data-dir", dir.display().to_string()));
        }
        flags
    }
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
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()))
    {
        Command::Serve(args) => serve::run(cli.config, args.settings()),
        Command::Completions { shell } => generate::completions(shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
        Command::Config { json } => config_cmd::run(cli.config, json),
        Command::Check { url, json, timeout } => check::run(cli.config, url, json, timeout),
        Command::Doctor { json } => doctor::run(cli.config, json),
    }
}

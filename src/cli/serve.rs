//! `keepalive serve`: validate the configuration, log the banner, bind, serve until SIGTERM
//! or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::config::{Config, Layers};
use crate::{logging, server};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Runs the server with the command line's `flags` on top of the configuration; returns the
/// process exit code.
pub fn run(file: Option<PathBuf>, flags: Vec<(&'static str, &'static str, String)>) -> ExitCode {
    let layers = match Layers::read(file) {
        Ok(layers) => layers.with_flags(flags),
        Err(err) => return config_error(&err),
    };
    let config = match layers.validate() {
        Ok(config) => config,
        Err(err) => return config_error(&err),
    };
    logging::init(&config.log);
    for var in layers.unknown_vars() {
        tracing::warn!(variable = %var, "ignoring {var}: it names no setting of keepalive (see `keepalive config`)");
    }
    if let Some(note) = layers.environment_note() {
        tracing::warn!("{note}");
    }
    if !layers.service_links().is_empty() {
        let names = layers.service_links().join(", ");
        tracing::info!(variables = %names, "ignoring {names}: Kubernetes sets them for a Service named after keepalive's prefix (set enableServiceLinks: false in the pod spec to leave them out)");
    }
    banner(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = match TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen on {listen}: {err}; set PORT or KEEPALIVE_BIND to a free address");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match server::run(config, listener, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("keepalive stopped on an error: {err}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

fn config_error(err: &crate::config::ConfigError) -> ExitCode {
    eprintln!("keepalive: {err}");
    eprintln!("keepalive: run `keepalive config` to see every setting and where it comes from");
    ExitCode::from(EXIT_CONFIG)
}

/// One log event with the effective configuration, secrets redacted.
fn banner(config: &Config) {
    let c = &config.client;
    let health_period = c.tick * c.health_check_frequency;
    let redis = config
        .redis
        .as_ref()
        .map(|r| r.display_url.clone())
        .unwrap_or_else(|| "not configured (local store only)".to_owned());
    tracing::info!(
        environment = %config.environment,
        listen = %config.server.listen,
        tick = %humantime::format_duration(c.tick),
        timeout = %humantime::format_duration(c.timeout),
        max_retries = c.max_retries,
        health_check = %format!("every {} ticks ({})", c.health_check_frequency, humantime::format_duration(health_period)),
        idle_timeout = %humantime::format_duration(config.session.idle_timeout),
        absolute_lifetime = %humantime::format_duration(config.session.absolute_lifetime),
        data_dir = %config.store.data_dir.display(),
        redis = %redis,
        log_format = config.log.format.as_str(),
        health_token = if config.health.token.is_some() { "set" } else { "not set" },
        "keepalive {} [{}]: tick {}, timeout {}, {} retries, health every {} ticks",
        super::VERSION,
        config.environment,
        humantime::format_duration(c.tick),
        humantime::format_duration(c.timeout),
        c.max_retries,
        c.health_check_frequency,
    );
}

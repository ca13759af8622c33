//! Configuration: read in layers, validated into one [`Config`] before anything binds.
//!
//! Layers, lowest first:
//! 1. the defaults of the environment (`development`, `staging` or `production`), itself named
//!    by `KEEPALIVE_ENV`, else `NODE_ENV` (so existing deployments keep working), else the
//!    file's `env`, else `development`;
//! 2. an optional TOML file (`--config FILE` or `KEEPALIVE_CONFIG`);
//! 3. environment variables: `PORT`, `REDIS_URL`, and every setting as `KEEPALIVE_` plus its
//!    name in upper snake case (`KEEPALIVE_TICK=30s`, `KEEPALIVE_IDLE_TIMEOUT=10m`, ...).
//!
//! `serve` and `config` share this code. Any error names the key, its value, where that value
//! came from and the rule it breaks; the binary exits with code 64 on it.

mod error;
mod raw;
mod redis_target;
mod sources;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ConfigError;
pub use raw::{KEYS, RawConfig, SECRET_KEYS};
pub use redis_target::RedisTarget;
pub use sources::{Layers, Origin, redact_url};

/// The deployment environment, which picks the defaults and a few rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A developer's machine: human-readable logs, no `Secure` cookie, fast ticks.
    Development,
    /// A pre-production deployment, configured like production.
    Staging,
    /// Production: JSON logs, `Secure` cookie, tick of at least 25 s.
    Production,
}

impl Environment {
    /// Parses an environment name as `KEEPALIVE_ENV` or `NODE_ENV` write it.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" | "test" => Some(Self::Development),
            "staging" | "stage" => Some(Self::Staging),
            "production" | "prod" => Some(Self::Production),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
        }
    }
}

/// A string that must never be printed: its `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the browser client is told to do; sent in every keepalive answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Interval between two pings.
    pub tick: Duration,
    /// Time the client waits for an answer.
    pub timeout: Duration,
    /// Retries of a failed ping.
    pub max_retries: u32,
    /// The client checks health every this many ticks.
    pub health_check_frequency: u32,
}

/// Session lifetimes and the cookie that carries the session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session not kept alive for this long expires.
    pub idle_timeout: Duration,
    /// No session lives longer than this, however active.
    pub absolute_lifetime: Duration,
    /// Name of the cookie.
    pub cookie_name: String,
    /// Whether the cookie carries `Secure`.
    pub cookie_secure: bool,
}

/// The health monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    /// How often health is recomputed.
    pub interval: Duration,
    /// Memory use, in percent of the limit, at which memory turns `warning`.
    pub memory_warning: f64,
    /// Memory use, in percent of the limit, at which memory turns `critical`.
    pub memory_critical: f64,
    /// Bearer token that unlocks the details of `/health`; without one only the status shows.
    pub token: Option<Secret>,
}

/// The embedded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Directory of the store's file.
    pub data_dir: PathBuf,
    /// Period of the batched writes of keepalive extensions (at most 1 s).
    pub flush_interval: Duration,
    /// Period of the purge of expired sessions.
    pub purge_interval: Duration,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Threads serving HTTP connections; 0: one per CPU the process may use.
    pub workers: usize,
    /// Connection and header limits.
    pub limits: ConnectionLimits,
    /// Per-client rate limits and trusted proxies.
    pub rate_limits: RateLimitSettings,
    /// Origins allowed by CORS; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_token: Option<Secret>,
    /// Longest time one request may take.
    pub request_timeout: Duration,
    /// Time `/readyz` answers 503 before the listener closes, so load balancers move away.
    pub drain_delay: Duration,
    /// Longest time in-flight requests get to finish once the listener closed.
    pub shutdown_timeout: Duration,
}

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv6: one /64) that is not a
    /// trusted proxy; 0: no bound.
    pub max_connections_per_client: usize,
    /// Longest time a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
}

/// The configured limits, per client per minute (0: no limit), and trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Session creations per client per minute.
    pub sessions_per_minute: u32,
    /// Keepalives per client per minute.
    pub keepalives_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The shared Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where Redis is: one server, a cluster or a sentinel-managed master.
    pub target: RedisTarget,
    /// The URL as given, password redacted, for logs.
    pub display_url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Longest wait for one operation before it counts as an outage.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Period of the probe while Redis answers.
    pub probe_interval: Duration,
    /// Longest wait between two reconnection attempts while Redis is offline.
    pub backoff_max: Duration,
    /// Sessions and logouts a second that a background write-back sends at most (0: as fast
    /// as Redis answers).
    pub write_back_rate: u32,
    /// Most live sessions the local store keeps copies of while Redis answers (0: no bound).
    pub mirror_max_sessions: u64,
    /// About how many logouts the record of logouts keeps.
    pub logout_record_cap: u64,
}

/// How long each rule's condition must hold before it fires, and how often a firing alert is
/// repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleTimings {
    /// How long Redis must be offline before its alert fires.
    pub redis_offline_for: Duration,
    /// How long memory must be at warning or above before its alert fires.
    pub memory_for: Duration,
    /// How long the status must be critical before its alert fires.
    pub critical_for: Duration,
    /// Interval between two notices of an alert that keeps firing.
    pub repeat_interval: Duration,
}

/// Alert rules and where their notices go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// Rule durations and repeat interval.
    pub timings: RuleTimings,
    /// Alertmanager-compatible webhook.
    pub webhook_url: Option<Secret>,
    /// Slack-style webhook.
    pub slack_webhook_url: Option<Secret>,
}

/// How applications use keepalive's sessions: the backend API and forward authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationSettings {
    /// Bearer token of the backend API; `None`: the API is off.
    pub backend_token: Option<Secret>,
    /// Whether a forward-authentication check extends the session like a keepalive.
    pub forward_auth_extend: bool,
}

/// An Express application's sessions, served in its place (`session_format = "express"`):
/// each setting mirrors the express-session or connect-redis option of the same meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressSettings {
    /// express-session's `secret`: the first signs, every one verifies.
    pub secrets: Vec<Secret>,
    /// connect-redis's `prefix`.
    pub prefix: String,
    /// express-session's `name`.
    pub cookie_name: String,
    /// express-session's `rolling`.
    pub rolling: bool,
    /// connect-redis's `ttl`: the lifetime of a session whose cookie has no expiry.
    pub ttl: Duration,
    /// The path of the field that names a session's user (`["passport", "user"]`); empty:
    /// none.
    pub user_field: Vec<String>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A tracing filter directive.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

/// The validated configuration the whole program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The environment.
    pub environment: Environment,
    /// The HTTP server.
    pub server: ServerSettings,
    /// The embedded store.
    pub store: StoreSettings,
    /// The shared Redis store, when `REDIS_URL` is set.
    pub redis: Option<RedisSettings>,
    /// What the browser client is told.
    pub client: ClientSettings,
    /// Session lifetimes and cookie.
    pub session: SessionSettings,
    /// Health monitor.
    pub health: HealthSettings,
    /// Alert rules and webhooks.
    pub alerts: AlertSettings,
    /// The backend API and forward authentication.
    pub integration: IntegrationSettings,
    /// An Express application's sessions, when `session_format` is `express`; `None`:
    /// keepalive's own sessions.
    pub express: Option<ExpressSettings>,
    /// Logging.
    pub log: LogSettings,
}

impl Config {
    /// Reads the layers (`file` if given, else `KEEPALIVE_CONFIG`) and validates them.
    pub fn load(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        Layers::read(file)?.validate()
    }
}

#[cfg(test)]
mod tests;

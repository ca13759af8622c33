//! The raw configuration: every setting as read from its layers, before validation.
//!
//! Settings are flat so that each one maps to exactly one environment variable
//! (`KEEPALIVE_` plus its name in upper snake case) and one key of the optional TOML file.
//! The per-environment defaults live here too: they are the bottom layer.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::Environment;

/// Every setting, each optional until the layers are merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Environment name; only read to pick the defaults, it is resolved before the rest.
    pub env: Option<String>,
    /// Address to bind.
    pub bind: Option<String>,
    /// Port to listen on.
    pub port: Option<u16>,
    /// Directory of the embedded session store.
    pub data_dir: Option<String>,
    /// Redis URL of the shared session store.
    #[serde(default, deserialize_with = "lenient_string")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[serde(default, deserialize_with = "lenient_string")]
    pub redis_prefix: Option<String>,
    /// Longest wait for one Redis operation before it counts as an outage.
    #[serde(default, with = "humantime_serde")]
    pub redis_timeout: Option<Duration>,
    /// Longest wait for a connection to Redis.
    #[serde(default, with = "humantime_serde")]
    pub redis_connect_timeout: Option<Duration>,
    /// Period of the Redis probe while Redis answers.
    #[serde(default, with = "humantime_serde")]
    pub redis_probe_interval: Option<Duration>,
    /// Longest wait between two reconnection attempts while Redis is offline.
    #[serde(default, with = "humantime_serde")]
    pub redis_backoff_max: Option<Duration>,
    /// Sessions and logouts a second written back to Redis at most by a write-back that runs
    /// while the instance serves (0: as fast as Redis answers).
    pub redis_write_back_rate: Option<u32>,
    /// Most live sessions the local store keeps copies of while Redis answers (0: no bound);
    /// beyond it the least lately active copies go.
    pub redis_mirror_max_sessions: Option<u64>,
    /// About how many logouts Redis keeps in the record an instance reads the logouts it
    /// missed from (the stream `{prefix}logouts`).
    pub redis_logout_record_cap: Option<u64>,
    /// Interval between two pings of the browser client.
    #[serde(default, with = "humantime_serde")]
    pub tick: Option<Duration>,
    /// Time the client waits for an answer.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retries of a failed ping.
    pub max_retries: Option<u32>,
    /// The client asks for health every this many ticks.
    pub health_check_frequency: Option<u32>,
    /// Idle timeout of a session.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Absolute lifetime of a session.
    #[serde(default, with = "humantime_serde")]
    pub absolute_lifetime: Option<Duration>,
    /// Name of the session cookie.
    #[serde(default, deserialize_with = "lenient_string")]
    pub cookie_name: Option<String>,
    /// Whether the session cookie carries `Secure`.
    pub cookie_secure: Option<bool>,
    /// Period of the background health monitor.
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    /// Memory use (percent of the limit) at which memory turns `warning`.
    pub memory_warning: Option<f64>,
    /// Memory use (percent of the limit) at which memory turns `critical`.
    pub memory_critical: Option<f64>,
    /// Bearer token that unlocks the details of `/health`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub health_token: Option<String>,
    /// Period of the embedded store's batched writes.
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// Period of the purge of expired sessions.
    #[serde(default, with = "humantime_serde")]
    pub purge_interval: Option<Duration>,
    /// Threads serving HTTP connections (0: one per CPU the process may use).
    pub workers: Option<u32>,
    /// Most HTTP connections open at once.
    pub max_connections: Option<u32>,
    /// Most HTTP connections open at once from one client address that is not a trusted proxy
    /// (0: no bound).
    pub max_connections_per_client: Option<u32>,
    /// Longest time a client may take to send a request's headers.
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: Option<u32>,
    /// Most headers in one request.
    pub max_headers: Option<u32>,
    /// Session creations per client address per minute (0: no limit).
    pub rate_limit_sessions: Option<u32>,
    /// Keepalives per client address per minute (0: no limit).
    pub rate_limit_keepalive: Option<u32>,
    /// Proxies (IP addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For` is believed.
    #[serde(default, deserialize_with = "lenient_string")]
    pub trusted_proxies: Option<String>,
    /// Origins (comma-separated) allowed to call the API from other sites; none by default.
    #[serde(default, deserialize_with = "lenient_string")]
    pub cors_origins: Option<String>,
    /// Bearer token that `/metrics` requires, when set.
    #[serde(default, deserialize_with = "lenient_string")]
    pub metrics_token: Option<String>,
    /// Bearer token of the backend (server-to-server) API; the API is off without one.
    #[serde(default, deserialize_with = "lenient_string")]
    pub backend_token: Option<String>,
    /// Whether a forward-authentication check extends the session like a keepalive.
    pub forward_auth_extend: Option<bool>,
    /// Longest time one request may take.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// Time `/readyz` reports 503 before the listener stops accepting, on shutdown.
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Option<Duration>,
    /// Longest time in-flight requests get to finish on shutdown.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// Alertmanager-compatible webhook for alert notices.
    #[serde(default, deserialize_with = "lenient_string")]
    pub alert_webhook_url: Option<String>,
    /// Slack-style (`{"text": ...}`) webhook for alert notices.
    #[serde(default, deserialize_with = "lenient_string")]
    pub alert_slack_webhook_url: Option<String>,
    /// How long Redis must be offline before the alert fires.
    #[serde(default, with = "humantime_serde")]
    pub alert_redis_offline_for: Option<Duration>,
    /// How long memory must be at warning or above before the alert fires.
    #[serde(default, with = "humantime_serde")]
    pub alert_memory_for: Option<Duration>,
    /// How long the status must be critical before the alert fires.
    #[serde(default, with = "humantime_serde")]
    pub alert_critical_for: Option<Duration>,
    /// Interval between two notices of an alert that keeps firing.
    #[serde(default, with = "humantime_serde")]
    pub alert_repeat_interval: Option<Duration>,
    /// Whose sessions keepalive serves: `native` (its own) or `express` (an Express
    /// application's, from express-session with connect-redis).
    #[serde(default, deserialize_with = "lenient_string")]
    pub session_format: Option<String>,
    /// The Express application's session secret (express-session's `secret`): one secret, or
    /// a JSON array of them (the first signs, every one verifies).
    #[serde(default, deserialize_with = "lenient_secrets")]
    pub express_secrets: Option<Vec<String>>,
    /// A file holding the Express application's secrets, one per line (the first signs): a
    /// Docker or Kubernetes secret.
    #[serde(default, deserialize_with = "lenient_string")]
    pub express_secrets_file: Option<String>,
    /// Prefix of the Express application's session keys (connect-redis's `prefix`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub express_prefix: Option<String>,
    /// Name of the Express application's session cookie (express-session's `name`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub express_cookie_name: Option<String>,
    /// Whether every answer sends the session cookie again with a new expiry
    /// (express-session's `rolling`).
    pub express_rolling: Option<bool>,
    /// Lifetime of a session whose cookie has no expiry (connect-redis's `ttl`).
    #[serde(default, with = "humantime_serde")]
    pub express_ttl: Option<Duration>,
    /// The field of the Express session that names its user, as a dotted path
    /// (`passport.user`, `userId`); empty: sessions name no user.
    #[serde(default, deserialize_with = "lenient_string")]
    pub express_user_field: Option<String>,
    /// Log filter (`info`, `debug`, `keepalive=debug,tower_http=info`, ...).
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    pub log_format: Option<String>,
}

/// The names of all settings, in the order `keepalive config` shows them.
pub const KEYS: &[&str] = &[
    "env",
    "bind",
    "port",
    "data_dir",
    "redis_url",
    "redis_prefix",
    "redis_timeout",
    "redis_connect_timeout",
    "redis_probe_interval",
    "redis_backoff_max",
    "redis_write_back_rate",
    "redis_mirror_max_sessions",
    "redis_logout_record_cap",
    "tick",
    "timeout",
    "max_retries",
    "health_check_frequency",
    "idle_timeout",
    "absolute_lifetime",
    "cookie_name",
    "cookie_secure",
    "health_interval",
    "memory_warning",
    "memory_critical",
    "health_token",
    "flush_interval",
    "purge_interval",
    "workers",
    "max_connections",
    "max_connections_per_client",
    "header_read_timeout",
    "max_header_bytes",
    "max_headers",
    "rate_limit_sessions",
    "rate_limit_keepalive",
    "trusted_proxies",
    "cors_origins",
    "metrics_token",
    "backend_token",
    "forward_auth_extend",
    "request_timeout",
    "drain_delay",
    "shutdown_timeout",
    "alert_webhook_url",
    "alert_slack_webhook_url",
    "alert_redis_offline_for",
    "alert_memory_for",
    "alert_critical_for",
    "alert_repeat_interval",
    "session_format",
    "express_secrets",
    "express_secrets_file",
    "express_prefix",
    "express_cookie_name",
    "express_rolling",
    "express_ttl",
    "express_user_field",
    "log_level",
    "log_format",
];

/// Settings whose values are secrets: never printed.
pub const SECRET_KEYS: &[&str] = &[
    "health_token",
    "metrics_token",
    "backend_token",
    "alert_webhook_url",
    "alert_slack_webhook_url",
    "express_secrets",
];

impl RawConfig {
    /// The defaults of one environment: the guide's production values (tick 30 s, timeout
    /// 8 s, three retries, health every two ticks) for staging and production, and a faster,
    /// chattier setup for development.
    pub fn defaults_for(env: Environment) -> Self {
        let secs = Duration::from_secs;
        let (tick, timeout, retries, frequency) = match env {
            Environment::Development => (secs(10), secs(5), 3, 1),
            Environment::Staging | Environment::Production => (secs(30), secs(8), 3, 2),
        };
        let development = env == Environment::Development;
        Self {
            env: Some(env.as_str().to_owned()),
            bind: Some("0.0.0.0".to_owned()),
            port: Some(8080),
            data_dir: Some("./data".to_owned()),
            redis_url: None,
            redis_prefix: Some("keepalive:".to_owned()),
            redis_timeout: Some(Duration::from_millis(100)),
            redis_connect_timeout: Some(secs(1)),
            redis_probe_interval: Some(Duration::from_millis(500)),
            redis_backoff_max: Some(secs(1)),
            // A fleet restarting at once writes every instance's sessions back together: at
            // this rate ten instances leave a single Redis most of its capacity for the live
            // traffic, and a million sessions take under a minute in the background.
            redis_write_back_rate: Some(20_000),
            redis_mirror_max_sessions: Some(0),
            // A few megabytes of Redis memory; at 350 logouts a second (ten million sessions
            // of eight hours) it covers about five minutes away.
            redis_logout_record_cap: Some(100_000),
            tick: Some(tick),
            timeout: Some(timeout),
            max_retries: Some(retries),
            health_check_frequency: Some(frequency),
            idle_timeout: Some(secs(10 * 60)),
            absolute_lifetime: Some(secs(12 * 60 * 60)),
            cookie_name: Some("keepalive_sid".to_owned()),
            cookie_secure: Some(!development),
            health_interval: Some(secs(1)),
            memory_warning: Some(80.0),
            memory_critical: Some(90.0),
            health_token: None,
            flush_interval: Some(Duration::from_millis(500)),
            purge_interval: Some(secs(60)),
            workers: Some(0),
            max_connections: Some(10_000),
            max_connections_per_client: Some(256),
            header_read_timeout: Some(secs(10)),
            max_header_bytes: Some(16 * 1024),
            max_headers: Some(64),
            rate_limit_sessions: Some(60),
            rate_limit_keepalive: Some(600),
            trusted_proxies: Some(
                "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7".to_owned(),
            ),
            cors_origins: None,
            metrics_token: None,
            backend_token: None,
            forward_auth_extend: Some(true),
            request_timeout: Some(secs(10)),
            drain_delay: Some(if development { secs(0) } else { secs(5) }),
            shutdown_timeout: Some(secs(15)),
            alert_webhook_url: None,
            alert_slack_webhook_url: None,
            alert_redis_offline_for: Some(secs(5 * 60)),
            alert_memory_for: Some(secs(5 * 60)),
            alert_critical_for: Some(secs(60)),
            alert_repeat_interval: Some(secs(60 * 60)),
            session_format: Some("native".to_owned()),
            express_secrets: None,
            express_secrets_file: None,
            express_prefix: Some("sess:".to_owned()),
            express_cookie_name: Some("connect.sid".to_owned()),
            express_rolling: Some(false),
            express_ttl: Some(secs(24 * 60 * 60)),
            express_user_field: Some("passport.user".to_owned()),
            log_level: Some("info".to_owned()),
            log_format: Some(if development { "text" } else { "json" }.to_owned()),
        }
    }
}

/// One secret, or a list of them: a TOML array, or, from an environment variable, a JSON array
/// (a value that starts with `[`) or else the whole value as one secret, which may hold any
/// character (commas included).
fn lenient_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
        Number(u64),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::Many(list)) => Some(list),
        Some(OneOrMany::Number(n)) => Some(vec![n.to_string()]),
        Some(OneOrMany::One(text)) if text.trim_start().starts_with('[') => {
            Some(serde_json::from_str::<Vec<String>>(&text).map_err(|_| {
                serde::de::Error::custom(
                    "a list of secrets must be a JSON array of strings, such as [\"new\",\"old\"]",
                )
            })?)
        }
        Some(OneOrMany::One(text)) => Some(vec![text]),
    })
}

/// Accepts a number where a string is expected: environment variables are untyped, and a
/// token like `12345` must not be rejected for looking numeric.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrNumber {
        S(String),
        U(u64),
        I(i64),
        F(f64),
    }
    Ok(Option::<StringOrNumber>::deserialize(d)?.map(|v| match v {
        StringOrNumber::S(s) => s,
        StringOrNumber::U(n) => n.to_string(),
        StringOrNumber::I(n) => n.to_string(),
        StringOrNumber::F(n) => n.to_string(),
    }))
}

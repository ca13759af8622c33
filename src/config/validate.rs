//! Turns the merged raw settings into a [`Config`], enforcing the rules between them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::sources::redact_url;
use super::{
    AlertSettings, ClientSettings, Config, ConfigError, Environment, ExpressSettings,
    HealthSettings, IntegrationSettings, Layers, LogFormat, LogSettings, RedisSettings, Secret,
    ServerSettings, SessionSettings, StoreSettings,
};

/// The production tick may not go below this: more frequent pings only add load (the guide's
/// rule, "NE PAS réduire < 25s").
const MIN_PRODUCTION_TICK: Duration = Duration::from_secs(25);
/// Keepalive extensions may be lost for at most this long on a crash.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Most HTTP worker threads: far more than any machine this serves from has cores.
const MAX_WORKERS: u32 = 256;
/// Bounds of `redis_logout_record_cap`: fewer than a thousand logouts would send an instance
/// to the look-up of every copy after any short absence; a hundred million entries are
/// several gigabytes of Redis memory.
const LOGOUT_RECORD_CAP: std::ops::RangeInclusive<u64> = 1_000..=100_000_000;
/// The longest absolute lifetime a session may have (see its check).
const MAX_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

impl Layers {
    /// Validates the merged layers into the configuration the program runs with.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let raw = self.extract()?;
        let fail = |key: &'static str, rule: String| ConfigError::Invalid {
            key,
            value: self.display_value(key).unwrap_or_default(),
            origin: self.origin(key),
            rule,
        };
        // Every field has a default, so a missing one is a bug in the defaults, reported as such.
        macro_rules! get {
            ($field:ident) => {
                raw.$field
                    .clone()
                    .ok_or_else(|| fail(stringify!($field), "must be set".to_owned()))?
            };
        }
        let environment = self.environment();

        let bind: IpAddr = get!(bind)
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| {
                fail(
                    "bind",
                    "must be an IP address such as 0.0.0.0, 127.0.0.1 or ::".to_owned(),
                )
            })?;
        let listen = SocketAddr::new(bind, get!(port));

        let tick = get!(tick);
        let timeout = get!(timeout);
        if tick.is_zero() {
            return Err(fail("tick", "must be greater than zero".to_owned()));
        }
        if environment == Environment::Production && tick < MIN_PRODUCTION_TICK {
            return Err(fail(
                "tick",
                "must be at least 25s in production: more frequent pings only add load".to_owned(),
            ));
        }
        if timeout.is_zero() || timeout >= tick {
            return Err(fail(
                "timeout",
                format!(
                    "must be greater than zero and shorter than the tick ({})",
                    humantime::format_duration(tick)
                ),
            ));
        }
        let max_retries = get!(max_retries);
        if max_retries > 10 {
            return Err(fail("max_retries", "must be at most 10".to_owned()));
        }
        let health_check_frequency = get!(health_check_frequency);
        if health_check_frequency == 0 {
            return Err(fail(
                "health_check_frequency",
                "must be at least 1 (health every N ticks)".to_owned(),
            ));
        }

        let idle_timeout = get!(idle_timeout);
        if idle_timeout <= tick + timeout {
            return Err(fail(
                "idle_timeout",
                format!(
                    "must be longer than tick + timeout ({}), or an active user's session could lapse between two pings",
                    humantime::format_duration(tick + timeout)
                ),
            ));
        }
        let absolute_lifetime = get!(absolute_lifetime);
        if absolute_lifetime < idle_timeout {
            return Err(fail(
                "absolute_lifetime",
                format!(
                    "must be at least the idle timeout ({})",
                    humantime::format_duration(idle_timeout)
                ),
            ));
        }
        // Redis holds a session's times as offsets from its creation that span 17 years
        // (`store::redis::value`); ten leaves room for the key's TTL past the expiry.
        if absolute_lifetime > MAX_ABSOLUTE_LIFETIME {
            return Err(fail(
                "absolute_lifetime",
                "must be at most 3650 days (ten years)".to_owned(),
            ));
        }
        let cookie_name = get!(cookie_name);
        if cookie_name.is_empty()
            || cookie_name.len() > 64
            || !cookie_name.bytes().all(is_cookie_name_byte)
        {
            return Err(fail(
                "cookie_name",
                "must be 1 to 64 characters among letters, digits and !#$%&'*+-.^_`|~".to_owned(),
            ));
        }
        let cookie_secure = get!(cookie_secure);
        let prefixed = cookie_name.starts_with("__Host-") || cookie_name.starts_with("__Secure-");
        if prefixed && !cookie_secure {
            return Err(fail(
                "cookie_name",
                "a __Host- or __Secure- cookie needs cookie_secure = true (browsers drop it otherwise)".to_owned(),
            ));
        }
        // A Secure cookie gets the __Host- prefix: browsers then refuse it from plain HTTP, from
        // another path and from a sibling subdomain, so it cannot be planted or shadowed.
        let cookie_name = if cookie_secure && !prefixed {
            format!("__Host-{cookie_name}")
        } else {
            cookie_name
        };

        let interval = get!(health_interval);
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
            return Err(fail(
                "health_interval",
                "must be between 10ms and 60s".to_owned(),
            ));
        }
        let memory_warning = get!(memory_warning);
        let memory_critical = get!(memory_critical);
        for (key, value) in [
            ("memory_warning", memory_warning),
            ("memory_critical", memory_critical),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                return Err(fail(
                    key,
                    "must be a percentage above 0 and at most 100".to_owned(),
                ));
            }
        }
        if memory_warning >= memory_critical {
            return Err(fail(
                "memory_warning",
                format!("must be below memory_critical ({memory_critical})"),
            ));
        }
        let token = raw.health_token.clone().map(Secret::new);
        if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(fail(
                "health_token",
                "must be at least 16 characters".to_owned(),
            ));
        }

        let data_dir = PathBuf::from(get!(data_dir));
        if data_dir.as_os_str().is_empty() {
            return Err(fail("data_dir", "must not be empty".to_owned()));
        }
        let flush_interval = get!(flush_interval);
        if flush_interval < Duration::from_millis(10) || flush_interval > MAX_FLUSH_INTERVAL {
            return Err(fail("flush_interval", "must be between 10ms and 1s: at most one second of keepalives may be lost on a crash".to_owned()));
        }
        let purge_interval = get!(purge_interval);
        if purge_interval < Duration::from_millis(100) {
            return Err(fail("purge_interval", "must be at least 100ms".to_owned()));
        }

        let workers = get!(workers);
        if workers > MAX_WORKERS {
            return Err(fail(
                "workers",
                format!("must be at most {MAX_WORKERS} (0: one per CPU)"),
            ));
        }
        let max_connections = get!(max_connections);
        if max_connections == 0 {
            return Err(fail("max_connections", "must be at least 1".to_owned()));
        }
        let max_connections_per_client = get!(max_connections_per_client);
        let header_read_timeout = get!(header_read_timeout);
        if header_read_timeout < Duration::from_millis(10)
            || header_read_timeout > Duration::from_secs(300)
        {
            return Err(fail(
                "header_read_timeout",
                "must be between 10ms and 5m".to_owned(),
            ));
        }
        let max_header_bytes = get!(max_header_bytes);
        if !(8192..=1024 * 1024).contains(&max_header_bytes) {
            return Err(fail(
                "max_header_bytes",
                "must be between 8192 and 1048576".to_owned(),
            ));
        }
        let max_headers = get!(max_headers);
        if !(8..=1000).contains(&max_headers) {
            return Err(fail("max_headers", "must be between 8 and 1000".to_owned()));
        }
        let list = |value: Option<String>| -> Vec<String> {
            value
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut trusted_proxies = Vec::new();
        for entry in list(raw.trusted_proxies.clone())
            .into_iter()
            .filter(|e| e != "none")
        {
            let net = entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    fail(
                        "trusted_proxies",
                        format!("`{entry}` is not an IP address or CIDR block (e.g. 10.0.0.0/8)"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let cors_origins = list(raw.cors_origins.clone());
        for origin in &cors_origins {
            let valid = reqwest::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.path() == "/" && !origin.ends_with('/')
            });
            if !valid || origin == "*" {
                return Err(fail(
                    "cors_origins",
                    format!(
                        "`{origin}` is not an origin such as https://app.example.com (no path, no wildcard)"
                    ),
                ));
            }
        }
        let metrics_token = raw.metrics_token.clone().map(Secret::new);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(fail(
                "metrics_token",
                "must be at least 16 characters".to_owned(),
            ));
        }

        let backend_token = raw.backend_token.clone().map(Secret::new);
        if backend_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 32)
        {
            return Err(fail(
                "backend_token",
                "must be at least 32 characters (for example: openssl rand -hex 32)".to_owned(),
            ));
        }
        let integration = IntegrationSettings {
            backend_token,
            forward_auth_extend: get!(forward_auth_extend),
        };

        let request_timeout = get!(request_timeout);
        if request_timeout.is_zero() {
            return Err(fail(
                "request_timeout",
                "must be greater than zero".to_owned(),
            ));
        }
        let redis = match raw.redis_url.clone() {
            None => None,
            Some(url) => {
                let target =
                    super::RedisTarget::parse(&url).map_err(|reason| fail("redis_url", reason))?;
                let prefix = get!(redis_prefix);
                if prefix.len() > 64 || prefix.contains(['{', '}']) {
                    return Err(fail("redis_prefix", "must be at most 64 characters, without braces (they are used as cluster hash tags)".to_owned()));
                }
                let timeout = get!(redis_timeout);
                if timeout < Duration::from_millis(5) || timeout > Duration::from_secs(10) {
                    return Err(fail(
                        "redis_timeout",
                        "must be between 5ms and 10s".to_owned(),
                    ));
                }
                let connect_timeout = get!(redis_connect_timeout);
                if connect_timeout < Duration::from_millis(10)
                    || connect_timeout > Duration::from_secs(60)
                {
                    return Err(fail(
                        "redis_connect_timeout",
                        "must be between 10ms and 60s".to_owned(),
                    ));
                }
                let probe_interval = get!(redis_probe_interval);
                if probe_interval < Duration::from_millis(10)
                    || probe_interval > Duration::from_secs(60)
                {
                    return Err(fail(
                        "redis_probe_interval",
                        "must be between 10ms and 60s".to_owned(),
                    ));
                }
                let backoff_max = get!(redis_backoff_max);
                if backoff_max < Duration::from_millis(10) || backoff_max > Duration::from_secs(300)
                {
                    return Err(fail(
                        "redis_backoff_max",
                        "must be between 10ms and 5m".to_owned(),
                    ));
                }
                let write_back_rate = get!(redis_write_back_rate);
                let mirror_max_sessions = get!(redis_mirror_max_sessions);
                let logout_record_cap = get!(redis_logout_record_cap);
                if !LOGOUT_RECORD_CAP.contains(&logout_record_cap) {
                    return Err(fail(
                        "redis_logout_record_cap",
                        format!(
                            "must be between {} and {} logouts",
                            LOGOUT_RECORD_CAP.start(),
                            LOGOUT_RECORD_CAP.end()
                        ),
                    ));
                }
                Some(RedisSettings {
                    target,
                    write_back_rate,
                    mirror_max_sessions,
                    logout_record_cap,
                    display_url: redact_url(&url),
                    prefix,
                    timeout,
                    connect_timeout,
                    probe_interval,
                    backoff_max,
                })
            }
        };

        let webhook =
            |key: &'static str, value: Option<String>| -> Result<Option<Secret>, ConfigError> {
                match value {
                    None => Ok(None),
                    Some(url) => match reqwest::Url::parse(&url) {
                        Ok(parsed)
                            if matches!(parsed.scheme(), "http" | "https")
                                && parsed.host().is_some() =>
                        {
                            Ok(Some(Secret::new(url)))
                        }
                        _ => Err(fail(key, "must be an http:// or https:// URL".to_owned())),
                    },
                }
            };
        let webhook_url = webhook("alert_webhook_url", raw.alert_webhook_url.clone())?;
        let slack_webhook_url = webhook(
            "alert_slack_webhook_url",
            raw.alert_slack_webhook_url.clone(),
        )?;
        let day = Duration::from_secs(24 * 3600);
        let mut durations = [Duration::ZERO; 4];
        for (slot, key, value) in [
            (0, "alert_redis_offline_for", get!(alert_redis_offline_for)),
            (1, "alert_memory_for", get!(alert_memory_for)),
            (2, "alert_critical_for", get!(alert_critical_for)),
            (3, "alert_repeat_interval", get!(alert_repeat_interval)),
        ] {
            if value > day {
                return Err(fail(key, "must be at most 24h".to_owned()));
            }
            durations[slot] = value;
        }
        if durations[3] < Duration::from_secs(1) {
            return Err(fail(
                "alert_repeat_interval",
                "must be at least 1s".to_owned(),
            ));
        }
        let alerts = AlertSettings {
            timings: super::RuleTimings {
                redis_offline_for: durations[0],
                memory_for: durations[1],
                critical_for: durations[2],
                repeat_interval: durations[3],
            },
            webhook_url,
            slack_webhook_url,
        };

        let express = match get!(session_format).trim().to_ascii_lowercase().as_str() {
            "native" => None,
            "express" => {
                if redis.is_none() {
                    return Err(fail(
                        "session_format",
                        "express needs the Express application's Redis: set REDIS_URL to the URL its connect-redis uses".to_owned(),
                    ));
                }
                let secrets = match (raw.express_secrets.clone(), raw.express_secrets_file.clone()) {
                    (Some(_), Some(_)) => {
                        return Err(fail(
                            "express_secrets_file",
                            "set either express_secrets or express_secrets_file, not both".to_owned(),
                        ));
                    }
                    (Some(secrets), None) => secrets,
                    (None, Some(path)) => std::fs::read_to_string(&path)
                        .map_err(|err| {
                            fail(
                                "express_secrets_file",
                                format!("cannot be read ({err}): mount the secret there, or set express_secrets"),
                            )
                        })?
                        .lines()
                        .map(|line| line.trim_end_matches('\r').to_owned())
                        .filter(|line| !line.is_empty())
                        .collect(),
                    (None, None) => {
                        return Err(fail(
                            "express_secrets",
                            "express needs the application's session secret (express-session's `secret`): set KEEPALIVE_EXPRESS_SECRETS, or KEEPALIVE_EXPRESS_SECRETS_FILE to a file with one secret per line".to_owned(),
                        ));
                    }
                };
                let secrets_key = if raw.express_secrets_file.is_some() {
                    "express_secrets_file"
                } else {
                    "express_secrets"
                };
                if secrets.is_empty() || secrets.len() > 16 || secrets.iter().any(String::is_empty)
                {
                    return Err(fail(
                        secrets_key,
                        "must hold 1 to 16 secrets, none empty, the one the application signs with first".to_owned(),
                    ));
                }
                let prefix = get!(express_prefix);
                if prefix.len() > 64 {
                    return Err(fail(
                        "express_prefix",
                        "must be at most 64 characters (connect-redis's `prefix`, `sess:` by default)".to_owned(),
                    ));
                }
                let cookie_name = get!(express_cookie_name);
                if cookie_name.is_empty()
                    || cookie_name.len() > 64
                    || !cookie_name.bytes().all(is_cookie_name_byte)
                {
                    return Err(fail(
                        "express_cookie_name",
                        "must be 1 to 64 characters among letters, digits and !#$%&'*+-.^_`|~ (express-session's `name`, connect.sid by default)".to_owned(),
                    ));
                }
                let ttl = get!(express_ttl);
                if ttl < Duration::from_secs(1) {
                    return Err(fail(
                        "express_ttl",
                        "must be at least 1s (connect-redis's `ttl`, 1 day by default)".to_owned(),
                    ));
                }
                let field = get!(express_user_field);
                let user_field: Vec<String> = if field.trim().is_empty() {
                    Vec::new()
                } else {
                    field.trim().split('.').map(str::to_owned).collect()
                };
                if user_field.iter().any(String::is_empty) || user_field.len() > 8 {
                    return Err(fail(
                        "express_user_field",
                        "must be a dotted path of at most 8 field names, such as passport.user or userId, or empty".to_owned(),
                    ));
                }
                Some(ExpressSettings {
                    secrets: secrets.into_iter().map(Secret::new).collect(),
                    prefix,
                    cookie_name,
                    rolling: get!(express_rolling),
                    ttl,
                    user_field,
                })
            }
            _ => {
                return Err(fail(
                    "session_format",
                    "must be native (keepalive's own sessions) or express (an Express application's express-session + connect-redis sessions)".to_owned(),
                ));
            }
        };

        let level = get!(log_level);
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(fail("log_level", "must be a level (error, warn, info, debug, trace) or a filter such as keepalive=debug,info".to_owned()));
        }
        let format = match get!(log_format).to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" | "pretty" => LogFormat::Text,
            _ => return Err(fail("log_format", "must be json or text".to_owned())),
        };

        Ok(Config {
            environment,
            server: ServerSettings {
                listen,
                workers: workers as usize,
                limits: super::ConnectionLimits {
                    max_connections: max_connections as usize,
                    max_connections_per_client: max_connections_per_client as usize,
                    header_read_timeout,
                    max_header_bytes: max_header_bytes as usize,
                    max_headers: max_headers as usize,
                },
                rate_limits: super::RateLimitSettings {
                    sessions_per_minute: get!(rate_limit_sessions),
                    keepalives_per_minute: get!(rate_limit_keepalive),
                    trusted_proxies,
                },
                cors_origins,
                metrics_token,
                request_timeout,
                drain_delay: get!(drain_delay),
                shutdown_timeout: get!(shutdown_timeout),
            },
            store: StoreSettings {
                data_dir,
                flush_interval,
                purge_interval,
            },
            redis,
            client: ClientSettings {
                tick,
                timeout,
                max_retries,
                health_check_frequency,
            },
            session: SessionSettings {
                idle_timeout,
                absolute_lifetime,
                cookie_name,
                cookie_secure,
            },
            health: HealthSettings {
                interval,
                memory_warning,
                memory_critical,
                token,
            },
            alerts,
            integration,
            express,
            log: LogSettings { level, format },
        })
    }
}

/// RFC 6265 cookie-name characters (an RFC 7230 token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

//! `keepalive check [URL]`: one probe of a running server, for a Docker HEALTHCHECK, cron or a
//! person. Exit 0 healthy, 1 degraded, 2 critical, 3 unreachable, timed out or not a keepalive
//! answer. One human line, or JSON with `--json`.
//!
//! Without a URL it probes `/health` of the server this configuration would run (127.0.0.1 on
//! its port), sending the configured health token so the line can name the failing check. A URL
//! may name `/health`, a keepalive endpoint (its 401 still carries the health) or a base URL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Layers;

/// Exit codes of `check`.
pub const EXIT_HEALTHY: u8 = 0;
/// Degraded.
pub const EXIT_DEGRADED: u8 = 1;
/// Critical.
pub const EXIT_CRITICAL: u8 = 2;
/// Unreachable, timed out, or not a keepalive answer.
pub const EXIT_UNREACHABLE: u8 = 3;

/// What one probe found.
#[derive(Debug)]
struct Verdict {
    url: String,
    status: Option<&'static str>,
    checks: Option<Value>,
    error: Option<String>,
}

impl Verdict {
    fn code(&self) -> u8 {
        match self.status {
            Some("healthy") => EXIT_HEALTHY,
            Some("degraded") => EXIT_DEGRADED,
            Some("critical") => EXIT_CRITICAL,
            _ => EXIT_UNREACHABLE,
        }
    }
}

/// Runs the probe; returns the exit code.
pub fn run(
    file: Option<PathBuf>,
    url: Option<String>,
    as_json: bool,
    timeout: Duration,
) -> ExitCode {
    // A broken configuration must not stop a probe of a server given by URL; it only loses
    // the default address and the token.
    let config = Layers::read(file)
        .ok()
        .and_then(|layers| layers.validate().ok());
    let token = config
        .as_ref()
        .and_then(|c| c.health.token.as_ref().map(|t| t.expose().to_owned()));
    let url = match url {
        Some(url) => target_url(&url),
        None => {
            let port = config
                .as_ref()
                .map(|c| c.server.listen.port())
                .unwrap_or(8080);
            format!("http://127.0.0.1:{port}/health")
        }
    };
    let verdict = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(probe(url, token, timeout)),
        Err(err) => Verdict {
            url,
            status: None,
            checks: None,
            error: Some(format!("cannot start the async runtime: {err}")),
        },
    };
    if as_json {
        let doc = json!({
            "url": verdict.url,
            "status": verdict.status.unwrap_or("unreachable"),
            "exitCode": verdict.code(),
            "checks": verdict.checks,
            "error": verdict.error,
        });
        println!("{doc}");
    } else {
        println!("{}", line(&verdict));
    }
    ExitCode::from(verdict.code())
}

/// A base URL gets `/health`; a URL with a path is probed as given.
fn target_url(url: &str) -> String {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    match reqwest::Url::parse(&with_scheme) {
        Ok(mut parsed) if parsed.path() == "/" || parsed.path().is_empty() => {
            parsed.set_path("/health");
            parsed.to_string()
        }
        _ => with_scheme,
    }
}

fn line(verdict: &Verdict) -> String {
    match (verdict.status, &verdict.error) {
        (Some(status), _) => {
            let details = verdict
                .checks
                .as_ref()
                .and_then(Value::as_object)
                .map(|checks| {
                    let parts: Vec<String> = checks
                        .iter()
                        .map(|(name, value)| {
                            format!(
                                "{name} {}",
                                value
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| value.to_string())
                            )
                        })
                        .collect();
                    format!(" ({})", parts.join(", "))
                })
                .unwrap_or_default();
            format!("keepalive at {}: {status}{details}", verdict.url)
        }
        (None, Some(error)) => format!("keepalive at {}: unreachable: {error}", verdict.url),
        (None, None) => format!("keepalive at {}: unreachable", verdict.url),
    }
}

async fn probe(url: String, token: Option<String>, timeout: Duration) -> Verdict {
    let failed = |url: String, error: String| Verdict {
        url,
        status: None,
        checks: None,
        error: Some(error),
    };
    let client = match crate::outbound::client_builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
    {
        Ok(client) => client,
        Err(err) => return failed(url, format!("cannot build an HTTP client: {err}")),
    };
    let mut request = client.get(&url).header(
        reqwest::header::ACCEPT,
        "application/health+json, application/json",
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => {
            return failed(
                url,
                format!("no answer within {}", humantime::format_duration(timeout)),
            );
        }
        Err(err) if err.is_connect() => {
            return failed(
                url,
                "connection refused or host unreachable: is keepalive running there?".to_owned(),
            );
        }
        Err(err) => return failed(url, err.to_string()),
    };
    let http_status = response.status();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(_) => {
            return failed(
                url,
                format!("HTTP {http_status} without a keepalive health answer"),
            );
        }
    };
    interpret(url, &body).unwrap_or_else(|url| {
        failed(
            url,
            format!("HTTP {http_status} without a keepalive health answer"),
        )
    })
}

/// Reads `/health` (`pass`/`warn`/`fail`) or a keepalive answer (`serverHealth`).
fn interpret(url: String, body: &Value) -> Result<Verdict, String> {
    if let Some(health) = body.get("serverHealth") {
        let status = match health.get("status").and_then(Value::as_str) {
            Some("healthy") => "healthy",
            Some("degraded") => "degraded",
            Some("critical") => "critical",
            _ => return Err(url),
        };
        return Ok(Verdict {
            url,
            status: Some(status),
            checks: health.get("checks").cloned(),
            error: None,
        });
    }
    let status = match body.get("status").and_then(Value::as_str) {
        Some("pass") => "healthy",
        Some("warn") => "degraded",
        Some("fail") => "critical",
        _ => return Err(url),
    };
    let checks = body.get("checks").and_then(Value::as_object).map(|checks| {
        let summary: serde_json::Map<String, Value> = checks
            .iter()
            .filter_map(|(name, entries)| {
                let entry = entries.get(0)?;
                let short = name.split(':').next().unwrap_or(name).to_owned();
                let value = match (
                    entry.get("observedValue"),
                    entry.get("observedUnit").and_then(Value::as_str),
                ) {
                    (Some(Value::Number(n)), Some("percent")) => format!(
                        "{n}% ({})",
                        entry.get("status").and_then(Value::as_str).unwrap_or("?")
                    ),
                    (Some(Value::String(s)), _) => s.clone(),
                    _ => entry
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned(),
                };
                Some((short, Value::from(value)))
            })
            .collect();
        Value::Object(summary)
    });
    Ok(Verdict {
        url,
        status: Some(status),
        checks,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_the_health_path() {
        assert_eq!(
            target_url("http://localhost:8080"),
            "http://localhost:8080/health"
        );
        assert_eq!(
            target_url("localhost:9000/"),
            "http://localhost:9000/health"
        );
        assert_eq!(
            target_url("http://h:1/api/v1/keepalive/"),
            "http://h:1/api/v1/keepalive/"
        );
    }

    #[test]
    fn reads_both_answers() {
        let health = json!({"status": "warn", "checks": {"memory:utilization": [{"observedValue": 85.2, "observedUnit": "percent", "status": "warn"}], "redis:connection": [{"observedValue": "offline", "status": "warn"}]}});
        let verdict = interpret("u".to_owned(), &health).expect("health");
        assert_eq!(verdict.code(), EXIT_DEGRADED);
        assert_eq!(
            line(&verdict),
            "keepalive at u: degraded (memory 85.2% (warn), redis offline)"
        );
        let expired = json!({"error": "session_expired", "serverHealth": {"status": "critical", "checks": {"redis": "ok", "memory": "critical"}}});
        let verdict = interpret("u".to_owned(), &expired).expect("keepalive");
        assert_eq!(verdict.code(), EXIT_CRITICAL);
        assert!(interpret("u".to_owned(), &json!({"hello": 1})).is_err());
    }
}

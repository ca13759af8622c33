//! Probes for orchestrators and operators: `/livez`, `/readyz`, `/health`, `/metrics`.
//!
//! `/livez` checks nothing, so a slow dependency never gets the process restarted. `/readyz`
//! reads the readiness flag. `/health` follows draft-inadarei-api-health-check: `pass`, `warn`
//! or `fail` for healthy, degraded or critical, with one entry per check for the holder of the
//! configured bearer token and the status alone for everyone else.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::health::{Health, MemoryCheck, RedisCheck, Status};

use super::AppState;
use super::bearer::carries;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if state.readiness.is_ready() {
        (StatusCode::OK, no_store, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store,
            Json(json!({"status": "not_ready"})),
        )
            .into_response()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthDocument {
    status: &'static str,
    version: &'static str,
    release_id: &'static str,
    service_id: &'static str,
    description: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<BTreeMap<&'static str, Vec<Value>>>,
}

fn health_status(status: Status) -> &'static str {
    match status {
        Status::Healthy => "pass",
        Status::Degraded => "warn",
        Status::Critical => "fail",
    }
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    state
        .health_token
        .as_ref()
        .is_some_and(|token| carries(headers, token))
}

fn details(health: &Health, writing_back: bool) -> BTreeMap<&'static str, Vec<Value>> {
    let time = rfc3339(health.checked_at);
    let memory_status = match health.summary.checks.memory {
        MemoryCheck::Ok => "pass",
        MemoryCheck::Warning => "warn",
        MemoryCheck::Critical => "fail",
    };
    let mut memory = json!({
        "componentType": "system",
        "status": memory_status,
        "time": time,
        "observedUnit": "percent",
        "observedValue": health.memory.map(|m| (m.percent() * 10.0).round() / 10.0),
    });
    if let Some(reading) = health.memory {
        memory["output"] = Value::from(format!(
            "{} of {} bytes in use (limit from {})",
            reading.used_bytes,
            reading.limit_bytes,
            reading.source.as_str()
        ));
    }
    let redis = health.summary.checks.redis;
    let mut redis_entry = json!({
        "componentType": "datastore",
        "status": if redis == RedisCheck::Offline { "warn" } else { "pass" },
        "time": time,
        "observedValue": redis.as_str(),
        "observedUnit": "state",
    });
    if redis == RedisCheck::Ok && writing_back {
        // Served from Redis with every guarantee meanwhile: a pass, said so for the operator
        // who wonders why Redis is busier than usual.
        redis_entry["output"] = Value::from(
            "this instance did not stop cleanly and is writing its local sessions back to Redis in the background (keepalive_redis_writing_back)",
        );
    } else if redis == RedisCheck::Offline && writing_back {
        // Redis answers but lacks what this instance holds: why it is not served from yet.
        redis_entry["output"] = Value::from(
            "Redis answers but lost the sessions this instance holds (it restarted empty, lost its data, or is another Redis): every live local session is being written back, sessions are served from the local store until then (keepalive_redis_writing_back)",
        );
    }
    BTreeMap::from([
        ("memory:utilization", vec![memory]),
        ("redis:connection", vec![redis_entry]),
    ])
}

async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut health = *state.health.borrow();
    health.summary = state.server_health();
    let status = health.summary.status;
    let document = HealthDocument {
        status: health_status(status),
        version: "1",
        release_id: env!("CARGO_PKG_VERSION"),
        service_id: "keepalive",
        description: "keepalive session service",
        checks: authorized(&state, &headers)
            .then(|| details(&health, state.sessions.shared_status().writing_back())),
    };
    let code = if status == Status::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&document).unwrap_or_default();
    (
        code,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/health+json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token
        && !carries(&headers, token)
    {
        let mut response = super::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs the metrics bearer token",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    match state.sessions.live_count().await {
        Ok(Some(live)) => state.metrics.set_sessions_live(live),
        Ok(None) => {}
        // The other metrics are still worth serving; the gauge keeps its last value.
        Err(err) => tracing::warn!(error = %err, "cannot count the live sessions for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Checks, ServerHealth, status_of};

    fn health(redis: RedisCheck) -> Health {
        let checks = Checks {
            redis,
            memory: MemoryCheck::Ok,
        };
        Health {
            summary: ServerHealth {
                status: status_of(checks),
                checks,
            },
            memory: None,
            checked_at: 1_700_000_000_000,
        }
    }

    fn redis_output(redis: RedisCheck, writing_back: bool) -> Option<String> {
        details(&health(redis), writing_back)["redis:connection"][0]
            .get("output")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    #[test]
    fn the_redis_check_says_why_every_session_is_being_written_back() {
        let background = redis_output(RedisCheck::Ok, true).expect("said");
        assert!(background.contains("in the background"), "{background}");
        let before = redis_output(RedisCheck::Offline, true).expect("said");
        assert!(before.contains("lost the sessions"), "{before}");
        assert!(before.contains("local store"), "{before}");
        assert_eq!(redis_output(RedisCheck::Ok, false), None);
        assert_eq!(redis_output(RedisCheck::Offline, false), None);
    }
}

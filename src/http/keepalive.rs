//! `GET /api/v1/keepalive/`: the request every open tab sends each tick.
//!
//! It reads the cached health (never waits on a check), extends the session in the store and
//! answers with the new expiry. Cost: one store operation and one small JSON document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::clock::rfc3339;
use crate::health::ServerHealth;

use super::{ApiError, AppState, ClientView, cookie};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionExpiry {
    expires_at: String,
    absolute_expires_at: String,
    idle_timeout_ms: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Alive {
    session: SessionExpiry,
    server_health: ServerHealth,
    keepalive: ClientView,
    server_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Expired {
    error: &'static str,
    message: &'static str,
    server_health: ServerHealth,
}

/// Extends the caller's session, or answers 401 `session_expired`.
pub async fn keepalive(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let health = state.server_health();
    let settings = state.sessions.settings();
    let record = match cookie::session_id(&headers, &settings.cookie_name) {
        Some(id) => match state.sessions.keep_alive(&id).await {
            Ok(record) => record,
            Err(err) => return ApiError::store_unavailable(&err).into_response(),
        },
        None => None,
    };
    let Some(record) = record else {
        state
            .metrics
            .keepalives_total
            .with_label_values(&["expired"])
            .inc();
        let body = Expired {
            error: "session_expired",
            message: "no live session: sign in again",
            server_health: health,
        };
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    };
    state
        .metrics
        .keepalives_total
        .with_label_values(&["extended"])
        .inc();
    Json(Alive {
        session: SessionExpiry {
            expires_at: rfc3339(record.expires_at),
            absolute_expires_at: rfc3339(record.absolute_expires_at),
            idle_timeout_ms: settings.idle_timeout.as_millis(),
        },
        server_health: health,
        keepalive: ClientView::from(&state.client),
        server_time: rfc3339(state.sessions.now()),
    })
    .into_response()
}

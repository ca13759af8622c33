//! `POST /api/v1/session` and `DELETE /api/v1/session`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::clock::rfc3339;
use crate::health::ServerHealth;
use crate::session::SessionRecord;

use super::{ApiError, AppState, ClientView, MAX_SESSION_BODY, cookie};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    created_at: String,
    expires_at: String,
    absolute_expires_at: String,
    idle_timeout_ms: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateResponse {
    session: SessionView,
    server_health: ServerHealth,
    keepalive: ClientView,
    server_time: String,
}

/// Creates a session carrying the optional `data` object; 201 with the cookie once durable.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the session body may be at most {MAX_SESSION_BODY} bytes"),
        ),
        _ => ApiError::bad_request(format!("cannot read the request body: {rejection}")),
    })?;
    let data = parse_body(&headers, &body)?;
    let record = state
        .sessions
        .create(data)
        .await
        .map_err(|e| ApiError::store_unavailable(&e))?;
    state.metrics.sessions_created_total.inc();
    Ok(session_answer(&state, &record, StatusCode::CREATED))
}

/// The answer that hands a session to the browser: its cookie and its expiry.
fn session_answer(state: &AppState, record: &SessionRecord, status: StatusCode) -> Response {
    let settings = state.sessions.settings();
    let answer = CreateResponse {
        session: SessionView {
            created_at: rfc3339(record.created_at),
            expires_at: rfc3339(record.expires_at),
            absolute_expires_at: rfc3339(record.absolute_expires_at),
            idle_timeout_ms: settings.idle_timeout.as_millis(),
        },
        server_health: state.server_health(),
        keepalive: ClientView::from(&state.client),
        server_time: rfc3339(state.sessions.now()),
    };
    (
        status,
        [(header::SET_COOKIE, cookie::set(settings, &record.id))],
        Json(answer),
    )
        .into_response()
}

/// The body is optional; when present it must be a JSON object `{"data": {...}}`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    if body.is_empty() {
        return Ok(String::new());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a session body must be sent as application/json",
        ));
    }
    // Read as a generic value first: serde would also accept an array for a struct.
    let shape = "expected {\"data\": {...}}";
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid session body: {err}; {shape}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request(format!(
            "the session body must be a JSON object; {shape}"
        )));
    };
    let data = fields.remove("data");
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}` in the session body; {shape}"
        )));
    }
    match data {
        None => Ok(String::new()),
        Some(Value::Object(data)) => Ok(Value::Object(data).to_string()),
        Some(_) => Err(ApiError::bad_request(format!(
            "`data` must be a JSON object; {shape}"
        ))),
    }
}

/// Gives the caller's session a new id (after a privilege change, for example): 200 with the
/// new cookie, and the old id no longer valid; 401 `session_expired` without a live session.
pub async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let settings = state.sessions.settings();
    let rotated = match cookie::session_id(&headers, &settings.cookie_name) {
        Some(id) => state
            .sessions
            .rotate(&id)
            .await
            .map_err(|e| ApiError::store_unavailable(&e))?,
        None => None,
    };
    let Some(record) = rotated else {
        let body = serde_json::json!({
            "error": "session_expired",
            "message": "no live session: sign in again",
            "serverHealth": state.server_health(),
        });
        return Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    };
    Ok(session_answer(&state, &record, StatusCode::OK))
}

/// Ends the session, if any, and clears the cookie: 204 either way, so logout is idempotent.
pub async fn end(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let settings = state.sessions.settings();
    if let Some(id) = cookie::session_id(&headers, &settings.cookie_name) {
        let existed = state
            .sessions
            .end(&id)
            .await
            .map_err(|e| ApiError::store_unavailable(&e))?;
        if existed {
            state.metrics.sessions_ended_total.inc();
        }
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie::clear(settings))],
    )
        .into_response())
}

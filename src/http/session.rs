//! `POST /api/v1/session` and `DELETE /api/v1/session`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::clock::rfc3339;
use crate::health::ServerHealth;
use crate::session::SessionRecord;

use super::{ApiError, AppState, ClientView, body};

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
    if !state.cookie.is_native() {
        return Ok(express_refusal("GET, HEAD, DELETE"));
    }
    let body = body::bytes(body)?;
    let shape = "expected {\"data\": {...}}";
    let data = match body::object(&headers, &body, &["data"], shape)? {
        Some(mut fields) => body::data(&mut fields, shape)?,
        None => String::new(),
    };
    let record = state.sessions.create(data).await?;
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
        [(
            header::SET_COOKIE,
            state.cookie.set(record, state.sessions.now()),
        )],
        Json(answer),
    )
        .into_response()
}

/// Gives the caller's session a new id (after a privilege change, for example): 200 with the
/// new cookie, and the old id no longer valid; 401 `session_expired` without a live session.
pub async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.cookie.is_native() {
        return Ok(express_refusal(""));
    }
    let state = &state;
    let rotated = state
        .cookie
        .find(
            &headers,
            |id| async move { state.sessions.rotate(&id).await },
        )
        .await?;
    let Some(record) = rotated else {
        return Ok(expired(state));
    };
    Ok(session_answer(state, &record, StatusCode::OK))
}

/// Ends the session, if any, and clears the cookie: 204 either way, so logout is idempotent.
/// Every candidate the cookie carries is ended, not only the first live one: a value planted
/// before the session's own must not leave the session alive, and ending an id that names no
/// session costs a lookup and, while Redis answers, no write.
pub async fn end(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    for id in state.cookie.candidates(&headers) {
        let existed = state.sessions.end(&id).await?;
        if existed {
            state.metrics.sessions_ended_total.inc();
        }
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, state.cookie.clear())],
    )
        .into_response())
}

/// What the browser may read of its own session: no token (the cookie is `HttpOnly` so that
/// scripts never see it), the user and the data.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicSession {
    user: Option<String>,
    data: serde_json::Value,
    created_at: String,
    expires_at: String,
    absolute_expires_at: String,
    idle_timeout_ms: u128,
}

/// `GET /api/v1/session`: the caller's session, not extended; 401 `session_expired` without
/// a live one.
pub async fn current(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let state = &state;
    let settings = state.sessions.settings();
    let record = state
        .cookie
        .find(&headers, |id| async move { state.sessions.get(&id).await })
        .await?;
    let Some(record) = record else {
        return Ok(expired(state));
    };
    let session = PublicSession {
        user: record.user.clone(),
        data: body::data_value(&record.data),
        created_at: rfc3339(record.created_at),
        expires_at: rfc3339(record.expires_at),
        absolute_expires_at: rfc3339(record.absolute_expires_at),
        idle_timeout_ms: state
            .cookie
            .idle_timeout(&record, settings.idle_timeout)
            .as_millis(),
    };
    let answer = serde_json::json!({
        "session": session,
        "serverTime": rfc3339(state.sessions.now()),
    });
    Ok(Json(answer).into_response())
}

/// Creating and rotating are keepalive's own sessions' routes: an Express application creates
/// its sessions and gives them new ids itself (`req.session.regenerate`). 405, with the
/// methods the path still has in `Allow`.
fn express_refusal(allow: &'static str) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "keepalive serves an Express application's sessions here (session_format = express): the application creates them and gives them new ids, so sign in through it",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, axum::http::HeaderValue::from_static(allow));
    response
}

/// 401 `session_expired`, with the server's health like a keepalive's.
fn expired(state: &AppState) -> Response {
    ApiError::session_expired()
        .with_health(state.server_health())
        .into_response()
}

//! The backend API: what the application's own servers call, with the bearer token from
//! configuration, after their login checked a password.
//!
//! - `POST /api/v1/backend/sessions` creates a session for a user and answers its token and
//!   the exact `Set-Cookie` value to hand to the browser;
//! - `GET`, `PATCH`, `DELETE /api/v1/backend/sessions/{token}` read, replace the data of, and
//!   end one session; `POST .../{token}/rotate` gives it a new token;
//! - `GET` and `DELETE /api/v1/backend/users/{user}/sessions` list and end all the sessions of
//!   a user ("log out everywhere").
//!
//! Without a configured token the API is off and says how to turn it on.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::session::{SessionId, SessionRecord};

use super::{ApiError, AppState, bearer, body, cookie};

/// A session as the application's servers see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    token: String,
    user: Option<String>,
    data: Value,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    absolute_expires_at: String,
}

impl From<&SessionRecord> for SessionDetail {
    fn from(r: &SessionRecord) -> Self {
        Self {
            token: r.id.to_string(),
            user: r.user.clone(),
            data: body::data_value(&r.data),
            created_at: rfc3339(r.created_at),
            last_seen_at: rfc3339(r.last_seen_at),
            expires_at: rfc3339(r.expires_at),
            absolute_expires_at: rfc3339(r.absolute_expires_at),
        }
    }
}

/// The one path parameter of a route, decoded; a rejection is a JSON 400 like every error.
pub struct Param(String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|err| ApiError::bad_request(format!("invalid path parameter: {err}")))
    }
}

/// Lets through only requests with the backend token; 404 when the API is off.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.cookie.is_native() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "backend_api_disabled",
            "the backend API serves keepalive's own sessions; it is off while keepalive serves an Express application's (session_format = express)",
        )
        .into_response();
    }
    let Some(token) = &state.backend_token else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "backend_api_disabled",
            "the backend API is off: set KEEPALIVE_BACKEND_TOKEN (at least 32 characters) to turn it on",
        )
        .into_response();
    };
    if !bearer::carries(request.headers(), token) {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the backend API needs `Authorization: Bearer <KEEPALIVE_BACKEND_TOKEN>`",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keepalive\""),
        );
        return response;
    }
    next.run(request).await
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no live session has this token: it is unknown, expired or ended",
    )
}

/// The session a path token names; a malformed token names none.
fn token(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text).ok_or_else(not_found)
}

/// A session handed to a browser: its token, the cookie that carries it, and its detail.
fn handed_over(state: &AppState, record: &SessionRecord, status: StatusCode) -> Response {
    let cookie = cookie::set(state.sessions.settings(), &record.id);
    let answer = json!({
        "token": record.id.to_string(),
        "cookie": cookie,
        "session": SessionDetail::from(record),
    });
    (status, Json(answer)).into_response()
}

/// `POST /api/v1/backend/sessions`: a session for `user`, carrying `data`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let payload = body::bytes(payload)?;
    let shape = "expected {\"user\": \"<user id>\", \"data\": {...}}";
    let mut fields = body::object(&headers, &payload, &["user", "data"], shape)?
        .ok_or_else(|| ApiError::bad_request(format!("a body is required; {shape}")))?;
    let user = match fields.remove("user") {
        Some(Value::String(user)) => user,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`user` must be a string; {shape}"
            )));
        }
        None => return Err(ApiError::bad_request(format!("`user` is missing; {shape}"))),
    };
    let data = body::data(&mut fields, shape)?;
    let record = state.sessions.create_for_user(&user, data).await?;
    state.metrics.sessions_created_total.inc();
    Ok(handed_over(&state, &record, StatusCode::CREATED))
}

/// `GET /api/v1/backend/sessions/{token}`: the session, not extended.
pub async fn read(State(state): State<AppState>, Param(text): Param) -> Result<Response, ApiError> {
    let record = state
        .sessions
        .get(&token(&text)?)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({ "session": SessionDetail::from(&record) })).into_response())
}

/// `PATCH /api/v1/backend/sessions/{token}`: replaces the session's data.
pub async fn update(
    State(state): State<AppState>,
    Param(text): Param,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = token(&text)?;
    let payload = body::bytes(payload)?;
    let shape = "expected {\"data\": {...}}";
    let mut fields = body::object(&headers, &payload, &["data"], shape)?
        .ok_or_else(|| ApiError::bad_request(format!("a body is required; {shape}")))?;
    if !fields.contains_key("data") {
        return Err(ApiError::bad_request(format!("`data` is missing; {shape}")));
    }
    let data = body::data(&mut fields, shape)?;
    let record = state
        .sessions
        .update(&id, data)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({ "session": SessionDetail::from(&record) })).into_response())
}

/// `DELETE /api/v1/backend/sessions/{token}`: ends the session.
pub async fn end(State(state): State<AppState>, Param(text): Param) -> Result<Response, ApiError> {
    let id = token(&text)?;
    // Only a live session counts: ending an expired one that awaits the purge is a 404 too.
    if state.sessions.get(&id).await?.is_none() {
        return Err(not_found());
    }
    if state.sessions.end(&id).await? {
        state.metrics.sessions_ended_total.inc();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/backend/sessions/{token}/rotate`: a new token for the same session.
pub async fn rotate(
    State(state): State<AppState>,
    Param(text): Param,
) -> Result<Response, ApiError> {
    let record = state
        .sessions
        .rotate(&token(&text)?)
        .await?
        .ok_or_else(not_found)?;
    Ok(handed_over(&state, &record, StatusCode::OK))
}

/// `GET /api/v1/backend/users/{user}/sessions`: the user's live sessions, oldest first.
pub async fn list_user(
    State(state): State<AppState>,
    Param(user): Param,
) -> Result<Response, ApiError> {
    let sessions = state.sessions.list_user(&user).await?;
    let sessions: Vec<SessionDetail> = sessions.iter().map(SessionDetail::from).collect();
    Ok(Json(json!({ "user": user, "sessions": sessions })).into_response())
}

/// `DELETE /api/v1/backend/users/{user}/sessions`: ends every session of the user. While
/// Redis is offline only this instance's sessions can be reached: 503, so the caller retries.
pub async fn end_user(
    State(state): State<AppState>,
    Param(user): Param,
) -> Result<Response, ApiError> {
    let ended = state.sessions.end_user(&user).await?;
    state
        .metrics
        .sessions_ended_total
        .inc_by(ended.ended as u64);
    if ended.complete {
        return Ok(Json(json!({ "user": user, "ended": ended.ended })).into_response());
    }
    let body = json!({
        "error": "shared_store_offline",
        "message": format!(
            "Redis is offline: the {} sessions this instance holds are ended (the logouts reach Redis when it returns), sessions held by other instances could not be reached; retry",
            ended.ended
        ),
        "user": user,
        "ended": ended.ended,
    });
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

//! `/api/v1/auth`: forward authentication for reverse proxies (nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth`).
//!
//! The proxy asks, for each request to the application, whether its session cookie belongs to
//! a signed-in user: 200 with the user in `X-Keepalive-User` (the proxy passes it on to the
//! application), or 401. An anonymous session (one the browser created itself) is not a
//! signed-in user. The check extends the session like a keepalive unless configured not to,
//! so using the application counts as activity. Any method is accepted: proxies forward the
//! original one.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::clock::rfc3339;

use super::{ApiError, AppState};

/// The header that carries the signed-in user.
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-keepalive-user");
/// The header that carries the session's idle expiry.
pub const EXPIRES_HEADER: HeaderName = HeaderName::from_static("x-keepalive-expires-at");

/// Answers whether the request's session belongs to a signed-in user.
pub async fn check(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let state = &state;
    let found = state
        .cookie
        .find(&headers, |id| async move {
            if state.forward_auth_extend {
                state.sessions.keep_alive(&id).await
            } else {
                state.sessions.get(&id).await
            }
        })
        .await;
    let record = match found {
        Ok(record) => record,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let outcome = match &record {
        None => "expired",
        Some(r) if r.user.is_none() => "anonymous",
        Some(_) => "allowed",
    };
    state
        .metrics
        .forward_auth_total
        .with_label_values(&[outcome])
        .inc();
    let Some(record) = record else {
        return ApiError::session_expired().into_response();
    };
    let Some(user) = record
        .user
        .as_deref()
        .and_then(|u| HeaderValue::from_str(u).ok())
    else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "anonymous_session",
            "the session belongs to no signed-in user: sign in",
        )
        .into_response();
    };
    let expires = HeaderValue::from_str(&rfc3339(record.expires_at))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    (
        StatusCode::OK,
        [(USER_HEADER, user), (EXPIRES_HEADER, expires)],
    )
        .into_response()
}

//! The one error type of the HTTP layer: a status, a stable machine-readable code and a
//! message, rendered as JSON. Client mistakes get a precise 4xx; server faults get a generic
//! message while the cause is logged once, here. A store error becomes one with `?` (the
//! `From<SessionError>` below); "no live session" is [`ApiError::session_expired`], with the
//! server's health where a browser reads it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::health::ServerHealth;
use crate::session::{SessionError, StoreError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    server_health: Option<ServerHealth>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_health: Option<ServerHealth>,
}

impl ApiError {
    /// An answer with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            server_health: None,
        }
    }

    /// 401 `session_expired`: the request carries no live session.
    pub fn session_expired() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "no live session: sign in again",
        )
    }

    /// The same answer, telling the server's health too: a browser's client reads it even
    /// when its session is over.
    pub fn with_health(mut self, health: ServerHealth) -> Self {
        self.server_health = Some(health);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: the session store failed; the cause is logged, not shown.
    pub fn store_unavailable(err: &SessionError) -> Self {
        tracing::error!(error = %err, "session store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store is unavailable; try again shortly",
        )
    }

    /// 503 `shared_store_offline`: Redis is offline or has just lost keys, and this instance
    /// cannot tell whether the session lives (see [`StoreError::Undecided`]). Expected during
    /// a fault, so logged at debug level only; the client tries again, and another instance,
    /// or Redis once back, answers.
    pub fn session_undecided() -> Self {
        tracing::debug!(
            "a session this instance cannot judge while Redis is offline or lost keys: 503"
        );
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shared_store_offline",
            "Redis is offline or recovering lost sessions, and this instance has no copy of this session: try again shortly",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// A user id keepalive cannot carry is the caller's mistake (400); a session this instance
/// cannot judge while Redis is offline or lost keys is 503 `shared_store_offline`; anything
/// else is the store's fault (503, logged).
impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::InvalidUser(invalid) => Self::bad_request(invalid.to_string()),
            SessionError::Store(StoreError::Undecided) => Self::session_undecided(),
            other => Self::store_unavailable(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(Body {
            error: self.code,
            message: &self.message,
            server_health: self.server_health,
        });
        (self.status, body).into_response()
    }
}

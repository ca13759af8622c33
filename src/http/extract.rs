//! The current session in an application's own axum handlers, when keepalive is used as a
//! library: `CurrentSession` (401 without a live session) or `Option<CurrentSession>`.
//!
//! The extractor finds keepalive in the request's extensions, where
//! [`Keepalive::layer`](crate::server::Keepalive::layer) puts it, so it works whatever state
//! type the application's router has. Like forward authentication, a request that carries the
//! session extends it unless `forward_auth_extend` is off: using the application is activity.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use crate::session::{SessionId, SessionRecord};

use super::{ApiError, AppState, body};

/// The live session of the request.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub SessionRecord);

impl CurrentSession {
    /// The session's token (its id, the cookie's value).
    pub fn token(&self) -> &SessionId {
        &self.0.id
    }

    /// The signed-in user, `None` for an anonymous session.
    pub fn user(&self) -> Option<&str> {
        self.0.user.as_deref()
    }

    /// The application's data (an object, `{}` when none).
    pub fn data(&self) -> Value {
        body::data_value(&self.0.data)
    }

    /// The whole record.
    pub fn record(&self) -> &SessionRecord {
        &self.0
    }
}

async fn find(parts: &Parts) -> Result<Option<CurrentSession>, ApiError> {
    let Some(state) = parts.extensions.get::<AppState>() else {
        tracing::error!("CurrentSession used on a route without keepalive's layer");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "keepalive's layer is missing on this route: add `.layer(keepalive.layer())`",
        ));
    };
    let found = state
        .cookie
        .find(&parts.headers, |id| async move {
            if state.forward_auth_extend {
                state.sessions.keep_alive(&id).await
            } else {
                state.sessions.get(&id).await
            }
        })
        .await;
    found
        .map(|record| record.map(CurrentSession))
        .map_err(ApiError::from)
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        find(parts).await?.ok_or_else(ApiError::session_expired)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        find(parts).await
    }
}

//! `GET /api/v1/keepalive/`: the request every open tab sends each tick.
//!
//! It reads the cached health (never waits on a check), extends the session in the store and
//! answers with the new expiry. Cost: one store operation and one small JSON document. Being
//! the request every open tab makes each tick, it carries no layers of its own: the rate limit
//! and `Cache-Control: no-store` are applied here, and the request is taken whole so its
//! headers are read in place, not copied.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::clock::rfc3339;
use crate::health::ServerHealth;
use crate::session::{Expiry, SessionError};

use super::cookie::SessionCookie;
use super::limit::{self, Bucket};
use super::{ApiError, AppState, ClientView};

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

/// Extends the caller's session, or answers 401 `session_expired`.
pub async fn keepalive(State(state): State<AppState>, request: Request) -> Response {
    // A GET has no body to read; the head is what counts, and it is Sync, unlike the body.
    let (head, _) = request.into_parts();
    let mut response = answer(&state, &head).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn answer(state: &AppState, head: &Parts) -> Response {
    let headers = &head.headers;
    let peer = head
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    if let Some(refused) = limit::refusal(state, Bucket::Keepalive, peer, headers) {
        return refused;
    }
    let health = state.server_health();
    let settings = state.sessions.settings();
    // keepalive's own cookie needs the session's expiries only, which a store may answer
    // without reading the session; an Express application's needs the session itself (its
    // cookie's `maxAge`, and the cookie sent again).
    let native = matches!(state.cookie, SessionCookie::Native(_));
    let found = state
        .cookie
        .find(headers, |id| async move {
            if native {
                let expiry = state.sessions.extend(&id).await?;
                Ok::<_, SessionError>(expiry.map(|expiry| (expiry, None)))
            } else {
                let record = state.sessions.keep_alive(&id).await?;
                Ok(record.map(|record| (Expiry::of(&record), Some(record))))
            }
        })
        .await;
    let found = match found {
        Ok(found) => found,
        // The health goes with a 503 too: the client shows it while it tries again.
        Err(err) => return ApiError::from(err).with_health(health).into_response(),
    };
    let Some((expiry, record)) = found else {
        state.metrics.keepalives_expired.inc();
        return ApiError::session_expired()
            .with_health(health)
            .into_response();
    };
    state.metrics.keepalives_extended.inc();
    let now = state.sessions.now();
    let idle = record.as_ref().map_or(settings.idle_timeout, |record| {
        state.cookie.idle_timeout(record, settings.idle_timeout)
    });
    let mut response = Json(Alive {
        session: SessionExpiry {
            expires_at: rfc3339(expiry.expires_at),
            absolute_expires_at: rfc3339(expiry.absolute_expires_at),
            idle_timeout_ms: idle.as_millis(),
        },
        server_health: health,
        keepalive: ClientView::from(&state.client),
        server_time: rfc3339(now),
    })
    .into_response();
    // An Express application's rolling session: its cookie again, as express-session sends it.
    if let Some(cookie) = record.and_then(|record| state.cookie.after_keepalive(&record, now))
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

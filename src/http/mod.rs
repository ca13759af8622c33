//! The HTTP interface.
//!
//! Endpoints:
//! - `POST /api/v1/session`: create a session (201, `Set-Cookie`).
//! - `GET /api/v1/session`: the caller's session (user, data, expiry), not extended.
//! - `DELETE /api/v1/session`: end it (204, cookie cleared).
//! - `POST /api/v1/session/rotate`: a new id for the same session, the old one invalid.
//! - `/api/v1/auth`: forward authentication for reverse proxies ([`forward_auth`]).
//! - `/api/v1/backend/...`: the backend API for the application's servers ([`backend`]).
//! - `GET /api/v1/keepalive/` and `/api/v1/keepalive`: keep it alive; 200 with the session's
//!   expiry, the server's health and the client's settings, or 401 `session_expired`.
//! - `GET /livez`: 200 while the process serves; checks nothing.
//! - `GET /readyz`: 200 when ready, 503 while starting or draining.
//! - `GET /health`: `application/health+json`; details only for the configured bearer token.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /`, `/keepalive.js`, `/keepalive.mjs`, `/keepalive.d.ts`, `/demo.js`, `/demo.css`: the
//!   browser client (classic script and ES module, also at versioned URLs
//!   `/keepalive.<hash>.js` and `.mjs`) and its demo page, compressed and with validators.
//! - `GET /openapi.yaml`: the OpenAPI document of this API.
//!
//! Anything else is a JSON 404 (or 405 for a known path with another method). The state-changing
//! browser routes refuse requests from other sites' pages ([`csrf`]). An application written
//! with axum can mount these routes in its own router and read the session in its handlers
//! ([`CurrentSession`]).

mod assets;
pub mod backend;
mod bearer;
mod body;
pub mod cookie;
pub mod csrf;
mod error;
mod extract;
pub mod forward_auth;
mod keepalive;
mod limit;
mod observe;
mod per_client;
mod probes;
mod serve;
mod session;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Serialize;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::ApiError;
pub use extract::CurrentSession;
pub use limit::{Bucket, RateLimits};
pub use serve::serve;

use crate::config::{ClientSettings, Secret};
use crate::health::{Health, ServerHealth};
use crate::metrics::Metrics;
use crate::session::Sessions;

/// Largest accepted body of `POST /api/v1/session`.
pub const MAX_SESSION_BODY: usize = 4 * 1024;

/// Whether the instance takes traffic: false while starting and once draining.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the instance ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What every handler shares. Cloned for every request by the extractors and middleware, so
/// it is one shared allocation: a clone is a reference count, not a copy of its strings.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` between handlers.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The session lifecycle.
    pub sessions: Sessions,
    /// The latest health, published by the monitor.
    pub health: watch::Receiver<Health>,
    /// What browsers are told to do.
    pub client: ClientSettings,
    /// Token that unlocks `/health` details.
    pub health_token: Option<Secret>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Readiness,
    /// Per-client rate limits.
    pub limits: Arc<RateLimits>,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_token: Option<Secret>,
    /// Bearer token of the backend API; `None`: the API is off.
    pub backend_token: Option<Secret>,
    /// Whether forward authentication (and [`CurrentSession`]) extends the session.
    pub forward_auth_extend: bool,
    /// The browser's session cookie: keepalive's own, or an Express application's.
    pub cookie: cookie::SessionCookie,
}

impl AppState {
    /// The health to report now: the monitor's last result, with the shared store's state as
    /// the store sees it this instant.
    pub fn server_health(&self) -> ServerHealth {
        let cached = self.health.borrow().summary;
        cached.with_redis(self.sessions.shared_status().state().into())
    }
}

/// The `keepalive` object of answers: the client's settings, the server being their source.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientView {
    tick_ms: u128,
    timeout_ms: u128,
    max_retries: u32,
    health_check_frequency: u32,
}

impl From<&ClientSettings> for ClientView {
    fn from(c: &ClientSettings) -> Self {
        Self {
            tick_ms: c.tick.as_millis(),
            timeout_ms: c.timeout.as_millis(),
            max_retries: c.max_retries,
            health_check_frequency: c.health_check_frequency,
        }
    }
}

/// What the router needs beyond the shared state.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Longest time one request may take.
    pub request_timeout: Duration,
    /// Origins allowed to call the API cross-site; empty: CORS off.
    pub cors_origins: Vec<String>,
}

/// The router of the standalone server: keepalive's routes, the demo page, and a JSON 404 for
/// anything else.
pub fn app(state: AppState, options: &RouterOptions) -> Router {
    build(state, options, true)
}

/// keepalive's routes with their layers, without the demo page (`/`, `/demo.js`,
/// `/demo.css`) and without a fallback, for an application to merge into its own router (see
/// [`Keepalive`](crate::server::Keepalive)).
pub fn routes(state: AppState, options: &RouterOptions) -> Router {
    build(state, options, false)
}

/// `standalone`: with the demo page and the JSON 404 and 405 fallbacks.
fn build(state: AppState, options: &RouterOptions, standalone: bool) -> Router {
    let limited =
        |bucket| axum::middleware::from_fn_with_state((state.clone(), bucket), limit::enforce);
    let origins: Arc<[String]> = options.cors_origins.clone().into();
    let same_site =
        || axum::middleware::from_fn_with_state(Arc::clone(&origins), csrf::same_site_only);
    let no_store = || {
        SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        )
    };
    let browser = Router::new()
        .route(
            "/api/v1/session",
            axum::routing::post(session::create)
                .layer(limited(Bucket::Sessions))
                .delete(session::end.layer(limited(Bucket::Logouts)))
                .route_layer(same_site())
                .get(session::current),
        )
        .route(
            "/api/v1/session/rotate",
            axum::routing::post(session::rotate)
                .layer(limited(Bucket::Sessions))
                .route_layer(same_site()),
        )
        .route("/api/v1/auth", any(forward_auth::check));
    // No layers of their own: the handler limits and marks its answers itself (see
    // [`keepalive`]).
    let keepalive = Router::new()
        .route("/api/v1/keepalive", get(keepalive::keepalive))
        .route("/api/v1/keepalive/", get(keepalive::keepalive));
    let backend = Router::new()
        .route("/api/v1/backend/sessions", post(backend::create))
        .route(
            "/api/v1/backend/sessions/{token}",
            get(backend::read)
                .patch(backend::update)
                .delete(backend::end),
        )
        .route(
            "/api/v1/backend/sessions/{token}/rotate",
            post(backend::rotate),
        )
        .route(
            "/api/v1/backend/users/{user}/sessions",
            get(backend::list_user).delete(backend::end_user),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            backend::authorize,
        ));
    let api = browser
        .merge(backend)
        .layer(DefaultBodyLimit::max(MAX_SESSION_BODY))
        .layer(no_store());
    let mut router = Router::new()
        .merge(api)
        .merge(keepalive)
        .merge(probes::routes())
        .merge(assets::client_routes());
    if standalone {
        router = router.merge(assets::demo_routes());
    }
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        observe::track,
    ));
    if standalone {
        router = router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
    }
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            options.request_timeout,
            deadline,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
            .into_response()
        }))
        .with_state(state);
    // Outermost, so a preflight is answered before routing (it has no route of its own).
    match cors(&options.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Bounds each request; one that takes too long gets a JSON 503 like every other error.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long; try again",
        )
        .into_response(),
    }
}

/// CORS for the configured origins only, with credentials (the session cookie); none by
/// default, so other sites' scripts cannot read the API's answers.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    method: Method,
    uri: Uri,
) -> Response {
    state
        .metrics
        .http_requests_total
        .with_label_values(&[observe::method_label(&method), "unmatched", "404"])
        .inc();
    ApiError::not_found(format!("no route for {method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

//! The browser client, its demo page and the OpenAPI document, compiled into the binary so
//! the server needs no files beside it.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// The demo page may load only its own script and style: no inline code, no third party.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut response = asset(
        include_str!("../../web/index.html"),
        "text/html; charset=utf-8",
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The classic-script build of the `keepalive-client` package (client/), which defines the
/// global `createKeepalive`.
async fn client() -> Response {
    asset(
        include_str!("../../client/dist/keepalive.global.min.js"),
        "text/javascript; charset=utf-8",
    )
}

/// The same client as an ES module (`import { createKeepalive } from "/keepalive.mjs"`).
async fn client_module() -> Response {
    asset(
        include_str!("../../client/dist/keepalive.min.mjs"),
        "text/javascript; charset=utf-8",
    )
}

async fn declarations() -> Response {
    asset(
        include_str!("../../client/dist/keepalive.d.ts"),
        "application/typescript; charset=utf-8",
    )
}

async fn demo_script() -> Response {
    asset(
        include_str!("../../web/demo.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn demo_style() -> Response {
    asset(
        include_str!("../../web/demo.css"),
        "text/css; charset=utf-8",
    )
}

async fn openapi() -> Response {
    asset(
        include_str!("../../docs/openapi.yaml"),
        "application/yaml; charset=utf-8",
    )
}

/// The browser client and the OpenAPI document: what an application embedding keepalive
/// serves too.
pub fn client_routes() -> Router<AppState> {
    Router::new()
        .route("/keepalive.js", get(client))
        .route("/keepalive.mjs", get(client_module))
        .route("/keepalive.d.ts", get(declarations))
        .route("/openapi.yaml", get(openapi))
}

/// The demo page at `/`, its script and style: the standalone server's only. An application
/// that embeds keepalive has its own `/`.
pub fn demo_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/demo.js", get(demo_script))
        .route("/demo.css", get(demo_style))
}

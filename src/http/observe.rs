//! Request metrics, labelled by route template (never the raw URI) and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Records count and latency of each routed request.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // A MatchedPath clone is a reference count, not a copy of the template.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let metrics = &state.metrics;
    metrics
        .http_request_duration_seconds
        .with_label_values(&[method, route])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests_total
        .with_label_values(&[method, route, response.status().as_str()])
        .inc();
    response
}

/// A bounded label for the method: unknown methods collapse into one value.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

//! Cross-site request refusal for the state-changing browser routes (create, end and rotate a
//! session), on top of the `SameSite=Lax` cookie.
//!
//! Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser) and
//! `Origin` (on every POST and DELETE). A request another site's page makes is refused with 403,
//! unless its origin is one of the configured CORS origins. Requests without either header
//! come from no browser page (curl, servers) and pass: they cannot carry a victim's cookie.
//! Without `Sec-Fetch-Site`, an `Origin` must name the host the request was sent to.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Refuses cross-site requests; `allowed` are the configured CORS origins.
pub async fn same_site_only(
    State(allowed): State<Arc<[String]>>,
    request: Request,
    next: Next,
) -> Response {
    if is_cross_site(request.headers(), &allowed) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "this request comes from another site's page; only the application's own pages (or the configured CORS origins) may change the session",
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a browser sent this request from a page of another origin that is not allowed.
pub fn is_cross_site(headers: &HeaderMap, allowed: &[String]) -> bool {
    // Browsers never send these empty; an empty one says as little as an absent one.
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let origin = text(header::ORIGIN);
    if let Some(origin) = origin
        && allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    {
        return false;
    }
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        // `none`: typed by the user or a bookmark; `same-site` (a sibling subdomain) is another
        // origin, refused like any other unless configured.
        return !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none"));
    }
    match origin {
        None => false,
        Some(origin) => Some(authority(origin)) != text(header::HOST).map(strip_default_port),
    }
}

/// `host[:port]` of an origin (`https://app.example.com:8443`), default ports left out.
fn authority(origin: &str) -> &str {
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    strip_default_port(rest)
}

fn strip_default_port(host: &str) -> &str {
    host.strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn browsers_say_where_requests_come_from() {
        let none: Vec<String> = Vec::new();
        assert!(!is_cross_site(&headers(&[]), &none), "no browser: passes");
        assert!(!is_cross_site(
            &headers(&[("sec-fetch-site", "same-origin")]),
            &none
        ));
        assert!(!is_cross_site(
            &headers(&[("sec-fetch-site", "none")]),
            &none
        ));
        assert!(is_cross_site(
            &headers(&[("sec-fetch-site", "cross-site")]),
            &none
        ));
        assert!(is_cross_site(
            &headers(&[("sec-fetch-site", "same-site")]),
            &none
        ));
    }

    #[test]
    fn an_origin_must_match_the_host_without_fetch_metadata() {
        let none: Vec<String> = Vec::new();
        let same = headers(&[
            ("origin", "https://app.example.com"),
            ("host", "app.example.com:443"),
        ]);
        assert!(!is_cross_site(&same, &none));
        let port = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(!is_cross_site(&port, &none));
        let other = headers(&[
            ("origin", "https://evil.example"),
            ("host", "app.example.com"),
        ]);
        assert!(is_cross_site(&other, &none));
        let opaque = headers(&[("origin", "null"), ("host", "app.example.com")]);
        assert!(is_cross_site(&opaque, &none));
    }

    #[test]
    fn empty_or_oddly_written_headers() {
        let none: Vec<String> = Vec::new();
        assert!(
            !is_cross_site(&headers(&[("sec-fetch-site", "")]), &none),
            "empty: absent"
        );
        assert!(!is_cross_site(
            &headers(&[("sec-fetch-site", " Same-Origin ")]),
            &none
        ));
        assert!(
            !is_cross_site(&headers(&[("origin", "")]), &none),
            "empty: absent"
        );
        let h = headers(&[
            ("sec-fetch-site", ""),
            ("origin", "https://evil.example"),
            ("host", "app.example.com"),
        ]);
        assert!(
            is_cross_site(&h, &none),
            "an empty fetch header falls back to the origin"
        );
    }

    #[test]
    fn configured_origins_may_call_cross_site() {
        let allowed = vec!["https://shop.example.com".to_owned()];
        let h = headers(&[
            ("origin", "https://shop.example.com"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!is_cross_site(&h, &allowed));
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(is_cross_site(&h, &allowed));
    }
}

//! Routing and the rest of what any client sees: JSON errors for unknown routes and methods,
//! production cookies, the browser client and its demo page.

use crate::harness::{TestServer, client};
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};
use serde_json::Value;

#[tokio::test]
async fn production_cookies_are_secure() {
    let server = TestServer::start(&[
        ("KEEPALIVE_ENV", "production"),
        ("KEEPALIVE_DRAIN_DELAY", "0s"),
    ])
    .await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    assert!(
        response.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Secure")
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = TestServer::start(&[]).await;
    let response = client()
        .get(server.url("/api/v2/nothing"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "not_found"
    );
    let response = client()
        .put(server.url("/api/v1/keepalive/"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "method_not_allowed"
    );
    let response = client()
        .put(server.url("/api/v1/session"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn the_browser_client_and_demo_page_are_served() {
    let server = TestServer::start(&[]).await;
    let page = client().get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let script = client()
        .get(server.url("/keepalive.js"))
        .send()
        .await
        .expect("script");
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript")
    );
    server.stop().await;
}

//! Cross-site requests cannot change the session; configured CORS origins can.

use super::*;

/// What a refused (or passed) state-changing request does, for each of the three routes.
async fn assert_state_changes(server: &TestServer, headers: &[(&str, &str)], allowed: bool) {
    let case = format!("{headers:?}");
    // Create.
    let response = browser(server, Method::POST, "/api/v1/session", None, headers)
        .send()
        .await
        .expect("create");
    if allowed {
        assert_eq!(response.status(), 201, "create {case}");
    } else {
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "create {case}"
        );
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("create {case}"),
        );
    }
    // Rotate.
    let cookie = create_session(&server.base).await;
    let response = browser(
        server,
        Method::POST,
        "/api/v1/session/rotate",
        Some(&cookie),
        headers,
    )
    .send()
    .await
    .expect("rotate");
    if allowed {
        assert_eq!(response.status(), 200, "rotate {case}");
        let rotated = cookie_pair(&response);
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            401,
            "rotate {case}"
        );
        assert_eq!(
            keepalive(&server.base, Some(&rotated)).await.0,
            200,
            "rotate {case}"
        );
    } else {
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "rotate {case}"
        );
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("rotate {case}"),
        );
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            200,
            "rotate {case}"
        );
    }
    // End.
    let response = browser(
        server,
        Method::DELETE,
        "/api/v1/session",
        Some(&cookie),
        headers,
    )
    .send()
    .await
    .expect("end");
    if allowed {
        assert_eq!(response.status(), 204, "end {case}");
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            401,
            "end {case}"
        );
    } else {
        assert_error(
            &answer(response).await,
            403,
            "cross_site_request",
            &format!("end {case}"),
        );
        assert_eq!(
            keepalive(&server.base, Some(&cookie)).await.0,
            200,
            "end {case}: refused, and the session lives"
        );
    }
}

/// Reads never change anything: they pass with any headers.
async fn assert_reads_pass(server: &TestServer, headers: &[(&str, &str)]) {
    let cookie = create_session(&server.base).await;
    for path in ["/api/v1/session", "/api/v1/keepalive/"] {
        let response = browser(server, Method::GET, path, Some(&cookie), headers)
            .send()
            .await
            .expect("read");
        assert_eq!(response.status(), 200, "GET {path} with {headers:?}");
    }
}

#[tokio::test]
async fn cross_site_requests_cannot_change_the_session() {
    let server = start(Store::Local).await;
    let own_origin = server.base.clone();
    let other_port = format!(
        "http://127.0.0.1:{}",
        crate::harness::nginx::port_of(&server.base).wrapping_add(1)
    );
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![
            ("Sec-Fetch-Site", "cross-site"),
            ("Origin", own_origin.as_str()),
        ],
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", other_port.as_str())],
    ];
    for headers in &refused {
        assert_state_changes(&server, headers, false).await;
        assert_reads_pass(&server, headers).await;
    }
    let passed: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Sec-Fetch-Site", "same-origin")],
        vec![("Sec-Fetch-Site", "none")],
        vec![("Origin", own_origin.as_str())],
        vec![
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", own_origin.as_str()),
        ],
    ];
    for headers in &passed {
        assert_state_changes(&server, headers, true).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn configured_cors_origins_may_change_the_session() {
    let server = TestServer::start(&[
        ("KEEPALIVE_BACKEND_TOKEN", TOKEN),
        (
            "KEEPALIVE_CORS_ORIGINS",
            "https://shop.example.com,https://admin.example.com",
        ),
    ])
    .await;
    for origin in ["https://shop.example.com", "https://admin.example.com"] {
        for headers in [
            vec![("Origin", origin), ("Sec-Fetch-Site", "cross-site")],
            vec![("Origin", origin), ("Sec-Fetch-Site", "same-site")],
            vec![("Origin", origin)],
        ] {
            assert_state_changes(&server, &headers, true).await;
        }
        let response = browser(
            &server,
            Method::POST,
            "/api/v1/session",
            None,
            &[("Origin", origin)],
        )
        .send()
        .await
        .expect("create");
        assert_eq!(response.status(), 201);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(origin)
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
    }
    for headers in [
        vec![
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        vec![("Origin", "https://shop.example.com:8443")],
        vec![("Origin", "http://shop.example.com")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        assert_state_changes(&server, &headers, false).await;
    }
    server.stop().await;
}

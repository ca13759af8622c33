//! The backend API's bearer token: every route refuses a missing or wrong one, the scheme name
//! is case-insensitive, without one the API is off, a short one stops the binary.

use super::*;

/// Every route of the backend API, for `token` and `user`: what, method, path and JSON body.
fn backend_routes(token: &str, user: &str) -> Vec<(&'static str, Method, String, Option<Value>)> {
    vec![
        (
            "create",
            Method::POST,
            "/api/v1/backend/sessions".to_owned(),
            Some(json!({ "user": "mallory" })),
        ),
        ("read", Method::GET, session_path(token), None),
        (
            "update",
            Method::PATCH,
            session_path(token),
            Some(json!({ "data": { "owned": true } })),
        ),
        ("end", Method::DELETE, session_path(token), None),
        (
            "rotate",
            Method::POST,
            format!("{}/rotate", session_path(token)),
            None,
        ),
        ("list", Method::GET, user_path(user), None),
        ("end all", Method::DELETE, user_path(user), None),
    ]
}

#[tokio::test]
async fn every_backend_route_refuses_a_missing_or_wrong_token() {
    let server = start(Store::Local).await;
    let alice = login(&server, "alice", json!({ "n": 1 })).await;
    let mut last_changed = TOKEN.to_owned();
    last_changed.pop();
    last_changed.push('g');
    let wrong: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {last_changed}")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Basic {TOKEN}")),
        Some("Basic YWRtaW46YWRtaW4=".to_owned()),
        Some(format!("Token {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for (what, method, path, body) in backend_routes(&alice.token, "alice") {
        for authorization in &wrong {
            let mut request = client().request(method.clone(), server.url(&path));
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("request");
            let challenge = header(&response, "www-authenticate").map(str::to_owned);
            let content_type = header(&response, "content-type").map(str::to_owned);
            let refused = answer(response).await;
            let case = format!("{what} with {authorization:?}");
            assert_error(&refused, 401, "unauthorized", &case);
            let challenge = challenge.unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer "), "{case}: {challenge}");
            let content_type = content_type.unwrap_or_default();
            assert!(
                content_type.starts_with("application/json"),
                "{case}: {content_type}"
            );
        }
    }
    // Checked before anything else: an oversized body or a malformed token is still a 401.
    let big = json!({ "user": "mallory", "data": { "pad": "x".repeat(5000) } });
    let request = client()
        .post(server.url("/api/v1/backend/sessions"))
        .json(&big);
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "oversized, no token",
    );
    let request = client().get(server.url(&session_path("not-a-token")));
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "malformed token, no token",
    );

    // Nothing changed: no session for mallory, alice's session alive with its token and data.
    assert!(listed(&server, "mallory").await.is_empty());
    assert_eq!(listed(&server, "alice").await, vec![alice.token.clone()]);
    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["data"], json!({ "n": 1 }), "{body}");
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let server = start(Store::Local).await;
    let alice = login(&server, "alice", Value::Null).await;
    let lower = format!("bearer {TOKEN}");
    let upper = format!("BEARER {TOKEN}");
    let with = |method: Method, path: &str, value: &str| {
        client()
            .request(method, server.url(path))
            .header(AUTHORIZATION, value)
    };
    let (status, body) = send(
        with(Method::POST, "/api/v1/backend/sessions", &lower).json(&json!({ "user": "carol" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let carol = issued(&body);
    let path = session_path(&carol.token);
    let (status, body) = send(with(Method::GET, &path, &upper)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "carol");
    let (status, body) =
        send(with(Method::PATCH, &path, &lower).json(&json!({ "data": { "x": 1 } }))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(with(Method::POST, &format!("{path}/rotate"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    let rotated = issued(&body);
    let (status, body) = send(with(Method::GET, &user_path("carol"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"][0]["token"], rotated.token.as_str());
    assert_eq!(body["sessions"][0]["data"], json!({ "x": 1 }));
    let (status, _) = send(with(Method::DELETE, &session_path(&rotated.token), &lower)).await;
    assert_eq!(status, 204);
    let (status, body) = send(with(Method::DELETE, &user_path("alice"), &lower)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1);
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_the_backend_api_is_off() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    let token = cookie.split_once('=').expect("pair").1.to_owned();
    for (what, method, path, body) in backend_routes(&token, "alice") {
        for authorization in [
            None,
            Some(format!("Bearer {TOKEN}")),
            Some("Bearer x".to_owned()),
        ] {
            let mut request = client().request(method.clone(), server.url(&path));
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let (status, body) = send(request).await;
            let case = format!("{what} with {authorization:?}");
            assert_error(&(status, body.clone()), 404, "backend_api_disabled", &case);
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("KEEPALIVE_BACKEND_TOKEN"),
                "{case}: says how: {body}"
            );
        }
    }
    assert_eq!(
        keepalive(&server.base, Some(&cookie)).await.0,
        200,
        "the session the calls named lives on"
    );
    server.stop().await;
}

#[test]
fn a_backend_token_under_32_characters_stops_the_binary_with_exit_code_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let short = &TOKEN[..31];
    let mut child = command(&[
        ("KEEPALIVE_BACKEND_TOKEN", short),
        ("KEEPALIVE_DATA_DIR", &data),
        ("KEEPALIVE_BIND", "127.0.0.1"),
        ("PORT", "0"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn keepalive");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepalive kept running with a 31-character backend token");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for needle in [
        "backend_token",
        "KEEPALIVE_BACKEND_TOKEN",
        "at least 32 characters",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
    assert!(
        !stderr.contains(short),
        "the secret is not printed: {stderr}"
    );
    assert!(
        !dir.path().join("sessions.redb").exists(),
        "nothing opened before validation"
    );
}

#[tokio::test]
async fn a_backend_token_of_exactly_32_characters_is_accepted() {
    let exact = &TOKEN[..32];
    let server = TestServer::start(&[("KEEPALIVE_BACKEND_TOKEN", exact)]).await;
    let (status, body) = send(
        client()
            .post(server.url("/api/v1/backend/sessions"))
            .bearer_auth(exact)
            .json(&json!({ "user": "alice" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let request = backend(&server, Method::GET, &user_path("alice"));
    assert_error(
        &send(request).await,
        401,
        "unauthorized",
        "the longer token is another one",
    );
    server.stop().await;
}

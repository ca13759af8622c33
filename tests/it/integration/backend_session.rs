//! The backend API on one session: read (not extended), replace its data, end it, rotate its
//! token; unknown and malformed tokens.

use super::*;

on_every_store!(
    reading_does_not_extend_and_an_idle_session_then_is_404,
    patch_replaces_the_data_seen_everywhere_without_extending,
    delete_ends_the_session_for_the_browser_too,
    unknown_and_malformed_tokens_are_404_session_not_found,
    rotate_answers_a_new_token_and_cookie_keeping_user_and_data,
);

async fn reading_does_not_extend_and_an_idle_session_then_is_404(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(5 * MIN);
    for _ in 0..3 {
        let (status, body) = read(&server, &alice.token).await;
        assert_eq!(status, 200, "{body}");
        let session = &body["session"];
        assert_eq!(session["token"], alice.token.as_str());
        assert_eq!(session["user"], "alice");
        assert_eq!(session["data"], json!({ "role": "editor" }));
        assert_eq!(millis(&session["lastSeenAt"]), START, "{body}");
        assert_eq!(
            millis(&session["expiresAt"]),
            at(IDLE),
            "not extended: {body}"
        );
    }
    // Idle for the whole timeout: expired, although read three times meanwhile.
    server.clock.advance(IDLE - 5 * MIN);
    let token = alice.token.as_str();
    assert_error(
        &read(&server, token).await,
        404,
        "session_not_found",
        "read",
    );
    let patch = backend(&server, Method::PATCH, &session_path(token)).json(&json!({ "data": {} }));
    assert_error(&send(patch).await, 404, "session_not_found", "patch");
    let rotate = backend(
        &server,
        Method::POST,
        &format!("{}/rotate", session_path(token)),
    );
    assert_error(&send(rotate).await, 404, "session_not_found", "rotate");
    let end = backend(&server, Method::DELETE, &session_path(token));
    assert_error(&send(end).await, 404, "session_not_found", "delete");
    assert!(listed(&server, "alice").await.is_empty());
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 401);
    server.stop().await;
}

async fn patch_replaces_the_data_seen_everywhere_without_extending(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", json!({ "role": "editor", "tenant": 7 })).await;
    server.clock.advance(3 * MIN);
    let path = session_path(&alice.token);
    let (status, body) =
        send(backend(&server, Method::PATCH, &path).json(&json!({ "data": { "role": "admin" } })))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "replaced, not merged"
    );
    assert_eq!(body["session"]["user"], "alice");
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        at(IDLE),
        "not extended: {body}"
    );

    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    let (status, body) = answer(own_session(&server, Some(&alice.cookie)).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    assert_eq!(body["session"]["user"], "alice");

    // Refused updates change nothing.
    let refusals: [(Option<&str>, &str, u16, &str); 7] = [
        (Some("application/json"), "", 400, "bad_request"),
        (Some("application/json"), r#"{}"#, 400, "bad_request"),
        (
            Some("application/json"),
            r#"{"data":[1]}"#,
            400,
            "bad_request",
        ),
        (
            Some("application/json"),
            r#"{"data":null}"#,
            400,
            "bad_request",
        ),
        (
            Some("application/json"),
            r#"{"data":{},"user":"mallory"}"#,
            400,
            "bad_request",
        ),
        (
            Some("text/plain"),
            r#"{"data":{}}"#,
            415,
            "unsupported_media_type",
        ),
        (None, r#"{"data":{}}"#, 415, "unsupported_media_type"),
    ];
    for (content_type, payload, status, code) in refusals {
        let mut request = backend(&server, Method::PATCH, &path).body(payload);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        assert_error(&send(request).await, status, code, payload);
    }
    let big = json!({ "data": { "pad": "x".repeat(5000) } });
    let request = backend(&server, Method::PATCH, &path).json(&big);
    assert_error(&send(request).await, 413, "payload_too_large", "5000 bytes");
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(
        body["session"]["data"],
        json!({ "role": "admin" }),
        "{body}"
    );
    assert_eq!(body["session"]["user"], "alice");

    // An empty object clears the data.
    let (status, body) =
        send(backend(&server, Method::PATCH, &path).json(&json!({ "data": {} }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["data"], json!({}));
    server.stop().await;
}

async fn delete_ends_the_session_for_the_browser_too(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", Value::Null).await;
    let other = login(&server, "alice", Value::Null).await;
    assert_eq!(keepalive(&server.base, Some(&alice.cookie)).await.0, 200);
    let path = session_path(&alice.token);
    let (status, body) = send(backend(&server, Method::DELETE, &path)).await;
    assert_eq!(status, 204);
    assert_eq!(body, Value::Null, "204 has no body");
    assert_error(
        &send(backend(&server, Method::DELETE, &path)).await,
        404,
        "session_not_found",
        "second delete",
    );
    assert_error(
        &read(&server, &alice.token).await,
        404,
        "session_not_found",
        "read",
    );
    let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "session_expired");
    let (status, body) = answer(auth(&server, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(&(status, body), 401, "session_expired", "forward auth");
    assert_eq!(
        listed(&server, "alice").await,
        vec![other.token.clone()],
        "only the one session ended"
    );
    assert_eq!(keepalive(&server.base, Some(&other.cookie)).await.0, 200);
    server.stop().await;
}

async fn unknown_and_malformed_tokens_are_404_session_not_found(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", json!({ "n": 1 })).await;
    for token in std::iter::once(&UNKNOWN).chain(MALFORMED) {
        let path = session_path(token);
        let requests = [
            ("GET", backend(&server, Method::GET, &path)),
            (
                "PATCH",
                backend(&server, Method::PATCH, &path).json(&json!({ "data": {} })),
            ),
            ("DELETE", backend(&server, Method::DELETE, &path)),
            (
                "rotate",
                backend(&server, Method::POST, &format!("{path}/rotate")),
            ),
        ];
        for (what, request) in requests {
            assert_error(
                &send(request).await,
                404,
                "session_not_found",
                &format!("{what} {token}"),
            );
        }
    }
    let (status, body) = read(&server, &alice.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["session"]["data"],
        json!({ "n": 1 }),
        "untouched: {body}"
    );
    server.stop().await;
}

async fn rotate_answers_a_new_token_and_cookie_keeping_user_and_data(store: Store) {
    let server = start(store).await;
    let old = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(2 * MIN);
    let rotate = format!("{}/rotate", session_path(&old.token));
    let response = backend(&server, Method::POST, &rotate)
        .send()
        .await
        .expect("rotate");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    let new = issued(&body);
    assert_ne!(new.token, old.token);
    assert_eq!(new.session["user"], "alice");
    assert_eq!(new.session["data"], json!({ "role": "editor" }));
    assert_eq!(
        millis(&new.session["createdAt"]),
        START,
        "the same session: {body}"
    );
    assert_eq!(
        millis(&new.session["absoluteExpiresAt"]),
        millis(&old.session["absoluteExpiresAt"])
    );

    assert_error(
        &read(&server, &old.token).await,
        404,
        "session_not_found",
        "old token",
    );
    assert_error(
        &send(backend(&server, Method::POST, &rotate)).await,
        404,
        "session_not_found",
        "rotating the old token again",
    );
    assert_eq!(keepalive(&server.base, Some(&old.cookie)).await.0, 401);
    assert_eq!(keepalive(&server.base, Some(&new.cookie)).await.0, 200);
    let (status, body) = read(&server, &new.token).await;
    assert_eq!(status, 200);
    assert_eq!(body["session"]["user"], "alice");
    assert_eq!(listed(&server, "alice").await, vec![new.token.clone()]);
    server.stop().await;
}

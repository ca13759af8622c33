//! Forward authentication (`/api/v1/auth`) in this process: users allowed, everyone else
//! refused, the session extended or not as configured. Through a real nginx and a real Caddy: `behind_proxy`.

use super::*;

on_every_store!(
    forward_auth_answers_for_users_and_refuses_everyone_else,
    forward_auth_extends_the_session_by_default,
    forward_auth_does_not_extend_when_configured_not_to,
);

async fn forward_auth_answers_for_users_and_refuses_everyone_else(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", Value::Null).await;
    let anonymous = create_session(&server.base).await;
    let ended = login(&server, "bob", Value::Null).await;
    let (status, _) = send(backend(
        &server,
        Method::DELETE,
        &session_path(&ended.token),
    ))
    .await;
    assert_eq!(status, 204);
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
    ];
    // What Traefik adds when it forwards the check; it must change nothing.
    let forwarded = [
        ("X-Forwarded-Method", "POST"),
        ("X-Forwarded-Uri", "/admin/users?delete=all"),
        ("X-Forwarded-Host", "app.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Keepalive-User", "mallory"),
    ];
    for method in &methods {
        for headers in [&[][..], &forwarded[..]] {
            let case = format!("{method} with {headers:?}");
            let request = browser(
                &server,
                method.clone(),
                "/api/v1/auth",
                Some(&alice.cookie),
                headers,
            );
            let response = request.send().await.expect("auth");
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(
                header(&response, "x-keepalive-user"),
                Some("alice"),
                "{case}"
            );
            let expires = header(&response, "x-keepalive-expires-at").expect("expiry header");
            assert_eq!(millis(&json!(expires)), at(IDLE), "{case}");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{case}");
            assert!(
                response.text().await.expect("body").is_empty(),
                "{case}: empty body"
            );

            let refusals = [
                (Some(anonymous.as_str()), "anonymous_session"),
                (None, "session_expired"),
                (Some(ended.cookie.as_str()), "session_expired"),
                (Some("keepalive_sid=garbage"), "session_expired"),
            ];
            for (cookie, code) in refusals {
                let case = format!("{case}, cookie {cookie:?}");
                let request = browser(&server, method.clone(), "/api/v1/auth", cookie, headers);
                let response = request.send().await.expect("auth");
                assert!(header(&response, "x-keepalive-user").is_none(), "{case}");
                if method == Method::HEAD {
                    assert_eq!(response.status(), 401, "{case}");
                } else {
                    assert_error(&answer(response).await, 401, code, &case);
                }
            }
        }
    }
    server.stop().await;
}

async fn forward_auth_extends_the_session_by_default(store: Store) {
    let server = start(store).await;
    let alice = login(&server, "alice", Value::Null).await;
    let idle = login(&server, "bob", Value::Null).await;
    server.clock.advance(5 * MIN);
    let response = auth(&server, Method::GET, Some(&alice.cookie)).await;
    assert_eq!(response.status(), 200);
    let expires = header(&response, "x-keepalive-expires-at").expect("expiry");
    assert_eq!(
        millis(&json!(expires)),
        at(5 * MIN + IDLE),
        "extended by the check"
    );
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        at(5 * MIN + IDLE),
        "{body}"
    );
    assert_eq!(
        millis(&body["session"]["lastSeenAt"]),
        at(5 * MIN),
        "{body}"
    );

    // 13 minutes after creation: alive only because the check extended it.
    server.clock.advance(8 * MIN);
    let response = auth(&server, Method::POST, Some(&alice.cookie)).await;
    assert_eq!(response.status(), 200);
    let refused = answer(auth(&server, Method::GET, Some(&idle.cookie)).await).await;
    assert_error(&refused, 401, "session_expired", "the control expired");
    server.stop().await;
}

async fn forward_auth_does_not_extend_when_configured_not_to(store: Store) {
    let server = store
        .start(&[
            ("KEEPALIVE_BACKEND_TOKEN", TOKEN),
            ("KEEPALIVE_FORWARD_AUTH_EXTEND", "false"),
        ])
        .await;
    let alice = login(&server, "alice", Value::Null).await;
    server.clock.advance(5 * MIN);
    for method in [Method::GET, Method::POST, Method::HEAD] {
        let response = auth(&server, method.clone(), Some(&alice.cookie)).await;
        assert_eq!(response.status(), 200, "{method}");
        let expires = header(&response, "x-keepalive-expires-at").expect("expiry");
        assert_eq!(millis(&json!(expires)), at(IDLE), "{method}: not extended");
    }
    let (_, body) = read(&server, &alice.token).await;
    assert_eq!(millis(&body["session"]["expiresAt"]), at(IDLE), "{body}");
    server.clock.advance(IDLE - 5 * MIN);
    let refused = answer(auth(&server, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(
        &refused,
        401,
        "session_expired",
        "expired despite the checks",
    );
    server.stop().await;
}

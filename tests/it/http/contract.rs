//! What a browser sees of its session, written once and run on the embedded store and on
//! Redis: creation, keepalive and its expiry rules, the 401s, logout, bodies, rotation.

use std::time::Duration;

use crate::harness::{START, Store, client, create_session, keepalive, millis, on_every_store};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::Value;

const MIN: Duration = Duration::from_secs(60);

on_every_store!(
    create_answers_201_with_a_safe_cookie_and_expiry,
    keepalive_answers_on_both_paths_and_any_query_string,
    keepalive_extends_the_idle_expiry,
    an_idle_session_expires,
    keepalives_never_pass_the_absolute_lifetime,
    missing_unknown_malformed_and_expired_cookies_get_401,
    logout_ends_the_session_and_clears_the_cookie,
    session_bodies_are_checked,
    sessions_are_shared_by_cookie_only,
    rotation_gives_a_new_id_and_kills_the_old_one,
);

async fn create_answers_201_with_a_safe_cookie_and_expiry(store: Store) {
    let server = store.start(&[]).await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"data":{"user":"ana","roles":["admin"]}}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let set_cookie = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set_cookie.starts_with("keepalive_sid="), "{set_cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "development serves plain HTTP: {set_cookie}"
    );
    let id = set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("value");
    assert!(id.len() >= 22, "at least 128 bits: {id}");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(millis(&body["session"]["createdAt"]), START);
    assert_eq!(millis(&body["session"]["expiresAt"]), START + 600_000);
    assert_eq!(
        millis(&body["session"]["absoluteExpiresAt"]),
        START + 12 * 3_600_000
    );
    assert_eq!(body["session"]["idleTimeoutMs"], 600_000);
    server.stop().await;
}

async fn keepalive_answers_on_both_paths_and_any_query_string(store: Store) {
    let server = store.start(&[]).await;
    let cookie = create_session(&server.base).await;
    for path in [
        "/api/v1/keepalive/",
        "/api/v1/keepalive",
        "/api/v1/keepalive/?_=123",
        "/api/v1/keepalive?_=1&x=%20y",
    ] {
        let response = client()
            .get(server.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{path}");
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("application/json")
        );
        let body: Value = response.json().await.expect("json");
        for key in ["expiresAt", "absoluteExpiresAt", "idleTimeoutMs"] {
            assert!(
                !body["session"][key].is_null(),
                "{path}: session.{key} in {body}"
            );
        }
        assert_eq!(body["serverHealth"]["status"], "healthy", "{body}");
        assert_eq!(body["serverHealth"]["checks"]["redis"], store.redis_check());
        assert!(
            ["ok", "warning", "critical"].contains(
                &body["serverHealth"]["checks"]["memory"]
                    .as_str()
                    .expect("memory")
            )
        );
        assert_eq!(body["keepalive"]["tickMs"], 10_000);
        assert_eq!(body["keepalive"]["timeoutMs"], 5_000);
        assert_eq!(body["keepalive"]["maxRetries"], 3);
        assert_eq!(millis(&body["serverTime"]), START);
    }
    server.stop().await;
}

async fn keepalive_extends_the_idle_expiry(store: Store) {
    let server = store.start(&[]).await;
    let cookie = create_session(&server.base).await;
    server.clock.advance(7 * MIN);
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(millis(&body["session"]["expiresAt"]), START + 17 * 60_000);
    server.clock.advance(9 * MIN);
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200, "kept alive 9 minutes after the last keepalive");
    server.stop().await;
}

async fn an_idle_session_expires(store: Store) {
    let server = store.start(&[]).await;
    let cookie = create_session(&server.base).await;
    server.clock.advance(10 * MIN);
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "session_expired");
    server.stop().await;
}

async fn keepalives_never_pass_the_absolute_lifetime(store: Store) {
    let server = store.start(&[("KEEPALIVE_ABSOLUTE_LIFETIME", "30m")]).await;
    let cookie = create_session(&server.base).await;
    let absolute = START + 30 * 60_000;
    let mut last_expiry = 0;
    for _ in 0..3 {
        server.clock.advance(9 * MIN);
        let (status, body) = keepalive(&server.base, Some(&cookie)).await;
        assert_eq!(status, 200);
        last_expiry = millis(&body["session"]["expiresAt"]);
        assert!(last_expiry <= absolute);
        assert_eq!(millis(&body["session"]["absoluteExpiresAt"]), absolute);
    }
    assert_eq!(last_expiry, absolute, "the fourth extension is capped");
    server.clock.advance(3 * MIN + Duration::from_millis(1));
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(
        status, 401,
        "an active session still ends at its absolute lifetime"
    );
    server.stop().await;
}

async fn missing_unknown_malformed_and_expired_cookies_get_401(store: Store) {
    let server = store.start(&[]).await;
    let live = create_session(&server.base).await;
    let cases = [
        None,
        Some("keepalive_sid=AAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        Some("keepalive_sid=not-a-session".to_owned()),
        Some("keepalive_sid=".to_owned()),
        Some(format!("{}x", live)),
        Some("keepalive_sid=%00%FF; other=1".to_owned()),
        Some("keepalive_sid".to_owned()),
        Some("=;;;=".to_owned()),
        Some(format!("keepalive_sid={}", "A".repeat(4000))),
    ];
    for cookie in &cases {
        let mut request = client().get(server.url("/api/v1/keepalive/"));
        if let Some(c) = cookie {
            request = request.header(COOKIE, c);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{cookie:?}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "session_expired", "{cookie:?}");
        assert!(body["serverHealth"]["status"].is_string(), "{body}");
        assert!(
            body["serverHealth"]["checks"]["redis"].is_string(),
            "{body}"
        );
    }
    server.stop().await;
}

async fn logout_ends_the_session_and_clears_the_cookie(store: Store) {
    let server = store.start(&[]).await;
    let cookie = create_session(&server.base).await;
    let response = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let cleared = response.headers()[SET_COOKIE].to_str().expect("ascii");
    assert!(
        cleared.starts_with("keepalive_sid=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 401);
    let again = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), 204, "logout is idempotent");
    let anonymous = client()
        .delete(server.url("/api/v1/session"))
        .send()
        .await
        .expect("delete");
    assert_eq!(anonymous.status(), 204);
    server.stop().await;
}

async fn session_bodies_are_checked(store: Store) {
    let server = store.start(&[]).await;
    let post = |body: String, content_type: &'static str| {
        client()
            .post(server.url("/api/v1/session"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let big = format!(r#"{{"data":{{"blob":"{}"}}}}"#, "x".repeat(4096));
    let cases = [
        (big, "application/json", 413, "payload_too_large"),
        (
            "{not json".to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":[1,2]}"#.to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":{},"extra":1}"#.to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":{"a":1}}"#.to_owned(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "\u{0}\u{1}\u{2}".to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = post(body.clone(), content_type).await.expect("request");
        assert_eq!(response.status(), status, "{content_type} {:.40}", body);
        let json: Value = response.json().await.expect("json error");
        assert_eq!(json["error"], code);
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let invalid_utf8 = client()
        .post(server.url("/api/v1/session"))
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .expect("request");
    assert_eq!(invalid_utf8.status(), 400);
    let ok = post(
        r#"{"data":{"user":"zoé"}}"#.to_owned(),
        "application/json; charset=utf-8",
    )
    .await
    .expect("request");
    assert_eq!(ok.status(), 201);
    let empty = post(String::new(), "application/json")
        .await
        .expect("request");
    assert_eq!(empty.status(), 201);
    server.stop().await;
}

async fn sessions_are_shared_by_cookie_only(store: Store) {
    let server = store.start(&[]).await;
    let a = create_session(&server.base).await;
    let b = create_session(&server.base).await;
    assert_ne!(a, b);
    let response = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &a)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert_eq!(keepalive(&server.base, Some(&a)).await.0, 401);
    assert_eq!(
        keepalive(&server.base, Some(&b)).await.0,
        200,
        "ending one session leaves the others"
    );
    server.stop().await;
}

async fn rotation_gives_a_new_id_and_kills_the_old_one(store: Store) {
    let server = store.start(&[]).await;
    let old = create_session(&server.base).await;
    let response = client()
        .post(server.url("/api/v1/session/rotate"))
        .header(COOKIE, &old)
        .send()
        .await
        .expect("rotate");
    assert_eq!(response.status(), 200);
    let set = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let new = set.split(';').next().expect("pair").to_owned();
    assert_ne!(new, old);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        millis(&body["session"]["createdAt"]),
        START,
        "the same session, created when it was"
    );
    assert_eq!(
        keepalive(&server.base, Some(&old)).await.0,
        401,
        "the old id is invalid"
    );
    assert_eq!(keepalive(&server.base, Some(&new)).await.0, 200);
    let again = client()
        .post(server.url("/api/v1/session/rotate"))
        .header(COOKIE, &old)
        .send()
        .await
        .expect("rotate");
    assert_eq!(again.status(), 401);
    assert_eq!(
        again.json::<Value>().await.expect("json")["error"],
        "session_expired"
    );
    server.stop().await;
}

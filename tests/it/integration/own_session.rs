//! The browser's read of its own session (`GET /api/v1/session`), without extending it.

use super::*;

on_every_store!(the_browser_reads_its_session_without_extending_it,);

async fn the_browser_reads_its_session_without_extending_it(store: Store) {
    let server = start(store).await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .json(&json!({ "data": { "theme": "dark" } }))
        .send()
        .await
        .expect("anonymous create");
    assert_eq!(response.status(), 201);
    let anonymous = cookie_pair(&response);
    let alice = login(&server, "alice", json!({ "role": "editor" })).await;
    server.clock.advance(5 * MIN);

    let cases = [
        (&anonymous, Value::Null, json!({ "theme": "dark" })),
        (&alice.cookie, json!("alice"), json!({ "role": "editor" })),
    ];
    for (cookie, user, data) in cases {
        let response = own_session(&server, Some(cookie)).await;
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let text = response.text().await.expect("body");
        let secret = cookie.split_once('=').expect("pair").1;
        assert!(!text.contains(secret), "no token in the body: {text}");
        let body: Value = serde_json::from_str(&text).expect("json");
        let session = &body["session"];
        assert!(session.get("token").is_none(), "{body}");
        assert_eq!(session["user"], user, "{body}");
        assert_eq!(session["data"], data, "{body}");
        assert_eq!(millis(&session["createdAt"]), START);
        assert_eq!(
            millis(&session["expiresAt"]),
            at(IDLE),
            "not extended: {body}"
        );
        assert_eq!(millis(&session["absoluteExpiresAt"]), at(12 * 60 * MIN));
        assert_eq!(session["idleTimeoutMs"], 600_000);
        assert_eq!(millis(&body["serverTime"]), at(5 * MIN));
    }

    // The reads did not keep the sessions alive.
    server.clock.advance(IDLE - 5 * MIN);
    let unknown = format!("keepalive_sid={UNKNOWN}");
    let cookies = [
        None,
        Some(anonymous.as_str()),
        Some(alice.cookie.as_str()),
        Some("keepalive_sid=garbage"),
        Some(unknown.as_str()),
        Some("other=1"),
    ];
    for cookie in cookies {
        let response = own_session(&server, cookie).await;
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{cookie:?}");
        let (status, body) = answer(response).await;
        assert_error(
            &(status, body.clone()),
            401,
            "session_expired",
            &format!("{cookie:?}"),
        );
        assert!(body["serverHealth"]["status"].is_string(), "{body}");
    }
    server.stop().await;
}

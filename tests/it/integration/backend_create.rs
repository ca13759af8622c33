//! The backend API creates a session for a user: the token, the exact cookie, the session;
//! refused users and bodies create nothing.

use super::*;

on_every_store!(
    create_answers_the_token_the_exact_cookie_and_the_session,
    create_refuses_bad_users_and_bodies_and_creates_nothing,
);

async fn create_answers_the_token_the_exact_cookie_and_the_session(store: Store) {
    let server = start(store).await;
    let response = backend(&server, Method::POST, "/api/v1/backend/sessions")
        .json(&json!({ "user": "alice", "data": { "role": "editor", "tenant": 7 } }))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    assert!(
        response.headers().get(SET_COOKIE).is_none(),
        "the application, not keepalive, sets the cookie on its own answer"
    );
    let (_, body) = answer(response).await;
    let alice = issued(&body);
    let session = &alice.session;
    assert_eq!(session["user"], "alice", "{body}");
    assert_eq!(session["data"], json!({ "role": "editor", "tenant": 7 }));
    assert_eq!(millis(&session["createdAt"]), START);
    assert_eq!(millis(&session["lastSeenAt"]), START);
    assert_eq!(millis(&session["expiresAt"]), at(IDLE));
    assert_eq!(millis(&session["absoluteExpiresAt"]), at(12 * 60 * MIN));

    // The same cookie, attribute for attribute, as the browser route sets.
    let response = client()
        .post(server.url("/api/v1/session"))
        .send()
        .await
        .expect("browser create");
    let browser_set = response.headers()[SET_COOKIE].to_str().expect("ascii");
    let attributes = |set: &str| -> Vec<String> {
        let mut attrs: Vec<String> = set
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_owned())
            .collect();
        attrs.sort();
        attrs
    };
    assert_eq!(attributes(&alice.set_cookie), attributes(browser_set));

    // The cookie works in the browser API.
    let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
    assert_eq!(status, 200, "{body}");
    let response = own_session(&server, Some(&alice.cookie)).await;
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "alice");

    // Without `data` the session carries an empty object.
    let bob = login(&server, "bob", Value::Null).await;
    assert_eq!(bob.session["data"], json!({}));
    assert_eq!(bob.session["user"], "bob");
    assert_ne!(bob.token, alice.token);
    server.stop().await;
}

async fn create_refuses_bad_users_and_bodies_and_creates_nothing(store: Store) {
    let server = start(store).await;
    let json = Some("application/json");
    let long = "a".repeat(257);
    let bad_request: Vec<(&str, String)> = vec![
        ("no body", String::new()),
        ("no user", r#"{}"#.to_owned()),
        ("data only", r#"{"data":{}}"#.to_owned()),
        ("a space", r#"{"user":"alice smith"}"#.to_owned()),
        (
            "a control character",
            r#"{"user":"alice\u0007"}"#.to_owned(),
        ),
        ("a tab", r#"{"user":"alice\t"}"#.to_owned()),
        (
            "a newline",
            r#"{"user":"alice\r\nX-Keepalive-User: root"}"#.to_owned(),
        ),
        ("not ASCII", r#"{"user":"alicé"}"#.to_owned()),
        ("empty", r#"{"user":""}"#.to_owned()),
        ("257 characters", format!(r#"{{"user":"{long}"}}"#)),
        ("a number", r#"{"user":42}"#.to_owned()),
        ("null", r#"{"user":null}"#.to_owned()),
        ("an array", r#"{"user":["alice"]}"#.to_owned()),
        ("an object", r#"{"user":{"id":"alice"}}"#.to_owned()),
        (
            "unknown field",
            r#"{"user":"alice","role":"admin"}"#.to_owned(),
        ),
        (
            "data not an object",
            r#"{"user":"alice","data":[1]}"#.to_owned(),
        ),
        ("data a string", r#"{"user":"alice","data":"x"}"#.to_owned()),
        ("a JSON array", r#"["alice"]"#.to_owned()),
        ("invalid JSON", r#"{"user":"alice""#.to_owned()),
    ];
    for (what, body) in bad_request {
        assert_error(
            &create_raw(&server, json, body).await,
            400,
            "bad_request",
            what,
        );
    }
    let valid = r#"{"user":"alice"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        assert_error(
            &create_raw(&server, content_type, valid.to_owned()).await,
            415,
            "unsupported_media_type",
            &format!("content type {content_type:?}"),
        );
    }
    // 4 KiB exactly is accepted, one byte more is not.
    let frame = r#"{"user":"padded","data":{"pad":""}}"#;
    let body = |len: usize| {
        let pad = "x".repeat(len - frame.len());
        format!(r#"{{"user":"padded","data":{{"pad":"{pad}"}}}}"#)
    };
    assert_eq!(body(4096).len(), 4096);
    let (status, created) = create_raw(&server, json, body(4096)).await;
    assert_eq!(status, 201, "{created}");
    let (status, refused) = create_raw(&server, json, body(4097)).await;
    assert_error(&(status, refused), 413, "payload_too_large", "4097 bytes");
    // 256 characters is the longest user id.
    let longest = "b".repeat(256);
    let (status, created) = create_raw(&server, json, format!(r#"{{"user":"{longest}"}}"#)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["session"]["user"], longest.as_str());

    assert!(
        listed(&server, "alice").await.is_empty(),
        "no refused create left a session"
    );
    assert_eq!(
        listed(&server, "padded").await.len(),
        1,
        "only the 4096-byte one"
    );
    server.stop().await;
}

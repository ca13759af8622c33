//! The backend API on a user's sessions: listed oldest first, user ids that need encoding,
//! "log out everywhere".

use super::*;

on_every_store!(
    a_users_live_sessions_are_listed_oldest_first,
    user_ids_with_at_signs_and_percent_encoding_round_trip,
    ending_a_users_sessions_logs_them_out_everywhere,
);

async fn a_users_live_sessions_are_listed_oldest_first(store: Store) {
    let server = start(store).await;
    let expired = login(&server, "alice", Value::Null).await;
    server.clock.advance(6 * MIN);
    let first = login(&server, "alice", json!({ "device": "laptop" })).await;
    server.clock.advance(MIN);
    let ended = login(&server, "alice", Value::Null).await;
    server.clock.advance(MIN);
    let second = login(&server, "alice", json!({ "device": "phone" })).await;
    let bob = login(&server, "bob", Value::Null).await;
    // A session the browser created, whose data merely names alice, is not hers.
    let response = client()
        .post(server.url("/api/v1/session"))
        .json(&json!({ "data": { "user": "alice" } }))
        .send()
        .await
        .expect("anonymous create");
    assert_eq!(response.status(), 201);
    let anonymous = cookie_pair(&response);
    let (status, _) = send(backend(
        &server,
        Method::DELETE,
        &session_path(&ended.token),
    ))
    .await;
    assert_eq!(status, 204);
    // `expired` was created 8 minutes ago: 3 more and it is past its idle timeout.
    server.clock.advance(3 * MIN);

    let (status, body) = send(backend(&server, Method::GET, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
    let sessions = body["sessions"].as_array().expect("sessions");
    let tokens: Vec<&str> = sessions
        .iter()
        .map(|s| s["token"].as_str().expect("token"))
        .collect();
    assert_eq!(
        tokens,
        [first.token.as_str(), second.token.as_str()],
        "{body}"
    );
    assert!(!tokens.contains(&expired.token.as_str()));
    for session in sessions {
        assert_eq!(session["user"], "alice", "{body}");
    }
    assert_eq!(sessions[0]["data"], json!({ "device": "laptop" }));
    assert_eq!(sessions[1]["data"], json!({ "device": "phone" }));
    assert!(millis(&sessions[0]["createdAt"]) < millis(&sessions[1]["createdAt"]));
    assert_eq!(listed(&server, "bob").await, vec![bob.token.clone()]);
    for nobody in ["nobody", "null", "anonymous", "ALICE"] {
        assert!(listed(&server, nobody).await.is_empty(), "{nobody}");
    }
    assert_eq!(
        keepalive(&server.base, Some(&anonymous)).await.0,
        200,
        "the anonymous session lives"
    );

    // A user id keepalive cannot carry is refused, like at creation.
    let long = "a".repeat(257);
    for segment in ["alice%20smith", "alice%09", "alic%C3%A9", long.as_str()] {
        let request = backend(&server, Method::GET, &user_path(segment));
        assert_error(&send(request).await, 400, "bad_request", segment);
        let request = backend(&server, Method::DELETE, &user_path(segment));
        assert_error(&send(request).await, 400, "bad_request", segment);
    }
    server.stop().await;
}

async fn user_ids_with_at_signs_and_percent_encoding_round_trip(store: Store) {
    let server = start(store).await;
    let slash = login(&server, "ana@example.com/eu", Value::Null).await;
    let percent = login(&server, "50%2Foff", Value::Null).await;
    let plain = login(&server, "ana@example.com", Value::Null).await;
    for segment in [
        "ana@example.com%2Feu",
        "ana%40example.com%2Feu",
        "ana%40example.com%2feu",
    ] {
        let (status, body) = send(backend(&server, Method::GET, &user_path(segment))).await;
        assert_eq!(status, 200, "{segment}: {body}");
        assert_eq!(body["user"], "ana@example.com/eu", "decoded once: {body}");
        assert_eq!(body["sessions"][0]["token"], slash.token.as_str(), "{body}");
        assert_eq!(body["sessions"][0]["user"], "ana@example.com/eu");
        assert_eq!(body["sessions"].as_array().map(Vec::len), Some(1), "{body}");
    }
    // A literal `%2F` in the id is written `%252F`; decoded only once, `%2F` is another user.
    let (_, body) = send(backend(&server, Method::GET, &user_path("50%252Foff"))).await;
    assert_eq!(body["user"], "50%2Foff", "{body}");
    assert_eq!(
        body["sessions"][0]["token"],
        percent.token.as_str(),
        "{body}"
    );
    assert!(
        listed(&server, "50%2Foff").await.is_empty(),
        "`50/off` is nobody"
    );
    assert_eq!(
        listed(&server, "ana@example.com").await,
        vec![plain.token.clone()]
    );

    let (status, body) = send(backend(
        &server,
        Method::DELETE,
        &user_path("ana%40example.com%2Feu"),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "ana@example.com/eu", "ended": 1 }));
    assert_eq!(keepalive(&server.base, Some(&slash.cookie)).await.0, 401);
    assert_eq!(
        keepalive(&server.base, Some(&plain.cookie)).await.0,
        200,
        "another user"
    );
    assert_eq!(keepalive(&server.base, Some(&percent.cookie)).await.0, 200);
    server.stop().await;
}

async fn ending_a_users_sessions_logs_them_out_everywhere(store: Store) {
    let server = start(store).await;
    let mut alice = Vec::new();
    for device in ["laptop", "phone", "tablet"] {
        alice.push(login(&server, "alice", json!({ "device": device })).await);
        server.clock.advance(Duration::from_secs(1));
    }
    let bob = login(&server, "bob", Value::Null).await;
    let anonymous = create_session(&server.base).await;
    for session in &alice {
        assert_eq!(
            answer(auth(&server, Method::GET, Some(&session.cookie)).await)
                .await
                .0,
            200
        );
    }

    let (status, body) = send(backend(&server, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "alice", "ended": 3 }));
    for session in &alice {
        let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "session_expired");
        let refused = answer(auth(&server, Method::GET, Some(&session.cookie)).await).await;
        assert_error(
            &refused,
            401,
            "session_expired",
            "forward auth after logout",
        );
        assert_error(
            &read(&server, &session.token).await,
            404,
            "session_not_found",
            "read",
        );
    }
    assert!(listed(&server, "alice").await.is_empty());
    assert_eq!(
        keepalive(&server.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert_eq!(keepalive(&server.base, Some(&anonymous)).await.0, 200);
    assert_eq!(listed(&server, "bob").await, vec![bob.token.clone()]);

    let (status, body) = send(backend(&server, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "user": "alice", "ended": 0 }),
        "nothing left to end"
    );
    server.stop().await;
}

//! The backend API over Redis: shared by two instances, during an outage, and a logout
//! everywhere that must hold through a later outage and a Redis restarted empty.

use super::*;
use crate::harness::resynced;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_users_sessions_through_redis() {
    let redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    assert_eq!(redis_check(&one).await, "ok");
    assert_eq!(redis_check(&two).await, "ok");

    let on_one = login(&one, "ana@example.com", json!({ "device": "laptop" })).await;
    two.clock.advance(MIN);
    let on_two = login(&two, "ana@example.com", json!({ "device": "phone" })).await;
    let bob = login(&one, "bob", Value::Null).await;

    // Instance two sees the session instance one created, and lists both, oldest first.
    let (status, body) = read(&two, &on_one.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["user"], "ana@example.com");
    assert_eq!(body["session"]["data"], json!({ "device": "laptop" }));
    assert_eq!(
        listed(&two, "ana%40example.com").await,
        vec![on_one.token.clone(), on_two.token.clone()]
    );
    assert_eq!(keepalive(&one.base, Some(&on_one.cookie)).await.0, 200);

    // Logged out everywhere through instance two.
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("ana@example.com"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "ana@example.com", "ended": 2 }));
    for server in [&one, &two] {
        for session in [&on_one, &on_two] {
            let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
            assert_eq!(status, 401, "{} on {}: {body}", session.token, server.base);
        }
    }
    assert!(listed(&one, "ana@example.com").await.is_empty());
    assert_eq!(
        keepalive(&one.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert_eq!(keepalive(&two.base, Some(&bob.cookie)).await.0, 200);
    one.stop().await;
    two.stop().await;
}

/// Both instances see Redis as `state` (`"ok"` again only once their re-sync is done).
async fn both_see_redis(one: &TestServer, two: &TestServer, state: &str) {
    within(
        Duration::from_secs(5),
        &format!("both instances see Redis {state}"),
        || async { redis_check(one).await == state && redis_check(two).await == state },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_a_user_out_while_redis_is_down_answers_503_until_it_is_back() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let on_one = [
        login(&one, "alice", Value::Null).await,
        login(&one, "alice", Value::Null).await,
    ];
    let on_two = login(&two, "alice", Value::Null).await;
    let bob = login(&one, "bob", Value::Null).await;

    redis.kill();
    both_see_redis(&one, &two, "offline").await;
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_error(
        &(status, body.clone()),
        503,
        "shared_store_offline",
        "end all offline",
    );
    assert_eq!(body["user"], "alice", "{body}");
    assert_eq!(body["ended"], 2, "the sessions this instance holds: {body}");
    for session in &on_one {
        assert_eq!(keepalive(&one.base, Some(&session.cookie)).await.0, 401);
    }
    assert_eq!(
        keepalive(&one.base, Some(&bob.cookie)).await.0,
        200,
        "bob survives"
    );
    assert!(listed(&one, "alice").await.is_empty());
    assert_eq!(
        keepalive(&two.base, Some(&on_two.cookie)).await.0,
        200,
        "held by the other instance only, out of reach: the reason for the 503"
    );
    // The caller retries: still incomplete while Redis is down, nothing left here.
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_error(
        &(status, body.clone()),
        503,
        "shared_store_offline",
        "retry offline",
    );
    assert_eq!(body["ended"], 0, "{body}");

    // Redis returns (empty); once both instances re-synced, the retry reaches every session.
    redis.start_again();
    both_see_redis(&one, &two, "ok").await;
    let (status, body) = send(backend(&one, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "user": "alice", "ended": 1 }),
        "the other instance's session"
    );
    for server in [&one, &two] {
        for session in on_one.iter().chain([&on_two]) {
            let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
            assert_eq!(status, 401, "{} on {}: {body}", session.token, server.base);
        }
        assert_eq!(
            keepalive(&server.base, Some(&bob.cookie)).await.0,
            200,
            "bob survives"
        );
    }
    one.stop().await;
    two.stop().await;
}

/// "Log out everywhere" answered 200 through instance two. Instance one still holds its copy
/// of the session it created; when Redis then goes down, that copy must not sign the user back
/// in (instance one hears the logout on Redis's logout channel, or finds its marker, and ends
/// its copy). The outage comes once it has: a Redis killed while the message is still on its
/// way cannot deliver it (docs/redis.md, "What can still slip").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_everywhere_holds_on_every_instance_during_a_later_outage() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let alice = login(&one, "alice", Value::Null).await;
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1, "{body}");
    within(
        Duration::from_secs(3),
        "instance one ends its copy",
        || async {
            metrics(&one.base)
                .await
                .contains("keepalive_redis_remote_logouts_total 1\n")
        },
    )
    .await;

    redis.kill();
    both_see_redis(&one, &two, "offline").await;
    let (status, body) = keepalive(&one.base, Some(&alice.cookie)).await;
    assert_eq!(
        status, 401,
        "a logged-out session revived by the outage: {body}"
    );
    let refused = answer(auth(&one, Method::GET, Some(&alice.cookie)).await).await;
    assert_error(
        &refused,
        401,
        "session_expired",
        "forward auth on instance one",
    );
    assert_error(
        &read(&one, &alice.token).await,
        404,
        "session_not_found",
        "backend read",
    );
    assert!(listed(&one, "alice").await.is_empty());
    one.stop().await;
    two.stop().await;
}

/// "Log out everywhere" answered 200 through instance two, then Redis restarts empty. Instance
/// one, which created the session and still holds its copy, writes every live local session
/// back: the logout must not be undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_everywhere_survives_redis_restarting_empty() {
    let mut redis = RedisServer::start();
    let one = start_with_redis(&redis.url()).await;
    let two = start_with_redis(&redis.url()).await;
    let alice = login(&one, "alice", Value::Null).await;
    // Live on instance one: the re-sync after the restart writes it back, which shows it ran.
    let control = login(&one, "bob", Value::Null).await;
    let (status, body) = send(backend(&two, Method::DELETE, &user_path("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 1, "{body}");
    assert_eq!(keepalive(&two.base, Some(&alice.cookie)).await.0, 401);

    redis.restart_empty();
    let control_key = format!("keepalive:{{{}}}", control.token);
    within(Duration::from_secs(5), "instance one re-synced", || {
        let written = redis.exists(&control_key);
        let one = &one;
        async move { written && redis_check(one).await == "ok" }
    })
    .await;
    // Two's "ok" counts only once it noticed the restart too (it may not have probed yet).
    resynced(&two.base, 1).await;
    let revived = listed(&two, "alice").await;
    assert!(revived.is_empty(), "alice signed back in: {revived:?}");
    for server in [&one, &two] {
        let (status, body) = keepalive(&server.base, Some(&alice.cookie)).await;
        assert_eq!(status, 401, "revived on {}: {body}", server.base);
    }
    assert_eq!(keepalive(&two.base, Some(&control.cookie)).await.0, 200);
    one.stop().await;
    two.stop().await;
}

//! The Express application's Redis killed and restarted empty under keepalive's load: the
//! sessions keepalive served keep answering 200 through the outage, and afterwards they are
//! back in Redis with their TTLs and their data, so the application finds them again. And a
//! Redis that lost its data: an instance without a copy of a session does not sign its user out
//! while the instance that holds the copy has not put it back yet. And an instance that crashed:
//! its copies do not bring back a session the application destroyed while it was down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keepalive_testkit::redis::RedisServer;

use super::{ExpressApp, MAX_AGE_MS, OLD_SECRET, keepalive, now_ms, ping, session_key};
use crate::harness::{TestServer, resynced, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keepalive_served_survive_redis_killed_and_restarted_empty() {
    let mut redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    let mut cookies = Vec::new();
    for user in ["ana", "bob", "carol", "dan", "eve"] {
        cookies.push(app.login(user).await);
    }
    let stored: Vec<Vec<u8>> = cookies
        .iter()
        .map(|c| redis.get(&session_key(c)).expect("stored"))
        .collect();

    // Each served once before the fault, however slow the machine: these are the sessions
    // keepalive served.
    for cookie in &cookies {
        assert_eq!(ping(&ka.base, cookie).await.0, 200);
    }
    // Every session kept alive every 50 ms until told to stop; every answer recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (base, cookies, stop) = (ka.base.clone(), cookies.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Acquire) {
                for cookie in &cookies {
                    let (status, _, body) = ping(&base, cookie).await;
                    answers.push((status, body["serverHealth"]["checks"]["redis"].clone()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tokio::task::block_in_place(|| redis.start_again());
    within(
        Duration::from_secs(10),
        "keepalive sees Redis again",
        || async { ping(&ka.base, &cookies[0]).await.2["serverHealth"]["checks"]["redis"] == "ok" },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let answers = load.await.expect("load");

    let offline = answers
        .iter()
        .filter(|(_, redis)| redis == "offline")
        .count();
    assert!(
        offline > 0,
        "the outage was served: {} answers",
        answers.len()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "failed keepalives: {failed:?}");

    // Back in the new, empty Redis: the application's own values with a TTL, and the
    // application finds its sessions again.
    for (cookie, value) in cookies.iter().zip(&stored) {
        let key = session_key(cookie);
        assert_eq!(
            redis.get(&key).as_ref(),
            Some(value),
            "{key}: written back byte for byte"
        );
        let pttl = redis.pttl(&key);
        assert!((1..=MAX_AGE_MS).contains(&pttl), "{key}: TTL {pttl} ms");
    }
    within(
        Duration::from_secs(10),
        "the application reads its sessions",
        || async { app.me(&cookies[0]).await.0 == 200 },
    )
    .await;
    for cookie in &cookies {
        assert_eq!(app.me(cookie).await.0, 200);
    }
}

/// The application's logouts leave no mark: a session gone from Redis looks destroyed. Right
/// after Redis lost its data, it may as well be one an instance holding a copy is about to put
/// back, so an instance without a copy answers 503 (the client retries) rather than 401, which
/// would sign its user out; once the holder put it back, every instance serves it, and once the
/// doubt is over a session the application destroyed is 401 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_yet_put_back_after_a_flush_is_not_signed_out() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let url = redis.url();
    let secrets = serde_json::json!([OLD_SECRET]).to_string();
    // In-process instances on a test clock that stands still at the real time (the sessions'
    // cookies carry real expiries): the doubt that follows a loss lasts as long as the test
    // needs. One notices the flush at its next probe and re-syncs;
    // two, which holds the session, only when a request comes.
    let instance = |probe: &'static str| {
        let vars = [
            ("REDIS_URL", url.as_str()),
            ("KEEPALIVE_SESSION_FORMAT", "express"),
            ("KEEPALIVE_EXPRESS_SECRETS", secrets.as_str()),
            ("KEEPALIVE_REDIS_PROBE_INTERVAL", probe),
        ];
        async move { TestServer::start_at(&vars, now_ms()).await }
    };
    let one = instance("100ms").await;
    let two = instance("30s").await;
    for server in [&one, &two] {
        within(
            Duration::from_secs(5),
            "the instance sees Redis",
            || async { redis_state(server).await == "ok" },
        )
        .await;
    }
    let held = app.login("held").await;
    let stored = redis.get(&session_key(&held)).expect("stored");
    assert_eq!(ping(&two.base, &held).await.0, 200);

    redis.flushall();
    resynced(&one.base, 1).await;
    let (status, _, body) = ping(&one.base, &held).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("shared_store_offline")),
        "503 until the holder puts it back: {body}"
    );

    // The holder finds the session missing, sees the flush and puts it back; then every
    // instance serves it, and the application has it as it was.
    let (status, _, body) = ping(&two.base, &held).await;
    assert_eq!(status, 200, "{body}");
    within(Duration::from_secs(5), "instance two re-synced", || async {
        redis_state(&two).await == "ok"
    })
    .await;
    assert_eq!(ping(&one.base, &held).await.0, 200);
    assert_eq!(redis.get(&session_key(&held)), Some(stored));
    assert_eq!(app.me(&held).await.0, 200);

    // Past the doubt, a session the application destroyed is over for an instance that never
    // held it: a new one, logged out in the application.
    let other = app.login("other").await;
    assert_eq!(app.logout(&other).await, 204);
    for server in [&one, &two] {
        server.clock.advance(Duration::from_secs(60));
    }
    // The notice two kept while it wrote back lapses in Redis's own time.
    within(
        Duration::from_secs(5),
        "the write-back notice lapsed",
        || async { !redis.exists("keepalive:writing-back") },
    )
    .await;
    assert_eq!(ping(&one.base, &other).await.0, 401);
    one.stop().await;
    two.stop().await;
}

/// What a keepalive answer without a session says of Redis.
async fn redis_state(server: &TestServer) -> String {
    let (_, body) = crate::harness::keepalive(&server.base, None).await;
    body["serverHealth"]["checks"]["redis"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An instance crashes holding copies of the application's sessions; while it is down the
/// application destroys one; it starts again on the same local store and the same Redis, which
/// kept its data: the other session is kept alive as before, the destroyed one stays destroyed
/// (an Express logout leaves no mark, so only knowing that Redis kept its data tells it from a
/// session Redis lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_destroyed_while_an_instance_was_down_is_not_brought_back() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    let kept = app.login("kept").await;
    let destroyed = app.login("destroyed").await;
    for cookie in [&kept, &destroyed] {
        assert_eq!(ping(&ka.base, cookie).await.0, 200);
    }
    // The copies reach the disk within the local store's flush interval (1 s at most).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ka.signal(nix::sys::signal::Signal::SIGKILL);
    drop(ka);

    assert_eq!(app.logout(&destroyed).await, 204);
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    within(Duration::from_secs(10), "keepalive sees Redis", || async {
        crate::harness::keepalive(&ka.base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
    })
    .await;
    assert!(
        !redis.exists(&session_key(&destroyed)),
        "the restart brought back a session the application destroyed"
    );
    assert_eq!(ping(&ka.base, &destroyed).await.0, 401);
    assert_eq!(app.me(&destroyed).await.0, 401);
    assert_eq!(ping(&ka.base, &kept).await.0, 200);
    assert_eq!(app.me(&kept).await.0, 200);
}

//! The Express application's Redis killed and restarted empty under keepalive's load: the
//! sessions keepalive served keep answering 200 through the outage, and afterwards they are
//! back in Redis with their TTLs and their data, so the application finds them again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keepalive_testkit::redis::RedisServer;

use super::{ExpressApp, MAX_AGE_MS, OLD_SECRET, keepalive, ping, session_key};
use crate::harness::within;

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

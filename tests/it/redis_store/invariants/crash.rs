//! An instance that crashed serves as soon as it is up: what it must write back to Redis (every
//! local session, since it cannot tell what changed before the crash) goes back in the
//! background, and each request writes its own session back first. The walk is slowed to a
//! crawl here (`KEEPALIVE_REDIS_WRITE_BACK_RATE=1`), so every request below reaches the
//! instance before the walk reaches its session.

use super::*;
use crate::harness::{health, logout};

const HEALTH_TOKEN: &str = "health-test-token-0123456789";

/// The data of a session, read through the backend API of the instance at `base`.
async fn data_at(base: &str, session: &Session) -> (u16, Value) {
    let request = client()
        .get(format!("{base}{}", session_path(session)))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"));
    let (status, body) = status_and_body(request).await;
    (status, body["session"]["data"].clone())
}

/// `PATCH`es a session's data through the backend API of the instance at `base`.
async fn set_data_at(base: &str, session: &Session, data: Value) -> u16 {
    let request = client()
        .patch(format!("{base}{}", session_path(session)))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .json(&json!({ "data": data }));
    status_and_body(request).await.0
}

/// The Redis check of `/health`, as its token holder sees it.
async fn redis_health(base: &str) -> Value {
    health(base, HEALTH_TOKEN).await["checks"]["redis:connection"][0].clone()
}

fn writing_back(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("keepalive_redis_writing_back "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_instance_serves_at_once_and_writes_back_meanwhile() {
    let redis = RedisServer::start();
    let url = redis.url();
    let vars = |rate| {
        [
            ("REDIS_URL", url.as_str()),
            ("KEEPALIVE_REDIS_CONNECT_TIMEOUT", "200ms"),
            ("KEEPALIVE_BACKEND_TOKEN", TOKEN),
            ("KEEPALIVE_HEALTH_TOKEN", HEALTH_TOKEN),
            ("KEEPALIVE_REDIS_WRITE_BACK_RATE", rate),
        ]
    };
    let (crawl, fast) = (vars("1"), vars("0"));
    let (dir_one, dir_two) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let one = Process::start(dir_one.path(), &crawl);
    let two = Process::start(dir_two.path(), &crawl);

    // Sessions instance one holds copies of, while Redis answers.
    let ended_here = session_at(&one.base).await;
    let ended_there = session_at(&one.base).await;
    let updated = session_at(&one.base).await;
    assert_eq!(
        set_data_at(&one.base, &updated, json!({"step": "before"})).await,
        200
    );
    // The copies reach instance one's file with its next batch.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // An outage during which instance one logs a session out, changes another's data and
    // creates two, then crashes before Redis returns: none of it reached Redis.
    redis.freeze();
    assert_eq!(logout(&one.base, &ended_here.cookie).await, 204);
    assert_eq!(
        set_data_at(&one.base, &updated, json!({"step": "outage"})).await,
        200
    );
    let created = session_at(&one.base).await;
    let untouched = session_at(&one.base).await;
    one.signal(nix::sys::signal::Signal::SIGKILL);
    drop(one);
    redis.thaw();
    within(
        Duration::from_secs(5),
        "instance two sees Redis again",
        || async { redis_state_at(&two.base).await == "ok" },
    )
    .await;
    // Meanwhile another instance logs out a session instance one still holds live.
    assert_eq!(logout(&two.base, &ended_there.cookie).await, 204);

    // Back: it serves from Redis at once, and says it writes back in the background.
    let mut one = Process::start(dir_one.path(), &crawl);
    let ready = client()
        .get(format!("{}/readyz", one.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(redis_state_at(&one.base).await, "ok");
    assert_eq!(writing_back(&metrics(&one.base).await), Some(1));
    let health = redis_health(&one.base).await;
    assert_eq!(health["status"], "pass", "{health}");
    assert!(
        health["output"]
            .as_str()
            .is_some_and(|o| o.contains("writing its local sessions back")),
        "{health}"
    );
    let lines = one.lines_until("in the background while serving", Duration::from_secs(5));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("in the background while serving")),
        "{lines:#?}"
    );

    // No logout revived: the one made here during the outage reaches Redis before the
    // session does, and the one made elsewhere holds.
    assert_eq!(kept_alive_at(&one.base, &ended_here).await, 401);
    assert!(!redis.exists(&ended_here.key()) && redis.exists(&ended_here.marker()));
    assert_eq!(kept_alive_at(&one.base, &ended_there).await, 401);
    assert!(!redis.exists(&ended_there.key()));
    // The newest activity wins: the data changed during the outage, not Redis's older copy.
    assert_eq!(
        data_at(&one.base, &updated).await,
        (200, json!({"step": "outage"}))
    );
    assert_eq!(
        data_at(&two.base, &updated).await,
        (200, json!({"step": "outage"})),
        "in Redis for every instance"
    );
    // A session created during the outage is served, and in Redis from then on.
    assert_eq!(kept_alive_at(&one.base, &created).await, 200);
    assert!(redis.exists(&created.key()));
    assert_eq!(kept_alive_at(&two.base, &created).await, 200);
    // One the walk has not reached yet is not in Redis, but no instance denies it: the
    // notice that one instance writes back makes another answer 503 (retried), not 401.
    assert!(!redis.exists(&untouched.key()));
    assert_eq!(kept_alive_at(&two.base, &untouched).await, 503);

    // A stop before the walk completes leaves no note that Redis has everything...
    let lines = {
        one.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(one.wait(Duration::from_secs(10)), Some(0));
        one.drain_lines()
    };
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("every local change is in Redis")),
        "{lines:#?}"
    );
    // ...so the next start walks again, here at full speed, and completes.
    let one = Process::start(dir_one.path(), &fast);
    all_in_redis(
        &redis,
        &[untouched.key()],
        Duration::from_secs(5),
        "the walk writes back the session nobody asked for",
    )
    .await;
    within(
        Duration::from_secs(5),
        "the background write-back reported done",
        || async { writing_back(&metrics(&one.base).await) == Some(0) },
    )
    .await;
    assert!(redis_health(&one.base).await.get("output").is_none());
    assert_eq!(kept_alive_at(&two.base, &untouched).await, 200);
    for base in [&one.base, &two.base] {
        assert_eq!(kept_alive_at(base, &ended_here).await, 401);
        assert_eq!(kept_alive_at(base, &ended_there).await, 401);
        assert_eq!(data_at(base, &updated).await.1, json!({"step": "outage"}));
    }
}

async fn redis_state_at(base: &str) -> String {
    let (_, body) = keepalive(base, None).await;
    body["serverHealth"]["checks"]["redis"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

//! Redis as the shared store, with real faults: Redis killed, frozen (SIGSTOP), restarted
//! empty, a wrong password, nothing listening at start, two instances sharing one Redis
//! across an outage, and a logout made while one of them was stopped. Every redis-server is
//! started by the harness on a free port.

use std::time::{Duration, Instant};

use crate::harness::{
    Process, TestServer, command, create_session, health, keepalive, logout, metrics, within,
};
use keepalive_testkit::ports::free_port;
use keepalive_testkit::process::wait_or_kill;
use keepalive_testkit::redis::RedisServer;

const TOKEN: &str = "test-health-token-0123456789";

async fn start(url: &str) -> TestServer {
    TestServer::start(&[("REDIS_URL", url), ("KEEPALIVE_HEALTH_TOKEN", TOKEN)]).await
}

/// The Redis check as `/health` reports it (no traffic to the store involved).
async fn redis_check(server: &TestServer) -> String {
    health(&server.base, TOKEN).await["checks"]["redis:connection"][0]["observedValue"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A keepalive that must succeed; returns its latency.
async fn timed_keepalive(base: &str, cookie: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = keepalive(base, Some(cookie)).await;
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}

fn session_key(cookie: &str) -> String {
    format!("keepalive:{{{}}}", cookie.split_once('=').expect("pair").1)
}

/// Waits up to `limit` for the session of `cookie` to be in Redis (`what` names the wait).
async fn in_redis_within(redis: &RedisServer, cookie: &str, limit: Duration, what: &str) {
    within(limit, what, || {
        let there = redis.exists(&session_key(cookie));
        async move { there }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_back_nothing_is_lost() {
    let mut redis = RedisServer::start();
    let server = start(&redis.url()).await;
    assert_eq!(redis_check(&server).await, "ok");
    let before = create_session(&server.base).await;
    let ended = create_session(&server.base).await;
    assert!(
        redis.exists(&session_key(&before)),
        "sessions live in Redis"
    );

    redis.kill();
    let detected = within(
        Duration::from_secs(1),
        "redis offline after the kill",
        || async { redis_check(&server).await == "offline" },
    )
    .await;
    eprintln!("offline detected {detected:?} after the kill, without traffic");
    let (_, body) = keepalive(&server.base, Some(&before)).await;
    assert_eq!(body["serverHealth"]["status"], "degraded");
    assert_eq!(body["serverHealth"]["checks"]["redis"], "offline");

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(timed_keepalive(&server.base, &before).await);
    }
    assert!(
        slowest < Duration::from_millis(600),
        "keepalives during the outage took up to {slowest:?}"
    );
    let during = create_session(&server.base).await;
    assert_eq!(logout(&server.base, &ended).await, 204);

    redis.start_again();
    let back = within(Duration::from_secs(2), "redis ok again", || async {
        redis_check(&server).await == "ok"
    })
    .await;
    eprintln!("healthy again {back:?} after Redis came back");
    // Redis came back empty: every live session this instance holds was written back, the
    // one created during the outage included; the logout left its marker.
    assert!(
        redis.exists(&session_key(&before)),
        "session from before the outage written back"
    );
    assert!(
        redis.exists(&session_key(&during)),
        "session created during the outage written back"
    );
    assert!(
        !redis.exists(&session_key(&ended)),
        "the logout stays a logout"
    );
    assert_eq!(
        redis.keys(&format!("{}:ended", session_key(&ended))).len(),
        1
    );
    assert_eq!(keepalive(&server.base, Some(&ended)).await.0, 401);
    assert!(timed_keepalive(&server.base, &during).await < Duration::from_secs(1));

    let metrics = metrics(&server.base).await;
    assert!(metrics.contains("keepalive_redis_up 1"), "{metrics}");
    assert!(
        metrics.contains("keepalive_redis_outages_total 1"),
        "{metrics}"
    );
    // Counted by session, not by write: the re-sync writes the logout twice (once as a kept
    // logout, once as a change of the outage) and tries both sessions twice.
    assert!(
        metrics.contains("keepalive_redis_resynced_sessions_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keepalive_redis_resynced_logouts_total 1\n"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_never_holds_a_keepalive() {
    let redis = RedisServer::start();
    let server = start(&redis.url()).await;
    let cookie = create_session(&server.base).await;
    let run_id = redis.run_id();

    redis.freeze();
    let frozen_at = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(timed_keepalive(&server.base, &cookie).await);
    }
    assert!(
        slowest < Duration::from_millis(600),
        "keepalives against a frozen Redis took up to {slowest:?}"
    );
    let (_, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(body["serverHealth"]["checks"]["redis"], "offline");
    assert!(frozen_at.elapsed() < Duration::from_secs(5));
    let during = create_session(&server.base).await;

    redis.thaw();
    within(Duration::from_secs(2), "redis ok after SIGCONT", || async {
        redis_check(&server).await == "ok"
    })
    .await;
    assert_eq!(redis.run_id(), run_id, "the same Redis, not a restart");
    assert!(
        redis.exists(&session_key(&during)),
        "session created while Redis was frozen written back"
    );
    let stored = redis.exists(&session_key(&cookie));
    let (_, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(body["serverHealth"]["status"], "healthy");
    assert!(stored);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_the_live_sessions_back() {
    let mut redis = RedisServer::start();
    let server = start(&redis.url()).await;
    let mut cookies = Vec::new();
    for _ in 0..30 {
        cookies.push(create_session(&server.base).await);
    }
    let old_run_id = redis.run_id();
    redis.restart_empty();
    assert_ne!(redis.run_id(), old_run_id);
    assert!(
        redis.keys("keepalive:*").is_empty(),
        "Redis came back empty"
    );
    within(
        Duration::from_secs(3),
        "sessions written back to the empty Redis",
        || {
            let count = cookies
                .iter()
                .filter(|c| redis.exists(&session_key(c)))
                .count();
            async move { count == 30 }
        },
    )
    .await;
    for cookie in &cookies {
        assert_eq!(keepalive(&server.base, Some(cookie)).await.0, 200);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_starts_degraded_and_serves_locally() {
    let redis = RedisServer::start_with_password("right-password");
    let url = format!("redis://:wrong-password@127.0.0.1:{}/0", redis.port());
    let server = start(&url).await;
    assert_eq!(redis_check(&server).await, "offline");
    let cookie = create_session(&server.base).await;
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["serverHealth"]["status"], "degraded");
    assert!(
        redis.keys("keepalive:*").is_empty(),
        "nothing reached the Redis we cannot log into"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_at_start_then_redis_appears() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = start(&url).await;
    assert_eq!(redis_check(&server).await, "offline");
    let cookie = create_session(&server.base).await;
    assert_eq!(keepalive(&server.base, Some(&cookie)).await.0, 200);

    let redis = RedisServer::start_on(port);
    within(
        Duration::from_secs(2),
        "redis ok once it is started",
        || async { redis_check(&server).await == "ok" },
    )
    .await;
    assert!(
        redis.exists(&session_key(&cookie)),
        "the session created before Redis existed is written back"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_also_after_an_outage() {
    let mut redis = RedisServer::start();
    let one = start(&redis.url()).await;
    let two = start(&redis.url()).await;

    // Created on one, kept alive and ended through the other.
    let cookie = create_session(&one.base).await;
    assert_eq!(keepalive(&two.base, Some(&cookie)).await.0, 200);
    assert_eq!(logout(&two.base, &cookie).await, 204);
    assert_eq!(
        keepalive(&one.base, Some(&cookie)).await.0,
        401,
        "a logout on one instance holds on the other"
    );

    // Created on one during an outage, then used through the other after the re-sync.
    redis.kill();
    within(
        Duration::from_secs(2),
        "instance one sees the outage",
        || async { redis_check(&one).await == "offline" },
    )
    .await;
    let during = create_session(&one.base).await;
    assert_eq!(keepalive(&one.base, Some(&during)).await.0, 200);
    redis.start_again();
    within(
        Duration::from_secs(3),
        "both instances back on Redis",
        || async { redis_check(&one).await == "ok" && redis_check(&two).await == "ok" },
    )
    .await;
    assert_eq!(
        keepalive(&two.base, Some(&during)).await.0,
        200,
        "instance two serves the session created during the outage"
    );
    assert_eq!(logout(&two.base, &during).await, 204);
    assert_eq!(
        keepalive(&one.base, Some(&during)).await.0,
        401,
        "and its logout holds on instance one"
    );
    one.stop().await;
    two.stop().await;
}

#[test]
fn transitions_are_logged_once_each() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let mut process = Process::start(
        dir.path(),
        &[("REDIS_URL", &url), ("KEEPALIVE_HEALTH_INTERVAL", "50ms")],
    );
    redis.kill();
    std::thread::sleep(Duration::from_millis(2500));
    redis.start_again();
    std::thread::sleep(Duration::from_millis(2500));
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    let lines = process.drain_lines();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("[redis] connection lost"), 1, "{lines:#?}");
    let lost = lines
        .iter()
        .find(|l| l.contains("[redis] connection lost"))
        .expect("logged");
    // The reason, in words, once: a killed Redis drops the connection or refuses the next.
    assert!(
        lost.contains("connection dropped") || lost.contains("connection refused"),
        "{lost}"
    );
    assert_eq!(lost.matches("connection").count(), 2, "{lost}");
    assert_eq!(count("[redis] degraded mode on"), 1, "{lines:#?}");
    assert_eq!(
        count("[redis] re-sync done"),
        2,
        "once at start, once after the outage: {lines:#?}"
    );
    assert_eq!(
        count("Server health: degraded {redis: offline, memory: ok}"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count("Server health: healthy {redis: ok, memory: ok}"),
        2,
        "at start and after: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("\"level\":\"ERROR\"")),
        "{lines:#?}"
    );
}

/// The variables of an instance started as a process on `url`, quick to give up connecting.
fn process_vars(url: &str) -> [(&str, &str); 2] {
    [
        ("REDIS_URL", url),
        ("KEEPALIVE_REDIS_CONNECT_TIMEOUT", "200ms"),
    ]
}

/// A logout made during an outage is on disk: even if the instance restarts before Redis
/// returns, the logout reaches Redis and the session stays ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_an_outage_survives_a_restart_of_the_instance() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let vars = process_vars(&url);
    let process = Process::start(dir.path(), &vars);
    let ended = create_session(&process.base).await;
    let kept = create_session(&process.base).await;
    assert!(redis.exists(&session_key(&ended)));

    redis.freeze();
    assert_eq!(logout(&process.base, &ended).await, 204);
    process.signal(nix::sys::signal::Signal::SIGKILL);
    drop(process);

    let process = Process::start(dir.path(), &vars);
    assert_eq!(keepalive(&process.base, Some(&ended)).await.0, 401);
    redis.thaw();
    let base = process.base.clone();
    within(
        Duration::from_secs(3),
        "the logout written back to Redis",
        || {
            let gone = !redis.exists(&session_key(&ended));
            async move { gone }
        },
    )
    .await;
    assert_eq!(
        redis.keys(&format!("{}:ended", session_key(&ended))).len(),
        1
    );
    assert_eq!(keepalive(&base, Some(&ended)).await.0, 401);
    assert_eq!(keepalive(&base, Some(&kept)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_made_while_an_instance_was_down_holds_there_in_a_later_outage() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let vars = process_vars(&url);
    let (dir_one, dir_two) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut one = Process::start(dir_one.path(), &vars);
    let two = Process::start(dir_two.path(), &vars);
    let ended = create_session(&one.base).await;
    let kept = create_session(&one.base).await;

    // Instance one is stopped (a rolling restart): it cannot hear the logout made meanwhile
    // through instance two, and keeps its copy of that session.
    one.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(one.wait(Duration::from_secs(10)), Some(0));
    drop(one);
    assert_eq!(logout(&two.base, &ended).await, 204);

    // Back, it finds the logout by its marker and ends its copy...
    let one = Process::start(dir_one.path(), &vars);
    within(
        Duration::from_secs(3),
        "instance one ends its copy of the session logged out while it was down",
        || async {
            metrics(&one.base)
                .await
                .contains("keepalive_redis_remote_logouts_total 1\n")
        },
    )
    .await;

    // ...so an outage that begins before that session asks again (when instance one answers
    // from its copies alone) cannot revive it. The other session is served from its copy.
    redis.kill();
    assert_eq!(
        keepalive(&one.base, Some(&ended)).await.0,
        401,
        "a logout made while the instance was down holds there in an outage"
    );
    assert_eq!(keepalive(&one.base, Some(&kept)).await.0, 200);
}

/// Deletes a session's key behind the instances' back.
fn del(redis: &RedisServer, cookie: &str) {
    let removed: i64 = redis.query(redis::cmd("DEL").arg(session_key(cookie)), "DEL");
    assert_eq!(removed, 1, "{cookie} was in Redis");
}

/// Stops an instance with SIGTERM and returns its log.
fn stop_cleanly(mut process: Process) -> Vec<String> {
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    process.drain_lines()
}

/// A clean stop while Redis answers records that Redis has every change, so the next start
/// with the same Redis writes back only what changed after the stop instead of every live
/// session. A crash, a Redis restarted meanwhile or a stop during an outage leave no such
/// record, and every live session is written back as before. A key deleted behind the
/// instance's back shows which: only a full write-back brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_writes_back_only_what_changed_after_the_stop() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let vars = process_vars(&url);

    let process = Process::start(dir.path(), &vars);
    let mut cookies = Vec::new();
    for _ in 0..3 {
        cookies.push(create_session(&process.base).await);
    }
    // Served right before the stop: Redis has them, so the next start does not check them
    // again (an outage's start has a margin for that; a clean stop needs none).
    let lines = stop_cleanly(process);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[redis] every local change is in Redis")),
        "{lines:#?}"
    );

    // Clean stop, same Redis: nothing written back, so the deleted key stays deleted.
    del(&redis, &cookies[0]);
    let mut process = Process::start(dir.path(), &vars);
    let lines = process.lines_until(
        "[redis] connected; writing back what changed since this instance last stopped",
        Duration::from_secs(5),
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "[redis] connected; writing back what changed since this instance last stopped"
        )),
        "{lines:#?}"
    );
    assert!(
        !redis.exists(&session_key(&cookies[0])),
        "a clean restart with the same Redis wrote an old session back"
    );
    assert_eq!(keepalive(&process.base, Some(&cookies[1])).await.0, 200);

    // A crash leaves no record: every live local session is written back, in the background
    // since Redis kept its data set.
    process.signal(nix::sys::signal::Signal::SIGKILL);
    drop(process);
    let mut process = Process::start(dir.path(), &vars);
    let lines = process.lines_until("in the background while serving", Duration::from_secs(5));
    assert!(
        lines.iter().any(|l| l.contains(
            "every live local session (this instance did not stop cleanly; Redis kept its data), in the background while serving"
        )),
        "{lines:#?}"
    );
    in_redis_within(
        &redis,
        &cookies[0],
        Duration::from_secs(3),
        "the start after a crash writes every live session back",
    )
    .await;

    // Clean stop, but Redis restarted empty meanwhile (another run id): all of them again,
    // once the instance listens (it serves from its local store until then).
    stop_cleanly(process);
    redis.restart_empty();
    let process = Process::start(dir.path(), &vars);
    within(
        Duration::from_secs(3),
        "a start on a Redis restarted empty writes every live session back",
        || {
            let missing = cookies
                .iter()
                .filter(|c| !redis.exists(&session_key(c)))
                .count();
            async move { missing == 0 }
        },
    )
    .await;

    // Stopped during an outage: no record, every live session is written back once Redis
    // answers again.
    redis.freeze();
    let during = create_session(&process.base).await;
    let lines = stop_cleanly(process);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("[redis] every local change is in Redis")),
        "{lines:#?}"
    );
    redis.thaw();
    del(&redis, &cookies[2]);
    let process = Process::start(dir.path(), &vars);
    within(
        Duration::from_secs(3),
        "the start after a stop during an outage writes every live session back",
        || {
            let there =
                redis.exists(&session_key(&during)) && redis.exists(&session_key(&cookies[2]));
            async move { there }
        },
    )
    .await;

    // Clean stop, and the same Redis does not answer at start: a session created before it
    // does reaches it, the old ones are left as Redis has them.
    stop_cleanly(process);
    del(&redis, &cookies[1]);
    redis.freeze();
    let process = Process::start(dir.path(), &vars);
    let offline = create_session(&process.base).await;
    redis.thaw();
    in_redis_within(
        &redis,
        &offline,
        Duration::from_secs(3),
        "the session created while Redis was frozen at start written back",
    )
    .await;
    assert!(
        !redis.exists(&session_key(&cookies[1])),
        "an old session was written back to the same Redis"
    );

    // Clean stop, then the same Redis under another key prefix (another database would do
    // the same): its run id is the same, but it holds none of the sessions, so every live one
    // is written back there.
    stop_cleanly(process);
    let mut moved = process_vars(&url).to_vec();
    moved.push(("KEEPALIVE_REDIS_PREFIX", "moved:"));
    let process = Process::start(dir.path(), &moved);
    let moved_keys: Vec<String> = [&offline, &cookies[0], &cookies[2]]
        .iter()
        .map(|cookie| format!("moved:{{{}}}", cookie.split_once('=').expect("pair").1))
        .collect();
    within(
        Duration::from_secs(3),
        "every live session written back under the new prefix",
        || {
            let missing = moved_keys.iter().filter(|k| !redis.exists(k)).count();
            async move { missing == 0 }
        },
    )
    .await;
    stop_cleanly(process);
}

/// A SIGTERM that arrives while the instance is still starting (here its first connect waits
/// on a frozen Redis) stops it cleanly once it is up, instead of killing it outright: the
/// handlers are installed before the start, not when the server first waits for a signal.
#[test]
fn a_sigterm_while_starting_stops_cleanly() {
    use std::io::BufRead;
    let redis = RedisServer::start();
    redis.freeze();
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, data_dir) = (redis.url(), dir.path().display().to_string());
    let mut child = command(&[
        ("KEEPALIVE_BIND", "127.0.0.1"),
        ("PORT", "0"),
        ("KEEPALIVE_LOG_FORMAT", "json"),
        ("KEEPALIVE_DATA_DIR", &data_dir),
        ("REDIS_URL", &url),
        ("KEEPALIVE_REDIS_CONNECT_TIMEOUT", "1s"),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Logged just before the first connect, which then waits for the frozen Redis.
    let starting = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("sessions live in Redis"));
    assert!(starting.is_some(), "the server logged its Redis target");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let status = wait_or_kill(&mut child, Duration::from_secs(15)).expect("exited by itself");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    redis.thaw();
    assert_eq!(status.code(), Some(0), "{status:?}: {rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:#?}"
    );
    assert!(rest.iter().any(|l| l.contains("stopped; sessions flushed")));
}

/// A stop does not wait on Redis: neither for a probe of a Redis that does not answer (here
/// frozen, with an operation timeout of 10 s) nor for a reconnection under way (in production,
/// the walk of every local session that a crash or a Redis that lost its data calls for,
/// seconds a million); the same race against the stop covers both. What a probe or a
/// reconnection cut short left undone, the next start does: the session created during the
/// outage before it is in Redis after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_on_a_frozen_redis() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let mut vars = process_vars(&url).to_vec();
    vars.extend([
        ("KEEPALIVE_REDIS_TIMEOUT", "10s"),
        ("KEEPALIVE_REDIS_BACKOFF_MAX", "200ms"),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms"),
    ]);
    let mut process = Process::start(dir.path(), &vars);
    redis.kill();
    let created = create_session(&process.base).await;
    redis.start_again();
    let base = process.base.clone();
    within(Duration::from_secs(10), "Redis back", || async {
        keepalive(&base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
    })
    .await;
    redis.freeze();
    // The next probe (every 100 ms) waits for the frozen Redis's answer.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(15)), Some(0));
    let stopped_in = started.elapsed();
    let lines = process.drain_lines();
    assert!(
        stopped_in < Duration::from_secs(4),
        "stopped {stopped_in:?} after SIGTERM: {lines:#?}"
    );
    drop(process);

    redis.thaw();
    let process = Process::start(dir.path(), &vars);
    in_redis_within(
        &redis,
        &created,
        Duration::from_secs(10),
        "the session created during the outage written back to Redis",
    )
    .await;
    assert_eq!(keepalive(&process.base, Some(&created)).await.0, 200);
    stop_cleanly(process);
}

/// Waits until `base` has ended `count` copies after other instances' logouts.
async fn remote_logouts_reach(base: &str, count: u64, what: &str) {
    let line = format!("keepalive_redis_remote_logouts_total {count}\n");
    within(Duration::from_secs(5), what, || async {
        metrics(base).await.contains(&line)
    })
    .await;
}

/// The logouts an instance missed while it was stopped are read from the capped record of
/// logouts at its restart, from where it stood: the Redis commands grow with those logouts,
/// not with the copies it holds. When the record has dropped logouts past its place, it looks
/// up every copy's mark instead, and misses none either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_logouts_are_read_from_the_record_not_looked_up_one_by_one() {
    const COPIES: usize = 200;
    let redis = RedisServer::start();
    let url = redis.url();
    let vars = process_vars(&url);
    let (dir_one, dir_two) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let one = Process::start(dir_one.path(), &vars);
    let two = Process::start(dir_two.path(), &vars);
    let mut cookies = Vec::new();
    for _ in 0..COPIES {
        cookies.push(create_session(&one.base).await);
    }
    // A clean restart writes none of them back (a merge would ask EXISTS too), however
    // lately they were served.

    // Stopped (a rolling restart) while another instance logs three of them out.
    stop_cleanly(one);
    for cookie in &cookies[..3] {
        assert_eq!(logout(&two.base, cookie).await, 204);
    }
    let (exists, xrange) = (redis.calls("exists"), redis.calls("xrange"));
    let mut one = Process::start(dir_one.path(), &vars);
    remote_logouts_reach(&one.base, 3, "the three missed logouts ended their copies").await;
    let lines = one.lines_until("read from the record of logouts", Duration::from_secs(5));
    let looked_up = redis.calls("exists") - exists;
    assert!(
        looked_up < 20,
        "{looked_up} EXISTS for 3 missed logouts and {COPIES} copies: {lines:#?}"
    );
    assert!(redis.calls("xrange") > xrange, "the record was read");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("read from the record of logouts")),
        "{lines:#?}"
    );
    for cookie in &cookies[..3] {
        assert_eq!(keepalive(&one.base, Some(cookie)).await.0, 401);
    }

    // Stopped again; two more logouts, then the record drops everything it holds (as its cap
    // would after many logouts): the place has fallen off, every copy is looked up.
    stop_cleanly(one);
    for cookie in &cookies[3..5] {
        assert_eq!(logout(&two.base, cookie).await, 204);
    }
    let _: i64 = redis.query(
        redis::cmd("XTRIM")
            .arg("keepalive:logouts")
            .arg("MAXLEN")
            .arg(0),
        "XTRIM",
    );
    let exists = redis.calls("exists");
    let mut one = Process::start(dir_one.path(), &vars);
    remote_logouts_reach(
        &one.base,
        2,
        "the two logouts past the record found by their marks",
    )
    .await;
    // The copies end as the look-up finds them: its end is its log line.
    let mut lines = Vec::new();
    within(
        Duration::from_secs(5),
        "the look-up of every copy ends",
        || {
            lines.extend(one.drain_lines());
            let done = lines
                .iter()
                .any(|l| l.contains("found by looking up every copy"));
            async move { done }
        },
    )
    .await;
    let looked_up = redis.calls("exists") - exists;
    assert!(
        looked_up >= (COPIES - 5) as u64,
        "{looked_up} EXISTS: every live copy looked up"
    );
    for cookie in &cookies[..5] {
        assert_eq!(keepalive(&one.base, Some(cookie)).await.0, 401);
    }
    assert_eq!(keepalive(&one.base, Some(&cookies[5])).await.0, 200);
}

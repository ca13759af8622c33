//! A Redis that loses its data without restarting, as a whole (`FLUSHALL`) or key by key
//! (eviction under `maxmemory`), is answered like one restarted empty, not with a mass logout.

use keepalive_testkit::redis::RedisCluster;

use super::*;
use crate::harness::{Process, logout, metrics, resynced};

/// "Redis that loses data without restarting (FLUSHALL/FLUSHDB, eviction under maxmemory, ...)
/// is noticed within about one probe interval and answered like a Redis restarted empty:
/// every live local session and every logout written back."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_is_answered_like_an_empty_restart_not_a_mass_logout() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = start(&url, &[]).await;
    let two = start(&url, &[]).await;
    let both = [&one, &two];
    let run_id = redis.run_id();

    let mut sessions = Vec::new();
    for server in both {
        for _ in 0..10 {
            sessions.push(browser_session(server).await);
        }
    }
    let ended = browser_session(&one).await;
    assert_eq!(kept_alive(&two, &ended).await, 200);
    assert_eq!(logout(&one.base, &ended.cookie).await, 204);
    // Steady keepalives, through both instances.
    advance(&both, MIN);
    for session in &sessions {
        for server in both {
            assert_eq!(kept_alive(server, session).await, 200);
        }
    }

    // Right after the FLUSHALL, before any probe: every keepalive still answers 200.
    redis.flushall();
    let mut refused = Vec::new();
    for session in &sessions {
        for server in both {
            let status = kept_alive(server, session).await;
            if status != 200 {
                refused.push(format!("{} on {}: {status}", session.token, server.base));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {} keepalives refused after a FLUSHALL: {refused:#?}",
        refused.len(),
        sessions.len() * 2
    );
    let mut keys: Vec<String> = sessions.iter().map(Session::key).collect();
    keys.push(ended.marker());
    all_in_redis(
        &redis,
        &keys,
        Duration::from_secs(3),
        "sessions and logouts written back",
    )
    .await;
    for server in both {
        assert_eq!(kept_alive(server, &ended).await, 401, "the logout holds");
    }

    // Without traffic: noticed by the probe, within about one probe interval (500 ms), and
    // everything written back.
    redis.flushall();
    let took = all_in_redis(
        &redis,
        &keys,
        Duration::from_millis(1_500),
        "sessions and logouts written back after a FLUSHALL without traffic",
    )
    .await;
    eprintln!("written back {took:?} after the FLUSHALL, without traffic");
    assert_eq!(redis.run_id(), run_id, "the same Redis, never restarted");
    for session in &sessions {
        for server in both {
            assert_eq!(kept_alive(server, session).await, 200);
        }
    }
    for server in both {
        assert_eq!(kept_alive(server, &ended).await, 401);
    }
    one.stop().await;
    two.stop().await;
}

/// An `INFO` field of `redis`.
fn info(redis: &RedisServer, section: &str, name: &str) -> i64 {
    let text: String = redis.query(redis::cmd("INFO").arg(section), "INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO {section}"))
}

/// Makes Redis evict under `volatile-lru` (the keys with a TTL: the sessions): a memory limit
/// `headroom` bytes above what it holds, then filler keys with a TTL until `evicted` holds.
/// The limit stays; the caller lifts it.
fn evict_until(redis: &RedisServer, headroom: i64, evicted: impl Fn() -> bool) {
    let used = info(redis, "memory", "used_memory");
    redis.config_set("maxmemory-policy", "volatile-lru");
    redis.config_set("maxmemory", &(used + headroom).to_string());
    let filler = "x".repeat(8 * 1024);
    let mut written = 0;
    while !evicted() {
        assert!(
            written < 2_000,
            "nothing evicted after {written} filler keys"
        );
        let _: () = redis.query(
            redis::cmd("SET")
                .arg(format!("filler:{written}"))
                .arg(&filler)
                .arg("EX")
                .arg(3_600),
            "SET filler",
        );
        written += 1;
    }
}

/// Eviction removes single session keys (they all have a TTL, which is what `volatile-lru`
/// evicts) without touching the epoch: the probe sees Redis's `evicted_keys` grow and each
/// instance puts back the sessions it holds live, at once, without waiting for their users'
/// next keepalive; a keepalive that finds its session missing puts it back too, while a
/// logout's mark keeps a logged-out one out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_evicted_under_maxmemory_are_put_back() {
    let redis = RedisServer::start();
    let one = start(&redis.url(), &[]).await;
    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(browser_session(&one).await);
    }
    advance(&[&one], MIN);
    for session in &sessions {
        assert_eq!(kept_alive(&one, session).await, 200);
    }

    // A memory limit just above what Redis holds, then keys that push the sessions out.
    evict_until(&redis, 256 * 1024, || {
        sessions.iter().any(|s| !redis.exists(&s.key()))
    });
    let evicted = sessions.iter().filter(|s| !redis.exists(&s.key())).count();
    assert!(info(&redis, "stats", "evicted_keys") > 0);
    eprintln!("{evicted} of {} session keys evicted", sessions.len());
    redis.config_set("maxmemory", "0");

    // Without traffic (users away for a while): noticed by the probe, within about one probe
    // interval, and every session put back.
    let keys: Vec<String> = sessions.iter().map(Session::key).collect();
    let took = all_in_redis(
        &redis,
        &keys,
        Duration::from_millis(2_000),
        "evicted sessions put back without traffic",
    )
    .await;
    eprintln!("put back {took:?} after the eviction, without traffic");
    for session in &sessions {
        assert_eq!(kept_alive(&one, session).await, 200, "{}", session.token);
    }

    // One key gone alone, without an eviction to notice (or before the probe notices it):
    // the keepalive that finds it missing puts it back from the copy.
    let lost = &sessions[1];
    let _: () = redis.query(redis::cmd("DEL").arg(lost.key()), "DEL");
    assert_eq!(kept_alive(&one, lost).await, 200);
    assert!(redis.exists(&lost.key()), "put back at its keepalive");

    // A key gone with its logout marked (another instance's logout this one did not hear) is
    // an ended session: its copy is not put back.
    let ended = &sessions[0];
    let _: () = redis.query(redis::cmd("DEL").arg(ended.key()), "DEL");
    mark_ended(&redis, ended);
    assert_eq!(kept_alive(&one, ended).await, 401);
    assert!(!redis.exists(&ended.key()), "a logged-out session put back");
    one.stop().await;
}

/// How many outages `server` noticed.
async fn outages(server: &TestServer) -> u64 {
    metrics(&server.base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("keepalive_redis_outages_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("keepalive_redis_outages_total")
}

/// The session keys (not the marks) every master of `cluster` holds.
fn cluster_sessions(cluster: &RedisCluster) -> usize {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            node.keys("keepalive:{*}")
                .iter()
                .filter(|k| !k.ends_with(":ended"))
                .count()
        })
        .sum()
}

/// In a cluster a `FLUSHALL` empties one master only: each master has an epoch key of its own,
/// so that is noticed too, and what that master lost is written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_on_one_cluster_master_is_noticed() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    let one = start(&url, &[]).await;
    let epochs: usize = cluster
        .nodes()
        .iter()
        .map(|n| n.keys("keepalive:epoch*").len())
        .sum();
    assert_eq!(epochs, 3, "one epoch key on each master");

    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(browser_session(&one).await);
    }
    assert_eq!(cluster_sessions(&cluster), 30);
    // A few probes: the same masters, the same data set, no outage.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        outages(&one).await,
        0,
        "Redis taken for restarted while it was not"
    );
    let flushed = cluster
        .nodes()
        .iter()
        .position(|n| !n.keys("keepalive:{*}").is_empty())
        .expect("a master with sessions");
    let lost = cluster.nodes()[flushed].keys("keepalive:{*}").len();
    cluster.nodes()[flushed].flushall();
    assert_eq!(cluster_sessions(&cluster), 30 - lost);

    let took = within(
        Duration::from_millis(2_000),
        "the sessions one master lost written back",
        || {
            let count = cluster_sessions(&cluster);
            async move { count == 30 }
        },
    )
    .await;
    eprintln!("{lost} sessions written back {took:?} after a FLUSHALL on one master");
    for session in &sessions {
        assert_eq!(kept_alive(&one, session).await, 200);
    }
    assert_eq!(outages(&one).await, 1, "one outage: the FLUSHALL");
    one.stop().await;
}

/// "Log out everywhere" while Redis has evicted what it knew of the user: the session's key
/// (finn: the user's set still lists it), or the key and the user's set (eve). Another
/// instance holds a live copy of each, which it would write back once Redis is found to have
/// lost data; the logout must end those copies too, and Redis must refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_holds_when_redis_evicted_the_session_or_the_users_set() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = start(&url, &[]).await;
    let two = start(&url, &[]).await;
    let both = [&one, &two];

    // Created and served by instance two only: instance one holds no copy.
    let eve = login(&two, "eve").await;
    let finn = login(&two, "finn").await;
    for session in [&eve, &finn] {
        assert_eq!(kept_alive(&two, session).await, 200);
    }
    // What eviction under maxmemory takes, key by key.
    let _: () = redis.query(
        redis::cmd("DEL")
            .arg(eve.key())
            .arg("keepalive:user:{eve}")
            .arg(finn.key()),
        "DEL, as an eviction",
    );

    let heard_before = remote_logouts(&two).await;
    for user in ["eve", "finn"] {
        let path = format!("/api/v1/backend/users/{user}/sessions");
        let (status, body) = status_and_body(backend(&one, Method::DELETE, &path)).await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    // Instance two hears it, and ends both copies.
    within(
        Duration::from_secs(3),
        "instance two ends its copies of the users' sessions",
        || async { remote_logouts(&two).await >= heard_before + 2 },
    )
    .await;
    assert!(redis.exists(&finn.marker()), "finn's logout is marked");

    // Redis found to have lost data: every instance writes back what it holds, which must
    // not bring either session back.
    redis.flushall();
    for server in both {
        sees_redis(server, "ok").await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ended_everywhere(
        &redis,
        &both,
        &[eve, finn],
        "logged out everywhere, then a flush",
    )
    .await;
    one.stop().await;
    two.stop().await;
}

/// Redis evicts sessions and then refuses writes (maxmemory reached with nothing left it may
/// evict): the write-back after the eviction fails, the next write fails too and the instance
/// goes offline. When Redis takes writes again, the re-sync must put back the sessions it
/// evicted, though they did not change during that outage and Redis kept its data set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_evicted_before_redis_refused_writes_are_put_back_by_the_resync() {
    let redis = RedisServer::start();
    let one = start(&redis.url(), &[]).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(browser_session(&one).await);
    }
    let active = browser_session(&one).await;
    advance(&[&one], MIN);
    for session in idle.iter().chain([&active]) {
        assert_eq!(kept_alive(&one, session).await, 200);
    }
    // The idle sessions were last seen well before the outage below.
    advance(&[&one], MIN);

    // Redis evicts every key with a TTL (the sessions), then refuses writes: the epoch, with
    // no TTL, keeps it above the limit.
    redis.config_set("maxmemory-policy", "volatile-lru");
    redis.config_set("maxmemory", "1");
    // A write makes Redis evict what it may; this one is refused (OOM) itself.
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("filler")
        .arg("x")
        .arg("EX")
        .arg(3_600)
        .query(&mut redis.connection());
    assert!(refused.is_err(), "Redis refuses writes over maxmemory");
    assert!(
        idle.iter().all(|s| !redis.exists(&s.key())),
        "the sessions evicted"
    );
    // A keepalive fails on the refused write: the instance goes offline and serves it from
    // its copy. The idle sessions do not change meanwhile.
    assert_eq!(kept_alive(&one, &active).await, 200);
    sees_redis(&one, "offline").await;

    redis.config_set("maxmemory", "0");
    sees_redis(&one, "ok").await;
    let keys: Vec<String> = idle.iter().chain([&active]).map(Session::key).collect();
    all_in_redis(
        &redis,
        &keys,
        Duration::from_secs(2),
        "the evicted sessions put back once Redis takes writes again",
    )
    .await;
    one.stop().await;
}

/// While Redis evicts keys, an instance that finds a session missing and holds no copy of it
/// cannot tell it from one that ended: the instance that holds it is about to put it back. So
/// it answers 503 (the client retries), not a 401 that signs the user out; a logout's mark
/// still gets its 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_missing_while_redis_evicts_is_not_reported_expired() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Neither probe notices the evictions in time: instance one must see them when it finds
    // the session missing, and two, which holds the session, when its keepalive comes.
    let slow = ("KEEPALIVE_REDIS_PROBE_INTERVAL", "30s");
    let one = start(&url, &[slow]).await;
    let two = start(&url, &[slow]).await;
    let held = login(&two, "held").await;
    let ended = login(&two, "ended").await;
    assert_eq!(kept_alive(&two, &held).await, 200);
    assert_eq!(logout(&two.base, &ended.cookie).await, 204);

    evict_until(&redis, 64 * 1024, || !redis.exists(&held.key()));
    redis.config_set("maxmemory", "0");
    assert!(undecided(&one, &held).await, "503 while Redis evicts");
    if redis.exists(&ended.marker()) {
        assert_eq!(kept_alive(&one, &ended).await, 401, "a marked logout");
    }
    // The holder's keepalive puts it back; then every instance serves it.
    assert_eq!(kept_alive(&two, &held).await, 200);
    assert_eq!(kept_alive(&one, &held).await, 200);
    one.stop().await;
    two.stop().await;
}

/// After Redis lost its data, the first instance to re-sync holds no copy of a session another
/// instance has not put back yet: it must not report that session expired meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_yet_put_back_after_a_flush_is_not_reported_expired() {
    let redis = RedisServer::start();
    let url = redis.url();
    // One notices the flush at its next probe and re-syncs; two, which holds the session,
    // only when a request comes.
    let one = start(&url, &[("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms")]).await;
    let two = start(&url, &[("KEEPALIVE_REDIS_PROBE_INTERVAL", "30s")]).await;
    let held = login(&two, "held").await;
    assert_eq!(kept_alive(&two, &held).await, 200);

    redis.flushall();
    resynced(&one.base, 1).await;
    assert!(
        undecided(&one, &held).await,
        "503 until the holder puts it back"
    );
    // The holder puts it back at its next request; then every instance serves it.
    assert_eq!(kept_alive(&two, &held).await, 200);
    sees_redis(&two, "ok").await;
    assert_eq!(kept_alive(&one, &held).await, 200);
    one.stop().await;
    two.stop().await;
}

/// A logout that reaches Redis right after it lost its data, at an instance that holds no copy
/// of the session, is a logout still: Redis no longer knows the id, but the instance that
/// holds a copy must not serve it, at once (it learns of the loss at that very keepalive) nor
/// after its re-sync, which must not write the session back. The checker met this: a logout
/// 66 ms after a `FLUSHALL`, then a keepalive at another instance answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_right_after_a_flush_at_an_instance_without_a_copy_holds() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Neither probe notices the flush: each instance learns of it through a request.
    let slow = ("KEEPALIVE_REDIS_PROBE_INTERVAL", "30s");
    let one = start(&url, &[slow]).await;
    let two = start(&url, &[slow]).await;
    // Only two holds a copy of it; one never served it.
    let session = browser_session(&two).await;
    let other = browser_session(&two).await;

    redis.flushall();
    assert_eq!(logout(&one.base, &session.cookie).await, 204);
    the_logout_outlives_the_flush(&redis, &two, &[&one, &two], &session, &other).await;
    one.stop().await;
    two.stop().await;
}

/// The same logout, its announcement unheard (the instance holding the copy was not
/// listening, say): that instance learns of the loss at the session's keepalive, and asks
/// Redis for a logout's mark before it serves the copy as in an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_not_served_past_a_logout_marked_since_a_flush() {
    let redis = RedisServer::start();
    let one = start(&redis.url(), &[("KEEPALIVE_REDIS_PROBE_INTERVAL", "30s")]).await;
    let ended = browser_session(&one).await;
    let kept = browser_session(&one).await;

    redis.flushall();
    mark_ended(&redis, &ended);
    the_logout_outlives_the_flush(&redis, &one, &[&one], &ended, &kept).await;
    one.stop().await;
}

/// Leaves the mark of a logout made at another instance in Redis, without its message.
fn mark_ended(redis: &RedisServer, session: &Session) {
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(session.marker())
            .arg("1")
            .arg("PX")
            .arg(60_000),
        "SET marker",
    );
}

/// After Redis lost its data and `ended` was logged out: `holder`, which holds a copy of
/// `ended` and of `kept`, answers 401 for the first (it learns of the loss at that keepalive)
/// and 200 for the second, its re-sync writes back `kept` and not `ended`, and every one of
/// `servers` answers so once it sees Redis again.
async fn the_logout_outlives_the_flush(
    redis: &RedisServer,
    holder: &TestServer,
    servers: &[&TestServer],
    ended: &Session,
    kept: &Session,
) {
    assert_eq!(
        kept_alive(holder, ended).await,
        401,
        "served after its logout"
    );
    assert_eq!(kept_alive(holder, kept).await, 200);
    all_in_redis(
        redis,
        &[kept.key()],
        Duration::from_secs(3),
        "the holder's live sessions written back",
    )
    .await;
    for server in servers {
        sees_redis(server, "ok").await;
    }
    assert!(!redis.exists(&ended.key()), "revived by the re-sync");
    assert!(redis.exists(&ended.marker()), "the logout's mark");
    for server in servers {
        assert_eq!(kept_alive(server, ended).await, 401, "{}", server.base);
        assert_eq!(kept_alive(server, kept).await, 200, "{}", server.base);
    }
}

/// A write-back after a loss can take longer than noticing the loss (a large local store):
/// while an instance says it is putting back what Redis lost, an instance without a copy of a
/// session missing from Redis does not report it expired, however long the doubt window
/// after the loss is past; once the notice lapses, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_is_reported_expired_while_an_instance_puts_back_what_redis_lost() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = start(&url, &[("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms")]).await;
    let two = start(&url, &[("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms")]).await;
    let held = login(&two, "held").await;
    assert_eq!(kept_alive(&two, &held).await, 200);

    redis.flushall();
    resynced(&one.base, 1).await;
    resynced(&two.base, 1).await;
    assert!(redis.exists(&held.key()), "two put its session back");
    // The notice two left while it wrote back lapses by itself, soon.
    let notice = "keepalive:writing-back";
    let left = redis.pttl(notice);
    assert!((1..=3_000).contains(&left), "the notice lasts {left} ms");

    // Held as a write-back of a large store holds it, with a session still to come back (in
    // two's copy, not in Redis) and the clocks well past the doubt that follows a loss.
    let _: () = redis.query(redis::cmd("PEXPIRE").arg(notice).arg(600_000), "PEXPIRE");
    let _: () = redis.query(redis::cmd("DEL").arg(held.key()), "DEL");
    advance(&[&one, &two], Duration::from_secs(30));
    assert!(
        undecided(&one, &held).await,
        "503 while an instance puts sessions back"
    );
    let _: () = redis.query(redis::cmd("DEL").arg(notice), "DEL");
    assert_eq!(kept_alive(&one, &held).await, 401);
    one.stop().await;
    two.stop().await;
}

/// An instance crashes after extending a session, then Redis loses its data: the session must
/// come back with the expiry its user was told, from the copy the instance keeps of every
/// extension (on disk within a flush interval), not with an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_survives_a_crash_of_the_instance_then_a_flush() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms"),
    ];
    let process = Process::start(dir.path(), &vars);
    let session = session_at(&process.base).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = keepalive(&process.base, Some(&session.cookie)).await;
    assert_eq!(status, 200);
    let told = crate::harness::millis(&body["session"]["expiresAt"]);
    // The local store's batch reaches the disk (every 100 ms here), then the crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _process = crash_and_restart(process, dir.path(), &vars).await;

    redis.flushall();
    all_in_redis(
        &redis,
        &[session.key()],
        Duration::from_secs(3),
        "the session put back after the flush",
    )
    .await;
    let stored = in_redis(&redis, &session).expect("in redis");
    assert_eq!(
        stored.record.expires_at, told,
        "the expiry its user was told, not an earlier one"
    );
}

/// Issue #21: "after a crash, an instance serves (ready) within 1 s whatever the size of its
/// local store; what must be written back to Redis is written in the background while it
/// serves". An instance that starts on a Redis that lost what it holds (here: flushed while the
/// instance was stopped) listens before writing anything back: it serves from its local store,
/// as in an outage, while the link writes every live session and kept logout back, then serves
/// from Redis. No session is refused meanwhile, the logout holds, and everything reaches Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starting_on_a_redis_that_lost_its_data_listens_before_writing_back() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms"),
    ];
    let mut process = Process::start(dir.path(), &vars);
    let mut sessions = Vec::new();
    for _ in 0..300 {
        sessions.push(session_at(&process.base).await);
    }
    let ended = session_at(&process.base).await;
    assert_eq!(logout(&process.base, &ended.cookie).await, 204);
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    drop(process);

    redis.restart_empty();
    let mut process = Process::start(dir.path(), &vars);
    // Served at once, every session, from the local store or from Redis once it has them.
    for session in &sessions {
        assert_eq!(kept_alive_at(&process.base, session).await, 200);
    }
    assert_eq!(kept_alive_at(&process.base, &ended).await, 401);
    let mut keys: Vec<String> = sessions.iter().map(Session::key).collect();
    keys.push(ended.marker());
    all_in_redis(
        &redis,
        &keys,
        Duration::from_secs(5),
        "every session and the logout written back",
    )
    .await;
    within(Duration::from_secs(5), "served from Redis", || async {
        keepalive(&process.base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
    })
    .await;
    assert!(redis.exists(&ended.marker()), "the logout's mark");
    assert!(!redis.exists(&ended.key()), "the logout holds");

    // In the log: the instance said why it served locally, listened, and only then wrote back.
    let lines = process.lines_until("re-sync done", Duration::from_secs(5));
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in {lines:#?}"))
    };
    let deferred = at("holds another data set than this instance last wrote to");
    let listening = at("\"addr\"");
    let written = at("re-sync done");
    assert!(
        deferred < listening && listening < written,
        "deferred at line {deferred}, listening at {listening}, written back at {written}"
    );
    assert!(
        lines[written].contains("\"sessions\":300"),
        "{}",
        lines[written]
    );
    let text = metrics(&process.base).await;
    assert!(
        text.lines().any(|l| l == "keepalive_redis_writing_back 0"),
        "the write-back is over"
    );
}

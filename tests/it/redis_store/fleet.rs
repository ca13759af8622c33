//! A fleet behind the documented nginx snippet (`deploy/nginx/keepalive.conf`): three instances
//! over one Redis. The snippet routes every request of a session to one instance (`hash` on the
//! session cookie, `consistent`), so each instance keeps a copy of about its share of the
//! sessions, not of nearly all of them, while every session lives in Redis for all.

use std::time::Duration;

use keepalive_testkit::redis::RedisServer;

use crate::harness::nginx::{Nginx, SNIPPET, port_of};
use reqwest::header::COOKIE;

use crate::harness::{
    Process, TestServer, client, cookie_pair, create_session, keepalive, metrics, within,
};

/// The value of the counter or gauge `name` at the instance at `base`.
async fn metric(base: &str, name: &str) -> u64 {
    let text = metrics(base).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The sessions the local store of the instance at `base` holds live.
async fn mirrored(base: &str) -> u64 {
    metric(base, "keepalive_sessions_live").await
}

/// Waits until the instance at `base` tells clients that Redis is `state` (`ok`, `offline`).
async fn redis_is(base: &str, state: &str) {
    within(
        Duration::from_secs(10),
        &format!("Redis {state}"),
        || async { keepalive(base, None).await.1["serverHealth"]["checks"]["redis"] == state },
    )
    .await;
}

/// Signs `n` sessions in through `nginx` (no cookie yet: nginx spreads them round-robin);
/// their cookies.
async fn sign_in(nginx: &Nginx, n: u64) -> Vec<String> {
    let browser = client();
    let mut cookies = Vec::new();
    for _ in 0..n {
        let response = browser
            .post(nginx.url("/api/v1/session"))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 201);
        cookies.push(cookie_pair(&response));
    }
    cookies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_documented_nginx_each_instance_mirrors_about_its_share() {
    const SESSIONS: u64 = 100;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let server = TestServer::start(&[("REDIS_URL", url.as_str())]).await;
        redis_is(&server.base, "ok").await;
        fleet.push(server);
    }
    let ports: Vec<u16> = fleet.iter().map(|s| port_of(&s.base)).collect();
    // The application is not asked for here: nothing needs to listen on its port.
    let app = keepalive_testkit::ports::free_port();
    let nginx = Nginx::start_fleet(SNIPPET, &ports, app);

    // Signed in through nginx (no cookie yet: round-robin), then kept alive through it, as
    // browsers would; one client for all (building one per request costs more than the request).
    let browser = client();
    let cookies = sign_in(&nginx, SESSIONS).await;
    for _ in 0..4 {
        for cookie in &cookies {
            let response = browser
                .get(nginx.url("/api/v1/keepalive/"))
                .header(COOKIE, cookie)
                .send()
                .await
                .expect("keepalive");
            assert_eq!(response.status(), 200);
        }
    }

    // Each session is mirrored by the instance that created it and the one its cookie routes
    // to (often the same), never by the third: at most two copies, where round-robin routing
    // gives nearly three.
    let mut counts: Vec<u64> = Vec::new();
    for _ in 0..100 {
        let mut now = Vec::new();
        for server in &fleet {
            now.push(mirrored(&server.base).await);
        }
        let settled = now == counts && now.iter().sum::<u64>() >= SESSIONS;
        counts = now;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: u64 = counts.iter().sum();
    assert!(
        total <= 2 * SESSIONS,
        "{total} copies of {SESSIONS} sessions over {counts:?}: more than creator and owner"
    );
    for (server, count) in fleet.iter().zip(&counts) {
        assert!(
            (1..SESSIONS).contains(count),
            "{}: {count} of {SESSIONS} sessions mirrored ({counts:?})",
            server.base
        );
    }
    // Every session still lives in Redis for every instance, directly too.
    for server in &fleet {
        assert_eq!(keepalive(&server.base, Some(&cookies[0])).await.0, 200);
    }
    drop(nginx);
    for server in fleet {
        server.stop().await;
    }
}

/// Keepalives of `cookies` through `nginx`, one after another until `stop`: how many failed
/// by status (0 for no answer), and how many were sent.
async fn keep_alive_until(
    nginx: String,
    cookies: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (std::collections::BTreeMap<u16, usize>, usize) {
    let browser = client();
    let mut failed = std::collections::BTreeMap::new();
    let mut sent = 0;
    while !*stop.borrow() {
        for cookie in &cookies {
            let status = browser
                .get(format!("{nginx}/api/v1/keepalive/"))
                .header(COOKIE, cookie)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            sent += 1;
            if status != 200 {
                *failed.entry(status).or_default() += 1;
            }
        }
    }
    (failed, sent)
}

/// A rolling update behind the documented snippet: each instance in turn gets SIGTERM, starts
/// again on its port and data directory, and the next goes once it is ready and the snippet's
/// `fail_timeout` has passed. Keepalives sent through nginx all along never fail: nginx sends
/// a stopped instance's requests to another, and takes a restarted one back. (With nginx's
/// default `fail_timeout` of 10 s every instance was soon left out at once: 502 for all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_the_documented_nginx_fails_no_keepalive() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ports: Vec<String> = (0..3)
        .map(|_| keepalive_testkit::ports::free_port().to_string())
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let start = |i: usize| {
        let dir = dirs[i].path().to_owned();
        let vars = [("REDIS_URL", url.clone()), ("PORT", ports[i].clone())];
        tokio::task::spawn_blocking(move || {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Process::start(&dir, &vars)
        })
    };
    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(start(i).await.expect("start"));
    }
    let ready = |base: String| async move {
        within(Duration::from_secs(10), "the instance is ready", || async {
            let response = client().get(format!("{base}/readyz")).send().await;
            response.is_ok_and(|r| r.status() == 200)
        })
        .await;
    };
    for process in &fleet {
        ready(process.base.clone()).await;
    }
    let listen: Vec<u16> = ports.iter().map(|p| p.parse().expect("port")).collect();
    let nginx = Nginx::start_fleet(SNIPPET, &listen, keepalive_testkit::ports::free_port());

    let cookies = sign_in(&nginx, 30).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(keep_alive_until(nginx.base(), cookies, stopped));

    for (i, process) in fleet.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        process.signal(nix::sys::signal::Signal::SIGTERM);
        let code = process.wait(Duration::from_secs(10));
        assert_eq!(code, Some(0), "instance {i} stopped cleanly");
        *process = start(i).await.expect("restart");
        ready(process.base.clone()).await;
        // The snippet's fail_timeout: nginx tries the instance again after it.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    stop.send(true).expect("the load listens");
    let (failed, sent) = load.await.expect("the load ran");
    assert!(
        sent >= 100,
        "only {sent} keepalives were sent during the restarts"
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} keepalives failed during the rolling restart (by status: {failed:?})",
        failed.values().sum::<usize>()
    );
    drop(nginx);
}

/// Without sticky routing, `redis_mirror_max_sessions` bounds what an instance copies: beyond
/// it the copies this instance served least lately go, while Redis keeps every session. The
/// cost shows in an outage: a session whose copy went is answered 503 (retried), never 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_budget_the_mirror_drops_the_least_lately_active_copies() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start(&[
        ("REDIS_URL", url.as_str()),
        ("KEEPALIVE_REDIS_MIRROR_MAX_SESSIONS", "20"),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL", "50ms"),
    ])
    .await;
    redis_is(&server.base, "ok").await;
    // Thirty sessions: the ten beyond the budget go (which ten is the order of ids, all thirty
    // being as old).
    let mut cookies = Vec::new();
    for _ in 0..30 {
        cookies.push(create_session(&server.base).await);
    }
    within(
        Duration::from_secs(15),
        "the mirror is within its budget",
        || async { mirrored(&server.base).await == 20 },
    )
    .await;
    // Two minutes later (a later bucket of the expiry index), ten of them are kept alive: any
    // of those whose copy went is copied again, and as many of the others go instead.
    server.clock.advance(Duration::from_secs(120));
    for cookie in &cookies[..10] {
        assert_eq!(keepalive(&server.base, Some(cookie)).await.0, 200);
    }
    let settled = || async {
        (
            mirrored(&server.base).await,
            metric(&server.base, "keepalive_redis_mirror_trimmed_total").await,
        )
    };
    // Settled: the same reading for 6 s. The count is the local store's tables, which its
    // folds (every 5 s at most) bring up to date, so a change still in its log may hide behind
    // a reading that stays the same for a while. Up to 40 s: on a loaded machine the link's
    // probes, and the trims between them, may be late (every reading is kept for the message).
    let mut seen = (0, 0);
    let mut since = std::time::Instant::now();
    let mut readings = Vec::new();
    let limit = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < limit {
        let now = settled().await;
        if readings.last() != Some(&now) {
            readings.push(now);
        }
        if now != seen {
            seen = now;
            since = std::time::Instant::now();
        } else if now.0 == 20 && since.elapsed() >= Duration::from_secs(6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (live, trimmed) = seen;
    assert_eq!(
        live, 20,
        "the mirror holds its budget; (live, trimmed) read: {readings:?}"
    );
    assert!(
        (10..=20).contains(&trimmed),
        "{trimmed} copies dropped: the ten beyond the budget, and again those kept alive after"
    );
    for cookie in &cookies {
        let key = format!("keepalive:{{{}}}", cookie.split_once('=').expect("pair").1);
        assert!(redis.exists(&key), "every session lives on in Redis");
    }

    redis.kill();
    redis_is(&server.base, "offline").await;
    let mut statuses = std::collections::BTreeMap::new();
    for (i, cookie) in cookies.iter().enumerate() {
        let status = keepalive(&server.base, Some(cookie)).await.0;
        if i < 10 {
            assert_eq!(status, 200, "a session kept alive lately keeps its copy");
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(200, 20), (503, 10)]),
        "during the outage: the 20 copies kept serve, the 10 dropped are retried, none signed out"
    );
    server.stop().await;
}

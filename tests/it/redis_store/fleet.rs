//! A fleet behind the documented nginx snippet (`deploy/nginx/keepalive.conf`): three instances
//! over one Redis. The snippet routes every request of a session to one instance (`hash` on the
//! session cookie, `consistent`), so each instance keeps a copy of about its share of the
//! sessions, not of nearly all of them, while every session lives in Redis for all.

use std::time::Duration;

use keepalive_testkit::redis::RedisServer;

use crate::harness::nginx::{Nginx, SNIPPET, port_of};
use reqwest::header::COOKIE;

use crate::harness::{TestServer, client, cookie_pair, keepalive, metrics, within};

/// The sessions the local store of the instance at `base` holds live.
async fn mirrored(base: &str) -> u64 {
    metrics(base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("keepalive_sessions_live "))
        .and_then(|v| v.trim().parse().ok())
        .expect("keepalive_sessions_live")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_documented_nginx_each_instance_mirrors_about_its_share() {
    const SESSIONS: u64 = 100;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let server = TestServer::start(&[("REDIS_URL", url.as_str())]).await;
        within(
            Duration::from_secs(10),
            "the instance sees Redis",
            || async {
                keepalive(&server.base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
            },
        )
        .await;
        fleet.push(server);
    }
    let ports: Vec<u16> = fleet.iter().map(|s| port_of(&s.base)).collect();
    // The application is not asked for here: nothing needs to listen on its port.
    let app = keepalive_testkit::ports::free_port();
    let nginx = Nginx::start_fleet(SNIPPET, &ports, app);

    // Signed in through nginx (no cookie yet: round-robin), then kept alive through it, as
    // browsers would; one client for all (building one per request costs more than the request).
    let browser = client();
    let mut cookies = Vec::new();
    for _ in 0..SESSIONS {
        let response = browser
            .post(nginx.url("/api/v1/session"))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 201);
        cookies.push(cookie_pair(&response));
    }
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

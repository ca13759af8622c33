//! An outage judged by what Redis said: a session live in Redis when it begins stays live on
//! every path, and one that expired is never revived, neither by the outage nor by the
//! re-sync.

use reqwest::header::COOKIE;

use super::*;
use crate::harness::metrics;

/// `GET /api/v1/session`, the browser's read of its own session.
async fn own_session(server: &TestServer, session: &Session) -> u16 {
    client()
        .get(server.url("/api/v1/session"))
        .header(COOKIE, &session.cookie)
        .send()
        .await
        .expect("own session")
        .status()
        .as_u16()
}

/// `/api/v1/auth`, as a reverse proxy asks it.
async fn forward_auth(server: &TestServer, session: &Session) -> u16 {
    client()
        .get(server.url("/api/v1/auth"))
        .header(COOKIE, &session.cookie)
        .send()
        .await
        .expect("forward auth")
        .status()
        .as_u16()
}

async fn backend_read(server: &TestServer, session: &Session) -> u16 {
    status_and_body(backend(server, Method::GET, &session_path(session)))
        .await
        .0
}

async fn backend_update(server: &TestServer, session: &Session) -> u16 {
    let request = backend(server, Method::PATCH, &session_path(session))
        .json(&json!({ "data": { "role": "admin" } }));
    status_and_body(request).await.0
}

/// The tokens `GET /api/v1/backend/users/{user}/sessions` lists.
async fn listed(server: &TestServer, user: &str) -> Vec<String> {
    let path = format!("/api/v1/backend/users/{user}/sessions");
    let (status, body) = status_and_body(backend(server, Method::GET, &path)).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["token"].as_str().expect("token").to_owned())
        .collect()
}

/// The behaviour the issue states: "A session that is live in Redis when an outage begins is
/// never reported expired during that outage, on any path". An instance's copy of a session is
/// what Redis last answered it, on a write or a read: past the expiry it was created with,
/// neither the paths nor the purge may judge it by that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_live_in_redis_when_an_outage_begins_stays_live_on_every_path() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    // The purge runs every 100 ms, so it has run by the time the outage begins.
    let purge = ("KEEPALIVE_PURGE_INTERVAL", "100ms");
    let one = start(&url, &[purge]).await;
    let two = start(&url, &[purge, ("KEEPALIVE_FORWARD_AUTH_EXTEND", "false")]).await;
    let both = [&one, &two];

    // One session per path, created at 0 on the instance that serves it: each copy expires
    // at 10 min.
    let paths = [
        "keepalive",
        "own session",
        "backend read",
        "backend update",
        "backend rotate",
        "forward auth (extending)",
        "user list",
        "log out everywhere",
    ];
    let mut sessions = Vec::new();
    for (n, _) in paths.iter().enumerate() {
        sessions.push(login(&one, &format!("user-{n}")).await);
    }
    let not_extending = login(&two, "user-two").await;

    // Kept alive through the same instance at 4 min: Redis says 14 min, and so do the copies.
    advance(&both, 4 * MIN);
    for session in &sessions {
        assert_eq!(kept_alive(&one, session).await, 200);
    }
    assert_eq!(kept_alive(&two, &not_extending).await, 200);

    // 11 min: the expiry the sessions were created with has passed, Redis's has not. Other
    // sessions come and go (their writes move the copies out of the local store's memory, onto
    // its file only), and the purge runs meanwhile.
    advance(&both, 7 * MIN);
    for server in both {
        for _ in 0..100 {
            create_session(&server.base).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for server in both {
        let text = metrics(&server.base).await;
        assert!(
            text.contains("keepalive_sessions_purged_total 0\n"),
            "the purge removed copies of sessions Redis holds live: {}",
            text.lines()
                .find(|l| l.starts_with("keepalive_sessions_purged_total"))
                .unwrap_or_default()
        );
    }
    for session in sessions.iter().chain([&not_extending]) {
        let stored = in_redis(&redis, session).expect("in redis");
        assert_eq!(stored.record.expires_at, at(14 * MIN), "{}", session.token);
    }

    redis.kill();
    sees_redis(&one, "offline").await;
    sees_redis(&two, "offline").await;

    // Every path answers as Redis would have: live.
    let answers = [
        kept_alive(&one, &sessions[0]).await,
        own_session(&one, &sessions[1]).await,
        backend_read(&one, &sessions[2]).await,
        backend_update(&one, &sessions[3]).await,
        backend_rotate(&one, &sessions[4]).await.0,
        forward_auth(&one, &sessions[5]).await,
    ];
    let mut wrong = Vec::new();
    for (path, status) in paths.iter().zip(answers) {
        if status != 200 {
            wrong.push(format!("{path}: {status}"));
        }
    }
    let not_extended = forward_auth(&two, &not_extending).await;
    if not_extended != 200 {
        wrong.push(format!("forward auth (not extending): {not_extended}"));
    }
    let list = listed(&one, "user-6").await;
    if list != vec![sessions[6].token.clone()] {
        wrong.push(format!("user list: {list:?}"));
    }
    // "Log out everywhere" reaches the session (503: other instances' sessions could not be
    // reached), and it stays logged out.
    let (status, body) = status_and_body(backend(
        &one,
        Method::DELETE,
        "/api/v1/backend/users/user-7/sessions",
    ))
    .await;
    if status != 503 || body["ended"] != 1 {
        wrong.push(format!("log out everywhere: {status} {body}"));
    }
    let after = kept_alive(&one, &sessions[7]).await;
    if after != 401 {
        wrong.push(format!("keepalive after log out everywhere: {after}"));
    }
    assert!(
        wrong.is_empty(),
        "a session live in Redis answered as expired during the outage: {wrong:#?}"
    );

    // Read later in the outage, the sessions only read stay live until Redis's expiry, and
    // not a moment longer (their copies are judged by what Redis last said). Past it they are
    // not served, but not reported expired either: another instance may have kept them alive
    // since, and only Redis can tell (503, the client tries again).
    advance(&both, 2 * MIN + Duration::from_secs(50));
    assert_eq!(own_session(&one, &sessions[1]).await, 200, "at 13:50");
    assert_eq!(backend_read(&one, &sessions[2]).await, 200, "at 13:50");
    assert_eq!(forward_auth(&two, &not_extending).await, 200, "at 13:50");
    advance(&both, Duration::from_secs(10));
    assert_eq!(own_session(&one, &sessions[1]).await, 503, "at 14:00");
    assert_eq!(backend_read(&one, &sessions[2]).await, 503, "at 14:00");
    assert_eq!(forward_auth(&two, &not_extending).await, 503, "at 14:00");
    one.stop().await;
    two.stop().await;
}

/// The keepalive of a session live in Redis that an instance never served, or last heard of
/// before another instance kept it alive, during an outage. Behind a round-robin proxy it is
/// the common case; the instance cannot tell the session from one that expired, so it must
/// not sign the user out: 503 `shared_store_offline` with the server's health, which the
/// client retries, while an instance that knows the session serves it. What it knows is over
/// (a logout it holds, the absolute lifetime) stays 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_tell_during_an_outage_answers_503_not_401() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = start(&url, &[]).await;
    let two = start(&url, &[]).await;
    let both = [&one, &two];

    // `only_one`: created and kept alive through one; two never sees it. `moved`: created
    // through one (which knows it until 10 min), kept alive through two at 4 min (Redis and
    // two: 14 min). `logged_out`: logged out through one before the outage.
    let only_one = login(&one, "only-one").await;
    let moved = login(&one, "moved").await;
    let logged_out = login(&one, "logged-out").await;
    advance(&both, 4 * MIN);
    assert_eq!(kept_alive(&one, &only_one).await, 200);
    assert_eq!(kept_alive(&two, &moved).await, 200);
    let (status, _) = status_and_body(
        client()
            .delete(one.url("/api/v1/session"))
            .header(COOKIE, &logged_out.cookie),
    )
    .await;
    assert_eq!(status, 204);

    advance(&both, 7 * MIN);
    redis.freeze();
    sees_redis(&one, "offline").await;
    sees_redis(&two, "offline").await;

    // Those that cannot tell answer 503 with the health; those that know serve.
    let mut wrong = Vec::new();
    for (server, session, what) in [(&two, &only_one, "never served"), (&one, &moved, "stale")] {
        let (status, body) = keepalive(&server.base, Some(&session.cookie)).await;
        if status != 503
            || body["error"] != "shared_store_offline"
            || body["serverHealth"]["checks"]["redis"] != "offline"
        {
            wrong.push(format!("{what}: {status} {body}"));
        }
    }
    assert!(wrong.is_empty(), "reported expired or wrong: {wrong:#?}");
    assert_eq!(kept_alive(&one, &only_one).await, 200);
    assert_eq!(kept_alive(&two, &moved).await, 200);
    // A value planted before the live one (a sibling subdomain's) is one this instance cannot
    // judge either; the live session behind it is still found.
    let planted = format!(
        "keepalive_sid={}; {}",
        SessionId::generate().expect("id"),
        only_one.cookie
    );
    assert_eq!(keepalive(&one.base, Some(&planted)).await.0, 200);
    // A logout this instance holds is known: 401, before and during the outage.
    assert_eq!(kept_alive(&one, &logged_out).await, 401);
    let (status, _) = status_and_body(
        client()
            .delete(two.url("/api/v1/session"))
            .header(COOKIE, &moved.cookie),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(kept_alive(&two, &moved).await, 401);

    // Redis back: the session two never served is served there.
    redis.thaw();
    sees_redis(&one, "ok").await;
    sees_redis(&two, "ok").await;
    assert_eq!(kept_alive(&two, &only_one).await, 200);
    assert_eq!(
        kept_alive(&one, &moved).await,
        401,
        "logged out during the outage"
    );
    one.stop().await;
    two.stop().await;
}

/// "A session that expired (idle or absolute) is never revived by the outage grace or by the
/// re-sync."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_never_revived_by_the_outage_or_the_resync() {
    let redis = RedisServer::start();
    let url = redis.url();
    let one = start(&url, &[("KEEPALIVE_ABSOLUTE_LIFETIME", "20m")]).await;
    let two = start(&url, &[("KEEPALIVE_ABSOLUTE_LIFETIME", "20m")]).await;
    let both = [&one, &two];

    // Idle: last seen at 4 min, through instance one, so it expires at 14 min.
    let idle = login(&one, "idle").await;
    // Absolute: kept alive through both instances until its absolute expiry at 20 min.
    let absolute = login(&one, "absolute").await;
    advance(&both, 4 * MIN);
    assert_eq!(kept_alive(&one, &idle).await, 200);
    assert_eq!(kept_alive(&one, &absolute).await, 200);
    advance(&both, 8 * MIN);
    assert_eq!(kept_alive(&two, &absolute).await, 200);

    // The outage begins at 15 min, after the idle session expired in Redis (its key is still
    // there: Redis drops it later, by its own clock).
    advance(&both, 3 * MIN);
    redis.freeze();
    // Neither instance serves it. Neither can tell it from a session another instance kept
    // alive meanwhile (one knew it until 14 min, two never saw it), so neither reports it
    // expired either: 503 until Redis answers.
    for server in both {
        assert_eq!(
            kept_alive(server, &idle).await,
            503,
            "idle, {}",
            server.base
        );
        assert_eq!(own_session(server, &idle).await, 503);
        assert_eq!(backend_read(server, &idle).await, 503);
        assert_eq!(forward_auth(server, &idle).await, 503);
    }
    assert_eq!(kept_alive(&two, &absolute).await, 200, "live until 20 min");
    advance(&both, 5 * MIN);
    for server in both {
        assert_eq!(kept_alive(server, &absolute).await, 401, "absolute expiry");
        assert_eq!(backend_read(server, &absolute).await, 404);
    }

    // Redis answers again: the re-sync writes nothing back that could bring them back. For
    // two seconds after the outage a session missing from Redis may be one an instance still
    // offline holds (see the next test): past them, each is reported over.
    redis.thaw();
    sees_redis(&one, "ok").await;
    sees_redis(&two, "ok").await;
    advance(&both, Duration::from_secs(3));
    for session in [&idle, &absolute] {
        if let Some(stored) = in_redis(&redis, session) {
            assert!(
                stored.record.expires_at <= at(20 * MIN),
                "{} revived in Redis until {}",
                session.token,
                stored.record.expires_at
            );
        }
        for server in both {
            assert_eq!(kept_alive(server, session).await, 401, "{}", session.token);
        }
    }
    one.stop().await;
    two.stop().await;
}

/// Two instances on `url` that come back from an outage apart: one retries slowly (each
/// attempt against a Redis that does not answer fails within 100 ms, then its wait doubles
/// towards 20 s), two at once. Two is back well before one, unless one's attempt happens to be
/// under way when Redis answers again: the tests then make the outage again.
async fn slow_and_quick(url: &str) -> (TestServer, TestServer) {
    let probe = ("KEEPALIVE_REDIS_PROBE_INTERVAL", "100ms");
    let one = start(
        url,
        &[
            probe,
            ("KEEPALIVE_REDIS_BACKOFF_MAX", "20s"),
            ("KEEPALIVE_REDIS_CONNECT_TIMEOUT", "100ms"),
        ],
    )
    .await;
    let two = start(url, &[probe, ("KEEPALIVE_REDIS_BACKOFF_MAX", "20ms")]).await;
    (one, two)
}

/// A session created during an outage by an instance still offline when another comes back is
/// missing from Redis until the first writes it back: the one back first, which never served
/// it, cannot tell it from an expired session and must not report it expired (the checker met
/// a 401 there, with five instances, 0.3 s after a freeze ended). Once the doubt after an
/// outage has passed, a session missing from Redis is over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_created_during_an_outage_is_not_reported_expired_before_its_write_back() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (one, two) = slow_and_quick(&url).await;
    let gone = browser_session(&two).await;

    let mut checked = false;
    for _ in 0..3 {
        redis.freeze();
        sees_redis(&one, "offline").await;
        sees_redis(&two, "offline").await;
        let created = browser_session(&one).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        redis.thaw();
        sees_redis(&two, "ok").await;
        if redis_state(&one).await == "offline" {
            assert!(
                undecided(&two, &created).await,
                "503 while the instance that created it is offline"
            );
            checked = true;
        }
        within(Duration::from_secs(25), "one sees redis ok", || async {
            redis_state(&one).await == "ok"
        })
        .await;
        assert_eq!(kept_alive(&two, &created).await, 200);
        if checked {
            break;
        }
    }
    assert!(checked, "one came back first in every attempt");

    // Past the doubt (the notice one left while writing back lapses within 3 s), a session
    // missing from Redis is reported over again.
    let _: () = redis.query(redis::cmd("DEL").arg(gone.key()), "DEL");
    advance(&[&one, &two], Duration::from_secs(3));
    within(
        Duration::from_secs(5),
        "the write-back notice lapses",
        || async { !redis.exists("keepalive:writing-back") },
    )
    .await;
    assert_eq!(kept_alive(&one, &gone).await, 401);
    one.stop().await;
    two.stop().await;
}

/// "Log out everywhere" through an instance back from an outage ends the sessions of that user
/// another instance, still offline, created or kept alive during it: Redis does not hold them
/// when the user is logged out, and the other instance writes them back once it is back. The
/// checker met it behind round-robin: two sessions logged out everywhere half a second after
/// Redis answered again were served by every instance until their idle expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_after_an_outage_ends_what_an_instance_still_offline_holds() {
    // Killed and started again with its data, as the checker's fault does: a new run id, so
    // the instance back last cannot read the logouts it missed from its place in their record
    // (a place in another server's), and looks up each copy's own mark instead.
    let mut redis = RedisServer::start_persistent_of(Path::new("redis-server"));
    let url = redis.url();
    let (one, two) = slow_and_quick(&url).await;
    let both = [&one, &two];
    // Live in Redis before the outage, kept alive through one during it.
    let before = login(&one, "ana").await;
    let mut sessions = vec![before.clone()];

    let mut checked = false;
    for _ in 0..3 {
        redis.kill();
        sees_redis(&one, "offline").await;
        sees_redis(&two, "offline").await;
        advance(&both, MIN);
        // Signed in on another device during the outage: only one holds it.
        let during = login(&one, "ana").await;
        assert_eq!(kept_alive(&one, &before).await, 200);
        assert_eq!(kept_alive(&one, &during).await, 200);
        sessions.push(during);
        tokio::time::sleep(Duration::from_secs(4)).await;
        redis.start_again_with_data();
        sees_redis(&two, "ok").await;
        if redis_state(&one).await == "offline" {
            advance(&both, Duration::from_secs(1));
            let (status, body) = status_and_body(backend(
                &two,
                Method::DELETE,
                "/api/v1/backend/users/ana/sessions",
            ))
            .await;
            assert_eq!(status, 200, "log out everywhere: {body}");
            checked = true;
        }
        within(Duration::from_secs(25), "one sees redis ok", || async {
            redis_state(&one).await == "ok"
        })
        .await;
        if checked {
            break;
        }
    }
    assert!(checked, "one came back first in every attempt");

    // One wrote back what it held during the outage: none of it is live again, and each is
    // reported over (its logout marked) rather than in doubt.
    within(Duration::from_secs(5), "one's copies end", || async {
        let mut all = true;
        for session in &sessions {
            all &= kept_alive(&one, session).await == 401;
        }
        all
    })
    .await;
    ended_everywhere(
        &redis,
        &both,
        &sessions,
        "logged out everywhere after an outage",
    )
    .await;
    assert!(listed(&two, "ana").await.is_empty());
    one.stop().await;
    two.stop().await;
}

//! keepalive takes over an Express application's keepalive traffic on the application's own
//! sessions: a session signed in there is kept alive here exactly as the application would
//! keep it alive, left as the application wrote it, ended both ways, and only on a cookie one
//! of the application's secrets signed.

use std::time::Duration;

use keepalive_testkit::redis::RedisServer;
use reqwest::header::COOKIE;
use serde_json::json;

use super::{ExpressApp, MAX_AGE_MS, NEW_SECRET, OLD_SECRET, keepalive, now_ms, ping, session_key};
use crate::harness::{client, millis, within};

/// The time a session's stored cookie says it expires.
fn stored_expiry(redis: &RedisServer, key: &str) -> i64 {
    let value = redis.get(key).expect("the session is in Redis");
    let session: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
    millis(&session["cookie"]["expires"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_the_app_is_kept_alive_as_the_app_would_and_left_as_it_wrote_it() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    let cookie = app.login("ana").await;
    let key = session_key(&cookie);
    let written = redis.get(&key).expect("the application wrote the session");

    // Let the TTL run down, then keep the session alive through keepalive.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(redis.pttl(&key) < 3_599_000, "the TTL ran down");
    let (status, set_cookie, body) = ping(&ka.base, &cookie).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        set_cookie.is_none(),
        "not rolling: express-session sends no cookie either"
    );
    // The TTL connect-redis sets when express-session touches a session: maxAge in seconds.
    let pttl = redis.pttl(&key);
    assert!(
        (MAX_AGE_MS - 1_000..=MAX_AGE_MS).contains(&pttl),
        "TTL after keepalive's touch: {pttl} ms"
    );
    assert_eq!(
        redis.get(&key).expect("still there"),
        written,
        "the session's value, byte for byte"
    );
    // The expiry the application gives it: its cookie, which does not move without rolling,
    // expires an hour after the login.
    assert_eq!(
        millis(&body["session"]["expiresAt"]),
        stored_expiry(&redis, &key)
    );
    assert_eq!(body["session"]["idleTimeoutMs"], MAX_AGE_MS);
    assert_eq!(body["serverHealth"]["checks"]["redis"], "ok", "{body}");
    assert!(body["keepalive"]["tickMs"].is_number(), "{body}");

    // The application's own keepalive route sets the very same TTL.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = app.own_keepalive(&cookie).await;
    assert_eq!(status, 200);
    let pttl_by_the_app = redis.pttl(&key);
    assert!(
        (MAX_AGE_MS - 1_000..=MAX_AGE_MS).contains(&pttl_by_the_app),
        "{pttl_by_the_app}"
    );
    assert_eq!(redis.get(&key).expect("there"), written);

    // The application still sees its session, data and all.
    let (status, me) = app.me(&cookie).await;
    assert_eq!(status, 200);
    assert_eq!(me, json!({ "user": "ana", "cart": ["a", "b"] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rolling_keepalive_sends_the_cookie_express_session_sends() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[("ROLLING", "true")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(
        &redis,
        dir.path(),
        &[OLD_SECRET],
        &[("KEEPALIVE_EXPRESS_ROLLING", "true")],
    );
    let cookie = app.login("ana").await;
    // The two answers carry the same cookie when they fall in the same second (its Expires
    // has whole seconds): asked back to back, a few tries find one.
    let mut last = None;
    for _ in 0..20 {
        let (_, by_the_app) = app.own_keepalive(&cookie).await;
        let expected = by_the_app.expect("express-session sends the cookie when rolling");
        let asked = now_ms();
        let (status, set_cookie, body) = ping(&ka.base, &cookie).await;
        assert_eq!(status, 200, "{body}");
        let ours = set_cookie.expect("keepalive sends it too");
        let expires = millis(&body["session"]["expiresAt"]);
        assert!(
            (asked + MAX_AGE_MS - 1_000..=now_ms() + MAX_AGE_MS).contains(&expires),
            "rolling: the session moves an hour past now"
        );
        assert_eq!(
            body["session"]["absoluteExpiresAt"],
            "9999-12-31T23:59:59.999Z"
        );
        if ours == expected {
            return;
        }
        last = Some((expected, ours));
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    panic!("keepalive's Set-Cookie never equalled express-session's: {last:#?}");
}

/// Keeps `cookie`'s session alive through keepalive, then asserts that its key's TTL and the
/// answer's idle timeout are the session's own `maxAge`, as connect-redis would set them.
async fn kept_for(redis: &RedisServer, base: &str, cookie: &str, max_age_ms: i64) {
    let (status, _, body) = ping(base, cookie).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["idleTimeoutMs"], max_age_ms, "{body}");
    let pttl = redis.pttl(&session_key(cookie));
    assert!(
        (max_age_ms - 1_000..=max_age_ms).contains(&pttl),
        "TTL {pttl} ms for a session of maxAge {max_age_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_gets_its_own_lifetime_and_a_keepalive_is_one_getex() {
    const MONTH_MS: i64 = 30 * 86_400_000;
    const TEN_MIN_MS: i64 = 600_000;
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    let usual = app.login("ana").await;
    let remembered = app.login_for("bob", MONTH_MS).await;
    let brief = app.login_for("cy", TEN_MIN_MS).await;

    // The first keepalive reads the usual lifetime; then a session that has another gets its
    // own from its first keepalive on, longer or shorter than every other.
    kept_for(&redis, &ka.base, &usual, MAX_AGE_MS).await;
    kept_for(&redis, &ka.base, &remembered, MONTH_MS).await;
    kept_for(&redis, &ka.base, &brief, TEN_MIN_MS).await;
    kept_for(&redis, &ka.base, &usual, MAX_AGE_MS).await;
    kept_for(&redis, &ka.base, &remembered, MONTH_MS).await;

    // Once learnt, a keepalive is one native GETEX, no script.
    let (getex, scripts) = (redis.calls("getex"), redis.calls("evalsha"));
    for _ in 0..5 {
        kept_for(&redis, &ka.base, &usual, MAX_AGE_MS).await;
        kept_for(&redis, &ka.base, &remembered, MONTH_MS).await;
        kept_for(&redis, &ka.base, &brief, TEN_MIN_MS).await;
    }
    assert_eq!(redis.calls("getex") - getex, 15);
    assert_eq!(redis.calls("evalsha"), scripts, "no script once learnt");

    // The application shortens a session's lifetime (the box unticked): keepalive's next
    // keepalive gives the key the new one, not the one it learnt.
    app.set_max_age(&remembered, TEN_MIN_MS).await;
    kept_for(&redis, &ka.base, &remembered, TEN_MIN_MS).await;
    app.set_max_age(&brief, MAX_AGE_MS).await;
    kept_for(&redis, &ka.base, &brief, MAX_AGE_MS).await;
    assert_eq!(app.me(&remembered).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_getex_gets_the_script_and_no_outage() {
    // An ACL that leaves GETEX out answers as a Redis older than 6.2 does: refused.
    let redis = RedisServer::start();
    let _: () = redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("keepalive")
            .arg("on")
            .arg(">the-keepalive-password")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-getex"),
        "ACL SETUSER",
    );
    let url = format!(
        "redis://keepalive:the-keepalive-password@127.0.0.1:{}",
        redis.port()
    );
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[("REDIS_URL", &url)]);
    let cookie = app.login("ana").await;
    for _ in 0..4 {
        kept_for(&redis, &ka.base, &cookie, MAX_AGE_MS).await;
    }
    let (_, _, body) = ping(&ka.base, &cookie).await;
    assert_eq!(
        body["serverHealth"]["status"], "healthy",
        "no outage: {body}"
    );
    assert_eq!(redis.calls("getex"), 0);
    let warnings: Vec<String> = ka
        .lines_until("refused GETEX", Duration::from_secs(5))
        .into_iter()
        .filter(|line| line.contains("refused GETEX"))
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
    assert!(warnings[0].contains("allow GETEX"), "{}", warnings[0]);
    assert!(
        !warnings[0].contains("the-keepalive-password"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_either_side_ends_the_session_on_both() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);

    // Signed out in the application: keepalive's next keepalive is a 401.
    let cookie = app.login("ana").await;
    assert_eq!(ping(&ka.base, &cookie).await.0, 200);
    assert_eq!(app.logout(&cookie).await, 204);
    let (status, _, body) = ping(&ka.base, &cookie).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "session_expired");
    assert!(body["serverHealth"]["status"].is_string());

    // Signed out through keepalive: the application's session is destroyed.
    let cookie = app.login("bob").await;
    let key = session_key(&cookie);
    assert_eq!(ping(&ka.base, &cookie).await.0, 200);
    let out = client()
        .delete(format!("{}/api/v1/session", ka.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("logout through keepalive");
    assert_eq!(out.status(), 204);
    assert!(!redis.exists(&key), "req.session.destroy() deletes the key");
    assert_eq!(
        app.me(&cookie).await.0,
        401,
        "signed out in the application"
    );
    assert_eq!(ping(&ka.base, &cookie).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_cookie_one_of_the_secrets_signed_is_a_session() {
    let redis = RedisServer::start();
    // The application signs with its old secret; keepalive already has the new one first.
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[NEW_SECRET, OLD_SECRET], &[]);
    let cookie = app.login("ana").await;
    assert_eq!(
        ping(&ka.base, &cookie).await.0,
        200,
        "the old secret verifies"
    );

    // The application rotates its secret: new sessions are signed with the new one, the old
    // cookies still work, on both sides.
    drop(app);
    let app = ExpressApp::start(&redis, &[NEW_SECRET, OLD_SECRET], &[]);
    let rotated = app.login("carol").await;
    assert_ne!(rotated, cookie);
    assert_eq!(
        ping(&ka.base, &rotated).await.0,
        200,
        "the new secret signs"
    );
    assert_eq!(
        ping(&ka.base, &cookie).await.0,
        200,
        "the old one still verifies"
    );

    // Another application's secret, a changed signature, a changed id, an unsigned or
    // malformed value: no session, never a 5xx, nothing written.
    let other = ExpressApp::start(&redis, &["a-secret-keepalive-does-not-know"], &[]);
    let foreign = other.login("mallory").await;
    let keys_before = redis.keys("*");
    let ttl_before = redis.pttl(&session_key(&cookie));
    let (name, value) = cookie.split_once('=').expect("pair");
    let signed = value.strip_prefix("s%3A").expect("signed");
    let (id, signature) = signed.rsplit_once('.').expect("signature");
    let flipped = {
        let mut chars: Vec<char> = signature.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let other_id = session_key(&foreign).trim_start_matches("sess:").to_owned();
    for bad in [
        foreign.clone(),
        format!("{name}=s%3A{id}.{flipped}"),
        format!("{name}=s%3A{other_id}.{signature}"),
        format!("{name}={id}"),
        format!("{name}=s%3A{id}"),
        format!("{name}=s%3A"),
        format!("{name}=%E0%A4%A"),
        format!("{name}=s%3A{id}.{signature}x"),
    ] {
        let (status, set_cookie, body) = ping(&ka.base, &bad).await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert_eq!(body["error"], "session_expired", "{bad}");
        assert!(set_cookie.is_none(), "{bad}");
    }
    assert_eq!(redis.keys("*"), keys_before, "nothing written");
    assert!(redis.pttl(&session_key(&cookie)) <= ttl_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_session_read_and_forward_auth_serve_the_apps_sessions() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(
        &redis,
        dir.path(),
        &[OLD_SECRET],
        &[(
            "KEEPALIVE_BACKEND_TOKEN",
            "a-backend-token-of-at-least-32-chars",
        )],
    );
    let cookie = app.login("ana").await;

    // GET /api/v1/session: the user from passport.user, the session's data as it is stored.
    let own = client()
        .get(format!("{}/api/v1/session", ka.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("session");
    assert_eq!(own.status(), 200);
    let body: serde_json::Value = own.json().await.expect("json");
    assert_eq!(body["session"]["user"], "ana");
    assert_eq!(body["session"]["data"]["cart"], json!(["a", "b"]));
    assert_eq!(body["session"]["data"]["passport"]["user"], "ana");

    // Forward authentication: the user in the header the proxy passes on.
    let auth = client()
        .get(format!("{}/api/v1/auth", ka.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("auth");
    assert_eq!(auth.status(), 200);
    assert_eq!(auth.headers()["x-keepalive-user"], "ana");
    let anonymous = client()
        .get(format!("{}/api/v1/auth", ka.base))
        .send()
        .await
        .expect("auth");
    assert_eq!(anonymous.status(), 401);

    // keepalive's own session routes are the application's here.
    for path in ["/api/v1/session", "/api/v1/session/rotate"] {
        let refused = client()
            .post(format!("{}{path}", ka.base))
            .header(COOKIE, &cookie)
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 405, "{path}");
        assert!(refused.headers().contains_key("allow"), "{path}");
        let body: serde_json::Value = refused.json().await.expect("json");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("Express"),
            "{body}"
        );
    }
    let backend = client()
        .get(format!("{}/api/v1/backend/users/ana/sessions", ka.base))
        .bearer_auth("a-backend-token-of-at-least-32-chars")
        .send()
        .await
        .expect("backend");
    assert_eq!(backend.status(), 404);
    let body: serde_json::Value = backend.json().await.expect("json");
    assert_eq!(body["error"], "backend_api_disabled");
    // The session is still the application's.
    assert_eq!(app.me(&cookie).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_own_browser_code_works_unchanged() {
    // The seed's check in the browser console: fetch('/api/v1/keepalive/') and read
    // serverHealth.status and .checks. Through the application's origin, with its proxy to
    // keepalive (the guide's few lines of Express for a team without nginx).
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(&redis, dir.path(), &[OLD_SECRET], &[]);
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[("KEEPALIVE_URL", &ka.base)]);
    let cookie = app.login("ana").await;
    let answer = client()
        .get(app.url("/api/v1/keepalive/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("keepalive through the app");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["serverHealth"]["status"], "healthy", "{body}");
    assert_eq!(body["serverHealth"]["checks"]["redis"], "ok");
    assert_eq!(body["serverHealth"]["checks"]["memory"], "ok");
    assert!(
        body["session"]["expiresAt"].is_string(),
        "keepalive answered: {body}"
    );
    // Signed out, the proxy passes keepalive's 401 on.
    assert_eq!(app.logout(&cookie).await, 204);
    within(Duration::from_secs(5), "401 after the logout", || async {
        client()
            .get(app.url("/api/v1/keepalive/"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .is_ok_and(|r| r.status() == 401)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_samples_the_apps_sessions_and_names_those_keepalive_cannot_read() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[]);
    for user in ["ana", "bob", "carol"] {
        app.login(user).await;
    }
    let doctor = |redis: &RedisServer| {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().display().to_string();
        let port = keepalive_testkit::ports::free_port().to_string();
        let secrets = json!([OLD_SECRET]).to_string();
        let output = crate::harness::command(&[
            ("REDIS_URL", &redis.url()),
            ("KEEPALIVE_SESSION_FORMAT", "express"),
            ("KEEPALIVE_EXPRESS_SECRETS", &secrets),
            ("KEEPALIVE_DATA_DIR", &data),
            ("PORT", &port),
        ])
        .args(["doctor", "--json"])
        .output()
        .expect("doctor");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(!text.contains(OLD_SECRET), "the secret is never printed");
        let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let step = report["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == "express")
            .cloned()
            .unwrap_or_else(|| panic!("no express step: {report:#}"));
        (output.status.code(), step)
    };
    let (code, step) = tokio::task::block_in_place(|| doctor(&redis));
    assert_eq!(code, Some(0));
    assert_eq!(step["status"], "ok", "{step}");
    assert!(
        step["detail"]
            .as_str()
            .expect("detail")
            .contains("3 sessions sampled under `sess:`: 3 in express-session's form"),
        "{step}"
    );
    // An id of a custom genid keepalive cannot read.
    let _: () = redis.query(
        redis::cmd("SET")
            .arg("sess:custom.id-with-a-dot")
            .arg(r#"{"cookie":{}}"#),
        "SET",
    );
    let (_, step) = tokio::task::block_in_place(|| doctor(&redis));
    assert_eq!(step["status"], "warn", "{step}");
    assert!(
        step["detail"]
            .as_str()
            .expect("detail")
            .contains("custom genid"),
        "{step}"
    );
}

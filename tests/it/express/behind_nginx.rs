//! The migration guide's topology: one origin, a real nginx serving
//! `deploy/nginx/keepalive-express.conf`, the Express application behind it for everything but
//! the keepalive pings and the browser client, which go to keepalive.

use std::time::Duration;

use keepalive_testkit::redis::RedisServer;
use reqwest::header::COOKIE;
use serde_json::json;

use super::{ExpressApp, MAX_AGE_MS, OLD_SECRET, keepalive, ping, session_key, set_cookie_pair};
use crate::harness::client;
use crate::harness::nginx::{EXPRESS_SNIPPET, Nginx, port_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_the_app_behind_nginx_and_keepalive_for_its_pings() {
    let redis = RedisServer::start();
    let app = ExpressApp::start(&redis, &[OLD_SECRET], &[("ROLLING", "true")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ka = keepalive(
        &redis,
        dir.path(),
        &[OLD_SECRET],
        &[("KEEPALIVE_EXPRESS_ROLLING", "true")],
    );
    let nginx = tokio::task::block_in_place(|| {
        Nginx::start_snippet(EXPRESS_SNIPPET, port_of(&ka.base), port_of(&app.base))
    });

    // Signed in through the site: the application's login.
    let login = client()
        .post(nginx.url("/login"))
        .json(&json!({ "user": "ana", "cart": ["a"] }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let cookie = set_cookie_pair(&login).expect("the application's cookie");
    login
        .bytes()
        .await
        .expect("the login's body: the session is saved by then");
    let key = session_key(&cookie);

    // The pings reach keepalive (its answer, not the application's), which keeps the
    // application's session alive and sends its rolling cookie back.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for path in [
        "/api/v1/keepalive/",
        "/api/v1/keepalive",
        "/api/v1/keepalive/?_=1",
    ] {
        let answer = client()
            .get(nginx.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .expect("keepalive");
        let status = answer.status().as_u16();
        let set_cookie = answer
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body["session"]["expiresAt"].is_string(),
            "keepalive answered {path}: {body}"
        );
        let set_cookie = set_cookie.expect("rolling");
        assert!(set_cookie.starts_with("connect.sid=s%3A"), "{set_cookie}");
        let pttl = redis.pttl(&key);
        assert!((MAX_AGE_MS - 1_000..=MAX_AGE_MS).contains(&pttl), "{pttl}");
    }
    assert!(
        nginx.access_log().contains("/api/v1/keepalive/"),
        "{}",
        nginx.access_log()
    );

    // The browser client comes from keepalive; the pages from the application.
    let script = client()
        .get(nginx.url("/keepalive.js"))
        .send()
        .await
        .expect("script");
    assert_eq!(script.status(), 200);
    // And its versioned name (the entity tag's hash), which the pages may load instead.
    let etag = script.headers()["etag"].to_str().expect("etag").to_owned();
    let hash = etag.trim_matches('"').split('-').next().unwrap_or_default();
    let versioned = client()
        .get(nginx.url(&format!("/keepalive.{hash}.js")))
        .send()
        .await
        .expect("versioned script");
    assert_eq!(versioned.status(), 200, "/keepalive.{hash}.js");
    let me = client()
        .get(nginx.url("/me"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json::<serde_json::Value>().await.expect("json"),
        json!({ "user": "ana", "cart": ["a"] })
    );

    // Signed out through the site: keepalive's next ping is a 401.
    let out = client()
        .post(nginx.url("/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 204);
    let (status, _, body) = ping(&nginx.base(), &cookie).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "session_expired");
}

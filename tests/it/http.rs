//! The HTTP contract over a real port: sessions, keepalive, probes, errors.

use std::time::Duration;

use crate::harness::{START, TestServer, client, create_session, keepalive, millis};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::Value;

const MIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn create_answers_201_with_a_safe_cookie_and_expiry() {
    let server = TestServer::start(&[]).await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"data":{"user":"ana","roles":["admin"]}}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let set_cookie = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set_cookie.starts_with("keepalive_sid="), "{set_cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "development serves plain HTTP: {set_cookie}"
    );
    let id = set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("value");
    assert!(id.len() >= 22, "at least 128 bits: {id}");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(millis(&body["session"]["createdAt"]), START);
    assert_eq!(millis(&body["session"]["expiresAt"]), START + 600_000);
    assert_eq!(
        millis(&body["session"]["absoluteExpiresAt"]),
        START + 12 * 3_600_000
    );
    assert_eq!(body["session"]["idleTimeoutMs"], 600_000);
    server.stop().await;
}

#[tokio::test]
async fn production_cookies_are_secure() {
    let server = TestServer::start(&[
        ("KEEPALIVE_ENV", "production"),
        ("KEEPALIVE_DRAIN_DELAY", "0s"),
    ])
    .await;
    let response = client()
        .post(server.url("/api/v1/session"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    assert!(
        response.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Secure")
    );
    server.stop().await;
}

#[tokio::test]
async fn keepalive_answers_on_both_paths_and_any_query_string() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    for path in [
        "/api/v1/keepalive/",
        "/api/v1/keepalive",
        "/api/v1/keepalive/?_=123",
        "/api/v1/keepalive?_=1&x=%20y",
    ] {
        let response = client()
            .get(server.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{path}");
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("application/json")
        );
        let body: Value = response.json().await.expect("json");
        for key in ["expiresAt", "absoluteExpiresAt", "idleTimeoutMs"] {
            assert!(
                !body["session"][key].is_null(),
                "{path}: session.{key} in {body}"
            );
        }
        assert_eq!(body["serverHealth"]["status"], "healthy", "{body}");
        assert_eq!(body["serverHealth"]["checks"]["redis"], "disabled");
        assert!(
            ["ok", "warning", "critical"].contains(
                &body["serverHealth"]["checks"]["memory"]
                    .as_str()
                    .expect("memory")
            )
        );
        assert_eq!(body["keepalive"]["tickMs"], 10_000);
        assert_eq!(body["keepalive"]["timeoutMs"], 5_000);
        assert_eq!(body["keepalive"]["maxRetries"], 3);
        assert_eq!(millis(&body["serverTime"]), START);
    }
    server.stop().await;
}

#[tokio::test]
async fn keepalive_extends_the_idle_expiry() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    server.clock.advance(7 * MIN);
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(millis(&body["session"]["expiresAt"]), START + 17 * 60_000);
    server.clock.advance(9 * MIN);
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200, "kept alive 9 minutes after the last keepalive");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_session_expires() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    server.clock.advance(10 * MIN);
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "session_expired");
    server.stop().await;
}

#[tokio::test]
async fn keepalives_never_pass_the_absolute_lifetime() {
    let server = TestServer::start(&[("KEEPALIVE_ABSOLUTE_LIFETIME", "30m")]).await;
    let cookie = create_session(&server.base).await;
    let absolute = START + 30 * 60_000;
    let mut last_expiry = 0;
    for _ in 0..3 {
        server.clock.advance(9 * MIN);
        let (status, body) = keepalive(&server.base, Some(&cookie)).await;
        assert_eq!(status, 200);
        last_expiry = millis(&body["session"]["expiresAt"]);
        assert!(last_expiry <= absolute);
        assert_eq!(millis(&body["session"]["absoluteExpiresAt"]), absolute);
    }
    assert_eq!(last_expiry, absolute, "the fourth extension is capped");
    server.clock.advance(3 * MIN + Duration::from_millis(1));
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(
        status, 401,
        "an active session still ends at its absolute lifetime"
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_unknown_malformed_and_expired_cookies_get_401() {
    let server = TestServer::start(&[]).await;
    let live = create_session(&server.base).await;
    let cases = [
        None,
        Some("keepalive_sid=AAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        Some("keepalive_sid=not-a-session".to_owned()),
        Some("keepalive_sid=".to_owned()),
        Some(format!("{}x", live)),
        Some("keepalive_sid=%00%FF; other=1".to_owned()),
        Some("keepalive_sid".to_owned()),
        Some("=;;;=".to_owned()),
        Some(format!("keepalive_sid={}", "A".repeat(4000))),
    ];
    for cookie in &cases {
        let mut request = client().get(server.url("/api/v1/keepalive/"));
        if let Some(c) = cookie {
            request = request.header(COOKIE, c);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{cookie:?}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "session_expired", "{cookie:?}");
        assert!(body["serverHealth"]["status"].is_string(), "{body}");
        assert!(
            body["serverHealth"]["checks"]["redis"].is_string(),
            "{body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    let response = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let cleared = response.headers()[SET_COOKIE].to_str().expect("ascii");
    assert!(
        cleared.starts_with("keepalive_sid=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let (status, _) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 401);
    let again = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), 204, "logout is idempotent");
    let anonymous = client()
        .delete(server.url("/api/v1/session"))
        .send()
        .await
        .expect("delete");
    assert_eq!(anonymous.status(), 204);
    server.stop().await;
}

#[tokio::test]
async fn session_bodies_are_checked() {
    let server = TestServer::start(&[]).await;
    let post = |body: String, content_type: &'static str| {
        client()
            .post(server.url("/api/v1/session"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let big = format!(r#"{{"data":{{"blob":"{}"}}}}"#, "x".repeat(4096));
    let cases = [
        (big, "application/json", 413, "payload_too_large"),
        (
            "{not json".to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":[1,2]}"#.to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":{},"extra":1}"#.to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            r#"{"data":{"a":1}}"#.to_owned(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "\u{0}\u{1}\u{2}".to_owned(),
            "application/json",
            400,
            "bad_request",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = post(body.clone(), content_type).await.expect("request");
        assert_eq!(response.status(), status, "{content_type} {:.40}", body);
        let json: Value = response.json().await.expect("json error");
        assert_eq!(json["error"], code);
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let invalid_utf8 = client()
        .post(server.url("/api/v1/session"))
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .expect("request");
    assert_eq!(invalid_utf8.status(), 400);
    let ok = post(
        r#"{"data":{"user":"zoé"}}"#.to_owned(),
        "application/json; charset=utf-8",
    )
    .await
    .expect("request");
    assert_eq!(ok.status(), 201);
    let empty = post(String::new(), "application/json")
        .await
        .expect("request");
    assert_eq!(empty.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = TestServer::start(&[]).await;
    let response = client()
        .get(server.url("/api/v2/nothing"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "not_found"
    );
    let response = client()
        .put(server.url("/api/v1/keepalive/"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "method_not_allowed"
    );
    let response = client()
        .put(server.url("/api/v1/session"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn probes_answer() {
    let server = TestServer::start(&[]).await;
    let live = client()
        .get(server.url("/livez"))
        .send()
        .await
        .expect("livez");
    assert_eq!(live.status(), 200);
    let ready = client()
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn health_shows_status_only_without_the_token() {
    let token = "s3cret-token-0123456789";
    let server = TestServer::start(&[("KEEPALIVE_HEALTH_TOKEN", token)]).await;
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic abc"),
    ] {
        let mut request = client().get(server.url("/health"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("health");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/health+json");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "pass");
        assert!(body.get("checks").is_none(), "{auth:?}: {body}");
    }
    let response = client()
        .get(server.url("/health"))
        .bearer_auth(token)
        .send()
        .await
        .expect("health");
    let body: Value = response.json().await.expect("json");
    let memory = &body["checks"]["memory:utilization"][0];
    assert!(memory["observedValue"].is_number(), "{body}");
    assert_eq!(memory["observedUnit"], "percent");
    assert!(memory["time"].is_string());
    let redis = &body["checks"]["redis:connection"][0];
    assert_eq!(redis["observedValue"], "disabled");
    assert!(!body.to_string().contains(token));
    server.stop().await;
}

/// A fake `/proc` and `/sys` whose cgroup v2 reports `percent` of 1 GiB in use.
fn fake_root(percent: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |path: &str, text: String| {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    };
    let gib: u64 = 1 << 30;
    write(
        "proc/meminfo",
        "MemTotal: 67108864 kB\nMemAvailable: 33554432 kB\n".to_owned(),
    );
    write("proc/self/cgroup", "0::/\n".to_owned());
    write("sys/fs/cgroup/cgroup.controllers", "memory\n".to_owned());
    write("sys/fs/cgroup/memory.max", format!("{gib}\n"));
    write(
        "sys/fs/cgroup/memory.current",
        format!("{}\n", gib / 100 * percent + gib / 100),
    );
    write(
        "sys/fs/cgroup/memory.stat",
        format!("inactive_file {}\n", gib / 100),
    );
    dir
}

#[tokio::test]
async fn memory_warning_degrades_and_critical_fails_without_stopping() {
    let warning = fake_root(85);
    let server = TestServer::start_with_root(&[], warning.path().to_owned()).await;
    let cookie = create_session(&server.base).await;
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["serverHealth"]["status"], "degraded");
    assert_eq!(body["serverHealth"]["checks"]["memory"], "warning");
    let health = client()
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.expect("json")["status"],
        "warn"
    );
    server.stop().await;

    let critical = fake_root(95);
    let server = TestServer::start_with_root(&[], critical.path().to_owned()).await;
    let cookie = create_session(&server.base).await;
    let (status, body) = keepalive(&server.base, Some(&cookie)).await;
    assert_eq!(status, 200, "critical never stops the service");
    assert_eq!(body["serverHealth"]["status"], "critical");
    assert_eq!(body["serverHealth"]["checks"]["memory"], "critical");
    let health = client()
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json::<Value>().await.expect("json")["status"],
        "fail"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_follows_memory_as_it_changes() {
    let root = fake_root(50);
    let server = TestServer::start_with_root(&[], root.path().to_owned()).await;
    let cookie = create_session(&server.base).await;
    assert_eq!(
        keepalive(&server.base, Some(&cookie)).await.1["serverHealth"]["status"],
        "healthy"
    );
    let gib: u64 = 1 << 30;
    std::fs::write(
        root.path().join("sys/fs/cgroup/memory.current"),
        format!("{}\n", gib / 100 * 93),
    )
    .expect("write");
    let mut status = String::new();
    for _ in 0..100 {
        status = keepalive(&server.base, Some(&cookie)).await.1["serverHealth"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "critical" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "critical", "the monitor picked up the new reading");
    server.stop().await;
}

#[tokio::test]
async fn metrics_pass_promtool_and_carry_no_session_ids() {
    let server = TestServer::start(&[]).await;
    let cookie = create_session(&server.base).await;
    keepalive(&server.base, Some(&cookie)).await;
    keepalive(&server.base, None).await;
    client()
        .get(server.url("/nope/abc123"))
        .send()
        .await
        .expect("404");
    let response = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.expect("text");
    let id = cookie.split_once('=').expect("pair").1;
    assert!(!text.contains(id), "a session id leaked into metrics");
    assert!(!text.contains("abc123"), "a raw URI leaked into metrics");
    assert!(
        text.contains(r#"keepalive_keepalives_total{result="extended"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"keepalive_keepalives_total{result="expired"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("keepalive_sessions_created_total 1"),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/v1/keepalive/""#), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("keepalive_"), "{line}");
    }

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (the test script installs Debian's prometheus package)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_browser_client_and_demo_page_are_served() {
    let server = TestServer::start(&[]).await;
    let page = client().get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let script = client()
        .get(server.url("/keepalive.js"))
        .send()
        .await
        .expect("script");
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript")
    );
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_shared_by_cookie_only() {
    let server = TestServer::start(&[]).await;
    let a = create_session(&server.base).await;
    let b = create_session(&server.base).await;
    assert_ne!(a, b);
    let response = client()
        .delete(server.url("/api/v1/session"))
        .header(COOKIE, &a)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert_eq!(keepalive(&server.base, Some(&a)).await.0, 401);
    assert_eq!(
        keepalive(&server.base, Some(&b)).await.0,
        200,
        "ending one session leaves the others"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let token = "another-health-token-0123";
    let server = TestServer::start(&[("KEEPALIVE_HEALTH_TOKEN", token)]).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let body: Value = client()
            .get(server.url("/health"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert!(body.get("checks").is_some(), "{scheme}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn rotation_gives_a_new_id_and_kills_the_old_one() {
    let server = TestServer::start(&[]).await;
    let old = create_session(&server.base).await;
    let response = client()
        .post(server.url("/api/v1/session/rotate"))
        .header(COOKIE, &old)
        .send()
        .await
        .expect("rotate");
    assert_eq!(response.status(), 200);
    let set = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let new = set.split(';').next().expect("pair").to_owned();
    assert_ne!(new, old);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        millis(&body["session"]["createdAt"]),
        START,
        "the same session, created when it was"
    );
    assert_eq!(
        keepalive(&server.base, Some(&old)).await.0,
        401,
        "the old id is invalid"
    );
    assert_eq!(keepalive(&server.base, Some(&new)).await.0, 200);
    let again = client()
        .post(server.url("/api/v1/session/rotate"))
        .header(COOKIE, &old)
        .send()
        .await
        .expect("rotate");
    assert_eq!(again.status(), 401);
    assert_eq!(
        again.json::<Value>().await.expect("json")["error"],
        "session_expired"
    );
    server.stop().await;
}

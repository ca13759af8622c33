//! The probes, `/health` with and without its token, the memory check as memory changes, and
//! `/metrics`.

use std::time::Duration;

use crate::harness::{
    Store, TestServer, client, create_session, keepalive, logout, metrics, on_every_store, within,
};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

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
        // The process collector's metrics keep the names every Prometheus client gives them.
        assert!(
            line.starts_with("keepalive_") || line.starts_with("process_"),
            "{line}"
        );
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

/// The value of an unlabelled metric in a `/metrics` text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// `keepalive_sessions_live` follows creations, logouts and expiries, from the store's own
/// count, on the embedded store and with Redis; the process metrics sit next to it.
async fn metrics_count_live_sessions_and_show_the_process(store: Store) {
    const MIN: Duration = Duration::from_secs(60);
    let server = store.start(&[("KEEPALIVE_IDLE_TIMEOUT", "10m")]).await;
    let live = || async { sample(&metrics(&server.base).await, "keepalive_sessions_live") };

    let text = metrics(&server.base).await;
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        // CPU time counts whole seconds: 0 for a server just started.
        let least = if name == "process_cpu_seconds_total" {
            0.0
        } else {
            1.0
        };
        assert!(
            sample(&text, name).is_some_and(|v| v >= least),
            "{name} in {text}"
        );
    }
    assert_eq!(
        sample(&text, "keepalive_sessions_live"),
        Some(0.0),
        "{text}"
    );

    let kept = create_session(&server.base).await;
    let ended = create_session(&server.base).await;
    let _idle = create_session(&server.base).await;
    // Copies of Redis's sessions reach the local store with its next batched write.
    within(Duration::from_secs(5), "three live sessions", || async {
        live().await == Some(3.0)
    })
    .await;

    assert_eq!(logout(&server.base, &ended).await, 204);
    within(Duration::from_secs(5), "two after a logout", || async {
        live().await == Some(2.0)
    })
    .await;

    // One session kept alive, the other left idle past its 10-minute timeout (and past the
    // end of the expiry index's bucket it falls in).
    for _ in 0..6 {
        server.clock.advance(2 * MIN);
        assert_eq!(keepalive(&server.base, Some(&kept)).await.0, 200);
    }
    within(Duration::from_secs(5), "one after an expiry", || async {
        live().await == Some(1.0)
    })
    .await;
    server.stop().await;
}

on_every_store!(metrics_count_live_sessions_and_show_the_process);

//! The real binary: crash durability, graceful shutdown, configuration errors, logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Process, client, command, create_session, keepalive};
use nix::sys::signal::Signal;
use serde_json::Value;

#[tokio::test]
async fn a_session_answered_201_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let cookie = create_session(&process.base).await;
    // No grace at all: the process dies right after the 201.
    process.signal(Signal::SIGKILL);
    drop(process);

    let process = Process::start(dir.path(), &[]);
    let (status, body) = keepalive(&process.base, Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn many_sessions_survive_sigkill_under_concurrent_creation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let base = process.base.clone();
        tasks.push(tokio::spawn(async move { create_session(&base).await }));
    }
    let mut cookies = Vec::new();
    for task in tasks {
        cookies.push(task.await.expect("task"));
    }
    process.signal(Signal::SIGKILL);
    drop(process);

    let process = Process::start(dir.path(), &[]);
    for cookie in &cookies {
        assert_eq!(keepalive(&process.base, Some(cookie)).await.0, 200);
    }
}

/// Keepalives kept coming until the kill: their extensions were in the write-ahead log, not
/// yet folded into the sessions table, and the next start folds them. The session's idle
/// timeout is shorter than the time it was kept alive, so only an extension read back from
/// the log keeps it.
#[tokio::test]
async fn extensions_still_in_the_log_survive_sigkill() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [
        ("KEEPALIVE_TICK", "1s"),
        ("KEEPALIVE_TIMEOUT", "500ms"),
        ("KEEPALIVE_IDLE_TIMEOUT", "3s"),
        ("KEEPALIVE_FLUSH_INTERVAL", "200ms"),
        ("KEEPALIVE_LOG_LEVEL", "info"),
    ];
    let process = Process::start(dir.path(), &vars);
    let cookie = create_session(&process.base).await;
    // Back to back until the kill, for longer than the idle timeout and shorter than the log
    // is kept between two folds: every flush interval finds keepalives to append, so the store
    // never goes quiet (which would fold).
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        let (base, cookie) = (process.base.clone(), cookie.clone());
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let sent = http
                    .get(format!("{base}/api/v1/keepalive/"))
                    .header("cookie", &cookie)
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => panic!("a keepalive before the kill got {other}"),
                    Err(_) => break,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    process.signal(Signal::SIGKILL);
    let killed = std::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the keepalives");
    drop(process);
    assert!(
        answered.load(Ordering::Relaxed) > 10,
        "kept alive until the kill"
    );

    let mut process = Process::start(dir.path(), &vars);
    let (status, body) = keepalive(&process.base, Some(&cookie)).await;
    let since = killed.elapsed();
    assert!(
        since < Duration::from_millis(2500),
        "the restart took {since:?}: too long for the idle timeout to tell"
    );
    assert_eq!(status, 200, "{body}");
    let lines = process.lines_until(
        "its write-ahead log kept at the last stop",
        Duration::from_secs(5),
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("its write-ahead log kept at the last stop")),
        "the start folded the log: {lines:?}"
    );
}

#[tokio::test]
async fn a_logout_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    let cookie = create_session(&process.base).await;
    let response = client()
        .delete(format!("{}/api/v1/session", process.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    process.signal(Signal::SIGKILL);
    drop(process);
    let process = Process::start(dir.path(), &[]);
    assert_eq!(keepalive(&process.base, Some(&cookie)).await.0, 401);
}

/// SIGTERM: `/readyz` turns 503 during the drain delay while requests are still served, a
/// request in flight completes, the store is flushed, and the process exits 0.
#[tokio::test]
async fn sigterm_drains_finishes_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Process::start(dir.path(), &[("KEEPALIVE_DRAIN_DELAY", "1500ms")]);
    let cookie = create_session(&process.base).await;
    let addr = process.base.trim_start_matches("http://").to_owned();

    // A request in flight: headers sent, half of the body still to come.
    let body = r#"{"data":{"user":"in-flight"}}"#;
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/v1/session HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .expect("write head");
    std::thread::sleep(Duration::from_millis(100));

    process.signal(Signal::SIGTERM);
    let mut not_ready = false;
    for _ in 0..50 {
        let response = client()
            .get(format!("{}/readyz", process.base))
            .send()
            .await
            .expect("readyz while draining");
        if response.status() == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_ready, "/readyz turned 503 after SIGTERM");
    let live = client()
        .get(format!("{}/livez", process.base))
        .send()
        .await
        .expect("livez while draining");
    assert_eq!(live.status(), 200, "/livez keeps answering while draining");
    assert_eq!(
        keepalive(&process.base, Some(&cookie)).await.0,
        200,
        "sessions are served while draining"
    );

    stream
        .write_all(&body.as_bytes()[10..])
        .expect("write rest");
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while !answer.contains("\r\n\r\n{") || !answer.ends_with('}') {
        let n = stream.read(&mut buf).expect("read answer");
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the in-flight request completed: {answer}"
    );
    let in_flight_cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("cookie of the in-flight session")
        .to_owned();
    drop(stream);

    assert_eq!(
        process.wait(Duration::from_secs(15)),
        Some(0),
        "exit code 0 after SIGTERM"
    );
    let lines = process.drain_lines().join("\n");
    assert!(lines.contains("SIGTERM received"), "{lines}");
    assert!(lines.contains("sessions flushed"), "{lines}");
    drop(process);

    let process = Process::start(dir.path(), &[]);
    assert_eq!(keepalive(&process.base, Some(&cookie)).await.0, 200);
    assert_eq!(
        keepalive(&process.base, Some(&in_flight_cookie)).await.0,
        200
    );
}

/// Environment variables of one case.
type Vars<'a> = &'a [(&'a str, &'a str)];

/// The binary turns transparent huge pages off for itself (a memory choice, see main.rs), and
/// leaves them as its parent had them when the operator set mimalloc's own switch.
#[test]
fn transparent_huge_pages_are_off_unless_mimalloc_is_told_otherwise() {
    fn thp_enabled(pid: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(|value| value.trim().to_owned())
            .expect("a THP_enabled line (Linux 5.0 and later)")
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(dir.path(), &[]);
    assert_eq!(thp_enabled(&process.pid().to_string()), "0");
    drop(process);

    let process = Process::start(dir.path(), &[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(
        thp_enabled(&process.pid().to_string()),
        thp_enabled("self"),
        "with MIMALLOC_ALLOW_THP set, the binary keeps what it inherited"
    );
}

#[test]
fn invalid_configuration_exits_64_naming_key_value_origin_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let cases: [(Vars, &[&str]); 4] = [
        (
            &[("NODE_ENV", "production"), ("KEEPALIVE_TICK", "10s")],
            &[
                "tick",
                "10s",
                "environment variable KEEPALIVE_TICK",
                "at least 25s in production",
            ],
        ),
        (
            &[
                ("KEEPALIVE_MEMORY_WARNING", "95"),
                ("KEEPALIVE_MEMORY_CRITICAL", "90"),
            ],
            &[
                "memory_warning",
                "95",
                "KEEPALIVE_MEMORY_WARNING",
                "below memory_critical",
            ],
        ),
        (
            &[("KEEPALIVE_IDLE_TIMEOUT", "ten minutes")],
            &[
                "idle_timeout",
                "ten minutes",
                "KEEPALIVE_IDLE_TIMEOUT",
                "duration",
            ],
        ),
        (
            &[("PORT", "99999")],
            &["port", "99999", "environment variable PORT"],
        ),
    ];
    for (vars, expected) in cases {
        let mut all = vars.to_vec();
        all.push(("KEEPALIVE_DATA_DIR", &data));
        let output = command(&all).output().expect("run");
        assert_eq!(output.status.code(), Some(64), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{vars:?}: {needle:?} missing from {stderr}"
            );
        }
        assert!(
            !dir.path().join("sessions.redb").exists(),
            "nothing was opened before validation"
        );
    }
}

#[test]
fn invalid_config_file_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keepalive.toml");
    std::fs::write(&file, "env = \"production\"\ntick = \"5s\"\n").expect("write");
    let output = command(&[])
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("config file {}", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("tick"), "{stderr}");
}

#[test]
fn a_taken_port_is_reported_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let output = command(&[
        ("PORT", &port),
        ("KEEPALIVE_BIND", "127.0.0.1"),
        ("KEEPALIVE_DATA_DIR", &data),
    ])
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stdout}"
    );
}

#[test]
fn production_logs_json_with_a_banner_and_redacted_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let process = Process::start(
        dir.path(),
        &[
            ("NODE_ENV", "production"),
            ("KEEPALIVE_LOG_FORMAT", ""),
            ("KEEPALIVE_DRAIN_DELAY", "0s"),
            ("KEEPALIVE_HEALTH_TOKEN", "very-secret-health-token"),
            ("REDIS_URL", "redis://app:hunter2@redis:6379/0"),
            ("KEEPALIVE_TIKC", "30s"),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    process.signal(Signal::SIGTERM);
    let mut process = process;
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    let lines = process.drain_lines();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let banner = events
        .iter()
        .find(|e| e["environment"] == "production")
        .expect("banner");
    assert_eq!(banner["tick"], "30s");
    assert_eq!(banner["timeout"], "8s");
    assert_eq!(banner["max_retries"], 3);
    assert_eq!(banner["log_format"], "json");
    assert!(
        banner["health_check"]
            .as_str()
            .expect("health check")
            .contains("2 ticks")
    );
    let all = lines.join("\n");
    assert!(
        !all.contains("hunter2") && !all.contains("very-secret-health-token"),
        "{all}"
    );
    assert!(
        all.contains("KEEPALIVE_TIKC"),
        "unknown variables are pointed out: {all}"
    );
}

#[test]
fn health_changes_are_logged_once_not_every_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Process::start(
        dir.path(),
        &[
            ("KEEPALIVE_HEALTH_INTERVAL", "20ms"),
            ("KEEPALIVE_MEMORY_WARNING", "0.001"),
            ("KEEPALIVE_MEMORY_CRITICAL", "99.9"),
        ],
    );
    std::thread::sleep(Duration::from_millis(600));
    process.signal(Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    let lines: Vec<String> = process
        .drain_lines()
        .into_iter()
        .filter(|l| l.contains("Server health:"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("Server health: degraded {redis: disabled, memory: warning}"),
        "{}",
        lines[0]
    );
}

#[test]
fn config_command_shows_values_and_sources_with_secrets_redacted() {
    let output = command(&[
        ("KEEPALIVE_ENV", "staging"),
        ("KEEPALIVE_IDLE_TIMEOUT", "20m"),
        ("REDIS_URL", "rediss://app:hunter2@cache:6380/1"),
    ])
    .args(["config", "--json"])
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(doc["environment"], "staging");
    assert_eq!(doc["settings"]["idle_timeout"]["value"], "20m");
    assert_eq!(
        doc["settings"]["idle_timeout"]["source"],
        "environment variable KEEPALIVE_IDLE_TIMEOUT"
    );
    assert_eq!(doc["settings"]["tick"]["source"], "default for staging");
    assert_eq!(
        doc["settings"]["redis_url"]["value"],
        "rediss://<redacted>@cache:6380/1"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
}

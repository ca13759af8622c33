//! Alert notices over real HTTP: the Alertmanager-compatible and Slack-style webhooks, a
//! retry after a failed delivery, and a hanging webhook that must not slow anything down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Process, create_session, keepalive};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

#[derive(Clone, Default)]
struct Received {
    alertmanager: Arc<Mutex<Vec<Value>>>,
    slack: Arc<Mutex<Vec<Value>>>,
    alertmanager_attempts: Arc<Mutex<u32>>,
}

async fn alertmanager(State(r): State<Received>, Json(body): Json<Value>) -> StatusCode {
    let attempt = {
        let mut attempts = r.alertmanager_attempts.lock().expect("lock");
        *attempts += 1;
        *attempts
    };
    // The first delivery fails: the notice must come again.
    if attempt == 1 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.alertmanager.lock().expect("lock").push(body);
    StatusCode::OK
}

async fn slack(State(r): State<Received>, Json(body): Json<Value>) -> StatusCode {
    r.slack.lock().expect("lock").push(body);
    StatusCode::OK
}

async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(60)).await;
    StatusCode::OK
}

async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/hooks/am/secret-token-1", post(alertmanager))
        .route("/hooks/slack/secret-token-2", post(slack))
        .route("/hooks/hang", post(hang))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// Waits for a condition on what the receiver got.
async fn wait_until(limit: Duration, what: &str, condition: impl Fn() -> bool) {
    crate::harness::within(limit, what, || {
        let holds = condition();
        async move { holds }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alert_reaches_both_webhooks_with_a_retry() {
    let (addr, received) = receiver().await;
    let am = format!("http://{addr}/hooks/am/secret-token-1");
    let slack_url = format!("http://{addr}/hooks/slack/secret-token-2");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Process::start(
        dir.path(),
        &[
            ("KEEPALIVE_MEMORY_WARNING", "0.001"),
            ("KEEPALIVE_MEMORY_CRITICAL", "99.9"),
            ("KEEPALIVE_HEALTH_INTERVAL", "50ms"),
            ("KEEPALIVE_ALERT_MEMORY_FOR", "300ms"),
            ("KEEPALIVE_ALERT_WEBHOOK_URL", &am),
            ("KEEPALIVE_ALERT_SLACK_WEBHOOK_URL", &slack_url),
        ],
    );
    wait_until(Duration::from_secs(5), "the Slack notice", || {
        !received.slack.lock().expect("lock").is_empty()
    })
    .await;
    let text = received.slack.lock().expect("lock")[0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(
        text.starts_with("[FIRING] KeepaliveMemoryHigh on "),
        "{text}"
    );

    wait_until(
        Duration::from_secs(5),
        "the Alertmanager notice, after one retry",
        || !received.alertmanager.lock().expect("lock").is_empty(),
    )
    .await;
    assert_eq!(*received.alertmanager_attempts.lock().expect("lock"), 2);
    let payload = received.alertmanager.lock().expect("lock")[0].clone();
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["status"], "firing");
    assert_eq!(
        payload["alerts"][0]["labels"]["alertname"],
        "KeepaliveMemoryHigh"
    );
    assert_eq!(payload["alerts"][0]["labels"]["service"], "keepalive");
    assert!(
        payload["alerts"][0]["startsAt"]
            .as_str()
            .expect("startsAt")
            .ends_with('Z')
    );

    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    let logs = process.drain_lines().join("\n");
    assert!(
        logs.contains("alert: [FIRING] KeepaliveMemoryHigh"),
        "{logs}"
    );
    assert!(
        !logs.contains("secret-token"),
        "webhook URLs are secrets: {logs}"
    );
    assert_eq!(
        received.slack.lock().expect("lock").len(),
        1,
        "fired once, not every tick"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_never_slows_requests_or_shutdown() {
    let (addr, _received) = receiver().await;
    let hook = format!("http://{addr}/hooks/hang");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Process::start(
        dir.path(),
        &[
            ("KEEPALIVE_MEMORY_WARNING", "0.001"),
            ("KEEPALIVE_MEMORY_CRITICAL", "0.002"),
            ("KEEPALIVE_HEALTH_INTERVAL", "20ms"),
            ("KEEPALIVE_ALERT_MEMORY_FOR", "0s"),
            ("KEEPALIVE_ALERT_CRITICAL_FOR", "0s"),
            ("KEEPALIVE_ALERT_REPEAT_INTERVAL", "1s"),
            ("KEEPALIVE_ALERT_WEBHOOK_URL", &hook),
        ],
    );
    let cookie = create_session(&process.base).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        assert_eq!(keepalive(&process.base, Some(&cookie)).await.0, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "keepalives took up to {slowest:?} with a hanging webhook"
    );
    let started = Instant::now();
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown does not wait for the webhook"
    );
}

#[test]
fn invalid_webhook_urls_are_configuration_errors() {
    let output = crate::harness::command(&[("KEEPALIVE_ALERT_WEBHOOK_URL", "ftp://hooks/secret")])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("alert_webhook_url") && stderr.contains("http:// or https://"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the URL is redacted: {stderr}");
}

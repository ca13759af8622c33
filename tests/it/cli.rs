//! `keepalive check` and `keepalive doctor` against real servers and real faults.

use std::process::Output;
use std::time::Duration;

use crate::harness::{Process, command};
use keepalive_testkit::ports::free_port;
use keepalive_testkit::redis::{RedisCluster, RedisSentinel, RedisServer};
use serde_json::Value;

fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    command(vars).args(args).output().expect("run keepalive")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_exit_codes_follow_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let healthy = Process::start(dir.path(), &[]);
    let output = run(&[], &["check", &healthy.base]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains(": healthy"), "{}", stdout(&output));
    drop(healthy);

    let dir = tempfile::tempdir().expect("tempdir");
    let degraded = Process::start(
        dir.path(),
        &[
            ("KEEPALIVE_MEMORY_WARNING", "0.001"),
            ("KEEPALIVE_MEMORY_CRITICAL", "99.9"),
        ],
    );
    let output = run(&[], &["check", &format!("{}/health", degraded.base)]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    drop(degraded);

    let dir = tempfile::tempdir().expect("tempdir");
    let critical = Process::start(
        dir.path(),
        &[
            ("KEEPALIVE_MEMORY_WARNING", "0.001"),
            ("KEEPALIVE_MEMORY_CRITICAL", "0.002"),
        ],
    );
    let output = run(&[], &["check", "--json", &critical.base]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let json: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["status"], "critical");
    assert_eq!(json["exitCode"], 2);
    // A keepalive URL works too: its 401 carries the health.
    let output = run(
        &[],
        &["check", &format!("{}/api/v1/keepalive/", critical.base)],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    drop(critical);

    let port = free_port().to_string();
    let output = run(&[], &["check", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stdout(&output).contains("unreachable"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn check_without_url_probes_this_configuration_with_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "a-health-token-of-some-length";
    let process = Process::start(dir.path(), &[("KEEPALIVE_HEALTH_TOKEN", token)]);
    let port = process.base.rsplit(':').next().expect("port").to_owned();
    let output = run(
        &[("PORT", &port), ("KEEPALIVE_HEALTH_TOKEN", token)],
        &["check"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let line = stdout(&output);
    assert!(
        line.contains("memory") && line.contains("redis disabled"),
        "details with the token: {line}"
    );
    assert!(!line.contains(token));
}

#[test]
fn check_times_out_on_a_silent_server() {
    // A listener that never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let output = run(&[], &["check", "--timeout", "300ms", &url]);
    assert_eq!(output.status.code(), Some(3));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stdout(&output).contains("no answer within 300ms"),
        "{}",
        stdout(&output)
    );
}

/// Runs `doctor --json` with `REDIS_URL` and a data dir; returns exit code and report.
fn doctor(redis_url: &str) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let port = free_port().to_string();
    let output = run(
        &[
            ("REDIS_URL", redis_url),
            ("KEEPALIVE_DATA_DIR", &data),
            ("PORT", &port),
            ("KEEPALIVE_REDIS_CONNECT_TIMEOUT", "500ms"),
        ],
        &["doctor", "--json"],
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("doctor prints JSON");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("s3cret"),
        "secrets never printed"
    );
    (output.status.code(), report)
}

/// Asserts that the doctor's `field` (`cause` or `fix`) contains `words`.
#[track_caller]
fn says(report: &Value, field: &str, words: &str) {
    let text = report[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {report:#}"));
    assert!(text.contains(words), "{field} lacks {words:?}: {report:#}");
}

#[test]
fn doctor_finds_a_healthy_redis() {
    let redis = RedisServer::start_with_password("s3cret-pass");
    let (code, report) = doctor(&redis.url());
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let steps = report["steps"].as_array().expect("steps");
    let ping = steps
        .iter()
        .find(|s| s["name"] == "ping")
        .expect("ping step");
    assert!(
        ping["detail"]
            .as_str()
            .expect("detail")
            .starts_with("PONG in"),
        "{ping}"
    );
    let info = steps
        .iter()
        .find(|s| s["name"] == "info")
        .expect("info step");
    assert!(
        info["detail"].as_str().expect("detail").contains("Redis 7"),
        "{info}"
    );
    for name in ["memory", "port", "data directory", "configuration"] {
        assert!(
            steps.iter().any(|s| s["name"] == name),
            "{name} checked: {report:#}"
        );
    }
}

#[test]
fn doctor_names_a_stopped_redis() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let (code, report) = doctor(&url);
    assert_eq!(code, Some(1));
    says(&report, "cause", "Redis is not running");
    says(&report, "fix", "start Redis");
}

#[test]
fn doctor_names_a_port_nothing_listens_on() {
    let (code, report) = doctor(&format!("redis://127.0.0.1:{}/0", free_port()));
    assert_eq!(code, Some(1));
    says(&report, "cause", "nothing listens");
}

#[test]
fn doctor_names_a_frozen_redis() {
    let redis = RedisServer::start();
    redis.freeze();
    let (code, report) = doctor(&redis.url());
    redis.thaw();
    assert_eq!(code, Some(1));
    says(&report, "cause", "frozen or overloaded");
}

#[test]
fn doctor_names_password_problems() {
    let redis = RedisServer::start_with_password("right-s3cret");
    let (code, report) = doctor(&format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(code, Some(1));
    says(&report, "cause", "requires a password");
    let (code, report) = doctor(&format!(
        "redis://:wrong-s3cret@127.0.0.1:{}/0",
        redis.port()
    ));
    assert_eq!(code, Some(1));
    says(&report, "cause", "refused the user or password");
}

/// The steps of a report, by name.
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} step: {report:#}"))
}

#[test]
fn doctor_checks_a_cluster_through_its_masters() {
    let cluster = RedisCluster::start();
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let (code, report) = doctor(&format!("redis+cluster://{}", hosts.join(",")));
    assert_eq!(code, Some(0), "{report:#}");
    let ping = step(&report, "ping");
    assert!(
        ping["detail"]
            .as_str()
            .expect("detail")
            .starts_with("PONG in"),
        "{ping}"
    );
    let state = step(&report, "cluster");
    assert_eq!(state["status"], "ok", "{state}");
    let eviction = step(&report, "eviction");
    assert_eq!(
        eviction["status"], "ok",
        "every master's policy read: {eviction}"
    );
    assert!(
        state["detail"]
            .as_str()
            .expect("detail")
            .contains("state ok, 3 masters"),
        "{state}"
    );
}

#[test]
fn doctor_finds_the_master_through_the_sentinels_and_names_an_unknown_one() {
    let master = RedisServer::start_with_password("sentinel-s3cret");
    let sentinel = RedisSentinel::start(master.port());
    let (code, report) = doctor(&format!(
        "redis+sentinel://:sentinel-s3cret@127.0.0.1:{}/mymaster/0",
        sentinel.port
    ));
    assert_eq!(code, Some(0), "{report:#}");
    let named = step(&report, "sentinel");
    assert!(
        named["detail"]
            .as_str()
            .expect("detail")
            .contains(&format!("master mymaster is 127.0.0.1:{}", master.port())),
        "{named}"
    );
    let ping = step(&report, "ping");
    assert!(
        ping["detail"]
            .as_str()
            .expect("detail")
            .starts_with("PONG in"),
        "{ping}"
    );
    assert!(
        step(&report, "info")["detail"]
            .as_str()
            .expect("detail")
            .contains("(master)"),
        "{report:#}"
    );

    let (code, report) = doctor(&format!(
        "redis+sentinel://:sentinel-s3cret@127.0.0.1:{}/othermaster/0",
        sentinel.port
    ));
    assert_eq!(code, Some(1), "{report:#}");
    says(&report, "cause", "know no master named othermaster");
    says(&report, "fix", "master name");
}

#[test]
fn doctor_names_an_unknown_host() {
    let (code, report) = doctor("redis://no-such-host.invalid:6379/0");
    assert_eq!(code, Some(1));
    says(
        &report,
        "cause",
        "host name no-such-host.invalid is unknown",
    );
}

#[test]
fn doctor_exits_64_on_invalid_configuration() {
    let output = run(
        &[("KEEPALIVE_ENV", "production"), ("KEEPALIVE_TICK", "5s")],
        &["doctor"],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stdout(&output).contains("at least 25s in production"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn doctor_sees_a_port_taken_by_another_program() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let output = run(
        &[
            ("PORT", &port),
            ("KEEPALIVE_BIND", "127.0.0.1"),
            ("KEEPALIVE_DATA_DIR", &data),
        ],
        &["doctor"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("in use by another program"),
        "{}",
        stdout(&output)
    );
}

/// Issue #18: a `maxmemory-policy` that can evict session keys is named, with the one to set;
/// a Redis that refuses to say (a managed one, or an ACL user without CONFIG and INFO) is
/// named as such.
#[test]
fn doctor_warns_when_redis_can_evict_session_keys() {
    let redis = RedisServer::start();
    let (code, report) = doctor(&redis.url());
    assert_eq!(code, Some(0), "{report:#}");
    let eviction = step(&report, "eviction");
    assert_eq!(eviction["status"], "ok", "{eviction}");
    assert!(
        eviction["detail"]
            .as_str()
            .expect("detail")
            .contains("noeviction"),
        "{eviction}"
    );

    for policy in ["volatile-lru", "allkeys-lfu"] {
        let _: () = redis.query(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy),
            "CONFIG SET",
        );
        let (code, report) = doctor(&redis.url());
        assert_eq!(code, Some(0), "a warning, not a failure: {report:#}");
        let eviction = step(&report, "eviction");
        assert_eq!(eviction["status"], "warn", "{eviction}");
        let detail = eviction["detail"].as_str().expect("detail");
        assert!(detail.contains(policy), "{eviction}");
        assert!(detail.contains("evicts"), "{eviction}");
        assert!(
            eviction["fix"]
                .as_str()
                .expect("fix")
                .contains("maxmemory-policy noeviction"),
            "{eviction}"
        );
    }

    // A user that may neither read the configuration nor INFO, as a managed Redis may have.
    let _: () = redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("limited")
            .arg("on")
            .arg(">limited-pass")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-config")
            .arg("-info"),
        "ACL SETUSER",
    );
    let (code, report) = doctor(&format!(
        "redis://limited:limited-pass@127.0.0.1:{}/0",
        redis.port()
    ));
    assert_eq!(code, Some(0), "{report:#}");
    let eviction = step(&report, "eviction");
    assert_eq!(eviction["status"], "warn", "{eviction}");
    assert!(
        eviction["detail"]
            .as_str()
            .expect("detail")
            .contains("refused CONFIG GET"),
        "{eviction}"
    );
    assert!(
        eviction["fix"]
            .as_str()
            .expect("fix")
            .contains("noeviction"),
        "{eviction}"
    );
}

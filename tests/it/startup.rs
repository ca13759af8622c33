//! How the binary starts in the environments operators give it: a pod behind a Kubernetes
//! Service named `keepalive`, the `NODE_ENV` of a Node application, the flags of `serve`,
//! systemd's notify socket; and what it says about itself (`--version`, completions, manual
//! pages). Run on the binary `KEEPALIVE_BIN` names when set: `scripts/test.sh` runs them on the
//! release build too.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use keepalive_testkit::ports::free_port;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{Process, command};

/// What the kubelet gives every container started after a Service named `keepalive` with a
/// port named `http` (80 to the pods' 8080), for a pod spec that keeps service links on (the
/// default): the Docker-links family and the `*_SERVICE_*` family.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("KEEPALIVE_SERVICE_HOST", "10.96.12.34"),
    ("KEEPALIVE_SERVICE_PORT", "80"),
    ("KEEPALIVE_SERVICE_PORT_HTTP", "80"),
    ("KEEPALIVE_PORT", "tcp://10.96.12.34:80"),
    ("KEEPALIVE_PORT_80_TCP", "tcp://10.96.12.34:80"),
    ("KEEPALIVE_PORT_80_TCP_PROTO", "tcp"),
    ("KEEPALIVE_PORT_80_TCP_PORT", "80"),
    ("KEEPALIVE_PORT_80_TCP_ADDR", "10.96.12.34"),
];

fn get(base: &str, path: &str) -> u16 {
    let url = format!("{base}{path}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            crate::harness::client()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
}

fn logs(process: &mut Process) -> Vec<Value> {
    std::thread::sleep(Duration::from_millis(200));
    process
        .drain_lines()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"]
        .as_str()
        .or_else(|| line["message"].as_str())
        .unwrap_or_default()
}

#[test]
fn a_pod_behind_a_service_named_keepalive_starts_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The manifests' own settings next to the kubelet's: PORT from the manifest, the rest
    // from the Service.
    let mut vars = vec![
        ("KEEPALIVE_ENV", "production"),
        ("KEEPALIVE_DRAIN_DELAY", "0s"),
    ];
    vars.extend_from_slice(SERVICE_LINKS);
    let mut server = Process::start(dir.path(), &vars);
    assert_eq!(get(&server.base, "/readyz"), 200);
    assert_eq!(get(&server.base, "/api/v1/keepalive/"), 401);

    let lines = logs(&mut server);
    let notes: Vec<&Value> = lines
        .iter()
        .filter(|l| message(l).contains("enableServiceLinks"))
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "one line about the service links: {lines:#?}"
    );
    for (name, _) in SERVICE_LINKS {
        assert!(message(notes[0]).contains(name), "{name} in {}", notes[0]);
    }
    assert!(
        !lines
            .iter()
            .any(|l| message(l).contains("names no setting")),
        "service links are not reported as typos: {lines:#?}"
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_port_written_like_a_service_link_by_hand_is_refused_with_the_fix() {
    let output = command(&[("KEEPALIVE_PORT", "tcp://10.96.12.34:80")])
        .arg("serve")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEEPALIVE_PORT"), "{stderr}");
    assert!(stderr.contains("enableServiceLinks: false"), "{stderr}");
}

#[test]
fn node_env_values_of_node_applications_start_the_server_with_one_line() {
    for (value, environment) in [
        ("test", "development"),
        ("qa", "development"),
        ("ci", "development"),
        ("local", "development"),
        ("production", "production"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Process::start(dir.path(), &[("NODE_ENV", value)]);
        assert_eq!(get(&server.base, "/readyz"), 200, "NODE_ENV={value}");
        let lines = logs(&mut server);
        let banner = lines
            .iter()
            .find(|l| l["environment"].is_string())
            .unwrap_or_else(|| panic!("a banner for NODE_ENV={value}: {lines:#?}"));
        assert_eq!(banner["environment"], environment, "{value}");
        let notes = lines
            .iter()
            .filter(|l| message(l).contains("not one of keepalive's environments"))
            .count();
        // `test` has always meant development; the others say what they were taken for.
        let expected = usize::from(matches!(value, "qa" | "ci" | "local"));
        assert_eq!(notes, expected, "NODE_ENV={value}: {lines:#?}");
    }
}

#[test]
fn keepalive_env_stays_strict() {
    let output = command(&[("KEEPALIVE_ENV", "qa")])
        .arg("serve")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEEPALIVE_ENV"), "{stderr}");
    assert!(
        stderr.contains("development, staging, production"),
        "{stderr}"
    );
}

#[test]
fn serve_flags_override_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let data = dir.path().join("sessions");
    let mut child = command(&[
        ("PORT", "1"),
        ("KEEPALIVE_BIND", "0.0.0.0"),
        ("KEEPALIVE_DATA_DIR", "/nonexistent/keepalive"),
    ])
    .args(["serve", "--port", &port.to_string(), "--bind", "127.0.0.1"])
    .arg("--data-dir")
    .arg(&data)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get(&base, "/readyz") != 200 {
        assert!(std::time::Instant::now() < deadline, "serves on --port");
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        data.join("sessions.redb").exists(),
        "the store in --data-dir"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("signal");
    assert!(child.wait().expect("wait").success());

    // A bad flag value is a usage error, exit 64 like any configuration error.
    let output = command(&[])
        .args(["serve", "--port", "http"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn systemd_hears_ready_once_the_server_serves_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let path = socket_path.display().to_string();
    let data = dir.path().join("data");
    let data = data.display().to_string();
    let mut server = Process::start(
        dir.path(),
        &[("NOTIFY_SOCKET", &path), ("KEEPALIVE_DATA_DIR", &data)],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // READY comes after the listener is bound and the instance is marked ready.
    assert_eq!(get(&server.base, "/readyz"), 200);

    server.signal(Signal::SIGTERM);
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn version_names_the_version_and_the_commit() {
    let output = command(&[]).arg("--version").output().expect("run");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!("keepalive {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text
        .trim()
        .strip_prefix(&expected)
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("a commit in parentheses");
    // Built from this checkout: the commit git names (the test runs in one).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout);
    assert_eq!(commit.len(), 12, "{commit}");
    assert!(
        head.trim().starts_with(commit),
        "commit {commit}, HEAD {head}"
    );
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line_definition() {
    let output = command(&[])
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let script = String::from_utf8_lossy(&output.stdout);
    for word in ["serve", "doctor", "--data-dir", "--json"] {
        assert!(script.contains(word), "{word} in the bash completions");
    }
    // The script is valid bash, and defines the completion function it registers.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keepalive.bash");
    std::fs::write(&file, script.as_bytes()).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p keepalive",
            file.display()
        ))
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let output = command(&[])
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{shell}"
        );
    }

    let pages = dir.path().join("man1");
    let output = command(&[])
        .args(["man", "--dir"])
        .arg(&pages)
        .output()
        .expect("run");
    assert!(output.status.success());
    for page in [
        "keepalive",
        "keepalive-serve",
        "keepalive-check",
        "keepalive-doctor",
    ] {
        let text = std::fs::read_to_string(pages.join(format!("{page}.1")))
            .unwrap_or_else(|err| panic!("{page}.1: {err}"));
        assert!(text.contains(".TH"), "{page}.1 is a manual page");
    }
    let serve = std::fs::read_to_string(pages.join("keepalive-serve.1")).expect("serve page");
    for flag in ["port", "bind", "data\\-dir"] {
        assert!(serve.contains(flag), "{flag} in keepalive-serve.1");
    }
    let doctor = std::fs::read_to_string(pages.join("keepalive-doctor.1")).expect("doctor page");
    assert!(
        doctor.contains("Exit codes"),
        "doctor's exit codes in its page"
    );

    let output = command(&[]).arg("man").output().expect("run");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with(".ie"));
}

#[test]
fn doctor_and_config_help_list_their_exit_codes() {
    for (subcommand, codes) in [
        ("doctor", ["0 ", "1 ", "64 "]),
        ("config", ["0 ", "64 ", "64 "]),
        ("check", ["0 ", "3 ", "64 "]),
    ] {
        let output = command(&[])
            .args([subcommand, "--help"])
            .output()
            .expect("run");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        let section = help
            .split_once("Exit codes:")
            .unwrap_or_else(|| panic!("`{subcommand} --help` lists exit codes: {help}"))
            .1;
        for code in codes {
            assert!(section.contains(code), "{subcommand}: {code} in {section}");
        }
    }
}

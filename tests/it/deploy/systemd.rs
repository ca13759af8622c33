//! The systemd unit: its settings, `systemd-analyze verify` and `security`, and its sandbox
//! held to what the server really does (the server under `strace`).
//!
//! Needs `systemd-analyze` (Debian's `systemd`) and `strace` (Debian's `strace`), which
//! `scripts/test.sh` installs. Neither needs systemd to run as PID 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::mpsc;

use super::*;

/// The unit's settings: (section, key) to values, in order.
fn unit() -> BTreeMap<(String, String), Vec<String>> {
    let text = read("deploy/systemd/keepalive.service");
    let mut section = String::new();
    let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        settings
            .entry((section.clone(), key.to_owned()))
            .or_default()
            .push(value.to_owned());
    }
    settings
}

/// The values of a `[Service]` setting, in order; empty when it is not set.
fn service(key: &str) -> Vec<String> {
    unit()
        .remove(&("Service".to_owned(), key.to_owned()))
        .unwrap_or_default()
}

/// A `[Service]` setting set exactly once.
fn one(key: &str) -> String {
    let values = service(key);
    assert_eq!(values.len(), 1, "[Service] {key}: {values:?}");
    values[0].clone()
}

#[test]
fn systemd_unit_runs_hardened_with_a_state_directory_and_an_environment_file() {
    assert!(one("ExecStart").starts_with("/usr/local/bin/keepalive serve"));
    assert_eq!(one("StateDirectory"), "keepalive");
    assert!(one("EnvironmentFile").contains("/etc/keepalive/keepalive.env"));
    assert_eq!(one("RestartPreventExitStatus"), "64");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    // The memory check reads /proc/meminfo without a cgroup limit: no ProcSubset=pid.
    assert!(service("ProcSubset").is_empty());
    assert!(one("MemoryMax").ends_with('M') || one("MemoryMax").ends_with('G'));

    // Environment= lines: real settings, the data dir inside the state directory.
    let env: BTreeMap<String, String> = service("Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("NAME=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_known_variables(
        "deploy/systemd/keepalive.service",
        env.keys().map(String::as_str),
    );
    assert_eq!(env["KEEPALIVE_DATA_DIR"], "%S/keepalive");
    assert_eq!(env["KEEPALIVE_ENV"], "production");
    // Production's drain delay (5 s) and shutdown timeout (15 s) fit in the stop timeout.
    assert!(duration(&one("TimeoutStopSec")) >= Duration::from_secs(25));

    // The example environment file names real settings, set or commented out.
    let example = read("deploy/systemd/keepalive.env.example");
    let names: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(names.contains(&"REDIS_URL") && names.contains(&"KEEPALIVE_HEALTH_TOKEN"));
    assert_known_variables("deploy/systemd/keepalive.env.example", names);
}

#[test]
fn systemd_waits_for_the_servers_readiness_and_no_watchdog() {
    // The server sends READY=1 once it serves (checked against the binary below, in
    // the_sandbox_allows_everything_the_server_does): `systemctl start` returns then.
    assert_eq!(one("Type"), "notify");
    // Only the main process may report (the default); a child could not fake readiness.
    assert!(
        service("NotifyAccess").iter().all(|v| v == "main"),
        "{:?}",
        service("NotifyAccess")
    );
    // The server never sends WATCHDOG=1: a watchdog would kill it every WatchdogSec.
    assert!(service("WatchdogSec").is_empty());
    assert!(
        !read("src/server.rs").contains("Watchdog"),
        "the server now pings a watchdog: set WatchdogSec= in the unit"
    );
    // The notification socket is an AF_UNIX datagram socket.
    let families = one("RestrictAddressFamilies");
    assert!(
        families.split_whitespace().any(|f| f == "AF_UNIX"),
        "{families}"
    );
}

/// The unit with ExecStart= pointing at the binary cargo built: `systemd-analyze verify`
/// wants the program to exist.
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let unit = read("deploy/systemd/keepalive.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/keepalive serve"));
    let unit = unit.replace("/usr/local/bin/keepalive", env!("CARGO_BIN_EXE_keepalive"));
    let path = dir.join("keepalive.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

fn systemd_analyze(args: &[&str], unit: Option<&Path>) -> (bool, String, String) {
    let mut command = Command::new("systemd-analyze");
    command.args(args);
    if let Some(unit) = unit {
        command.arg(unit);
    }
    let output = command.output().expect(
        "systemd-analyze runs (Debian's systemd package; scripts/test.sh installs it; \
         systemd need not be running)",
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_build(dir.path());
    let (ok, stdout, stderr) = systemd_analyze(&["verify"], Some(&unit));
    // Unknown keys and bad values are only warnings (exit 0): any output at all is a finding.
    assert!(
        ok && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stdout}{stderr}"
    );
}

/// The exposure `systemd-analyze security` gives the unit today (0 best, 10 worst): a change
/// that weakens the sandbox fails here, one that tightens it may lower this number.
const EXPOSURE: f64 = 1.2;

#[test]
fn systemd_analyze_security_rates_the_unit_at_most_its_current_exposure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_build(dir.path());
    let (_, stdout, stderr) = systemd_analyze(&["security", "--offline=yes"], Some(&unit));
    let level = stdout
        .split("Overall exposure level for keepalive.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}{stderr}"));
    assert!(
        level <= EXPOSURE,
        "exposure {level} > {EXPOSURE} (0 best, 10 worst):\n{stdout}"
    );
}

/// Each system call group of `systemd-analyze syscall-filter`: name to members (system calls
/// and nested groups).
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let (ok, stdout, stderr) = systemd_analyze(&["syscall-filter"], None);
    assert!(ok, "systemd-analyze syscall-filter: {stderr}");
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in stdout.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            groups.entry(line.trim().to_owned()).or_default();
            continue;
        }
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if let Some(group) = &current {
            groups.get_mut(group).expect("group").push(entry.to_owned());
        }
    }
    assert!(groups.contains_key("@system-service"), "{groups:?}");
    groups
}

fn expand(groups: &BTreeMap<String, Vec<String>>, name: &str, into: &mut BTreeSet<String>) {
    if name.starts_with('@') {
        let members = groups
            .get(name)
            .unwrap_or_else(|| panic!("unknown system call group {name}"));
        for member in members {
            expand(groups, member, into);
        }
    } else {
        into.insert(name.to_owned());
    }
}

/// The system calls the unit's SystemCallFilter= lines let through, combined as systemd does:
/// the first line is an allow list (no `~`), later lines without `~` add to it, lines with `~`
/// take away from it, in order.
fn allowed_system_calls() -> BTreeSet<String> {
    let groups = syscall_groups();
    let lines = service("SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the first SystemCallFilter= is an allow list: {lines:?}"
    );
    let mut allowed = BTreeSet::new();
    for line in &lines {
        let (deny, names) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let mut set = BTreeSet::new();
        for name in names.split_whitespace() {
            expand(&groups, name, &mut set);
        }
        if deny {
            allowed.retain(|call| !set.contains(call));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

/// One system call of an strace log: the name and the text of its arguments and result.
struct Call {
    name: String,
    rest: String,
}

/// The system calls of `strace -f` output, from the program's own `execve` on (what ran
/// before belongs to the shell that started it).
fn calls_of(trace: &str, program: &str) -> Vec<Call> {
    let exec = format!("execve(\"{program}\"");
    let lines: Vec<&str> = trace.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.contains(&exec))
        .unwrap_or_else(|| panic!("no {exec} in the trace"));
    lines[start + 1..]
        .iter()
        .filter_map(|line| {
            // `PID name(args) = result`; `<... name resumed>`, `---` signals and `+++` exits
            // are skipped: the call itself has its own line.
            let (_, call) = line.split_once(' ')?;
            let call = call.trim_start();
            let open = call.find('(')?;
            let name = &call[..open];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(
                || Call {
                    name: name.to_owned(),
                    rest: call[open + 1..].to_owned(),
                },
            )
        })
        .collect()
}

/// The first quoted argument of a call (a path), and what follows it.
fn quoted(rest: &str) -> Option<(&str, &str)> {
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some((&rest[start..start + len], &rest[start + len + 1..]))
}

/// A minimal webhook receiver: answers 200 to each request and passes its body on.
fn webhook_receiver() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// The server under `strace -f` for what the unit lets it do: start on Redis with systemd's
/// notification socket, serve sessions, health and metrics, lose Redis and send the alert to
/// a webhook, serve from its local store, stop on SIGTERM. Every system call it makes must
/// pass the unit's SystemCallFilter=, every socket its RestrictAddressFamilies=, no mapping
/// may be writable and executable (MemoryDenyWriteExecute=), and it may write only inside its
/// data directory (ProtectSystem=strict; in containers, a read-only root filesystem).
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_allows_everything_the_server_does() {
    let allowed = allowed_system_calls();
    assert!(
        tool_exists("strace"),
        "strace runs (Debian's strace; scripts/test.sh installs it)"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let trace_path = dir.path().join("trace");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notification socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let redis = keepalive_testkit::redis::RedisServer::start();
    let (webhook, alerts) = webhook_receiver();

    let program = crate::harness::binary();
    let data_text = data.display().to_string();
    let notify_text = notify_path.display().to_string();
    let redis_url = redis.url();
    let token = "a-health-token-of-the-strace-test";
    // The shell reports its pid, then becomes the server (same pid): the pid to signal.
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace_path)
        .args(["--", "sh", "-c", "echo $$; exec \"$0\" serve"])
        .arg(&program)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs([
            ("KEEPALIVE_ENV", "production"),
            ("KEEPALIVE_BIND", "127.0.0.1"),
            ("PORT", "0"),
            ("KEEPALIVE_DATA_DIR", data_text.as_str()),
            ("KEEPALIVE_LOG_FORMAT", "json"),
            ("KEEPALIVE_HEALTH_TOKEN", token),
            ("KEEPALIVE_HEALTH_INTERVAL", "50ms"),
            ("KEEPALIVE_FLUSH_INTERVAL", "50ms"),
            ("KEEPALIVE_DRAIN_DELAY", "0s"),
            ("KEEPALIVE_ALERT_REDIS_OFFLINE_FOR", "1s"),
            ("KEEPALIVE_ALERT_WEBHOOK_URL", webhook.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("NOTIFY_SOCKET", notify_text.as_str()),
        ])
        .current_dir(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("strace starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let pid: i32 = lines
        .next()
        .expect("the shell's pid")
        .expect("line")
        .trim()
        .parse()
        .expect("pid");
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let base = loop {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address under strace");
        let addr = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|json| json["addr"].as_str().map(str::to_owned));
        if let Some(addr) = addr {
            break format!("http://{addr}");
        }
    };
    let mut buf = [0; 512];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");

    // Sessions on Redis, health with details, metrics.
    crate::harness::within(Duration::from_secs(20), "Redis answers", || async {
        let (_, body) = crate::harness::keepalive(&base, None).await;
        body["serverHealth"]["checks"]["redis"] == "ok"
    })
    .await;
    let client = crate::harness::client();
    let cookie = crate::harness::create_session(&base).await;
    let (status, _) = crate::harness::keepalive(&base, Some(&cookie)).await;
    assert_eq!(status, 200);
    let health = client
        .get(format!("{base}/health"))
        .bearer_auth(token)
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert!(
        crate::harness::metrics(&base)
            .await
            .contains("keepalive_redis_up")
    );

    // Redis goes away: the alert goes to the webhook, sessions go on in the local store.
    drop(redis);
    let alert = alerts
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook receives the Redis alert");
    assert!(alert.contains("KeepaliveRedisOffline"), "{alert}");
    let (status, _) = crate::harness::keepalive(&base, Some(&cookie)).await;
    assert_eq!(status, 200);
    let fresh = crate::harness::create_session(&base).await;
    let (status, _) = crate::harness::keepalive(&base, Some(&fresh)).await;
    assert_eq!(status, 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1 on NOTIFY_SOCKET");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|l| l == "STOPPING=1"), "{message}");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "the server stopped with {status}");

    let trace = std::fs::read_to_string(&trace_path).expect("trace");
    let calls = calls_of(&trace, &program);
    assert!(calls.len() > 100, "{} calls traced", calls.len());

    // SystemCallFilter=: every call passes, the commit thread's setpriority among them.
    let used: BTreeSet<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    let denied: Vec<&&str> = used.iter().filter(|c| !allowed.contains(**c)).collect();
    assert!(
        denied.is_empty(),
        "the unit's SystemCallFilter= denies {denied:?}, which the server calls"
    );
    assert!(
        used.contains("setpriority"),
        "the commit thread no longer lowers its priority: {used:?}"
    );

    // RestrictAddressFamilies=.
    let families: BTreeSet<String> = one("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for call in calls.iter().filter(|c| c.name == "socket") {
        let family = call.rest.split(',').next().unwrap_or_default().trim();
        assert!(
            families.contains(family),
            "socket({}: {family} is not in RestrictAddressFamilies=",
            call.rest
        );
    }

    // MemoryDenyWriteExecute=.
    for call in calls
        .iter()
        .filter(|c| ["mmap", "mprotect", "pkey_mprotect"].contains(&c.name.as_str()))
    {
        assert!(
            !(call.rest.contains("PROT_WRITE") && call.rest.contains("PROT_EXEC")),
            "{}({}: a writable and executable mapping",
            call.name,
            call.rest
        );
    }

    // Writes only in the data directory (WorkingDirectory= is the data directory too).
    let data_prefix = format!("{data_text}/");
    let inside = |path: &str| path == data_text || path.starts_with(&data_prefix);
    let mut written = BTreeSet::new();
    for call in &calls {
        let writes = match call.name.as_str() {
            "open" | "openat" | "creat" => quoted(&call.rest).is_some_and(|(_, flags)| {
                ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                    .iter()
                    .any(|f| flags.contains(f))
            }),
            "mkdir" | "mkdirat" | "rename" | "renameat" | "renameat2" | "unlink" | "unlinkat"
            | "rmdir" | "link" | "linkat" | "symlink" | "symlinkat" | "truncate" => true,
            _ => false,
        };
        // A relative path is relative to a directory the server opened, or to its working
        // directory: the data directory, as in the unit.
        if let Some((path, _)) = quoted(&call.rest).filter(|(p, _)| writes && p.starts_with('/')) {
            written.insert(path.to_owned());
        }
    }
    let outside: Vec<&String> = written.iter().filter(|p| !inside(p)).collect();
    assert!(
        outside.is_empty(),
        "the server writes outside its data directory: {outside:?}"
    );
    assert!(!written.is_empty(), "no write in the data directory traced");
}

//! The systemd unit.

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

#[test]
fn systemd_unit_runs_hardened_with_a_state_directory_and_an_environment_file() {
    let unit = unit();
    let get = |key: &str| -> Vec<String> {
        unit.get(&("Service".to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("[Service] {key}"))
    };
    let one = |key: &str| -> String {
        let values = get(key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0].clone()
    };
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
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    // The memory check reads /proc/meminfo without a cgroup limit: no ProcSubset=pid.
    assert!(!unit.contains_key(&("Service".to_owned(), "ProcSubset".to_owned())));
    assert!(one("MemoryMax").ends_with('M') || one("MemoryMax").ends_with('G'));

    // Environment= lines: real settings, the data dir inside the state directory.
    let env: BTreeMap<String, String> = get("Environment")
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
fn systemd_analyze_accepts_the_unit() {
    if !tool_exists("systemd-analyze") {
        eprintln!("systemd-analyze is not installed: unit not verified by systemd");
        return;
    }
    // verify wants the binary to exist: point the unit at the one cargo built for this test.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = read("deploy/systemd/keepalive.service")
        .replace("/usr/local/bin/keepalive", env!("CARGO_BIN_EXE_keepalive"));
    let path = dir.path().join("keepalive.service");
    std::fs::write(&path, unit).expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Unknown keys are only warnings (exit 0): any output at all is a finding.
    assert!(output.status.success() && text.trim().is_empty(), "{text}");

    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&output.stdout);
    if let Some(level) = text
        .split("Overall exposure level for keepalive.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
    {
        assert!(level <= 2.0, "exposure {level} (0 best, 10 worst):\n{text}");
    } else {
        eprintln!("systemd-analyze security --offline unsupported here: {text}");
    }
}

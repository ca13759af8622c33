//! The deployment files under `deploy/` and the guide `docs/deployment.md`: they parse, they
//! name only real settings and metrics, the alert rules pass `promtool` and fire when they
//! should, and the container, Kubernetes and systemd files keep the promises the guide makes
//! (non-root, health checks, probes, memory limits, time to drain).
//!
//! Needs, all installed by `scripts/test.sh`: `promtool` (Debian's `prometheus`), `python3` with
//! PyYAML to read YAML, `kubectl` (for `kubectl kustomize`; no cluster), the Python package
//! `kubernetes-validate` (the Kubernetes API schemas, offline), `systemd-analyze` (Debian's
//! `systemd`; it need not run) and `strace` for the systemd unit, and the npm linters
//! `dockerfile-utils` and `dclint` under `target/deploy-lint`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

mod compose;
mod docker;
mod guide;
mod kubernetes;
mod monitoring;
mod systemd;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Every document of a YAML file, as JSON values (read by PyYAML's `safe_load_all`).
fn yaml(relative: &str) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = list(yaml.safe_load_all(f))\n\
        print(json.dumps(docs))";
    let path = root().join(relative);
    let output = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&path)
        .output()
        .expect("python3 runs (the YAML files are read with PyYAML: Debian's python3-yaml)");
    assert!(
        output.status.success(),
        "{relative} is not valid YAML, or PyYAML is missing (Debian's python3-yaml): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs: Value = serde_json::from_slice(&output.stdout).expect("python3 printed JSON");
    docs.as_array()
        .expect("a list of documents")
        .iter()
        .filter(|doc| !doc.is_null())
        .cloned()
        .collect()
}

fn yaml_one(relative: &str) -> Value {
    let mut docs = yaml(relative);
    assert_eq!(docs.len(), 1, "{relative}: one YAML document");
    docs.remove(0)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

/// `30s`, `5m`, `1h 30m`, `500ms`: the duration syntax of keepalive, Docker and Prometheus.
fn duration(text: &str) -> Duration {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut total = Duration::ZERO;
    let mut rest = text.as_str();
    assert!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        assert!(digits > 0, "bad duration {text:?}");
        let number: u64 = rest[..digits].parse().expect("number");
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number * 60),
            "h" => Duration::from_secs(number * 3600),
            _ => panic!("bad duration unit in {text:?}"),
        };
    }
    total
}

fn tool_exists(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool is installed (the test script installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The environment variables keepalive reads: `KEEPALIVE_` plus each setting of
/// docs/configuration.md's table, the unprefixed aliases that table names (`PORT`,
/// `REDIS_URL`), and `NODE_ENV` and `KEEPALIVE_CONFIG` that its text names.
fn known_variables() -> BTreeSet<String> {
    let doc = read("docs/configuration.md");
    let mut vars = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).expect("first cell");
        let mut ticks = cell.split('`').skip(1).step_by(2);
        let setting = ticks.next().expect("setting name");
        vars.insert(format!("KEEPALIVE_{}", setting.to_uppercase()));
        vars.extend(ticks.map(str::to_owned));
    }
    assert!(
        vars.contains("KEEPALIVE_DATA_DIR") && vars.contains("PORT"),
        "{vars:?}"
    );
    for extra in ["NODE_ENV", "KEEPALIVE_CONFIG"] {
        assert!(
            doc.contains(extra),
            "docs/configuration.md no longer names {extra}"
        );
        vars.insert(extra.to_owned());
    }
    vars
}

fn assert_known_variables<'a>(file: &str, names: impl IntoIterator<Item = &'a str>) {
    let known = known_variables();
    let mut seen = 0;
    for name in names {
        seen += 1;
        assert!(
            known.contains(name),
            "{file} sets {name}, which keepalive does not read (settings: docs/configuration.md)"
        );
    }
    assert!(seen > 0, "{file}: no environment variable found");
}

/// The metrics of docs/http-api.md's table: name to type.
fn documented_metrics() -> BTreeMap<String, String> {
    let doc = read("docs/http-api.md");
    let section = doc
        .split("\n## Metrics")
        .nth(1)
        .expect("docs/http-api.md has a Metrics section");
    let mut metrics = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `keepalive_")) {
        let cells: Vec<&str> = line.split('|').collect();
        let kind = cells[2].trim().to_owned();
        for name in cells[1].split('`').skip(1).step_by(2) {
            metrics.insert(name.to_owned(), kind.clone());
        }
    }
    assert!(metrics.len() > 5, "{metrics:?}");
    metrics
}

/// The metrics the server registers (`opts("name", ...)` in src/metrics.rs).
fn registered_metrics() -> BTreeSet<String> {
    let source = read("src/metrics.rs");
    // `opts(` then, maybe after a line break, the quoted name.
    let names: BTreeSet<String> = source
        .split("opts(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("keepalive_{name}"))
        .collect();
    assert!(names.len() > 5, "{names:?}");
    names
}

/// The `keepalive_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("keepalive_") {
        let before = rest[..start].chars().next_back();
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn assert_metrics_exist(file: &str, exprs: &[String]) {
    let documented = documented_metrics();
    let registered = registered_metrics();
    let mut used = BTreeSet::new();
    for expr in exprs {
        used.extend(metric_names(expr));
    }
    assert!(!used.is_empty(), "{file}: no keepalive metric found");
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| documented.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            documented.contains_key(base),
            "{file} uses {name}, which is not in docs/http-api.md's metric table"
        );
        assert!(
            registered.contains(base),
            "{file} uses {name}, which the server does not register (src/metrics.rs)"
        );
    }
}

/// The anchors GitHub gives the headings of a Markdown file.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut inside_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            inside_code = !inside_code;
        }
        if inside_code || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.insert(slug);
    }
    anchors
}

#[test]
fn duration_parser_reads_the_formats_used_here() {
    assert_eq!(duration("30s"), Duration::from_secs(30));
    assert_eq!(duration("1h 30m"), Duration::from_secs(5400));
    assert_eq!(duration("500ms"), Duration::from_millis(500));
    assert!(Path::new(env!("CARGO_BIN_EXE_keepalive")).exists());
}

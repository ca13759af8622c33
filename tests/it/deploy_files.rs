//! The deployment files under `deploy/` and the guide `docs/deployment.md`: they parse, they
//! name only real settings and metrics, the alert rules pass `promtool` and fire when they
//! should, and the container, Kubernetes and systemd files keep the promises the guide makes
//! (non-root, health checks, probes, memory limits, time to drain).
//!
//! Needs `promtool` (Debian's `prometheus`) and `python3` with PyYAML (`scripts/test.sh` installs both)
//! to read YAML. `systemd-analyze`, when present, also verifies the systemd unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

// ---- helpers --------------------------------------------------------------------------------

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

// ---- Docker ---------------------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments dropped: (keyword, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/docker/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((keyword.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    instructions
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_checks_health_with_keepalive_check() {
    let instructions = dockerfile();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let build = &instructions[stages[0]..stages[1]];
    let last = *stages.last().expect("a stage");
    let runtime = &instructions[last..];
    let find = |stage: &[(String, String)], keyword: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.clone())
            .collect()
    };

    // Built with the locked dependencies, in release, by a Rust new enough for the crate.
    assert!(
        find(build, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "{build:?}"
    );
    assert!(build[0].1.starts_with("rust:"), "{:?}", build[0]);
    let arg = |name: &str| {
        instructions
            .iter()
            .filter(|(k, _)| k == "ARG")
            .find_map(|(_, rest)| rest.strip_prefix(&format!("{name}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("ARG {name}"))
    };
    let version = |v: &str| -> (u32, u32) {
        let mut parts = v
            .split('.')
            .map(|p| p.parse::<u32>().expect("version number"));
        (parts.next().expect("major"), parts.next().unwrap_or(0))
    };
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    assert!(version(&arg("RUST_VERSION")) >= version(msrv));

    // The final image: slim, no toolchain, only the binary copied from the build stage.
    let base = &runtime[0].1;
    assert!(
        !base.starts_with("rust:") && base.contains("slim"),
        "final stage base image: {base}"
    );
    assert!(
        find(runtime, "COPY")
            .iter()
            .any(|c| c.starts_with("--from=build") && c.contains("/usr/local/bin/keepalive")),
        "{runtime:?}"
    );

    // Non-root, with the uid the Kubernetes manifests run as.
    let users = find(runtime, "USER");
    let user = users.last().expect("a USER in the final stage");
    let uid = user.split(':').next().expect("uid");
    assert!(uid != "root" && uid != "0", "USER {user}");
    assert_eq!(uid, "10001", "the uid of deploy/kubernetes/deployment.yaml");
    let user_at = runtime
        .iter()
        .rposition(|(k, _)| k == "USER")
        .expect("USER");
    let last_run = runtime.iter().rposition(|(k, _)| k == "RUN").unwrap_or(0);
    assert!(user_at > last_run, "USER comes after the last RUN");

    // Health: `keepalive check`, degraded (exit 1) healthy for Docker, the rest unhealthy.
    let health = find(runtime, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "{health:?}");
    let cmd = health[0].split_once("CMD ").expect("HEALTHCHECK ... CMD").1;
    assert!(cmd.starts_with("keepalive check"), "{cmd}");
    assert!(cmd.contains("|| [ \"$?\" -eq 1 ]"), "{cmd}");
    for option in ["--interval=", "--timeout=", "--start-period=", "--retries="] {
        assert!(health[0].contains(option), "HEALTHCHECK {option}");
    }

    // The data directory is a volume, and the binary runs the server.
    assert!(
        find(runtime, "ENV")
            .iter()
            .any(|e| e.contains("KEEPALIVE_DATA_DIR=/var/lib/keepalive")),
        "{runtime:?}"
    );
    assert!(
        find(runtime, "VOLUME")
            .iter()
            .any(|v| v.contains("/var/lib/keepalive"))
    );
    assert_eq!(find(runtime, "ENTRYPOINT"), ["[\"keepalive\"]"]);
    assert_eq!(find(runtime, "STOPSIGNAL"), ["SIGTERM"]);
    // The image must not force an environment: an existing NODE_ENV would be overridden.
    assert!(
        !find(runtime, "ENV")
            .iter()
            .any(|e| e.contains("KEEPALIVE_ENV"))
    );
}

#[test]
fn dockerignore_keeps_what_the_build_needs() {
    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "web", "bench", "*", "**"] {
        assert!(!patterns.contains(needed), ".dockerignore drops {needed}");
    }
    for heavy in ["**/target", ".git"] {
        assert!(patterns.contains(heavy), ".dockerignore keeps {heavy}");
    }
    // Sources embedded at compile time must be in the context.
    for source in ["src/http/assets.rs"] {
        for path in read(source).split("include_str!(\"../../").skip(1) {
            let file = path.split('"').next().expect("path");
            let dir = file.split('/').next().expect("dir");
            let reincluded = patterns.contains(format!("!{file}").as_str());
            assert!(
                !patterns.contains(dir) || reincluded,
                ".dockerignore drops {file}, needed by {source}"
            );
        }
    }
}

// ---- Docker Compose -------------------------------------------------------------------------

#[test]
fn compose_runs_the_app_after_a_healthy_redis_with_a_memory_limit() {
    let compose = yaml_one("deploy/docker-compose.yml");
    let app = compose
        .pointer("/services/keepalive")
        .expect("service keepalive");
    let redis = compose.pointer("/services/redis").expect("service redis");

    // Health checks on both; the app waits for a healthy Redis.
    assert_eq!(
        str_at(app, "/depends_on/redis/condition"),
        "service_healthy"
    );
    let redis_check = redis
        .pointer("/healthcheck/test")
        .expect("redis healthcheck");
    assert!(
        redis_check.to_string().contains("redis-cli ping"),
        "{redis_check}"
    );
    let app_check = app.pointer("/healthcheck/test").expect("app healthcheck");
    assert_eq!(app_check[0], "CMD-SHELL");
    let app_check = app_check[1].as_str().expect("command");
    assert!(app_check.starts_with("keepalive check"), "{app_check}");
    // `$$` is Compose's escape for the shell's `$?`.
    assert!(app_check.contains("|| [ $$? -eq 1 ]"), "{app_check}");

    // Memory limit (the memory check measures against it) and time to drain.
    let limit = str_at(app, "/deploy/resources/limits/memory");
    assert!(limit.ends_with('M') || limit.ends_with('G'), "{limit}");
    let env = app
        .pointer("/environment")
        .and_then(Value::as_object)
        .expect("environment as a map");
    let drain = duration(env["KEEPALIVE_DRAIN_DELAY"].as_str().expect("drain"));
    let shutdown = duration(env["KEEPALIVE_SHUTDOWN_TIMEOUT"].as_str().expect("timeout"));
    assert!(
        duration(str_at(app, "/stop_grace_period")) >= drain + shutdown + Duration::from_secs(5)
    );

    // Only real settings; Redis named by its service; the data dir on a volume.
    assert_known_variables("deploy/docker-compose.yml", env.keys().map(String::as_str));
    let redis_url = env["REDIS_URL"].as_str().expect("REDIS_URL");
    assert!(redis_url.starts_with("redis://redis:6379"), "{redis_url}");
    let data_dir = env["KEEPALIVE_DATA_DIR"].as_str().expect("data dir");
    let volumes = app.pointer("/volumes").expect("volumes").to_string();
    assert!(volumes.contains(&format!(":{data_dir}\"")), "{volumes}");
    assert_eq!(env["KEEPALIVE_ENV"], "production");

    // Built from the repository root with the Dockerfile that exists.
    let context = root().join("deploy").join(str_at(app, "/build/context"));
    assert!(
        context.join("Cargo.toml").exists(),
        "build context {context:?}"
    );
    assert!(context.join(str_at(app, "/build/dockerfile")).exists());

    // Locked down: read-only, no capabilities.
    assert_eq!(app["read_only"], true);
    assert_eq!(app["cap_drop"], json!(["ALL"]));
}

// ---- Kubernetes -----------------------------------------------------------------------------

fn kubernetes() -> Vec<(String, Value)> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for doc in yaml(&format!("deploy/kubernetes/{name}")) {
            assert!(doc["kind"].is_string(), "{name}: a document without kind");
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn find_kind<'a>(docs: &'a [(String, Value)], file: &str, kind: &str) -> &'a Value {
    docs.iter()
        .find(|(f, d)| f == file && d["kind"] == kind)
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("{file}: no {kind}"))
}

#[test]
fn kubernetes_deployment_probes_resources_security_and_secrets() {
    let docs = kubernetes();
    let deployment = find_kind(&docs, "deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Probes: liveness never depends on Redis; readiness follows shutdowns; a startup probe.
    assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/livez");
    assert_eq!(str_at(c, "/readinessProbe/httpGet/path"), "/readyz");
    assert!(c["startupProbe"].is_object(), "startupProbe");
    let ports: Vec<&str> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["name"].as_str().expect("port name"))
        .collect();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let port = c[probe]["httpGet"]["port"].as_str().expect("named port");
        assert!(ports.contains(&port), "{probe} port {port}");
    }

    // Resources: a memory limit, which the memory check measures against.
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "memory limit"
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string(),
        "memory request"
    );
    assert!(c["resources"]["requests"]["cpu"].is_string(), "cpu request");

    // Non-root, read-only root, nothing to escalate, with the image's uid.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));

    // Environment: real settings only; secrets come from a Secret, never inline.
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name"), e))
        .collect();
    assert_known_variables("deploy/kubernetes/deployment.yaml", env.keys().copied());
    let secret = find_kind(&docs, "secret.example.yaml", "Secret");
    for name in ["REDIS_URL", "KEEPALIVE_HEALTH_TOKEN"] {
        let var = env.get(name).unwrap_or_else(|| panic!("{name} is set"));
        assert!(var.get("value").is_none(), "{name} inlined");
        let reference = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"], secret["metadata"]["name"], "{name}");
        let key = reference["key"].as_str().expect("key");
        assert!(
            secret["stringData"][key].is_string(),
            "secret.example.yaml lacks {key}"
        );
    }
    assert_eq!(env["KEEPALIVE_ENV"]["value"], "production");

    // The data dir is a mounted volume (the root filesystem is read-only).
    let data_dir = env["KEEPALIVE_DATA_DIR"]["value"]
        .as_str()
        .expect("data dir");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == data_dir)
        .expect("a volume at KEEPALIVE_DATA_DIR");
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == mount["name"]),
        "volume {}",
        mount["name"]
    );

    // The grace period covers the drain delay and the shutdown timeout, with a margin.
    let drain = duration(
        env["KEEPALIVE_DRAIN_DELAY"]["value"]
            .as_str()
            .expect("drain"),
    );
    let shutdown = duration(
        env["KEEPALIVE_SHUTDOWN_TIMEOUT"]["value"]
            .as_str()
            .expect("shutdown"),
    );
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(Duration::from_secs(grace) >= drain + shutdown + Duration::from_secs(5));

    // Rolling updates never drop below the wanted capacity.
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
}

#[test]
fn kubernetes_selectors_ports_and_kustomization_agree() {
    let docs = kubernetes();
    let deployment = find_kind(&docs, "deployment.yaml", "Deployment");
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let matches = |selector: &Value| {
        let selector = selector.as_object().expect("selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(matches(&deployment["spec"]["selector"]["matchLabels"]));

    let service = find_kind(&docs, "service.yaml", "Service");
    assert!(
        matches(&service["spec"]["selector"]),
        "Service selects the pods"
    );
    let container_ports: Vec<&Value> =
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| &p["name"])
            .collect();
    for port in service["spec"]["ports"].as_array().expect("ports") {
        assert!(container_ports.contains(&&port["targetPort"]), "{port}");
    }
    let pdb = find_kind(&docs, "poddisruptionbudget.yaml", "PodDisruptionBudget");
    assert!(
        matches(&pdb["spec"]["selector"]["matchLabels"]),
        "PDB selects the pods"
    );

    // kustomization.yaml lists existing files, and never the example Secret.
    let kustomization = find_kind(&docs, "kustomization.yaml", "Kustomization");
    let resources = kustomization["resources"].as_array().expect("resources");
    for file in [
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
    ] {
        assert!(
            resources.contains(&json!(file)),
            "kustomization lists {file}"
        );
    }
    for resource in resources {
        let file = resource.as_str().expect("file");
        assert!(
            !file.contains("example"),
            "{file} applied with placeholder values"
        );
        assert!(
            root().join("deploy/kubernetes").join(file).exists(),
            "{file}"
        );
    }

    // Every object has an apiVersion and a name.
    for (file, doc) in &docs {
        assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
        if doc["kind"] != "Kustomization" {
            assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
        }
    }
}

// ---- systemd --------------------------------------------------------------------------------

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

// ---- Prometheus -----------------------------------------------------------------------------

fn alert_rules() -> Vec<Value> {
    let rules = yaml_one("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn promtool_checks_the_alert_rules() {
    let out = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_show_each_alert_firing_after_its_duration_and_not_before() {
    let out = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert has a test where it fires and one where it does not (yet).
    let tests = yaml_one("deploy/prometheus/alerts_test.yml");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"]
            .as_array()
            .expect("alert_rule_test")
        {
            let name = str_at(case, "/alertname").to_owned();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for rule in alert_rules() {
        let name = str_at(&rule, "/alert");
        assert!(fires.contains(name), "no test where {name} fires");
        assert!(silent.contains(name), "no test where {name} stays silent");
    }
}

#[test]
fn alert_rules_mirror_the_built_in_alerts_and_point_at_the_guide() {
    let rules = alert_rules();
    let by_name: BTreeMap<&str, &Value> = rules.iter().map(|r| (str_at(r, "/alert"), r)).collect();
    // The server's built-in alerts and their default durations.
    for (name, wait) in [
        ("KeepaliveRedisOffline", "5m"),
        ("KeepaliveMemoryHigh", "5m"),
        ("KeepaliveCritical", "1m"),
    ] {
        let rule = by_name.get(name).unwrap_or_else(|| panic!("alert {name}"));
        assert_eq!(duration(str_at(rule, "/for")), duration(wait), "{name}");
    }
    assert!(by_name.contains_key("KeepaliveDown"));
    assert!(str_at(by_name["KeepaliveRedisOffline"], "/expr").contains("keepalive_redis_up"));
    assert!(str_at(by_name["KeepaliveCritical"], "/expr").contains("status=\"critical\""));
    assert!(str_at(by_name["KeepaliveMemoryHigh"], "/expr").contains(">= 0.80"));

    let guide = read("docs/deployment.md");
    let anchors = anchors(&guide);
    for (name, rule) in &by_name {
        let severity = str_at(rule, "/labels/severity");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: {severity}"
        );
        for key in ["summary", "description"] {
            assert!(!str_at(rule, &format!("/annotations/{key}")).is_empty());
        }
        let runbook = str_at(rule, "/annotations/runbook_url");
        let anchor = runbook
            .strip_prefix("docs/deployment.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook}"));
        assert!(
            anchors.contains(anchor),
            "{name}: no section #{anchor} in docs/deployment.md"
        );
        assert!(
            guide.contains(name),
            "docs/deployment.md does not mention {name}"
        );
    }

    let exprs: Vec<String> = rules
        .iter()
        .map(|r| str_at(r, "/expr").to_owned())
        .collect();
    assert_metrics_exist("deploy/prometheus/alerts.yml", &exprs);
}

// ---- Grafana --------------------------------------------------------------------------------

fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
    }
    panels
}

#[test]
fn grafana_dashboard_queries_real_metrics_with_valid_promql() {
    let text = read("deploy/grafana/keepalive-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name"))
        .collect();
    for name in ["datasource", "job", "instance"] {
        assert!(variables.contains(name), "variable {name}");
    }

    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard_panels(&dashboard) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(
            x + w <= 24 && grid["h"].as_u64().is_some(),
            "panel {id} gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {id} uses the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for target in targets {
            let expr = str_at(target, "/expr");
            exprs.push(expr.to_owned());
        }
    }
    assert_metrics_exist("deploy/grafana/keepalive-dashboard.json", &exprs);

    // Every metric of the built-in alerts is on the dashboard.
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for metric in [
        "keepalive_health_status",
        "keepalive_redis_up",
        "keepalive_memory_used_bytes",
        "keepalive_memory_limit_bytes",
    ] {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }

    // promtool parses each query, as a recording rule, once Grafana's variables are filled in.
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", "keepalive")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    // JSON is YAML: promtool reads it as it is.
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, file.to_string()).expect("write rules");
    let out = promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    assert!(out.contains("SUCCESS"), "{out}");
}

// ---- the guide ------------------------------------------------------------------------------

#[test]
fn deployment_guide_covers_statuses_alerts_logs_and_shutdown() {
    let guide = read("docs/deployment.md");
    let anchors = anchors(&guide);
    for anchor in [
        "quick-start",
        "degraded-redis-offline",
        "degraded-memory-warning",
        "critical-memory",
        "keepalive-down",
        "graceful-shutdown-and-rolling-updates",
        "troubleshooting",
        "faq",
    ] {
        assert!(
            anchors.contains(anchor),
            "docs/deployment.md has no #{anchor}: {anchors:?}"
        );
    }
    for text in [
        "Server health: degraded {redis: offline, memory: ok}",
        "[redis] connection lost:",
        "[redis] degraded mode on",
        "[redis] re-sync done:",
        "keepalive doctor",
        "keepalive check",
        "terminationGracePeriodSeconds",
        "KEEPALIVE_DRAIN_DELAY",
        "docker build -f deploy/docker/Dockerfile",
        "alert: [FIRING] KeepaliveRedisOffline",
    ] {
        assert!(
            guide.contains(text),
            "docs/deployment.md does not mention {text:?}"
        );
    }
    // The log lines it quotes are the ones the server writes.
    for (source, text) in [
        (
            "src/store/failover/mod.rs",
            "[redis] connection lost: {reason}",
        ),
        ("src/store/failover/mod.rs", "[redis] degraded mode on:"),
        (
            "src/store/failover/link.rs",
            "[redis] re-sync done: {sessions} sessions and {logouts} logouts written back",
        ),
        ("src/alert/mod.rs", "\"alert: {}\""),
        ("src/alert/mod.rs", "Transition::Firing => \"FIRING\""),
        (
            "src/health/monitor.rs",
            "\"Server health: {} {{redis: {}, memory: {}}}\"",
        ),
    ] {
        assert!(
            read(source).contains(text),
            "{source} no longer logs {text:?}: update the guide"
        );
    }
    // It links only to files that exist.
    for link in guide.split("](").skip(1) {
        let target = link.split(')').next().expect("link target");
        let path = target.split('#').next().expect("path");
        if path.is_empty() || path.contains("://") {
            continue;
        }
        assert!(
            root().join("docs").join(path).exists(),
            "broken link {target}"
        );
    }
    // Nothing of the machine it was written on, nor of the old production host.
    for leak in ["/work/", "/root/", "/tmp/", "hitbet777"] {
        assert!(
            !guide.contains(leak),
            "docs/deployment.md contains {leak:?}"
        );
    }
}

#[test]
fn duration_parser_reads_the_formats_used_here() {
    assert_eq!(duration("30s"), Duration::from_secs(30));
    assert_eq!(duration("1h 30m"), Duration::from_secs(5400));
    assert_eq!(duration("500ms"), Duration::from_millis(500));
    assert!(Path::new(env!("CARGO_BIN_EXE_keepalive")).exists());
}

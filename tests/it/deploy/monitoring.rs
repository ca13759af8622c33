//! The Prometheus alert rules, their PrometheusRule and the ServiceMonitor for the Prometheus
//! Operator (deploy/kubernetes/monitoring), and the Grafana dashboard.

use super::kubernetes::{
    kubectl_kustomize, kubectl_kustomize_version, temp_file, validate_schemas,
};
use super::*;

/// The base of every runbook_url in the rules as shipped: a stand-in for wherever the operator
/// publishes docs/deployment.md, which they set (docs/deployment.md says how).
const RUNBOOK_BASE: &str = "https://keepalive.example.com/runbook";

/// The PrometheusRule of deploy/kubernetes/monitoring.
fn prometheus_rule() -> Value {
    let rule = yaml_one("deploy/kubernetes/monitoring/prometheusrule.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule
}

/// A folder holding a PrometheusRule's spec as alerts.yml (JSON is YAML) beside a copy of
/// alerts_test.yml, so that promtool checks and tests the rules the operator would load.
fn rule_files_of(rule: &Value) -> tempfile::TempDir {
    let (dir, _) = temp_file("alerts.yml", &rule["spec"].to_string());
    std::fs::write(
        dir.path().join("alerts_test.yml"),
        read("deploy/prometheus/alerts_test.yml"),
    )
    .expect("write alerts_test.yml");
    dir
}

fn promtool_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
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
    // The same rules as the Prometheus Operator loads them from the PrometheusRule.
    let dir = rule_files_of(&prometheus_rule());
    let out = promtool_in(dir.path(), &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_show_each_alert_firing_after_its_duration_and_not_before() {
    let out = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // The PrometheusRule passes the same tests.
    let dir = rule_files_of(&prometheus_rule());
    let out = promtool_in(dir.path(), &["test", "rules", "alerts_test.yml"]);
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
        // An absolute URL under the one base the operator replaces, then a section of the
        // guide.
        let runbook = str_at(rule, "/annotations/runbook_url");
        let anchor = runbook
            .strip_prefix(RUNBOOK_BASE)
            .and_then(|rest| rest.strip_prefix('#'))
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook} is not {RUNBOOK_BASE}#..."));
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

#[test]
fn prometheus_rule_carries_exactly_the_groups_of_alerts_yml() {
    let rule = prometheus_rule();
    let alerts = yaml_one("deploy/prometheus/alerts.yml");
    assert!(
        rule["spec"]["groups"] == alerts["groups"],
        "deploy/kubernetes/monitoring/prometheusrule.yaml: spec.groups differ from the groups of \
         deploy/prometheus/alerts.yml; copy them over"
    );
    assert_eq!(
        rule["spec"].as_object().expect("spec").len(),
        1,
        "spec holds groups only"
    );
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/name"],
        "keepalive"
    );
}

#[test]
fn service_monitor_scrapes_the_service_as_job_keepalive() {
    let monitor = yaml_one("deploy/kubernetes/monitoring/servicemonitor.yaml");
    let service = yaml_one("deploy/kubernetes/service.yaml");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    // No schema checks these fields (it is a CRD): each one is named here, so a misspelt one
    // (which the operator would ignore) fails.
    let spec = monitor["spec"].as_object().expect("spec");
    let fields: BTreeSet<&str> = spec.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["endpoints", "jobLabel", "selector"]),
        "ServiceMonitor spec fields"
    );

    // It selects the Service by the Service's own labels (not the pods'), in its namespace.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the Service lacks the label {key} the ServiceMonitor selects"
        );
    }

    // The job label comes from a label of the Service whose value is "keepalive", the job the
    // alert rules match: KeepaliveAbsent (absent(up{job="keepalive"})) would fire for ever
    // under the operator's default job name, the Service's name.
    let job_label = str_at(&monitor, "/spec/jobLabel");
    assert_eq!(job_label, "app.kubernetes.io/name");
    assert_eq!(service["metadata"]["labels"][job_label], "keepalive");
    let rules = read("deploy/prometheus/alerts.yml");
    assert!(rules.contains("absent(up{job=\"keepalive\"})"));
    assert_eq!(
        rules.matches("job=\"").count(),
        rules.matches("job=\"keepalive\"").count(),
        "every job matcher of the rules is job=\"keepalive\""
    );

    // One endpoint: the Service's named port, /metrics, a scrape interval of at most a minute.
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = endpoints[0].as_object().expect("endpoint");
    let fields: BTreeSet<&str> = endpoint.keys().map(String::as_str).collect();
    assert_eq!(fields, BTreeSet::from(["interval", "path", "port"]));
    let port = str_at(&endpoints[0], "/port");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port),
        "the Service has no port named {port}"
    );
    assert_eq!(str_at(&endpoints[0], "/path"), "/metrics");
    let interval = duration(str_at(&endpoints[0], "/interval"));
    assert!(interval <= Duration::from_secs(60), "{interval:?}");
}

/// The objects of a kustomize build, and the PrometheusRule among them.
fn built_objects(built: &str) -> (Vec<Value>, Value) {
    let (_dir, path) = temp_file("kustomized.yaml", built);
    let objects = yaml(path.to_str().expect("utf-8 path"));
    let rule = objects
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .cloned()
        .unwrap_or_else(|| panic!("no PrometheusRule in\n{built}"));
    (objects, rule)
}

fn runbook_urls(rule: &Value) -> BTreeMap<String, String> {
    let mut urls = BTreeMap::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            urls.insert(
                str_at(r, "/alert").to_owned(),
                str_at(r, "/annotations/runbook_url").to_owned(),
            );
        }
    }
    urls
}

#[test]
fn monitoring_kustomization_builds_with_the_operators_runbook_base() {
    let folder = root().join("deploy/kubernetes/monitoring");
    // kustomize's replacements with a wildcard path: kubectl 1.27 and later (kustomize v5).
    // Debian bookworm's kubectl (1.20, kustomize v2) predates replacements and refuses the
    // folder for that reason alone; the files of the folder are checked without kubectl by
    // the other tests.
    let modern = kubectl_kustomize_version().is_some_and(|v| v >= (5, 0));
    let built = match kubectl_kustomize(&folder) {
        Ok(built) => built,
        Err(err) if !modern && err.contains("unknown field \"replacements\"") => {
            eprintln!(
                "kubectl's kustomize predates replacements: deploy/kubernetes/monitoring not \
                 built (needs kubectl 1.27 or later)"
            );
            return;
        }
        Err(err) => panic!("kubectl kustomize deploy/kubernetes/monitoring: {err}"),
    };

    // As shipped: the PrometheusRule is alerts.yml, the ConfigMap of the base is not applied.
    let (objects, rule) = built_objects(&built);
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["PrometheusRule", "ServiceMonitor"]),
        "{built}"
    );
    let alerts = yaml_one("deploy/prometheus/alerts.yml");
    assert!(rule["spec"]["groups"] == alerts["groups"], "{built}");
    let (_dir, path) = temp_file("kustomized.yaml", &built);
    validate_schemas(&[path]);
    let shipped = runbook_urls(&rule);

    // With the operator's base, in a copy of the folder as they would edit it, and the label
    // kube-prometheus-stack selects on uncommented.
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&folder).expect("monitoring folder") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, copy.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let base_file = copy.path().join("runbook-base.yaml");
    let text = std::fs::read_to_string(&base_file).expect("runbook-base.yaml");
    let line = format!("  base: {RUNBOOK_BASE}\n");
    assert!(text.contains(&line), "runbook-base.yaml: no {line:?}");
    let base = "https://github.com/an-org/keepalive/blob/main/docs/deployment.md";
    std::fs::write(
        &base_file,
        text.replace(&line, &format!("  base: {base}\n")),
    )
    .expect("write");
    let kustomization = copy.path().join("kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).expect("kustomization.yaml");
    let commented = "# labels:\n#   - pairs:\n#       release: kube-prometheus-stack\n#     includeSelectors: false\n";
    assert!(
        text.contains(commented),
        "kustomization.yaml: the release label stanza"
    );
    let uncommented: String = commented
        .lines()
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    std::fs::write(&kustomization, text.replace(commented, &uncommented)).expect("write");

    let built = kubectl_kustomize(copy.path())
        .unwrap_or_else(|err| panic!("kubectl kustomize of the edited copy: {err}"));
    let (objects, rule) = built_objects(&built);
    let edited = runbook_urls(&rule);
    assert_eq!(edited.len(), shipped.len());
    for (alert, url) in &shipped {
        let anchor = url.split_once('#').expect("an anchor").1;
        assert_eq!(edited[alert], format!("{base}#{anchor}"), "{alert}");
    }
    assert!(
        !built.contains(RUNBOOK_BASE),
        "the example's base is left in\n{built}"
    );
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["release"], "kube-prometheus-stack",
            "{object}"
        );
    }
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert!(
        monitor["spec"]["selector"]["matchLabels"]
            .get("release")
            .is_none(),
        "the release label must not narrow the ServiceMonitor's selector"
    );
    // promtool reads the rules with the operator's base too.
    let dir = rule_files_of(&rule);
    let out = promtool_in(dir.path(), &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_guides_sed_sets_the_runbook_base_of_alerts_yml() {
    // docs/deployment.md gives plain Prometheus users one sed to put their base in place of
    // the example's: run it as written.
    let guide = read("docs/deployment.md");
    let line = guide
        .lines()
        .find(|l| l.starts_with("sed 's|") && l.contains(RUNBOOK_BASE))
        .expect("docs/deployment.md: a sed line for the runbook base");
    let expr = line.split('\'').nth(1).expect("the sed expression");
    let parts: Vec<&str> = expr.split('|').collect();
    assert_eq!(parts.len(), 4, "s|old|new| in {line}");
    assert_eq!(parts[1], format!("{RUNBOOK_BASE}#"));
    let base = parts[2];
    let output = Command::new("sed")
        .args(["-e", expr, "deploy/prometheus/alerts.yml"])
        .current_dir(root())
        .output()
        .expect("sed runs");
    assert!(output.status.success(), "{line}");
    let (_dir, path) = temp_file(
        "alerts.yml",
        std::str::from_utf8(&output.stdout).expect("UTF-8"),
    );
    let edited = yaml(path.to_str().expect("utf-8 path"));
    let rule = json!({"spec": edited[0]});
    let shipped = runbook_urls(&json!({"spec": yaml_one("deploy/prometheus/alerts.yml")}));
    let urls = runbook_urls(&rule);
    assert_eq!(urls.len(), shipped.len());
    for (alert, url) in &shipped {
        let anchor = url.split_once('#').expect("an anchor").1;
        assert_eq!(urls[alert], format!("{base}{anchor}"), "{alert}");
    }
    let dir = rule_files_of(&rule);
    let out = promtool_in(dir.path(), &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

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

    // Every metric of the built-in alerts is on the dashboard, and connections, rate limits,
    // forward authentication and the sessions each instance holds.
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for metric in [
        "keepalive_health_status",
        "keepalive_redis_up",
        "keepalive_memory_used_bytes",
        "keepalive_memory_limit_bytes",
        "keepalive_http_connections",
        "keepalive_rate_limited_total",
        "keepalive_forward_auth_total",
        "keepalive_sessions_live",
    ] {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }

    // The process: CPU, resident memory, file descriptors against their limit. These are the
    // standard process_* metrics of the Prometheus client's process collector, which the
    // server registers and docs/http-api.md lists.
    let process: BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("process_"))
        .collect();
    assert_eq!(
        process,
        BTreeSet::from([
            "process_cpu_seconds_total",
            "process_max_fds",
            "process_open_fds",
            "process_resident_memory_bytes",
        ]),
        "the process metrics on the dashboard"
    );
    assert!(
        read("src/metrics.rs").contains("ProcessCollector"),
        "src/metrics.rs no longer registers the process collector"
    );
    let api = read("docs/http-api.md");
    for name in &process {
        assert!(
            api.contains(name),
            "the dashboard uses {name}, which docs/http-api.md does not list"
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

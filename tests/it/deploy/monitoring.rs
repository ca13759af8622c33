//! The Prometheus alert rules and the Grafana dashboard.

use super::*;

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

//! The Kubernetes manifests and their kustomizations: what the pods are promised, schema
//! validation against the Kubernetes API (offline, with `kubernetes-validate`), and
//! `kubectl kustomize`.

use super::*;

/// The Kubernetes versions every manifest is validated against: the first whose API has all
/// the fields used here (the PodDisruptionBudget's `unhealthyPodEvictionPolicy` is on by
/// default from 1.27), and the newest whose schemas the pinned `kubernetes-validate` bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.27", "1.37"];

/// Kinds that `kubernetes-validate` has no schema for: kustomize's own file, and the Prometheus
/// Operator's resources, which monitoring.rs checks instead (`promtool` for the rules, the
/// ServiceMonitor field by field).
const KINDS_WITHOUT_SCHEMA: [&str; 3] = ["Kustomization", "ServiceMonitor", "PrometheusRule"];

/// Every YAML file under deploy/kubernetes, examples and the monitoring folder included.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy/kubernetes"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
}

/// Every document of every manifest, named by its path under deploy/kubernetes.
fn kubernetes() -> Vec<(String, Value)> {
    let base = root().join("deploy/kubernetes");
    let mut docs = Vec::new();
    for file in manifest_files() {
        let name = file
            .strip_prefix(&base)
            .expect("under deploy/kubernetes")
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

/// A Kubernetes CPU quantity in millicores: `250m`, `1`, `"2"`, `0.5`.
fn millicores(quantity: &Value) -> u64 {
    let text = match quantity {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a CPU quantity: {other}"),
    };
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse().unwrap_or_else(|_| panic!("CPU {text}"));
    }
    let cores: f64 = text.parse().unwrap_or_else(|_| panic!("CPU {text}"));
    (cores * 1000.0).round() as u64
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

    // Resources: a memory limit, which the memory check measures against, equal to the
    // request (no overcommit).
    let resources = &c["resources"];
    assert!(resources["limits"]["memory"].is_string(), "memory limit");
    assert_eq!(
        resources["requests"]["memory"], resources["limits"]["memory"],
        "memory request == limit"
    );
    // A CPU limit of whole CPUs: the default number of event loops is the cgroup's CPU quota,
    // rounded down, so the limit decides it; a request the limit can honour.
    let limit = millicores(&resources["limits"]["cpu"]);
    let request = millicores(&resources["requests"]["cpu"]);
    assert!(
        limit >= 1000 && limit.is_multiple_of(1000),
        "limits.cpu {limit}m: whole CPUs"
    );
    assert!(
        request > 0 && request <= limit,
        "requests.cpu {request}m, limits.cpu {limit}m"
    );

    // Non-root, read-only root, nothing to escalate, with the image's uid.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));

    // No Docker-link variables: the Service named keepalive would inject KEEPALIVE_PORT and
    // friends, under the prefix of keepalive's own settings.
    assert_eq!(pod["enableServiceLinks"], false, "enableServiceLinks");

    // Environment: real settings only; secrets come from a Secret, never inline.
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name"), e))
        .collect();
    assert_known_variables("deploy/kubernetes/deployment.yaml", env.keys().copied());
    assert!(
        !env.contains_key("KEEPALIVE_WORKERS"),
        "KEEPALIVE_WORKERS is set: the event loops are to follow limits.cpu"
    );
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
fn kubernetes_disruption_budget_never_blocks_a_node_drain() {
    let docs = kubernetes();
    let pdb = &find_kind(&docs, "poddisruptionbudget.yaml", "PodDisruptionBudget")["spec"];
    // minAvailable: 1 would allow no eviction of the single replica of the setup without
    // Redis (pvc.example.yaml): a drain would wait for ever. maxUnavailable, as a number (a
    // percentage of one pod rounds down to zero), allows one eviction at any replica count.
    assert!(pdb.get("minAvailable").is_none(), "minAvailable: {pdb}");
    let max_unavailable = pdb["maxUnavailable"]
        .as_u64()
        .expect("maxUnavailable as a number of pods");
    assert!(max_unavailable >= 1, "maxUnavailable {max_unavailable}");
    // Nor does a pod that is not ready (crash-looping, stuck starting) hold a drain up.
    assert_eq!(pdb["unhealthyPodEvictionPolicy"], "AlwaysAllow");

    // Two replicas with Redis: one eviction at a time still leaves one pod serving.
    let deployment = find_kind(&docs, "deployment.yaml", "Deployment");
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas > max_unavailable, "replicas {replicas}");
    // The single-replica setup is documented next to its volume.
    assert!(read("deploy/kubernetes/pvc.example.yaml").contains("replicas: 1"));
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

    // Each kustomization.yaml lists existing files of its folder, and never an example.
    for (file, kustomization) in docs.iter().filter(|(_, d)| d["kind"] == "Kustomization") {
        let dir = root()
            .join("deploy/kubernetes")
            .join(file)
            .parent()
            .expect("folder")
            .to_path_buf();
        for resource in kustomization["resources"].as_array().expect("resources") {
            let resource = resource.as_str().expect("file");
            assert!(
                !resource.contains("example"),
                "{file}: {resource} applied with placeholder values"
            );
            assert!(dir.join(resource).is_file(), "{file}: {resource}");
        }
    }
    let main = find_kind(&docs, "kustomization.yaml", "Kustomization");
    let resources = main["resources"].as_array().expect("resources");
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

    // Every object has an apiVersion and a name.
    for (file, doc) in &docs {
        assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
        if doc["kind"] != "Kustomization" {
            assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
        }
    }
}

/// Validates Kubernetes YAML files against the API schemas of [`KUBERNETES_VERSIONS`], strictly
/// (an unknown field is an error), with `kubernetes-validate` and the schemas it bundles: no
/// network, no cluster. Every resource must pass for every version, except the
/// [`KINDS_WITHOUT_SCHEMA`], which it can only report as unknown. Returns the number of
/// resources validated.
pub(super) fn validate_schemas(files: &[PathBuf]) -> usize {
    let mut expected = 0;
    for file in files {
        let docs = yaml(file.to_str().expect("utf-8 path"));
        expected += docs
            .iter()
            .filter(|d| !KINDS_WITHOUT_SCHEMA.iter().any(|k| d["kind"] == *k))
            .count();
    }
    let output = run_kubernetes_validate(files);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{text}"
    );
    let mut passed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            passed += 1;
        } else if line.starts_with("WARN ") {
            assert!(
                KINDS_WITHOUT_SCHEMA
                    .iter()
                    .any(|k| line.contains(&format!("for kind {k} with api version"))),
                "kubernetes-validate: {line}"
            );
        } else {
            panic!("kubernetes-validate: {line}\n{text}");
        }
    }
    assert_eq!(
        passed,
        expected * KUBERNETES_VERSIONS.len(),
        "resources validated against {KUBERNETES_VERSIONS:?}:\n{text}"
    );
    expected
}

fn run_kubernetes_validate(files: &[PathBuf]) -> std::process::Output {
    let mut command = Command::new("python3");
    command.args(["-m", "kubernetes_validate", "--strict"]);
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let output = command
        .args(files)
        .current_dir(root())
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing for python3: scripts/test.sh installs the version it \
         pins (python3 -m pip install kubernetes-validate==...)"
    );
    output
}

/// `kubectl kustomize DIR`: the objects that `kubectl apply -k DIR` would send, or kubectl's
/// error.
pub(super) fn kubectl_kustomize(dir: &Path) -> Result<String, String> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "kubectl does not run ({err}): scripts/test.sh installs Debian's kubernetes-client \
                 when there is none"
            )
        });
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("kubectl prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The version of kustomize built into kubectl, as (major, minor). kubectl before 1.24 does
/// not report it: its kustomize is v2 to v4.4, older than every feature this check needs.
pub(super) fn kubectl_kustomize_version() -> Option<(u32, u32)> {
    let output = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(output.status.success(), "kubectl version --client");
    let version: Value = serde_json::from_slice(&output.stdout).expect("kubectl prints JSON");
    let text = version["kustomizeVersion"].as_str()?;
    let mut numbers = text.trim_start_matches('v').split('.');
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

/// Writes text to a file of a temporary folder and returns both.
pub(super) fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

#[test]
fn kubernetes_manifests_pass_the_api_schemas() {
    let files = manifest_files();
    let validated = validate_schemas(&files);
    let docs = kubernetes();
    assert_eq!(
        validated,
        docs.iter()
            .filter(|(_, d)| !KINDS_WITHOUT_SCHEMA.iter().any(|k| d["kind"] == *k))
            .count()
    );
    assert!(validated >= 7, "{validated} resources");

    // The validation is strict: a misspelt field in the pod spec fails it.
    let deployment = read("deploy/kubernetes/deployment.yaml");
    assert!(deployment.contains("enableServiceLinks: false"));
    let (_dir, broken) = temp_file(
        "deployment.yaml",
        &deployment.replace("enableServiceLinks: false", "enableServiceLink: false"),
    );
    let output = run_kubernetes_validate(&[broken]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && text.contains("enableServiceLink"),
        "a misspelt field passed:\n{text}"
    );
}

#[test]
fn kustomize_builds_what_kubectl_apply_k_sends_and_it_passes_the_schemas() {
    let built = kubectl_kustomize(&root().join("deploy/kubernetes"))
        .unwrap_or_else(|err| panic!("kubectl kustomize deploy/kubernetes: {err}"));
    let (_dir, path) = temp_file("kustomized.yaml", &built);
    let objects = yaml(path.to_str().expect("utf-8 path"));
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().expect("kind"))
        .collect();
    // What the kustomization lists, and nothing of the Prometheus Operator: the main folder
    // applies on a cluster without its CRDs.
    assert_eq!(
        kinds,
        BTreeSet::from(["Deployment", "PodDisruptionBudget", "Service"]),
        "{built}"
    );
    assert_eq!(validate_schemas(&[path]), 3);
}

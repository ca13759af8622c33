//! The Kubernetes manifests and their kustomization.

use super::*;

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

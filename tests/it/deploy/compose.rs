//! `deploy/docker-compose.yml`: the application, Redis and keepalive.

use super::*;

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

#[test]
fn the_express_compose_gives_keepalive_the_apps_redis_secret_and_origin() {
    let file = "deploy/express/docker-compose.yml";
    let compose = yaml_one(file);
    let keepalive = compose
        .pointer("/services/keepalive")
        .expect("service keepalive");
    let nginx = compose.pointer("/services/nginx").expect("service nginx");
    let app = compose.pointer("/services/app").expect("service app");
    let env = keepalive
        .pointer("/environment")
        .and_then(Value::as_object)
        .expect("environment as a map");
    assert_known_variables(file, env.keys().map(String::as_str));
    assert_eq!(env["KEEPALIVE_SESSION_FORMAT"], "express");
    // The app's own Redis, and its secret from the same secret file.
    assert_eq!(
        env["REDIS_URL"],
        app.pointer("/environment/REDIS_URL")
            .expect("the app's REDIS_URL")
            .clone()
    );
    assert_eq!(
        env["KEEPALIVE_EXPRESS_SECRETS_FILE"],
        "/run/secrets/session_secret"
    );
    assert_eq!(keepalive["secrets"], json!(["session_secret"]));
    assert_eq!(app["secrets"], json!(["session_secret"]));
    // The site's port moves from the app to nginx, which serves the tested snippet; keepalive
    // and the app publish nothing.
    assert_eq!(nginx["ports"], json!(["8080:80"]));
    assert!(app.get("ports").is_none() && keepalive.get("ports").is_none());
    let mount = nginx
        .pointer("/volumes/0")
        .and_then(Value::as_str)
        .expect("mount");
    assert!(
        mount.starts_with("../keepalive/deploy/nginx/keepalive-express.conf:"),
        "{mount}"
    );
    let snippet = read("deploy/nginx/keepalive-express.conf");
    assert!(snippet.contains("server keepalive:8080;") && snippet.contains("server app:8080;"));

    // The settings start a server: `keepalive config` accepts them (the secret from a file).
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("session_secret");
    std::fs::write(&secret, "the-apps-secret\n").expect("secret");
    let secret = secret.display().to_string();
    let data = dir.path().display().to_string();
    let mut vars: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().expect("string values")))
        .collect();
    for (key, value) in vars.iter_mut() {
        match *key {
            "KEEPALIVE_EXPRESS_SECRETS_FILE" => *value = &secret,
            "KEEPALIVE_DATA_DIR" => *value = &data,
            _ => {}
        }
    }
    let output = crate::harness::command(&vars)
        .args(["config", "--json"])
        .output()
        .expect("keepalive config");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("the-apps-secret"));
}

/// The compose files that build keepalive's image, and how each names the Dockerfile.
const COMPOSE_FILES: [&str; 2] = [
    "deploy/docker-compose.yml",
    "deploy/express/docker-compose.yml",
];

/// The Dockerfile's HEALTHCHECK: its options (`interval` ...) and its command.
fn dockerfile_healthcheck() -> (BTreeMap<String, String>, String) {
    let text = read("deploy/docker/Dockerfile").replace("\\\n", " ");
    let line = text
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("HEALTHCHECK");
    let (options, command) = line.split_once(" CMD ").expect("HEALTHCHECK ... CMD");
    let options = options
        .split_whitespace()
        .filter_map(|o| o.strip_prefix("--"))
        .map(|o| {
            let (k, v) = o.split_once('=').expect("--option=value");
            (k.replace('-', "_"), v.to_owned())
        })
        .collect();
    (options, command.trim().to_owned())
}

#[test]
fn compose_builds_and_checks_keepalive_as_the_dockerfile_does() {
    let dockerfile = read("deploy/docker/Dockerfile");
    let (options, command) = dockerfile_healthcheck();
    for file in COMPOSE_FILES {
        let compose = yaml_one(file);
        let service = compose
            .pointer("/services/keepalive")
            .unwrap_or_else(|| panic!("{file}: service keepalive"));

        // The image of deploy/docker/Dockerfile, with the commit as its REVISION.
        assert_eq!(
            str_at(service, "/build/dockerfile"),
            "deploy/docker/Dockerfile"
        );
        let args = service
            .pointer("/build/args")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{file}: build.args"));
        for name in args.keys() {
            assert!(
                dockerfile.contains(&format!("\nARG {name}=")),
                "{file}: build arg {name} is not an ARG of the Dockerfile"
            );
        }
        assert_eq!(args["REVISION"], "${REVISION:-unknown}", "{file}");
        // VERSION stays the Dockerfile's, which matches Cargo.toml.
        assert!(!args.contains_key("VERSION"), "{file}");

        // The same health check as the image's (`$$` is Compose's escape for `$`).
        let test = service
            .pointer("/healthcheck/test")
            .unwrap_or_else(|| panic!("{file}: healthcheck"));
        assert_eq!(test[0], "CMD-SHELL", "{file}");
        let shell = test[1].as_str().expect("command").replace("$$", "$");
        assert_eq!(
            shell.replace('"', ""),
            command.replace('"', ""),
            "{file}: the healthcheck and the Dockerfile's HEALTHCHECK"
        );
        for (key, value) in &options {
            let here = service
                .pointer(&format!("/healthcheck/{key}"))
                .unwrap_or_else(|| panic!("{file}: healthcheck {key}"));
            match here.as_u64() {
                Some(count) => assert_eq!(count.to_string(), *value, "{file}: {key}"),
                None => assert_eq!(
                    duration(here.as_str().expect("a duration")),
                    duration(value),
                    "{file}: healthcheck {key}"
                ),
            }
        }

        // Time to drain: the server's production drain delay and shutdown timeout, or the
        // file's own, plus a margin.
        let env = service
            .pointer("/environment")
            .and_then(Value::as_object)
            .expect("environment as a map");
        let setting = |name: &str, default: u64| {
            env.get(name)
                .and_then(Value::as_str)
                .map_or(Duration::from_secs(default), duration)
        };
        let needed =
            setting("KEEPALIVE_DRAIN_DELAY", 5) + setting("KEEPALIVE_SHUTDOWN_TIMEOUT", 15);
        assert!(
            duration(str_at(service, "/stop_grace_period")) >= needed + Duration::from_secs(5),
            "{file}: stop_grace_period"
        );
    }
}

#[test]
fn a_first_compose_up_finds_a_writable_data_volume_and_a_healthy_redis() {
    for file in COMPOSE_FILES {
        let compose = yaml_one(file);
        let service = compose
            .pointer("/services/keepalive")
            .expect("service keepalive");
        // The image's user (10001), whose data directory the image creates: a new named volume
        // mounted there is seeded with that directory, owner included. A bind mount or another
        // user would leave the server a directory it cannot write.
        assert!(service.get("user").is_none(), "{file}: user");
        let data_dir = str_at(service, "/environment/KEEPALIVE_DATA_DIR");
        assert_eq!(
            data_dir, "/var/lib/keepalive",
            "{file}: the image's data directory"
        );
        let mounts: Vec<&str> = service["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|v| v.as_str().expect("short volume syntax"))
            .collect();
        let volume = mounts
            .iter()
            .find_map(|m| m.strip_suffix(&format!(":{data_dir}")))
            .unwrap_or_else(|| panic!("{file}: no volume at {data_dir}: {mounts:?}"));
        assert!(
            compose.pointer(&format!("/volumes/{volume}")).is_some(),
            "{file}: {volume} is not a named volume of the file"
        );
        // read_only: the server writes nowhere else (the systemd test traces its writes).
        assert_eq!(service["read_only"], true, "{file}");

        // Redis answers before keepalive starts, so that the first start is not degraded.
        let redis = compose.pointer("/services/redis").expect("service redis");
        let check = redis
            .pointer("/healthcheck/test")
            .expect("redis healthcheck")
            .to_string();
        assert!(check.contains("redis-cli ping"), "{file}: {check}");
        assert_eq!(
            str_at(service, "/depends_on/redis/condition"),
            "service_healthy",
            "{file}"
        );
        let redis_url = str_at(service, "/environment/REDIS_URL");
        assert!(
            redis_url.starts_with("redis://redis:6379"),
            "{file}: {redis_url}"
        );
        let redis_volume = redis
            .pointer("/volumes/0")
            .and_then(Value::as_str)
            .expect("redis volume");
        assert!(redis_volume.ends_with(":/data"), "{file}: {redis_volume}");
    }
}

/// dclint's findings that are choices of these files, not mistakes: the image is built and
/// named (`build` and `image`, so that `up` builds it once and the name is known), and the
/// site's port is published on every interface of the host, as the application's was.
const DCLINT_ACCEPTED: [&str; 2] = ["no-build-and-image", "no-unbound-port-interfaces"];

#[test]
fn dclint_validates_the_compose_files_against_the_compose_specification() {
    let tool = super::docker::lint_tool("dclint");
    let output = Command::new(&tool)
        .args(["--formatter", "json", "--color", "false"])
        .args(COMPOSE_FILES)
        .current_dir(root())
        .output()
        .expect("dclint");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "dclint printed no JSON ({err}):\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let files = report.as_array().expect("a list of files");
    assert_eq!(files.len(), COMPOSE_FILES.len(), "{report:#}");
    let mut errors = Vec::new();
    for file in files {
        for message in file["messages"].as_array().expect("messages") {
            let rule = message["rule"].as_str().unwrap_or_default();
            // Warnings are matters of style (key order, quoting): only errors count.
            if message["type"] == "error" && !DCLINT_ACCEPTED.contains(&rule) {
                errors.push(format!(
                    "{}:{}: {} ({rule})",
                    file["filePath"], message["line"], message["message"]
                ));
            }
        }
    }
    assert!(errors.is_empty(), "dclint:\n{}", errors.join("\n"));
}

#[test]
fn docker_compose_config_accepts_the_file_where_the_compose_plugin_exists() {
    let available = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        // `docker compose config` needs no engine, only the compose plugin of the client.
        eprintln!("no `docker compose` here: the compose file is checked by dclint alone");
        return;
    }
    let output = Command::new("docker")
        .args(["compose", "-f", "deploy/docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker compose config");
    assert!(
        output.status.success(),
        "docker compose config:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

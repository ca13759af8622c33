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

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

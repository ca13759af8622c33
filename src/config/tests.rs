use std::time::Duration;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Layers::new(None, vars(pairs))?.validate()
}

#[test]
fn development_is_the_default() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config.environment, Environment::Development);
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.store.data_dir, PathBuf::from("./data"));
    assert_eq!(config.session.idle_timeout, Duration::from_secs(600));
    assert_eq!(
        config.session.absolute_lifetime,
        Duration::from_secs(12 * 3600)
    );
    assert!(!config.session.cookie_secure);
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn production_defaults_follow_the_guide() {
    let config = load(&[("NODE_ENV", "production")]).expect("valid");
    assert_eq!(config.environment, Environment::Production);
    assert_eq!(config.client.tick, Duration::from_secs(30));
    assert_eq!(config.client.timeout, Duration::from_secs(8));
    assert_eq!(config.client.max_retries, 3);
    assert_eq!(config.client.health_check_frequency, 2);
    assert!(config.session.cookie_secure);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn keepalive_env_wins_over_node_env() {
    let config = load(&[("NODE_ENV", "production"), ("KEEPALIVE_ENV", "staging")]).expect("valid");
    assert_eq!(config.environment, Environment::Staging);
}

#[test]
fn environment_variables_override_defaults_with_units() {
    let config = load(&[
        ("PORT", "9000"),
        ("KEEPALIVE_BIND", "127.0.0.1"),
        ("KEEPALIVE_IDLE_TIMEOUT", "15m"),
        ("KEEPALIVE_MEMORY_WARNING", "70"),
        ("KEEPALIVE_COOKIE_NAME", "sid"),
    ])
    .expect("valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.session.idle_timeout, Duration::from_secs(900));
    assert!((config.health.memory_warning - 70.0).abs() < f64::EPSILON);
    assert_eq!(config.session.cookie_name, "sid");
}

#[test]
fn prefixed_port_wins_over_plain_port() {
    let config = load(&[("PORT", "9000"), ("KEEPALIVE_PORT", "9001")]).expect("valid");
    assert_eq!(config.server.listen.port(), 9001);
}

#[test]
fn production_tick_under_25s_names_key_value_origin_and_rule() {
    let err = load(&[("NODE_ENV", "production"), ("KEEPALIVE_TICK", "10s")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tick"), "{text}");
    assert!(text.contains("10s"), "{text}");
    assert!(
        text.contains("environment variable KEEPALIVE_TICK"),
        "{text}"
    );
    assert!(text.contains("at least 25s in production"), "{text}");
}

#[test]
fn warning_above_critical_is_rejected() {
    let err = load(&[("KEEPALIVE_MEMORY_WARNING", "95")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("memory_warning = \"95\""), "{text}");
    assert!(text.contains("below memory_critical"), "{text}");
}

#[test]
fn workers_default_to_one_per_cpu_and_are_bounded() {
    assert_eq!(
        load(&[]).expect("valid").server.workers,
        0,
        "0: one per CPU"
    );
    let config = load(&[("KEEPALIVE_WORKERS", "3")]).expect("valid");
    assert_eq!(config.server.workers, 3);
    let text = load(&[("KEEPALIVE_WORKERS", "100000")])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("workers") && text.contains("at most 256"),
        "{text}"
    );
}

#[test]
fn durations_need_units() {
    let err = load(&[("KEEPALIVE_TICK", "30")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("KEEPALIVE_TICK"), "{text}");
    assert!(text.contains("duration with a unit"), "{text}");
}

#[test]
fn unknown_environment_is_rejected_from_keepalive_env_and_pointed_out_from_node_env() {
    let err = load(&[("KEEPALIVE_ENV", "prodution")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("environment variable KEEPALIVE_ENV"),
        "{err}"
    );
    let layers = Layers::new(None, vars(&[("NODE_ENV", "prodution")])).expect("layers");
    assert_eq!(layers.environment(), Environment::Development);
    let note = layers.environment_note().expect("note");
    assert!(note.contains("did you mean production?"), "{note}");
}

#[test]
fn unknown_prefixed_variables_are_reported_not_fatal() {
    let layers = Layers::new(None, vars(&[("KEEPALIVE_TIKC", "30s")])).expect("layers");
    assert_eq!(layers.unknown_vars(), ["KEEPALIVE_TIKC".to_owned()]);
    assert!(layers.validate().is_ok());
}

#[test]
fn file_layer_sits_between_defaults_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keepalive.toml");
    std::fs::write(
        &path,
        "env = \"staging\"\ntick = \"40s\"\nidle_timeout = \"20m\"\n",
    )
    .expect("write");
    let layers = Layers::new(
        Some(path.clone()),
        vars(&[("KEEPALIVE_IDLE_TIMEOUT", "30m")]),
    )
    .expect("layers");
    let config = layers.validate().expect("valid");
    assert_eq!(config.environment, Environment::Staging);
    assert_eq!(config.client.tick, Duration::from_secs(40));
    assert_eq!(config.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(layers.origin("tick"), Origin::File(path));
    assert_eq!(
        layers.origin("idle_timeout"),
        Origin::Env("KEEPALIVE_IDLE_TIMEOUT".to_owned())
    );
    assert_eq!(
        layers.origin("timeout"),
        Origin::Default(Environment::Staging)
    );
}

#[test]
fn unknown_file_keys_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keepalive.toml");
    std::fs::write(&path, "tikc = \"40s\"\n").expect("write");
    let err = Layers::new(Some(path), vars(&[])).unwrap_err();
    assert!(err.to_string().contains("unknown setting `tikc`"), "{err}");
    let err = Layers::new(Some(dir.path().join("missing.toml")), vars(&[])).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn secrets_are_redacted() {
    let layers = Layers::new(
        None,
        vars(&[
            ("REDIS_URL", "redis://user:hunter2@cache:6379/0"),
            ("KEEPALIVE_HEALTH_TOKEN", "0123456789abcdef0"),
        ]),
    )
    .expect("layers");
    assert_eq!(
        layers.display_value("redis_url").as_deref(),
        Some("redis://<redacted>@cache:6379/0")
    );
    assert_eq!(
        layers.display_value("health_token").as_deref(),
        Some("<redacted>")
    );
    let config = layers.validate().expect("valid");
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!format!("{config:?}").contains("0123456789abcdef0"));
}

#[test]
fn idle_timeout_must_outlast_a_tick() {
    let err = load(&[("KEEPALIVE_TICK", "1m"), ("KEEPALIVE_IDLE_TIMEOUT", "1m")]).unwrap_err();
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}

#[test]
fn absolute_lifetime_is_at_most_ten_years() {
    assert!(load(&[("KEEPALIVE_ABSOLUTE_LIFETIME", "3650days")]).is_ok());
    let err = load(&[("KEEPALIVE_ABSOLUTE_LIFETIME", "3651days")]).unwrap_err();
    assert!(err.to_string().contains("absolute_lifetime"), "{err}");
    assert!(err.to_string().contains("at most 3650 days"), "{err}");
}

#[test]
fn the_record_of_logouts_is_capped_within_bounds() {
    let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
    let config = load(&[redis]).expect("defaults");
    assert_eq!(config.redis.expect("redis").logout_record_cap, 100_000);
    let config = load(&[redis, ("KEEPALIVE_REDIS_LOGOUT_RECORD_CAP", "2000000")]).expect("set");
    assert_eq!(config.redis.expect("redis").logout_record_cap, 2_000_000);
    let err = load(&[redis, ("KEEPALIVE_REDIS_LOGOUT_RECORD_CAP", "10")]).unwrap_err();
    assert!(err.to_string().contains("redis_logout_record_cap"), "{err}");
    assert!(
        err.to_string().contains("between 1000 and 100000000"),
        "{err}"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever an operator writes in any setting, loading answers with a configuration or
        /// an error naming a real key; it never panics.
        #[test]
        fn any_value_of_any_setting_loads_or_names_its_key(index in 0..KEYS.len(), value in "\\PC{0,30}") {
            let key = KEYS[index];
            let var = format!("KEEPALIVE_{}", key.to_ascii_uppercase());
            match Layers::new(None, vars(&[(&var, &value)])).and_then(|l| l.validate()) {
                Ok(_) => {}
                Err(ConfigError::Invalid { key: named, .. }) => prop_assert!(KEYS.contains(&named) || named == "configuration"),
                Err(ConfigError::File { .. }) => prop_assert!(false, "no file was given"),
            }
        }
    }
}

#[test]
fn express_mode_mirrors_express_session_and_connect_redis_defaults() {
    assert!(
        load(&[]).expect("valid").express.is_none(),
        "native by default"
    );
    let config = load(&[
        ("REDIS_URL", "redis://redis:6379"),
        ("KEEPALIVE_SESSION_FORMAT", "express"),
        ("KEEPALIVE_EXPRESS_SECRETS", "keyboard cat, with a comma"),
    ])
    .expect("valid");
    let express = config.express.expect("express");
    assert_eq!(express.secrets.len(), 1, "one secret, commas and all");
    assert_eq!(express.secrets[0].expose(), "keyboard cat, with a comma");
    assert_eq!(express.prefix, "sess:");
    assert_eq!(express.cookie_name, "connect.sid");
    assert!(!express.rolling);
    assert_eq!(express.ttl, Duration::from_secs(86_400));
    assert_eq!(express.user_field, vec!["passport", "user"]);

    let config = load(&[
        ("REDIS_URL", "redis://redis:6379"),
        ("KEEPALIVE_SESSION_FORMAT", "Express"),
        (
            "KEEPALIVE_EXPRESS_SECRETS",
            r#"["new secret","old secret"]"#,
        ),
        ("KEEPALIVE_EXPRESS_ROLLING", "true"),
        ("KEEPALIVE_EXPRESS_USER_FIELD", "userId"),
        ("KEEPALIVE_EXPRESS_PREFIX", "myapp:"),
        ("KEEPALIVE_EXPRESS_COOKIE_NAME", "sid"),
        ("KEEPALIVE_EXPRESS_TTL", "2h"),
    ])
    .expect("valid");
    let express = config.express.expect("express");
    let secrets: Vec<&str> = express.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["new secret", "old secret"], "the first signs");
    assert!(express.rolling);
    assert_eq!(express.user_field, vec!["userId"]);
    assert_eq!(express.prefix, "myapp:");
    assert_eq!(express.cookie_name, "sid");
    assert_eq!(express.ttl, Duration::from_secs(7200));
}

#[test]
fn express_secrets_come_from_a_file_one_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secrets");
    std::fs::write(&file, "new secret\r\nold secret\n\n").expect("write");
    let path = file.display().to_string();
    let config = load(&[
        ("REDIS_URL", "redis://redis:6379"),
        ("KEEPALIVE_SESSION_FORMAT", "express"),
        ("KEEPALIVE_EXPRESS_SECRETS_FILE", &path),
    ])
    .expect("valid");
    let express = config.express.expect("express");
    let secrets: Vec<&str> = express.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["new secret", "old secret"]);
}

#[test]
fn express_mode_refuses_what_it_cannot_run_with_and_never_prints_a_secret() {
    let redis = ("REDIS_URL", "redis://redis:6379");
    let express = ("KEEPALIVE_SESSION_FORMAT", "express");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[express, ("KEEPALIVE_EXPRESS_SECRETS", "s3cret-value")],
            "set REDIS_URL",
        ),
        (&[redis, express], "KEEPALIVE_EXPRESS_SECRETS_FILE"),
        (
            &[
                redis,
                express,
                ("KEEPALIVE_EXPRESS_SECRETS", "s3cret-value"),
                ("KEEPALIVE_EXPRESS_SECRETS_FILE", "/run/secrets/x"),
            ],
            "not both",
        ),
        (
            &[
                redis,
                express,
                ("KEEPALIVE_EXPRESS_SECRETS_FILE", "/no/such/secrets/file"),
            ],
            "cannot be read",
        ),
        (
            &[
                redis,
                express,
                ("KEEPALIVE_EXPRESS_SECRETS", r#"["s3cret-value", ""]"#),
            ],
            "none empty",
        ),
        (
            &[
                redis,
                express,
                ("KEEPALIVE_EXPRESS_SECRETS", "[not json s3cret-value"),
            ],
            "JSON array",
        ),
        (
            &[
                redis,
                express,
                ("KEEPALIVE_EXPRESS_SECRETS", "s3cret-value"),
                ("KEEPALIVE_EXPRESS_USER_FIELD", "passport..user"),
            ],
            "dotted path",
        ),
        (
            &[redis, ("KEEPALIVE_SESSION_FORMAT", "koa")],
            "must be native",
        ),
    ];
    for (vars, rule) in cases {
        let text = load(vars).expect_err("refused").to_string();
        assert!(text.contains(rule), "{vars:?}: {text}");
        assert!(
            !text.contains("s3cret-value"),
            "a secret was printed: {text}"
        );
    }
}

#[test]
fn kubernetes_service_links_are_ignored_and_named() {
    let links = [
        ("KEEPALIVE_SERVICE_HOST", "10.96.0.7"),
        ("KEEPALIVE_SERVICE_PORT", "80"),
        ("KEEPALIVE_SERVICE_PORT_HTTP", "80"),
        ("KEEPALIVE_PORT", "tcp://10.96.0.7:80"),
        ("KEEPALIVE_PORT_80_TCP", "tcp://10.96.0.7:80"),
        ("KEEPALIVE_PORT_80_TCP_PROTO", "tcp"),
        ("KEEPALIVE_PORT_80_TCP_PORT", "80"),
        ("KEEPALIVE_PORT_80_TCP_ADDR", "10.96.0.7"),
        // A second Service, `keepalive-redis`, in the same namespace.
        ("KEEPALIVE_REDIS_SERVICE_HOST", "10.96.0.8"),
        ("KEEPALIVE_REDIS_PORT", "tcp://10.96.0.8:6379"),
        ("KEEPALIVE_REDIS_PORT_6379_TCP_ADDR", "10.96.0.8"),
    ];
    let mut all = links.to_vec();
    all.push(("PORT", "9000"));
    let layers = Layers::new(None, vars(&all)).expect("layers");
    let config = layers.validate().expect("valid");
    assert_eq!(config.server.listen.port(), 9000);
    assert_eq!(layers.service_links().len(), links.len());
    assert!(
        layers.unknown_vars().is_empty(),
        "{:?}",
        layers.unknown_vars()
    );
    assert_eq!(layers.origin("port"), Origin::Env("PORT".to_owned()));

    // Without the `_SERVICE_HOST` the kubelet always sets with them, a `KEEPALIVE_PORT` is
    // the operator's own, and refused if it is not a number.
    let err = load(&[("KEEPALIVE_PORT", "tcp://10.96.0.7:80")]).unwrap_err();
    assert!(err.to_string().contains("enableServiceLinks"), "{err}");
    // A port set by hand next to the links is still read.
    let config = load(&[
        ("KEEPALIVE_SERVICE_HOST", "10.96.0.7"),
        ("KEEPALIVE_PORT", "9100"),
    ])
    .expect("valid");
    assert_eq!(config.server.listen.port(), 9100);
}

#[test]
fn node_env_of_a_node_application_falls_back_to_development_and_says_so() {
    for value in ["qa", "ci", "local", "uat", "preview"] {
        let layers = Layers::new(None, vars(&[("NODE_ENV", value)])).expect("layers");
        assert_eq!(layers.environment(), Environment::Development, "{value}");
        let note = layers.environment_note().expect("a note");
        assert!(note.contains(&format!("NODE_ENV={value}")), "{note}");
        assert!(note.contains("KEEPALIVE_ENV"), "{note}");
        layers.validate().expect("valid");
    }
    let layers = Layers::new(None, vars(&[("NODE_ENV", "test")])).expect("layers");
    assert_eq!(layers.environment(), Environment::Development);
    assert!(layers.environment_note().is_none());
    // KEEPALIVE_ENV is keepalive's own: a value it does not know is an error.
    let err = Layers::new(None, vars(&[("KEEPALIVE_ENV", "qa")])).unwrap_err();
    assert!(err.to_string().contains("KEEPALIVE_ENV"), "{err}");
    // KEEPALIVE_ENV decides even when NODE_ENV is unknown.
    let layers = Layers::new(
        None,
        vars(&[("NODE_ENV", "qa"), ("KEEPALIVE_ENV", "staging")]),
    )
    .expect("layers");
    assert_eq!(layers.environment(), Environment::Staging);
    assert!(layers.environment_note().is_none());
}

#[test]
fn command_line_flags_sit_on_top_and_are_named_as_the_origin() {
    let layers = Layers::new(
        None,
        vars(&[("PORT", "9000"), ("KEEPALIVE_DATA_DIR", "/srv/a")]),
    )
    .expect("layers")
    .with_flags(vec![
        ("port", "--port", "9001".to_owned()),
        ("data_dir", "--data-dir", "/srv/b".to_owned()),
    ]);
    let config = layers.validate().expect("valid");
    assert_eq!(config.server.listen.port(), 9001);
    assert_eq!(config.store.data_dir, PathBuf::from("/srv/b"));
    assert_eq!(layers.origin("port"), Origin::Flag("--port"));
    assert_eq!(
        layers.origin("port").to_string(),
        "command-line flag --port"
    );
    assert_eq!(
        layers.origin("bind"),
        Origin::Default(Environment::Development)
    );
}

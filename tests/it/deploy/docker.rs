//! The container image: `deploy/docker/Dockerfile` and `.dockerignore`.

use super::*;

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

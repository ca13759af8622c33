//! The container image: `deploy/docker/Dockerfile` and `.dockerignore`.
//!
//! There is no Docker engine where these tests run: they read the Dockerfile, replay the steps
//! that need no engine (the stand-ins of the dependency layer, with Cargo), lint it with
//! `dockerfile-utils` and apply `.dockerignore` to the repository's files.

use super::*;

type Instruction = (String, String);

/// The Dockerfile's instructions, continuation lines joined, comments dropped: (keyword, rest).
fn dockerfile() -> Vec<Instruction> {
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

/// The global ARGs (before the first FROM), then each stage from its FROM.
fn stages(instructions: &[Instruction]) -> (&[Instruction], Vec<&[Instruction]>) {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(!starts.is_empty(), "no FROM");
    let mut stages = Vec::new();
    for (n, start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(instructions.len());
        stages.push(&instructions[*start..end]);
    }
    (&instructions[..starts[0]], stages)
}

fn find(stage: &[Instruction], keyword: &str) -> Vec<String> {
    stage
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, rest)| rest.clone())
        .collect()
}

/// Where the first instruction of this keyword whose text satisfies `matches` is.
fn position(stage: &[Instruction], keyword: &str, matches: impl Fn(&str) -> bool) -> Option<usize> {
    stage
        .iter()
        .position(|(k, rest)| k == keyword && matches(rest))
}

/// The default of a global `ARG NAME=default`.
fn global_arg(name: &str) -> String {
    let instructions = dockerfile();
    let (globals, _) = stages(&instructions);
    globals
        .iter()
        .filter(|(k, _)| k == "ARG")
        .find_map(|(_, rest)| rest.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no global ARG {name}=... before the first FROM"))
}

/// A `key = "value"` of Cargo.toml's `[package]`.
fn package_field(key: &str) -> String {
    let manifest = read("Cargo.toml");
    let package = manifest
        .split("\n[")
        .find(|section| section.starts_with("[package]") || section.starts_with("package]"))
        .expect("[package]");
    package
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} in Cargo.toml's [package]"))
        .to_owned()
}

/// The workspace members other than the root package (`members = [".", "bench", ...]`).
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.starts_with("members = ["))
        .expect("members = [...] in Cargo.toml");
    let members: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| *m != ".")
        .map(str::to_owned)
        .collect();
    assert!(!members.is_empty(), "{line}");
    members
}

/// `key="value" key=value ...` of a LABEL instruction.
fn labels(rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            value = chars.by_ref().take_while(|c| *c != '"').collect();
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        labels.insert(key, value);
    }
}

/// The `cargo build ...` command of a RUN, up to the next `&&`.
fn cargo_build(run: &str) -> Option<&str> {
    let start = run.find("cargo build")?;
    let rest = &run[start..];
    Some(rest.split("&&").next().unwrap_or(rest).trim())
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_checks_health_with_keepalive_check() {
    let instructions = dockerfile();
    let (_, stages) = stages(&instructions);
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let build = stages[0];
    let runtime = *stages.last().expect("a stage");

    // Built with the locked dependencies, in release, by a Rust new enough for the crate.
    assert!(
        find(build, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "{build:?}"
    );
    assert!(build[0].1.starts_with("rust:"), "{:?}", build[0]);
    let version = |v: &str| -> (u32, u32) {
        let mut parts = v
            .split('.')
            .map(|p| p.parse::<u32>().expect("version number"));
        (parts.next().expect("major"), parts.next().unwrap_or(0))
    };
    assert!(version(&global_arg("RUST_VERSION")) >= version(&package_field("rust-version")));

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

    // Non-root, with the uid the Kubernetes manifests run as, owning the data directory.
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
    let setup = find(runtime, "RUN").join(" ");
    assert!(
        setup.contains("--uid 10001") && setup.contains("--gid 10001"),
        "{setup}"
    );
    assert!(
        setup.contains("install -d -m 0750 -o keepalive -g keepalive /var/lib/keepalive"),
        "the data directory belongs to the user: {setup}"
    );

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
fn image_labels_name_version_revision_source_and_licenses() {
    let instructions = dockerfile();
    let (_, stages) = stages(&instructions);
    let runtime = *stages.last().expect("a stage");

    // VERSION defaults to the crate's version; the build stops if the binary says otherwise.
    let version = package_field("version");
    assert_eq!(
        global_arg("VERSION"),
        version,
        "ARG VERSION and Cargo.toml's version"
    );
    assert_eq!(global_arg("REVISION"), "unknown");
    let source = global_arg("SOURCE");
    assert!(
        source.is_empty() || source.starts_with("https://"),
        "{source}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_keepalive"))
        .arg("--version")
        .output()
        .expect("keepalive --version");
    let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        said == format!("keepalive {version}")
            || said.starts_with(&format!("keepalive {version} ")),
        "the Dockerfile's version check would refuse {said:?}"
    );
    let build_runs = find(stages[0], "RUN").join("\n");
    assert!(
        build_runs.contains("keepalive --version")
            && build_runs.contains("\"keepalive ${VERSION}\" | \"keepalive ${VERSION} \"*)"),
        "{build_runs}"
    );

    let all_labels = find(runtime, "LABEL");
    assert_eq!(all_labels.len(), 1, "{all_labels:?}");
    let labels = labels(&all_labels[0]);
    let oci = |key: &str| {
        labels
            .get(&format!("org.opencontainers.image.{key}"))
            .unwrap_or_else(|| panic!("LABEL org.opencontainers.image.{key}: {labels:?}"))
            .as_str()
    };
    assert_eq!(oci("title"), "keepalive");
    assert_eq!(oci("description"), package_field("description"));
    assert_eq!(oci("licenses"), package_field("license"));
    assert_eq!(oci("version"), "${VERSION}");
    assert_eq!(oci("revision"), "${REVISION}");
    assert_eq!(oci("source"), "${SOURCE}");

    // The ARGs the labels use are declared in the stage, after its last RUN and COPY: a new
    // revision changes the labels only, the layers above stay cached.
    let label_at = position(runtime, "LABEL", |_| true).expect("LABEL");
    let last_layer = runtime
        .iter()
        .rposition(|(k, _)| k == "RUN" || k == "COPY")
        .expect("a RUN or COPY");
    for name in ["VERSION", "REVISION", "SOURCE"] {
        let at = position(runtime, "ARG", |rest| rest == name)
            .unwrap_or_else(|| panic!("ARG {name} in the final stage"));
        assert!(
            last_layer < at && at < label_at,
            "ARG {name} after the last RUN and COPY, before LABEL"
        );
    }

    // The revision reaches `keepalive --version` through build.rs.
    assert!(read("build.rs").contains("KEEPALIVE_BUILD_COMMIT"));
    assert!(
        build_runs.contains("KEEPALIVE_BUILD_COMMIT=\"${REVISION}\" cargo build"),
        "{build_runs}"
    );

    // The guide gives the build command with the revision.
    for (file, text) in [
        ("deploy/docker/Dockerfile", read("deploy/docker/Dockerfile")),
        ("docs/deployment.md", read("docs/deployment.md")),
    ] {
        assert!(
            text.contains("--build-arg REVISION=$(git rev-parse HEAD)"),
            "{file} does not show --build-arg REVISION=$(git rev-parse HEAD)"
        );
    }
}

#[test]
fn dependencies_build_in_layers_of_their_own_before_the_sources() {
    let instructions = dockerfile();
    let (_, stages) = stages(&instructions);
    let build = stages[0];
    let copy_all = position(build, "COPY", |rest| rest == ". ." || rest == ". ./")
        .expect("COPY . . in the build stage");

    // Before the sources: the manifests and the lock file, every workspace member's.
    let mut copied = BTreeSet::new();
    for (keyword, rest) in &build[..copy_all] {
        if keyword != "COPY" {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                source.ends_with("Cargo.toml") || source.ends_with("Cargo.lock"),
                "COPY {source} before the dependencies are built: any change to it would \
                 rebuild them"
            );
            copied.insert((*source).to_owned());
        }
    }
    let mut manifests: BTreeSet<String> = ["Cargo.toml", "Cargo.lock"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    manifests.extend(
        workspace_members()
            .iter()
            .map(|m| format!("{m}/Cargo.toml")),
    );
    assert_eq!(copied, manifests, "the manifests copied before the sources");

    // The dependencies are built from them, then the sources, by the same command.
    let deps =
        position(build, "RUN", |rest| cargo_build(rest).is_some()).expect("a cargo build RUN");
    assert!(
        deps < copy_all,
        "the dependencies are built before COPY . ."
    );
    let last = build
        .iter()
        .rposition(|(k, rest)| k == "RUN" && cargo_build(rest).is_some())
        .expect("a cargo build RUN");
    assert!(last > copy_all, "keepalive is built after COPY . .");
    let first_command = cargo_build(&build[deps].1).expect("command");
    assert_eq!(
        first_command,
        "cargo build --release --locked --bin keepalive"
    );
    assert!(
        build[last].1.contains(&format!(
            "cargo build{}",
            &first_command["cargo build".len()..]
        )),
        "the same build after the sources, or the dependencies are built again: {}",
        build[last].1
    );
    // COPY keeps the sources' times, older than the stand-ins' build: without the touch Cargo
    // would ship the stand-in.
    let touch = build[last].1.find("touch src/main.rs src/lib.rs");
    assert!(
        touch.is_some_and(|at| at < build[last].1.find("cargo build").expect("cargo build")),
        "{}",
        build[last].1
    );

    // Layers, not cache mounts (see the Dockerfile): a cache-mounted target directory would
    // leave the dependency layer empty.
    for run in find(build, "RUN") {
        assert!(!run.contains("--mount=type=cache"), "{run}");
    }

    // The build arguments that change with every commit come after the dependency layers.
    for name in ["VERSION", "REVISION"] {
        let at = position(build, "ARG", |rest| {
            rest == name || rest.starts_with(&format!("{name}="))
        })
        .unwrap_or_else(|| panic!("ARG {name} in the build stage"));
        assert!(
            at > deps,
            "ARG {name} before the dependency build busts its cache"
        );
    }
}

/// Runs a command in `dir` and returns its stdout; panics with its output when it fails.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (package, kind, name, source path relative to the workspace) of every library, binary and
/// example of the workspace at `dir`.
fn targets(dir: &Path) -> BTreeSet<(String, String, String, String)> {
    let metadata = run_in(
        dir,
        "cargo",
        &[
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ],
    );
    let metadata: Value = serde_json::from_str(&metadata).expect("cargo metadata JSON");
    let root = metadata["workspace_root"].as_str().expect("workspace_root");
    let mut targets = BTreeSet::new();
    for package in metadata["packages"].as_array().expect("packages") {
        for target in package["targets"].as_array().expect("targets") {
            for kind in target["kind"].as_array().expect("kind") {
                let kind = kind.as_str().expect("kind");
                if ["lib", "bin", "example"].contains(&kind) {
                    let path = target["src_path"].as_str().expect("src_path");
                    targets.insert((
                        package["name"].as_str().expect("name").to_owned(),
                        kind.to_owned(),
                        target["name"].as_str().expect("name").to_owned(),
                        path.strip_prefix(root).unwrap_or(path).to_owned(),
                    ));
                }
            }
        }
    }
    targets
}

#[test]
fn the_stand_ins_let_cargo_load_the_workspace_from_the_manifests_alone() {
    let instructions = dockerfile();
    let (_, stages) = stages(&instructions);
    let build = stages[0];
    let copy_all = position(build, "COPY", |rest| rest == ". .").expect("COPY . .");
    let deps = position(build, "RUN", |rest| cargo_build(rest).is_some()).expect("deps RUN");
    assert!(deps < copy_all);

    // The build stage up to its dependency build, replayed in an empty directory.
    let dir = tempfile::tempdir().expect("tempdir");
    for (keyword, rest) in &build[..deps] {
        match keyword.as_str() {
            "COPY" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let dest = dir.path().join(parts[parts.len() - 1]);
                for source in &parts[..parts.len() - 1] {
                    std::fs::create_dir_all(&dest).expect("COPY destination");
                    let name = Path::new(source).file_name().expect("file name");
                    std::fs::copy(root().join(source), dest.join(name)).expect("COPY");
                }
            }
            "RUN" => {
                run_in(dir.path(), "sh", &["-c", rest]);
            }
            _ => {}
        }
    }

    // The stand-ins give Cargo every library, binary and example of the real workspace, at
    // the same paths (a missing one stops the image build at its first `cargo build`).
    let stand_ins = targets(dir.path());
    let real = targets(&root());
    assert_eq!(
        stand_ins, real,
        "targets of the stand-ins, and of the sources"
    );
    for (_, _, _, path) in &stand_ins {
        let path = dir.path().join(path.trim_start_matches('/'));
        assert!(path.exists(), "no stand-in at {}", path.display());
    }
    // And the manifests resolve to Cargo.lock as it is (`--locked`).
    run_in(
        dir.path(),
        "cargo",
        &[
            "tree",
            "--locked",
            "--offline",
            "-p",
            "keepalive",
            "-e",
            "normal,build",
        ],
    );
}

/// Whether a `.dockerignore` pattern matches a path (or one of its parent directories, as
/// Docker's matcher does): `*` and `?` within a segment, `**` for any number of segments.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    fn segment(pattern: &[char], name: &[char]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (Some('*'), _) => {
                segment(&pattern[1..], name) || (!name.is_empty() && segment(pattern, &name[1..]))
            }
            (Some('?'), Some(_)) => segment(&pattern[1..], &name[1..]),
            (Some(p), Some(n)) if p == n => segment(&pattern[1..], &name[1..]),
            _ => false,
        }
    }
    fn segments(pattern: &[&str], path: &[&str]) -> bool {
        match pattern.first() {
            // The pattern is used up: it matched this path or one of its parents.
            None => true,
            Some(&"**") => (0..=path.len()).any(|skip| segments(&pattern[1..], &path[skip..])),
            Some(p) => {
                !path.is_empty() && {
                    let p: Vec<char> = p.chars().collect();
                    let n: Vec<char> = path[0].chars().collect();
                    segment(&p, &n) && segments(&pattern[1..], &path[1..])
                }
            }
        }
    }
    let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments(&pattern, &path)
}

/// Whether `.dockerignore` leaves a path out of the build context: the last pattern that
/// matches it decides, `!` patterns put it back.
fn ignored(patterns: &[&str], path: &str) -> bool {
    let mut ignored = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(exception) if pattern_matches(exception, path) => ignored = false,
            None if pattern_matches(pattern, path) => ignored = true,
            _ => {}
        }
    }
    ignored
}

/// The files an `include_str!` or `include_bytes!` of a Rust file names, from the root.
fn included_files(source: &str) -> Vec<String> {
    let text = read(source);
    let dir = Path::new(source).parent().expect("dir");
    let mut files = Vec::new();
    for macro_call in ["include_str!(\"", "include_bytes!(\""] {
        for rest in text.split(macro_call).skip(1) {
            let relative = rest.split('"').next().expect("path");
            let mut path: Vec<&str> = dir.iter().map(|s| s.to_str().expect("utf-8")).collect();
            for part in relative.split('/') {
                match part {
                    ".." => {
                        path.pop();
                    }
                    "." => {}
                    part => path.push(part),
                }
            }
            files.push(path.join("/"));
        }
    }
    files
}

#[test]
fn dockerignore_keeps_what_the_build_needs_and_leaves_out_the_rest() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let files: Vec<String> = run_in(
        &root(),
        "git",
        &["ls-files", "--cached", "--others", "--exclude-standard"],
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert!(files.iter().any(|f| f == "src/main.rs"), "git ls-files");

    // What `cargo build --release --locked --bin keepalive` reads: the manifests, build.rs,
    // every workspace member's manifest and sources, the example, and what the sources embed.
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "build.rs"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut dirs = vec!["src".to_owned(), "web".to_owned(), "examples".to_owned()];
    for member in workspace_members() {
        needed.insert(format!("{member}/Cargo.toml"));
        dirs.push(format!("{member}/src"));
    }
    for file in &files {
        if dirs.iter().any(|d| file.starts_with(&format!("{d}/"))) {
            needed.insert(file.clone());
        }
    }
    let sources: Vec<String> = needed
        .iter()
        .filter(|f| f.ends_with(".rs"))
        .cloned()
        .collect();
    for source in &sources {
        needed.extend(included_files(source));
    }
    assert!(needed.contains("docs/openapi.yaml"), "{needed:?}");
    for file in &needed {
        assert!(
            !ignored(&patterns, file),
            ".dockerignore leaves out {file}, which the image build needs"
        );
    }

    // Left out: what the build does not read, so that a change there keeps the image cached.
    for file in &files {
        let elsewhere = ["tests/", "docs/", "deploy/", "fuzz/", "scripts/", ".ci/"]
            .iter()
            .any(|d| file.starts_with(d));
        if elsewhere && !needed.contains(file) {
            assert!(
                ignored(&patterns, file),
                ".dockerignore sends {file} into the build context"
            );
        }
    }
    for heavy in [
        ".git/HEAD",
        "target/release/keepalive",
        "fuzz/target/debug/x",
        "tests/browser/node_modules/playwright-core/package.json",
        "data/sessions.redb",
    ] {
        assert!(ignored(&patterns, heavy), ".dockerignore keeps {heavy}");
    }
}

#[test]
fn dockerignore_matcher_reads_patterns_as_docker_does() {
    let patterns = [
        "**/target",
        "docs",
        "!docs/openapi.yaml",
        "*.md",
        "bench/*.sh",
    ];
    assert!(ignored(&patterns, "target/x"));
    assert!(ignored(&patterns, "a/b/target/x"));
    assert!(ignored(&patterns, "docs/a.md"));
    assert!(!ignored(&patterns, "docs/openapi.yaml"));
    assert!(ignored(&patterns, "README.md"));
    assert!(!ignored(&patterns, "src/README.md"));
    assert!(ignored(&patterns, "bench/run.sh"));
    assert!(!ignored(&patterns, "bench/src/main.rs"));
    assert!(!ignored(&patterns, "src/targets.rs"));
}

/// `dockerfile-utils` (npm), which scripts/test.sh installs under target/deploy-lint.
pub(super) fn lint_tool(name: &str) -> PathBuf {
    let path = root()
        .join("target/deploy-lint/node_modules/.bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs it (npm, pinned)",
        path.display()
    );
    path
}

#[test]
fn dockerfile_utils_finds_no_problem_in_the_dockerfile() {
    let tool = lint_tool("dockerfile-utils");
    let output = Command::new(&tool)
        .args(["lint", "deploy/docker/Dockerfile"])
        .current_dir(root())
        .output()
        .expect("dockerfile-utils");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.trim().is_empty(),
        "dockerfile-utils lint:\n{text}"
    );
}

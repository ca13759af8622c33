//! Test harness: a real Caddy in front of keepalive and an application, configured by the
//! file operators copy, `deploy/caddy/Caddyfile` (forward authentication).
//!
//! [`Caddy::start`] reads the Caddyfile from the repository and changes only its three
//! addresses: keepalive's (`to 127.0.0.1:8080`, in the snippet both the browser API and the
//! check import), the application's (`reverse_proxy 127.0.0.1:3000`) and the site's
//! (`example.com {`, which becomes `http://127.0.0.1:PORT {`: plain HTTP on a port of the
//! test's). Each must occur exactly once, so the tests exercise the file operators copy, not a
//! variant of it. A global options block goes in front of it, as nginx's harness wraps its
//! snippet in a main configuration: no admin endpoint (`admin off`: nothing listens on
//! localhost:2019, where a system Caddy may be), no automatic HTTPS (no certificates, no
//! listener on ports 80 and 443), every listener on 127.0.0.1 (`default_bind`), debug logs.
//! `HOME`, `XDG_DATA_HOME` and `XDG_CONFIG_HOME` point into the test's temporary directory,
//! so nothing of the machine's Caddy installation (`/etc/caddy`, its data directory, a caddy
//! service started by Debian's package) is used or touched.
//!
//! Caddy runs in the foreground (`caddy run`) as a child of the test. Starting is bounded in
//! time; a failure panics with Caddy's log. `Drop` stops Caddy (SIGTERM, then SIGKILL), and
//! prints its log when the test is failing. Caddy also gets `PR_SET_PDEATHSIG = SIGKILL`, so
//! it dies with the test process when that dies without running `Drop`.
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use keepalive_testkit::process;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The forward-authentication Caddyfile, relative to the repository root.
pub const CADDYFILE: &str = "deploy/caddy/Caddyfile";
/// How long Caddy may take to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Caddy may take to stop after SIGTERM before it is killed (its grace period for
/// open connections is 1 s, set in the global options).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const INSTALL_HINT: &str = "run scripts/test.sh, which installs Debian's caddy";

/// The lines the harness rewrites, as they appear (alone on their line) in the Caddyfile:
/// keepalive's address, the application's upstream, and the site address.
const KEEPALIVE_UPSTREAM: &str = "to 127.0.0.1:8080";
const APP_UPSTREAM: &str = "reverse_proxy 127.0.0.1:3000";
const SITE_ADDRESS: &str = "example.com {";

/// Caddy logs this once every listener of the configuration is bound.
const READY_LINE: &str = "serving initial configuration";

/// The caddy binary: `caddy` on PATH (Debian's is `/usr/bin/caddy`).
pub fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("caddy"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("caddy is not installed (not on PATH): {INSTALL_HINT}"))
}

/// The part of a Caddyfile line that is not a comment, trimmed.
fn active(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

/// The documented Caddyfile with keepalive at `127.0.0.1:keepalive`, the application at
/// `127.0.0.1:app` and the site at `http://127.0.0.1:listen`. Panics unless each of the three
/// lines occurs exactly once (as an active line, not in a comment), and checks that the result
/// serves and proxies to nothing else.
pub fn rewrite_caddyfile(text: &str, keepalive: u16, app: u16, listen: u16) -> String {
    let site = format!("http://127.0.0.1:{listen} {{");
    let keepalive_upstream = format!("to 127.0.0.1:{keepalive}");
    let app_upstream = format!("reverse_proxy 127.0.0.1:{app}");
    let replacements = [
        (KEEPALIVE_UPSTREAM, &keepalive_upstream),
        (APP_UPSTREAM, &app_upstream),
        (SITE_ADDRESS, &site),
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (original, replacement) in replacements {
        let at: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| active(line) == original)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "{CADDYFILE}: `{original}` must be on exactly one line (found on lines {:?}); \
             the Caddy tests rewrite it",
            at.iter().map(|i| i + 1).collect::<Vec<_>>()
        );
        let line = &mut lines[at[0]];
        *line = line.replace(original, replacement);
    }
    // The test must never reach beyond 127.0.0.1: the one site block is ours (the others at
    // the top level are snippets), every upstream is one of ours, and no `bind` overrides the
    // global `default_bind`.
    let mut depth = 0usize;
    for line in &lines {
        let active = active(line);
        let word = active.split_whitespace().next().unwrap_or("");
        let ok = match word {
            _ if depth == 0 && active.ends_with('{') => {
                active == site || (word.starts_with('(') && word.ends_with(')'))
            }
            "to" => active == keepalive_upstream,
            "reverse_proxy" | "forward_auth" => active == app_upstream || active.ends_with(" {"),
            "bind" => false,
            _ => true,
        };
        assert!(ok, "{CADDYFILE}: unexpected address in `{active}`");
        // Placeholders (`{http.request.uri}`) open and close on the same line.
        depth += active.matches('{').count();
        depth = depth
            .checked_sub(active.matches('}').count())
            .unwrap_or_else(|| panic!("{CADDYFILE}: unbalanced `}}` in `{active}`"));
    }
    assert_eq!(depth, 0, "{CADDYFILE}: unclosed block");
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The global options the test puts in front of the Caddyfile (which has none: operators
/// keep theirs).
fn global_options() -> &'static str {
    "# Written by tests/it/harness/caddy.rs for one test; deploy/caddy/Caddyfile follows.\n\
     {\n\
     \tadmin off\n\
     \tauto_https off\n\
     \tdefault_bind 127.0.0.1\n\
     \tgrace_period 1s\n\
     \tdebug\n\
     }\n\n"
}

/// What happened to one launch.
enum Launch {
    Ready,
    /// Someone else took the port meanwhile; Caddy has exited.
    PortInUse,
}

/// A Caddy process owned by the test, serving the rewritten Caddyfile on `127.0.0.1:port`.
pub struct Caddy {
    port: u16,
    keepalive: u16,
    app: u16,
    child: Option<Child>,
    // Declared last: removed after `Drop::drop` stopped the process that writes into it.
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Caddy in front of keepalive on `127.0.0.1:keepalive` and the application on
    /// `127.0.0.1:app`, accepting connections.
    pub fn start(keepalive: u16, app: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keepalive-caddy-")
            .tempdir()
            .expect("temp dir for caddy");
        let mut caddy = Self {
            port: keepalive_testkit::ports::free_port(),
            keepalive,
            app,
            child: None,
            dir,
        };
        for _ in 0..20 {
            caddy.write_config();
            match caddy.launch() {
                Launch::Ready => return caddy,
                Launch::PortInUse => caddy.port = keepalive_testkit::ports::free_port(),
            }
        }
        panic!("caddy: every port tried was already in use (20 tries)");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("Caddyfile")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("caddy.log")
    }

    /// Everything Caddy wrote so far (JSON lines on stderr; with `debug`, one per proxied
    /// request, the forward-auth checks included).
    pub fn log(&self) -> String {
        process::read_from(&self.log_path(), 0)
    }

    /// The configuration Caddy reads: the global options and the rewritten Caddyfile.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("read the test's Caddyfile")
    }

    /// Writes the global options and the rewritten Caddyfile for the current ports.
    fn write_config(&self) {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CADDYFILE);
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        let rewritten = rewrite_caddyfile(&text, self.keepalive, self.app, self.port);
        std::fs::write(
            self.config_path(),
            format!("{}{rewritten}", global_options()),
        )
        .expect("write the test's Caddyfile");
    }

    /// `caddy run` for this configuration, with an environment of its own: only PATH is
    /// kept, and Caddy's home, data (certificates, locks) and configuration (autosave)
    /// directories are in the test's directory.
    fn command(&self, log: File) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .arg("--adapter")
            .arg("caddyfile")
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir.join("home"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone caddy.log"))
            .stderr(log);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
    }

    /// Starts Caddy and waits until it has bound the port and accepts connections.
    fn launch(&mut self) -> Launch {
        assert!(self.child.is_none(), "caddy already running");
        let log_path = self.log_path();
        let offset = process::file_len(&log_path);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open caddy.log");
        self.child = Some(spawn(self.command(log)));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait caddy");
            let said = process::read_from(&log_path, offset);
            if let Some(status) = exited {
                self.child = None;
                if said.contains("address already in use") {
                    return Launch::PortInUse;
                }
                panic!(
                    "caddy on port {} exited during startup ({status}).\n{}\n\
                     --- the test's Caddyfile ---\n{}",
                    self.port,
                    last_lines(&said, 30),
                    self.config()
                );
            }
            // Logged once every listener is bound: a connection that succeeds from then on
            // is ours, not another process's on a reused port.
            if said.contains(READY_LINE)
                && TcpStream::connect_timeout(
                    &([127, 0, 0, 1], self.port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Launch::Ready;
            }
            if Instant::now() >= deadline {
                // `self` is dropped by the unwinding panic, which stops the process.
                panic!(
                    "caddy on port {} did not accept connections within {READY_TIMEOUT:?}.\n{}",
                    self.port,
                    last_lines(&said, 30)
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Stops Caddy: SIGTERM (it closes its listeners and finishes open requests), SIGKILL
    /// after [`STOP_TIMEOUT`]. Never panics: it also runs while a failing test unwinds.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        eprintln!("caddy did not stop within {STOP_TIMEOUT:?} of SIGTERM: killed");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `lines` lines of `text`.
fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(command: Command) -> Child {
    // SIGKILL: Caddy is one process, with nothing to hand over or clean up that outlives the
    // test's temporary directory.
    match process::spawn_tied_to_process(command, Signal::SIGKILL) {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("caddy is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot start caddy: {e}"),
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- caddy log (port {}) ---\n{}",
                self.port,
                last_lines(&self.log(), 60)
            );
        }
    }
}

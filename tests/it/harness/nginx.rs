//! Test harness: a real nginx in front of keepalive and an application, configured by one of
//! the documented snippets: `deploy/nginx/keepalive.conf` (forward authentication) or
//! `deploy/nginx/keepalive-express.conf` (keepalive in front of an Express application).
//!
//! [`Nginx::start`] reads the snippet from the repository and changes only its three addresses:
//! keepalive's upstream (`server 127.0.0.1:8080;`, or `server keepalive:8080;` in the Express
//! snippet), the application's (`server 127.0.0.1:3000;`, `server app:8080;`) and `listen 80;`
//! (each to 127.0.0.1 and a port of the test's). Each must occur exactly once,
//! so the tests exercise the file operators copy, not a variant of it. A wrapper main
//! configuration in a temporary directory (the nginx prefix) includes it, with the pid file,
//! logs and temporary files in that directory: nothing of the machine's nginx installation
//! (`/etc/nginx`, `/var/log/nginx`, port 80) is used or touched.
//!
//! nginx runs in the foreground (`daemon off`) as a child of the test, with a master and one
//! worker as in production. Starting is bounded in time; a failure panics with nginx's error
//! log. `Drop` stops nginx (SIGTERM, then SIGKILL for the master and its workers), and prints
//! the error and access logs when the test is failing. The master also gets
//! `PR_SET_PDEATHSIG = SIGTERM`, so it shuts down with its workers when the test process dies
//! without running `Drop`.
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::thread::sleep;
use std::time::{Duration, Instant};

use keepalive_testkit::process;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The forward-authentication snippet, relative to the repository root.
pub const SNIPPET: &str = "deploy/nginx/keepalive.conf";
/// The snippet of keepalive in front of an Express application.
pub const EXPRESS_SNIPPET: &str = "deploy/nginx/keepalive-express.conf";
/// How long nginx may take to accept connections (or `nginx -t` to finish).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const INSTALL_HINT: &str = "run scripts/test.sh, which installs Debian's nginx";

/// The directives the harness rewrites, as they appear in a snippet (each on a line of its own,
/// perhaps with parameters after the address): keepalive's upstream server, the application's,
/// and `listen`.
fn directives(snippet: &str) -> [&'static str; 3] {
    if snippet == EXPRESS_SNIPPET {
        // Written for the services of deploy/express/docker-compose.yml.
        ["server keepalive:8080;", "server app:8080;", "listen 80;"]
    } else {
        [
            "server 127.0.0.1:8080;",
            "server 127.0.0.1:3000;",
            "listen 80;",
        ]
    }
}

/// Builds a directive's replacement from what followed its address on the line.
type Rewrite<'a> = dyn Fn(&str) -> String + 'a;

/// The nginx binary: `nginx` on PATH, else Debian's `/usr/sbin/nginx` (not on a normal user's
/// PATH).
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| is_executable(candidate))
    });
    let fallback = PathBuf::from("/usr/sbin/nginx");
    match on_path {
        Some(found) => found,
        None if is_executable(&fallback) => fallback,
        None => panic!("nginx is not installed (not on PATH, no /usr/sbin/nginx): {INSTALL_HINT}"),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The port of a base URL such as `http://127.0.0.1:41234` (a `TestServer`'s `base`).
pub fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {base:?}"))
}

/// The documented snippet with keepalive at `127.0.0.1:` each of `keepalive` (one upstream
/// `server` line each: a fleet), the application at `127.0.0.1:app` and the server listening
/// on `127.0.0.1:listen`. Panics unless each of the three directives occurs exactly once (as an
/// active line, not in a comment), and checks that the result listens on and proxies to
/// nothing else.
pub fn rewrite_snippet(
    snippet: &str,
    text: &str,
    keepalive: &[u16],
    app: u16,
    listen: u16,
) -> String {
    let [keepalive_upstream, app_upstream, listen_directive] = directives(snippet);
    // Each directive's address is replaced; what follows it on the line (a server's
    // `max_fails=1 fail_timeout=1s`, say) is kept, so the tests run the file's own parameters.
    let replacements: [(&str, &Rewrite); 3] = [
        (keepalive_upstream, &|rest| {
            keepalive
                .iter()
                .map(|port| format!("server 127.0.0.1:{port}{rest}"))
                .collect::<Vec<_>>()
                .join("\n    ")
        }),
        (app_upstream, &|rest| {
            format!("server 127.0.0.1:{app}{rest}")
        }),
        (listen_directive, &|rest| {
            format!("listen 127.0.0.1:{listen}{rest}")
        }),
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (directive, replacement) in &replacements {
        let address = directive.trim_end_matches(';');
        let rest_of = |line: &str| {
            line.trim()
                .strip_prefix(address)
                .filter(|rest| rest.starts_with([';', ' ']) && rest.ends_with(';'))
                .map(str::to_owned)
        };
        let at: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| rest_of(line).is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "{snippet}: `{address}` must be on exactly one line (found on lines {:?}); \
             the nginx tests rewrite it",
            at.iter().map(|i| i + 1).collect::<Vec<_>>()
        );
        let line = &mut lines[at[0]];
        let rest = rest_of(line).unwrap_or_default();
        let indent = &line[..line.len() - line.trim_start().len()];
        *line = format!("{indent}{}", replacement(&rest));
    }
    // The test must never reach beyond 127.0.0.1: every active `listen` is ours, every
    // `proxy_pass` goes to one of the two upstreams, every upstream `server` is ours.
    for line in &lines {
        let active = line.split('#').next().unwrap_or("").trim();
        let word = active.split_whitespace().next().unwrap_or("");
        let ok = match word {
            "listen" => active == format!("listen 127.0.0.1:{listen};"),
            "proxy_pass" => {
                active.starts_with("proxy_pass http://keepalive")
                    || active.starts_with("proxy_pass http://app")
            }
            "server" => active.starts_with("server 127.0.0.1:") || active.ends_with('{'),
            _ => true,
        };
        assert!(ok, "{snippet}: unexpected address in `{active}`");
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The wrapper main configuration: everything nginx writes stays in `dir`.
fn main_config(dir: &Path, snippet: &Path, as_root: Option<&str>) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    let user = match as_root {
        Some(user) => format!("{user}\n"),
        None => String::new(),
    };
    format!(
        "# Written by tests/it/harness/nginx.rs for one test.\n\
         {user}\
         daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid \"{pid}\";\n\
         error_log \"{error}\" info;\n\
         events {{\n    worker_connections 256;\n}}\n\
         http {{\n\
         \x20   client_body_temp_path \"{body}\";\n\
         \x20   proxy_temp_path \"{proxy}\";\n\
         \x20   fastcgi_temp_path \"{fastcgi}\";\n\
         \x20   uwsgi_temp_path \"{uwsgi}\";\n\
         \x20   scgi_temp_path \"{scgi}\";\n\
         \x20   access_log \"{access}\";\n\
         \x20   include \"{snippet}\";\n\
         }}\n",
        pid = p("nginx.pid"),
        error = p("error.log"),
        body = p("client_body_temp"),
        proxy = p("proxy_temp"),
        fastcgi = p("fastcgi_temp"),
        uwsgi = p("uwsgi_temp"),
        scgi = p("scgi_temp"),
        access = p("access.log"),
        snippet = snippet.display(),
    )
}

/// Whether every directory above `dir` can be traversed by other users (`o+x`).
fn ancestors_traversable(dir: &Path) -> bool {
    dir.ancestors().skip(1).all(|ancestor| {
        std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Prepares `dir` for nginx's workers; returns the `user` directive the wrapper needs, if any.
///
/// Started as root, nginx runs its workers as `nobody`: they must reach the temporary paths
/// (request bodies and large responses are buffered there; nginx creates them owned by the
/// worker user). The tempdir is created `0700`, so it is opened to traversal (`0711`: no
/// listing). If a directory above it cannot be traversed by others (a private `TMPDIR`), the
/// workers could not reach it at all; then, and only in this test wrapper, they run as root
/// (`user root;`). As a normal user nginx cannot switch users and workers run as that user.
fn prepare_dir(dir: &Path) -> Option<&'static str> {
    // The directory was just created by this process: its owner is our effective user.
    let owner = std::fs::metadata(dir).expect("stat the nginx prefix").uid();
    if owner != 0 {
        return None;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .expect("chmod the nginx prefix");
    if ancestors_traversable(dir) {
        None
    } else {
        Some("user root;")
    }
}

/// The last `lines` lines of `text`.
fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The pids whose parent is `parent` (nginx's workers), from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may contain spaces; state and ppid follow the last ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// What happened to one launch.
enum Launch {
    Ready,
    /// Someone else took the port meanwhile; nginx has exited.
    PortInUse,
}

/// An nginx process owned by the test, serving the rewritten snippet on `127.0.0.1:port`.
pub struct Nginx {
    /// The snippet it serves, relative to the repository root.
    snippet: &'static str,
    port: u16,
    keepalive: Vec<u16>,
    app: u16,
    child: Option<Child>,
    // Declared last: removed after `Drop::drop` stopped the process that writes into it.
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx in front of keepalive on `127.0.0.1:keepalive` and the application on
    /// `127.0.0.1:app`, accepting connections. Validates the configuration (`nginx -t`) first.
    pub fn start(keepalive: u16, app: u16) -> Self {
        Self::start_snippet(SNIPPET, keepalive, app)
    }

    /// nginx serving `snippet` (relative to the repository root) in front of keepalive and
    /// the application.
    pub fn start_snippet(snippet: &'static str, keepalive: u16, app: u16) -> Self {
        Self::start_fleet(snippet, &[keepalive], app)
    }

    /// nginx serving `snippet` in front of several keepalive instances (its upstream lists
    /// each) and the application.
    pub fn start_fleet(snippet: &'static str, keepalive: &[u16], app: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keepalive-nginx-")
            .tempdir()
            .expect("temp dir for nginx");
        let mut nginx = Self {
            snippet,
            port: keepalive_testkit::ports::free_port(),
            keepalive: keepalive.to_vec(),
            app,
            child: None,
            dir,
        };
        for _ in 0..20 {
            nginx.write_config();
            nginx.test_config();
            match nginx.launch() {
                Launch::Ready => return nginx,
                Launch::PortInUse => nginx.port = keepalive_testkit::ports::free_port(),
            }
        }
        panic!("nginx: every port tried was already in use (20 tries)");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    fn snippet_path(&self) -> PathBuf {
        self.dir.path().join("keepalive.conf")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Everything nginx wrote to its error log so far.
    pub fn error_log(&self) -> String {
        process::read_from(&self.error_log_path(), 0)
    }

    /// Everything nginx wrote to its access log so far (one line per request; the auth
    /// subrequests are not logged).
    pub fn access_log(&self) -> String {
        process::read_from(&self.access_log_path(), 0)
    }

    /// The rewritten snippet, as nginx reads it.
    pub fn snippet(&self) -> String {
        std::fs::read_to_string(self.snippet_path()).expect("read the rewritten snippet")
    }

    /// Writes the rewritten snippet and the wrapper for the current ports.
    fn write_config(&self) {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(self.snippet);
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        let snippet = rewrite_snippet(self.snippet, &text, &self.keepalive, self.app, self.port);
        std::fs::write(self.snippet_path(), snippet).expect("write the rewritten snippet");
        let user = prepare_dir(self.dir.path());
        std::fs::write(
            self.config_path(),
            main_config(self.dir.path(), &self.snippet_path(), user),
        )
        .expect("write nginx.conf");
    }

    /// An nginx command for this prefix and configuration. `-e` sends the messages of start-up
    /// (before the configuration is read) to our log too, not to /var/log/nginx.
    fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("-p")
            .arg(format!("{}/", self.dir.path().display()))
            .arg("-c")
            .arg(self.config_path())
            .arg("-e")
            .arg(self.error_log_path())
            .stdin(Stdio::null());
        command
    }

    /// `nginx -t`: panics with nginx's explanation if the configuration is invalid.
    pub fn test_config(&self) {
        let output_path = self.dir.path().join("nginx-t.log");
        let output = File::create(&output_path).expect("create nginx-t.log");
        let mut command = self.command();
        command
            .arg("-t")
            .stdout(output.try_clone().expect("clone nginx-t.log"))
            .stderr(output);
        let mut child = spawn(command);
        let Some(status) = process::wait_or_kill(&mut child, READY_TIMEOUT) else {
            panic!("nginx -t did not finish within {READY_TIMEOUT:?}");
        };
        let said = process::read_from(&output_path, 0);
        assert!(
            status.success(),
            "nginx -t rejects {} (rewritten for the test) ({status}):\n{said}\n\
             --- rewritten snippet ---\n{}",
            self.snippet,
            self.snippet()
        );
    }

    /// Starts nginx and waits until its master has bound the port, started its worker and
    /// accepts connections.
    fn launch(&mut self) -> Launch {
        assert!(self.child.is_none(), "nginx already running");
        let log = self.error_log_path();
        let offset = process::file_len(&log);
        let stdio_path = self.dir.path().join("stdio.log");
        let stdio = File::options()
            .create(true)
            .append(true)
            .open(&stdio_path)
            .expect("open stdio.log");
        let mut command = self.command();
        command
            .stdout(stdio.try_clone().expect("clone stdio.log"))
            .stderr(stdio);
        self.child = Some(spawn(command));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait nginx");
            let said = process::read_from(&log, offset);
            if let Some(status) = exited {
                self.child = None;
                if said.contains("Address already in use") {
                    return Launch::PortInUse;
                }
                panic!(
                    "nginx on port {} exited during startup ({status}).\n{}\n{}",
                    self.port,
                    last_lines(&said, 30),
                    process::read_from(&stdio_path, 0)
                );
            }
            // The master logs this after it bound every listening socket: a connection that
            // succeeds from then on is ours, not another process's on a reused port.
            if said.contains("start worker process")
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
                    "nginx on port {} did not accept connections within {READY_TIMEOUT:?}.\n{}",
                    self.port,
                    last_lines(&said, 30)
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Stops nginx: SIGTERM (the master stops its workers), SIGKILL for all after
    /// [`STOP_TIMEOUT`]. Never panics: it also runs while a failing test unwinds.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let master = child.id();
        let _ = kill(Pid::from_raw(master as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        for worker in children_of(master) {
            let _ = kill(Pid::from_raw(worker as i32), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn spawn(command: Command) -> Child {
    // SIGTERM (not SIGKILL): the nginx master then stops its workers, which would otherwise
    // keep the port.
    match process::spawn_tied_to_process(command, Signal::SIGTERM) {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("nginx is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot start nginx: {e}"),
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log (port {}) ---\n{}\n--- nginx access log ---\n{}",
                self.port,
                last_lines(&self.error_log(), 40),
                last_lines(&self.access_log(), 40)
            );
        }
    }
}

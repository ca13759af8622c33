//! A real nginx in front of the instances, spreading the browser's requests over them
//! round-robin, as a load balancer in front of a fleet does, or by the session cookie
//! (`sticky`): the shipped deploy/nginx/keepalive.conf's own `map` of the cookie and its
//! `hash ... consistent`, read from that file, so the checker runs the routing operators get.
//!
//! The configuration is the checker's own (an upstream of the N instances), written with its
//! pid file, logs and temporary files into a directory of the run (the nginx prefix): nothing
//! of the machine's nginx installation is used. Each answer carries `X-Checker-Upstream`
//! (`$upstream_addr`: the instances nginx tried, the last one answered), so the history knows
//! which instance answered. A request nginx could not pass to any instance gets nginx's own
//! error page (502, 504), which the invariants tell apart from an instance's answer.
//!
//! nginx runs in the foreground (`daemon off`) with a master and one worker, gets
//! `PR_SET_PDEATHSIG = SIGTERM` (the master then stops its worker) and is stopped on `Drop`.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::CheckError;
use crate::ports::free_port;
use crate::process::{self, spawn_tied_to_process};

/// How long nginx may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary: `nginx` on `PATH`, else Debian's `/usr/sbin/nginx`, which is not on
/// every user's `PATH`.
pub fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| executable(candidate))
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        executable(&debian).then_some(debian)
    })
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The line of the shipped upstream that routes by the session cookie.
const STICKY_HASH: &str = "hash $keepalive_session consistent;";

/// The shipped configuration's `map` of the session cookie to `$keepalive_session`, which
/// its upstream hashes on. Read from the repository when a run starts rather than built in,
/// so that the image build, which compiles no checker, need not be sent the file.
fn shipped_cookie_map() -> Result<String, CheckError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/keepalive.conf");
    let shipped = std::fs::read_to_string(&path)
        .map_err(|e| CheckError::io(format!("read {}", path.display()), e))?;
    let missing = |what: &str| {
        CheckError::Nginx(format!(
            "deploy/nginx/keepalive.conf has no {what}: the sticky entry takes its routing from there"
        ))
    };
    let start = shipped
        .find("map $http_cookie $keepalive_session {")
        .ok_or_else(|| missing("`map $http_cookie $keepalive_session` block"))?;
    let end = shipped[start..]
        .find("\n}\n")
        .ok_or_else(|| missing("end of the cookie's `map` block"))?;
    if !shipped.lines().any(|line| line.trim() == STICKY_HASH) {
        return Err(missing(&format!("`{STICKY_HASH}` line")));
    }
    Ok(shipped[start..start + end + 2].to_owned())
}

/// The main configuration: everything nginx writes stays in `dir`. `sticky` routes by the
/// session cookie as the shipped configuration does; otherwise round-robin.
fn config(
    dir: &Path,
    listen: u16,
    upstreams: &[u16],
    user: Option<&str>,
    sticky: bool,
) -> Result<String, CheckError> {
    let (cookie_map, hash) = if sticky {
        (
            shipped_cookie_map()?.replace('\n', "\n    "),
            format!("        {STICKY_HASH}\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let p = |name: &str| dir.join(name).display().to_string();
    let servers: String = upstreams
        .iter()
        .map(|port| format!("        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let user = user.map_or_else(String::new, |u| format!("user {u};\n"));
    Ok(format!(
        "# Written by the keepalive checker for one run.\n\
         {user}\
         daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid \"{pid}\";\n\
         error_log \"{error}\" notice;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n\
         \x20   client_body_temp_path \"{body}\";\n\
         \x20   proxy_temp_path \"{proxy}\";\n\
         \x20   fastcgi_temp_path \"{fastcgi}\";\n\
         \x20   uwsgi_temp_path \"{uwsgi}\";\n\
         \x20   scgi_temp_path \"{scgi}\";\n\
         \x20   access_log \"{access}\";\n\
         \x20   {cookie_map}\n\
         \x20   upstream keepalive {{\n{hash}{servers}        keepalive 16;\n    }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{listen};\n\
         \x20       # The backend API is for the application's servers, never through here.\n\
         \x20       location ^~ /api/v1/backend/ {{\n            return 404;\n        }}\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://keepalive;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $http_host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_connect_timeout 1s;\n\
         \x20           proxy_read_timeout 15s;\n\
         \x20           add_header X-Checker-Upstream $upstream_addr always;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        pid = p("nginx.pid"),
        error = p("error.log"),
        body = p("client_body_temp"),
        proxy = p("proxy_temp"),
        fastcgi = p("fastcgi_temp"),
        uwsgi = p("uwsgi_temp"),
        scgi = p("scgi_temp"),
        access = p("access.log"),
    ))
}

/// Started as root, nginx runs its worker as `nobody`, which must reach the temporary paths
/// under `dir`: the directory is opened to traversal, and if a directory above it cannot be
/// traversed by others (a private `TMPDIR`), the worker runs as root instead.
fn worker_user(dir: &Path) -> Result<Option<&'static str>, CheckError> {
    let meta = std::fs::metadata(dir).map_err(|e| CheckError::io("stat the nginx prefix", e))?;
    if meta.uid() != 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| CheckError::io("chmod the nginx prefix", e))?;
    let traversable = dir
        .ancestors()
        .skip(1)
        .all(|up| std::fs::metadata(up).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    Ok((!traversable).then_some("root"))
}

/// An nginx process in front of the instances.
pub struct Nginx {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Nginx {
    /// nginx (`bin`) on a free port of 127.0.0.1 in front of the instances on `upstreams`,
    /// with its prefix in `dir` (created), accepting connections; routing by the session
    /// cookie if `sticky`, else round-robin.
    pub fn start(
        bin: &Path,
        upstreams: &[u16],
        dir: &Path,
        sticky: bool,
    ) -> Result<Self, CheckError> {
        std::fs::create_dir_all(dir).map_err(|e| CheckError::io("create the nginx prefix", e))?;
        let user = worker_user(dir)?;
        let mut nginx = Self {
            port: 0,
            child: None,
            dir: dir.to_owned(),
        };
        for _ in 0..20 {
            nginx.port = free_port();
            let conf = dir.join("nginx.conf");
            let text = config(dir, nginx.port, upstreams, user, sticky)?;
            std::fs::write(&conf, text).map_err(|e| CheckError::io("write nginx.conf", e))?;
            if nginx.launch(bin, &conf)? {
                return Ok(nginx);
            }
        }
        Err(CheckError::Nginx(
            "every port tried was already in use (20 tries)".to_owned(),
        ))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// Starts nginx; `false` when the port was taken meanwhile.
    fn launch(&mut self, bin: &Path, conf: &Path) -> Result<bool, CheckError> {
        let log = self.error_log();
        let offset = process::file_len(&log);
        let stdio = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("stdio.log"))
            .map_err(|e| CheckError::io("open the nginx stdio.log", e))?;
        let mut command = Command::new(bin);
        command
            .arg("-p")
            .arg(format!("{}/", self.dir.display()))
            .arg("-c")
            .arg(conf)
            // Start-up messages (before the configuration is read) to our log, too.
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                stdio
                    .try_clone()
                    .map_err(|e| CheckError::io("clone the nginx stdio.log", e))?,
            ))
            .stderr(Stdio::from(stdio));
        // SIGTERM, not SIGKILL: the master then stops its worker, which would keep the port.
        let child = spawn_tied_to_process(command, Signal::SIGTERM)
            .map_err(|e| CheckError::io(format!("start {}", bin.display()), e))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let said = process::read_from(&log, offset);
            let exited = self
                .child
                .as_mut()
                .map(|c| c.try_wait())
                .transpose()
                .map_err(|e| CheckError::io("wait for nginx", e))?
                .flatten();
            if let Some(status) = exited {
                self.child = None;
                if said.contains("Address already in use") {
                    return Ok(false);
                }
                return Err(CheckError::Nginx(format!(
                    "exited during its start ({status}):\n{said}"
                )));
            }
            // Logged once every listening socket is bound: a connection from then on is ours.
            if said.contains("start worker process")
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Err(CheckError::Nginx(format!(
                    "not accepting connections within {READY_TIMEOUT:?}:\n{said}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let master = child.id();
        // Read before the master goes: a worker whose master was killed keeps running.
        let workers = children_of(master);
        if let Ok(pid) = i32::try_from(master) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if process::wait_or_kill(&mut child, Duration::from_secs(5)).is_none() {
            for worker in workers {
                if let Ok(pid) = i32::try_from(worker) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

/// The processes whose parent is `parent` (nginx's workers), from `/proc`.
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
                    // The name in parentheses may hold spaces: the parent's pid is the second
                    // field after the last ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_every_instance_and_only_loopback() {
        let text = config(Path::new("/prefix"), 4000, &[4001, 4002, 4003], None, false).unwrap();
        for port in [4001, 4002, 4003] {
            assert!(
                text.contains(&format!("server 127.0.0.1:{port} ")),
                "{text}"
            );
        }
        assert!(text.contains("listen 127.0.0.1:4000;"));
        assert!(text.contains("X-Checker-Upstream $upstream_addr always"));
        assert!(!text.contains("user "));
        assert!(!text.contains("hash "), "round-robin: {text}");
        let root = config(Path::new("/p"), 1, &[2], Some("root"), false).unwrap();
        assert!(root.starts_with("# Written"));
    }

    #[test]
    fn sticky_routing_is_the_shipped_configurations() {
        let text = config(Path::new("/prefix"), 4000, &[4001, 4002], None, true).unwrap();
        let map = shipped_cookie_map().unwrap();
        assert!(
            map.starts_with("map $http_cookie $keepalive_session {"),
            "{map}"
        );
        assert!(map.ends_with("\n}"), "{map}");
        assert!(map.contains("keepalive_sid="), "{map}");
        for line in map.lines() {
            assert!(text.contains(line.trim()), "{line} missing from:\n{text}");
        }
        let upstream = &text[text.find("upstream keepalive {").unwrap()..];
        assert!(
            upstream.starts_with(&format!("upstream keepalive {{\n        {STICKY_HASH}\n")),
            "{upstream}"
        );
    }
}

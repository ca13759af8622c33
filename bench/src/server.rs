//! Starting, watching and stopping the keepalive server under test.
//!
//! The server gets a free loopback port, a fresh data directory and a quiet
//! log level, plus whatever `--server-env` adds (e.g. `REDIS_URL` for the
//! Redis-backed run). Inherited `KEEPALIVE_*`, `PORT`, `REDIS_URL` and
//! `NODE_ENV` are removed first so the caller's shell cannot silently change
//! the scenario.
//! The child is killed on every exit path: an explicit `stop` sends SIGTERM
//! then SIGKILL, and `kill_on_drop` covers errors, panics and Ctrl-C.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::client::Conn;
use crate::target::Target;

/// Inherited variables that the server reads besides the `KEEPALIVE_` prefix.
const SCRUBBED_ENV: [&str; 3] = ["PORT", "REDIS_URL", "NODE_ENV"];

/// Variables the bench itself decides; overriding them would make it
/// connect somewhere other than where the server listens.
const RESERVED_ENV: [&str; 2] = ["PORT", "KEEPALIVE_BIND"];

/// How the server under test is launched.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bin: PathBuf,
    /// Arguments for the binary (e.g. a subcommand).
    pub args: Vec<String>,
    /// Extra environment, applied after the defaults so it can override them.
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping; a clean shutdown may
    /// first drain (report not-ready) and then wait for in-flight requests.
    pub stop_timeout: Duration,
}

/// A running server process owned by the benchmark.
pub struct Server {
    child: Child,
    pub target: Target,
    log_path: PathBuf,
    stop_timeout: Duration,
    // Held so the data directory and log outlive the process; removed on drop.
    _dir: TempDir,
}

/// Parses one `--server-env KEY=VALUE` argument.
pub fn parse_env_pair(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not KEY=VALUE"))?;
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("{arg:?}: invalid variable name"));
    }
    if RESERVED_ENV.contains(&key) {
        return Err(format!(
            "{key} is chosen by the benchmark (it must know where the server listens)"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl Server {
    /// Starts the server and waits until `GET /readyz` answers 200.
    pub async fn start(cfg: &ServerConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keepalive-bench-")
            .tempdir()
            .context("create temp dir")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).context("create data dir")?;
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).context("create server log")?;
        // Free a moment ago: the server could lose it to another process before binding; it
        // then fails to start and its log says so.
        let port = keepalive_testkit::ports::free_port();

        let mut cmd = Command::new(&cfg.bin);
        cmd.args(&cfg.args);
        for (key, _) in std::env::vars_os() {
            let inherited = key.to_string_lossy();
            if inherited.starts_with("KEEPALIVE_") || SCRUBBED_ENV.contains(&&*inherited) {
                cmd.env_remove(&key);
            }
        }
        cmd.env("PORT", port.to_string())
            .env("KEEPALIVE_BIND", "127.0.0.1")
            .env("KEEPALIVE_DATA_DIR", &data_dir)
            .env("KEEPALIVE_LOG_LEVEL", "warn")
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("clone log handle")?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("start server {}", cfg.bin.display()))?;

        let mut server = Self {
            child,
            target: Target::local_port(port),
            log_path,
            stop_timeout: cfg.stop_timeout,
            _dir: dir,
        };
        let deadline = Instant::now() + cfg.ready_timeout;
        loop {
            if let Some(status) = server.child.try_wait().context("poll server process")? {
                bail!(
                    "server exited during startup ({status}); log tail:\n{}",
                    server.log_tail()
                );
            }
            let last = match probe_ready(&server.target).await {
                Ok(()) => return Ok(server),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!(
                    "server not ready within {:?} (last: {last:#}); log tail:\n{}",
                    cfg.ready_timeout,
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if the server has exited; called between phases so a crash is
    /// reported as a crash and not as a wall of connection errors.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait().context("poll server process")? {
            None => Ok(()),
            Some(status) => bail!(
                "server exited during the benchmark ({status}); log tail:\n{}",
                self.log_tail()
            ),
        }
    }

    /// CPU time (user + system, all threads) the server has used so far.
    ///
    /// CPU per request moves much less than requests per second when other
    /// jobs share the machine, so it is the steadier cost figure on a shared box.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu_time(&self.child.id()?.to_string())
    }

    /// SIGTERM, a grace period for a clean shutdown, then SIGKILL; SIGKILL
    /// at once if `impatient` completes first.
    pub async fn stop(mut self, impatient: impl Future<Output = ()>) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait().context("poll server process")? {
            return Ok(status);
        }
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            // The process may exit between the check and the signal; that is fine.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let graceful = tokio::time::timeout(self.stop_timeout, self.child.wait());
        let reason = tokio::select! {
            exited = graceful => match exited {
                Ok(status) => return status.context("wait for server"),
                Err(_) => format!("server still running {:?} after SIGTERM", self.stop_timeout),
            },
            () = impatient => "interrupted again".to_owned(),
        };
        eprintln!("{reason}: killing the server");
        self.child.kill().await.context("kill server")?;
        self.child.wait().await.context("wait for server")
    }

    /// The last lines of the server's output, for error messages.
    pub fn log_tail(&self) -> String {
        self.log_tail_bytes(4096)
    }

    /// Up to the last `max_bytes` of the server's output.
    pub fn log_tail_bytes(&self, max_bytes: u64) -> String {
        tail_of_file(&self.log_path, max_bytes)
            .unwrap_or_else(|e| format!("(could not read {}: {e})", self.log_path.display()))
    }
}

/// Checks `GET /readyz` once on a fresh connection.
pub async fn probe_ready(target: &Target) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(1);
    let mut conn = Conn::connect(target, timeout).await?;
    let resp = conn.request(Method::GET, "/readyz", None, timeout).await?;
    if resp.status() == StatusCode::OK {
        Ok(())
    } else {
        bail!("/readyz answered {}", resp.status())
    }
}

/// CPU time (user + system, all threads) of process `pid` (a number or
/// `self`) so far, from `/proc`; `None` where that is not available.
pub fn process_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = cpu_ticks_from_stat(&stat)?;
    let per_sec = sysconf(SysconfVar::CLK_TCK).ok().flatten()?;
    let per_sec = u64::try_from(per_sec).ok().filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses, so
    // count fields from the last `)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn tail_of_file(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if text.trim().is_empty() {
        "(server printed nothing)".to_owned()
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_parse() {
        let stat = "4242 (keep alive) (x)) S 1 4242 4242 0 -1 4194304 120 0 0 0 \
                    731 269 0 0 20 0 6 0 12345 1000000 500";
        assert_eq!(cpu_ticks_from_stat(stat), Some(1000));
        assert_eq!(cpu_ticks_from_stat("4242 (short) S 1 2"), None);
        assert_eq!(cpu_ticks_from_stat("no parenthesis"), None);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env_pair("REDIS_URL=redis://127.0.0.1:6379/0?x=1"),
            Ok(("REDIS_URL".into(), "redis://127.0.0.1:6379/0?x=1".into()))
        );
        assert_eq!(
            parse_env_pair("EMPTY="),
            Ok(("EMPTY".into(), String::new()))
        );
        assert!(parse_env_pair("NOEQUALS").is_err());
        assert!(parse_env_pair("=x").is_err());
        assert!(parse_env_pair("PORT=1").is_err());
        assert!(parse_env_pair("KEEPALIVE_BIND=0.0.0.0").is_err());
    }
}

//! The keepalive instances under test: N processes of the real binary over one Redis, each on
//! its own port of 127.0.0.1 with its own data directory, killed or stopped and started again
//! on the same port and directory.
//!
//! Each process gets `PR_SET_PDEATHSIG = SIGKILL` (it dies with the checker, whatever ends it)
//! and is killed on `Drop`. Its output is appended to `server.log` in its directory, one
//! marked section per start.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use hyper::Method;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::CheckError;
use super::client::{self, Call};
use super::history::{Micros, now_us, parse_time};
use crate::ports::free_port;
use crate::process::{self, spawn_tied_to_process};

/// Inherited variables that would change the scenario: the server reads these besides its
/// own `KEEPALIVE_` ones.
const SCRUBBED_ENV: [&str; 3] = ["PORT", "REDIS_URL", "NODE_ENV"];

/// How long a start may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a port an instance held may stay taken by someone else before a restart gives up.
const SAME_PORT_RETRY: Duration = Duration::from_secs(5);

/// What one `/health` and `/readyz` poll of an instance said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `/readyz` answered 200.
    pub ready: bool,
    /// `checks["redis:connection"][0].observedValue` of `/health` (`ok`, `offline`).
    pub redis: Option<String>,
}

impl Health {
    /// Ready, with Redis answering.
    pub fn healthy(&self) -> bool {
        self.ready && self.redis.as_deref() == Some("ok")
    }
}

/// An instance that exited without the checker asking.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exit {
    pub instance: usize,
    pub at: Micros,
    pub status: String,
    pub log_tail: String,
}

/// One instance: its port and directory are kept across restarts.
struct Instance {
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The instances, how to start them and the exits nobody asked for.
pub struct Fleet {
    bin: PathBuf,
    env: Vec<(String, String)>,
    health_token: String,
    instances: Vec<Instance>,
    /// Exits the checker did not cause, as found by [`Fleet::check_exits`].
    pub exits: Vec<Exit>,
}

impl Fleet {
    /// `count` instances of `bin` under `dir` (not started), with `env` on top of the ports
    /// and directories the fleet chooses.
    pub fn new(
        bin: &Path,
        env: Vec<(String, String)>,
        health_token: String,
        count: usize,
        dir: &Path,
    ) -> Result<Self, CheckError> {
        let mut instances = Vec::with_capacity(count);
        for index in 0..count {
            let home = dir.join(format!("instance-{index}"));
            let data_dir = home.join("data");
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| CheckError::io(format!("create {}", data_dir.display()), e))?;
            instances.push(Instance {
                port: free_port(),
                data_dir,
                log: home.join("server.log"),
                child: None,
                starts: 0,
            });
        }
        Ok(Self {
            bin: bin.to_owned(),
            env,
            health_token,
            instances,
            exits: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Every instance's address, in index order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.instances
            .iter()
            .map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, i.port)))
            .collect()
    }

    /// The tail of an instance's log, for error messages.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        process::tail(&self.instances[index].log, lines)
    }

    /// An instance's log lines from `from` on (by their leading RFC 3339 time; a line without
    /// one belongs with the line before it), at most `lines` of them.
    pub fn log_since(&self, index: usize, from: Micros, lines: usize) -> String {
        let path = &self.instances[index].log;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return format!("({}: {e})", path.display()),
        };
        lines_since(&text, from, lines)
    }

    /// Starts every instance and waits until each is ready with Redis answering.
    pub async fn start_all(&mut self) -> Result<(), CheckError> {
        for index in 0..self.len() {
            self.spawn(index)?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for index in 0..self.len() {
            loop {
                self.startup_exit(index)?;
                if self.health(index).await.healthy() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(CheckError::Instance(format!(
                        "instance {index} not ready with Redis ok within {READY_TIMEOUT:?}:\n{}",
                        self.log_tail(index, 30)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Starts instance `index` on its port and directory (it must not be running). A port
    /// taken meanwhile by another process (an outgoing connection's source port) is retried.
    pub async fn start(&mut self, index: usize) -> Result<Micros, CheckError> {
        let deadline = Instant::now() + SAME_PORT_RETRY;
        loop {
            let at = now_us();
            self.spawn(index)?;
            // Until it listens or exits: a bind failure comes within moments of the start.
            let waited = Instant::now();
            loop {
                match self.startup_exit(index) {
                    Ok(()) => {}
                    Err(_) if self.port_was_taken(index) && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                    Err(e) => return Err(e),
                }
                if self.answers(index).await || waited.elapsed() > READY_TIMEOUT {
                    return Ok(at);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Whether the last start's log says the port was in use.
    fn port_was_taken(&self, index: usize) -> bool {
        let log = process::tail(&self.instances[index].log, 20);
        let section = log.rsplit("--- keepalive-check:").next().unwrap_or("");
        section.contains("in use")
    }

    /// Whether anything answers `/livez` on the instance's port.
    async fn answers(&self, index: usize) -> bool {
        let call = Call {
            method: Method::GET,
            path: "/livez",
            cookie: None,
            bearer: None,
            json: None,
        };
        client::send(self.addrs()[index], &call, Duration::from_millis(500))
            .await
            .is_ok()
    }

    fn spawn(&mut self, index: usize) -> Result<(), CheckError> {
        let instance = &mut self.instances[index];
        if instance.child.is_some() {
            return Err(CheckError::Instance(format!(
                "instance {index} is already running"
            )));
        }
        instance.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&instance.log)
            .map_err(|e| CheckError::io(format!("open {}", instance.log.display()), e))?;
        let _ = writeln!(
            log,
            "--- keepalive-check: start {} of instance {index} at {} ---",
            instance.starts,
            now_us()
        );
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("KEEPALIVE_") || SCRUBBED_ENV.contains(&&*name) {
                command.env_remove(&key);
            }
        }
        command
            .env("PORT", instance.port.to_string())
            .env("KEEPALIVE_BIND", "127.0.0.1")
            .env("KEEPALIVE_DATA_DIR", &instance.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| {
                CheckError::io("clone the instance log handle".to_owned(), e)
            })?))
            .stderr(Stdio::from(log));
        let child = spawn_tied_to_process(command, Signal::SIGKILL)
            .map_err(|e| CheckError::io(format!("start {}", self.bin.display()), e))?;
        instance.child = Some(child);
        Ok(())
    }

    /// An error if instance `index` exited (during its start).
    fn startup_exit(&mut self, index: usize) -> Result<(), CheckError> {
        let instance = &mut self.instances[index];
        let Some(child) = instance.child.as_mut() else {
            return Err(CheckError::Instance(format!(
                "instance {index} is not running"
            )));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                instance.child = None;
                Err(CheckError::Instance(format!(
                    "instance {index} exited during its start ({status}):\n{}",
                    process::tail(&instance.log, 30)
                )))
            }
            Err(e) => Err(CheckError::io(format!("wait for instance {index}"), e)),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.instances[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit at most `limit` (SIGKILL after that). Returns the
    /// exit status, and whether it came within the limit.
    pub async fn terminate(&mut self, index: usize, limit: Duration) -> (Option<ExitStatus>, bool) {
        let Some(mut child) = self.instances[index].child.take() else {
            return (None, true);
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (Some(status), true);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return (child.wait().ok(), false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Finds instances that exited although the checker did not stop them, records them in
    /// [`Fleet::exits`] and starts them again.
    pub async fn check_exits(&mut self) -> Result<(), CheckError> {
        for index in 0..self.len() {
            let exited = match self.instances[index].child.as_mut() {
                Some(child) => child
                    .try_wait()
                    .map_err(|e| CheckError::io(format!("wait for instance {index}"), e))?,
                None => None,
            };
            if let Some(status) = exited {
                self.instances[index].child = None;
                self.exits.push(Exit {
                    instance: index,
                    at: now_us(),
                    status: status.to_string(),
                    log_tail: self.log_tail(index, 30),
                });
                self.start(index).await?;
            }
        }
        Ok(())
    }

    /// One poll of an instance: `/readyz`, and `/health` with the token.
    pub async fn health(&self, index: usize) -> Health {
        let addr = self.addrs()[index];
        let limit = Duration::from_secs(1);
        let ready = Call {
            method: Method::GET,
            path: "/readyz",
            cookie: None,
            bearer: None,
            json: None,
        };
        let health = Call {
            method: Method::GET,
            path: "/health",
            cookie: None,
            bearer: Some(&self.health_token),
            json: None,
        };
        let (ready, health) = tokio::join!(
            client::send(addr, &ready, limit),
            client::send(addr, &health, limit)
        );
        Health {
            ready: ready.is_ok_and(|a| a.status == 200),
            redis: health.ok().and_then(|a| {
                a.json?["checks"]["redis:connection"][0]["observedValue"]
                    .as_str()
                    .map(str::to_owned)
            }),
        }
    }

    /// Stops every instance cleanly (SIGTERM, SIGKILL after `limit`).
    pub async fn stop_all(&mut self, limit: Duration) {
        for index in 0..self.len() {
            self.terminate(index, limit).await;
        }
    }
}

/// The lines of a log from `from` on, by their leading RFC 3339 time (a line without one
/// belongs with the line before it), at most `lines` of them.
fn lines_since(text: &str, from: Micros, lines: usize) -> String {
    let mut keep = false;
    text.lines()
        .filter(|line| {
            if let Some(at) = line.split_whitespace().next().and_then(parse_time) {
                keep = at >= from;
            }
            keep
        })
        .take(lines)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_excerpt_begins_at_the_time_asked_and_keeps_continuation_lines() {
        let log = "2026-12-06T20:43:04.197215Z  WARN Server health: degraded\n\
                   2026-12-06T20:43:05.228751Z  WARN [redis] still offline: timed out\n\
                   \x20   a continuation line\n\
                   2026-12-06T20:43:08.118197Z  INFO [redis] connected\n\
                   2026-12-06T20:43:08.179221Z  INFO [redis] re-sync done";
        let from = parse_time("2026-12-06T20:43:05Z").expect("a time");
        assert_eq!(
            lines_since(log, from, 10),
            "2026-12-06T20:43:05.228751Z  WARN [redis] still offline: timed out\n\
             \x20   a continuation line\n\
             2026-12-06T20:43:08.118197Z  INFO [redis] connected\n\
             2026-12-06T20:43:08.179221Z  INFO [redis] re-sync done"
        );
        assert_eq!(lines_since(log, from, 2).lines().count(), 2);
        assert_eq!(lines_since(log, from + 60_000_000, 10), "");
    }
}

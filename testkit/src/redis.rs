//! Real `redis-server` processes, for the Redis session store tests and the benchmarks.
//!
//! Every server is started by the harness itself on a free port of 127.0.0.1, in its own
//! temporary directory, with persistence off (or, for a server that must come back with its data
//! after a kill, an append-only file synced at every write). The machine's shared Redis (port
//! 6379) is never used, connected to or signalled.
//!
//! * [`RedisServer`]: one standalone server, with fault injection (`kill`, `freeze`, `thaw`,
//!   `restart_empty`, `start_again`, `start_again_with_data`, `config_set`) and data helpers
//!   for assertions (`keys`, `get`, `exists`, `pttl`, `flushall`, `info_value`).
//! * [`RedisCluster`]: three masters joined with `redis-cli --cluster create`.
//! * [`RedisSentinel`]: a sentinel watching one server as its master.
//!
//! All functions are synchronous and bounded in time; they panic with a message (including
//! the tail of the server log) when something does not work. They can be called from
//! `#[tokio::test]` directly: the slowest, [`RedisCluster::start`], blocks the calling thread for
//! about 2 s, a server start or restart for a few tens of milliseconds. A test that needs its own
//! tasks to keep running meanwhile uses `flavor = "multi_thread"` or `spawn_blocking`.
//!
//! Cleanup: `Drop` kills (SIGKILL) and reaps the process, also while a test panics. As a second
//! line of defence every redis-server gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test
//! process even when `Drop` never runs (test binary killed by a timeout, abort, leaked value).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::ports::{SHARED_REDIS_PORT, free_cluster_port, free_port};
use crate::process::{self, tail};

/// How long a (re)started server may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a port that is still held by someone else is retried on restart.
const SAME_PORT_RETRY: Duration = Duration::from_secs(5);
/// Connect, read and write timeout of every command the harness sends itself.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `redis-cli --cluster create` plus the wait for `cluster_state:ok` may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
const CLUSTER_SIZE: usize = 3;

const INSTALL_HINT: &str = "run scripts/test.sh, which installs redis-server and redis-cli";

// ---------------------------------------------------------------------------------------------
// Processes

/// Spawns `program`, panicking with the install hint when it is not installed.
fn spawn_program(program: &str, command: Command) -> Child {
    match process::spawn_tied_to_process(command, Signal::SIGKILL) {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed (not found on PATH): {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot start `{program}`: {e}"),
    }
}

/// `%`-encodes everything but RFC 3986 "unreserved" characters, for the password in a URL.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One server

/// What happened to one launch of redis-server.
enum Launch {
    Ready,
    /// The port (or the cluster bus port) was taken by someone else; the process has exited.
    PortInUse,
}

/// A redis-server process owned by the test. Dropping it kills and reaps the process and
/// removes its directory.
pub struct RedisServer {
    /// The `redis-server` program (from `PATH` unless given).
    program: PathBuf,
    port: u16,
    password: Option<String>,
    cluster: bool,
    /// Append-only file on, synced at every write: a SIGKILL loses nothing, and a start on
    /// the same directory ([`RedisServer::start_again_with_data`]) loads it back.
    persistent: bool,
    child: Option<Child>,
    // Declared last: dropped after `Drop::drop` killed the process that writes into it.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server on a free port of 127.0.0.1, ready to answer.
    pub fn start() -> Self {
        Self::start_new(None, false)
    }

    /// A server that requires `password` (`--requirepass`); [`RedisServer::url`] carries it.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_new(Some(password.to_owned()), false)
    }

    /// A server on a given port (one a test reserved with [`free_port`] and pointed keepalive
    /// at before any Redis listened there). Retries the bind for a few seconds.
    pub fn start_on(port: u16) -> Self {
        let mut server = Self {
            program: PathBuf::from("redis-server"),
            port,
            password: None,
            cluster: false,
            persistent: false,
            child: None,
            dir: tempfile::Builder::new()
                .prefix("keepalive-redis-")
                .tempdir()
                .expect("temp dir for redis-server"),
        };
        server.start_again();
        server
    }

    /// Starts on fresh ports until one is not taken by another process in the meantime.
    fn start_new(password: Option<String>, cluster: bool) -> Self {
        Self::start_program(Path::new("redis-server"), password, cluster, false)
    }

    /// A server run from `program` (a `redis-server` binary) on a free port, ready to answer.
    pub fn start_of(program: &Path) -> Self {
        Self::start_program(program, None, false, false)
    }

    /// A server run from `program` that keeps its data in an append-only file synced at every
    /// write, so that it can be killed and started again with its data
    /// ([`RedisServer::start_again_with_data`]), as a crashed Redis with `appendonly yes`
    /// comes back. [`RedisServer::restart_empty`] and [`RedisServer::start_again`] still start
    /// it empty: they remove the file first.
    pub fn start_persistent_of(program: &Path) -> Self {
        Self::start_program(program, None, false, true)
    }

    fn start_program(
        program: &Path,
        password: Option<String>,
        cluster: bool,
        persistent: bool,
    ) -> Self {
        let pick = if cluster {
            free_cluster_port
        } else {
            free_port
        };
        let mut server = Self {
            program: program.to_owned(),
            port: pick(),
            password,
            cluster,
            persistent,
            child: None,
            dir: tempfile::Builder::new()
                .prefix("keepalive-redis-")
                .tempdir()
                .expect("temp dir for redis-server"),
        };
        for _ in 0..20 {
            match server.launch() {
                Launch::Ready => return server,
                Launch::PortInUse => {
                    // A half-initialised cluster node may have written its config already.
                    let _ = std::fs::remove_file(server.dir.path().join("nodes.conf"));
                    server.port = pick();
                }
            }
        }
        panic!("redis-server: every port tried was already in use (20 tries)");
    }

    /// Starts redis-server on `self.port` and waits until it answers as itself.
    fn launch(&mut self) -> Launch {
        assert!(self.child.is_none(), "redis-server already running");
        assert_ne!(
            self.port, SHARED_REDIS_PORT,
            "port 6379 is the shared Redis"
        );
        let dir = self.dir.path();
        let log = self.log_path();
        let log_offset = process::file_len(&log);
        // Output before the log file is opened (bad arguments) goes to stdio.log.
        let stdio = File::options()
            .create(true)
            .append(true)
            .open(dir.join("stdio.log"))
            .expect("open stdio.log");
        let mut command = Command::new(&self.program);
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.persistent { "yes" } else { "no" }])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().expect("clone stdio.log"))
            .stderr(stdio);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        if self.persistent {
            command.args(["--appendfsync", "always"]);
        }
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "2000"]);
        }
        self.child = Some(spawn_program(&self.program.display().to_string(), command));
        self.wait_ready(log_offset)
    }

    /// Polls until the server answers `INFO` with its own pid. Checking the pid (not just a
    /// PONG) matters: if another process holds the port, a PING could be answered by it.
    fn wait_ready(&mut self, log_offset: u64) -> Launch {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid = self.child.as_ref().expect("child").id();
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait redis-server");
            if let Some(status) = exited {
                self.child = None;
                if process::read_from(&self.log_path(), log_offset)
                    .contains("Address already in use")
                {
                    return Launch::PortInUse;
                }
                panic!(
                    "redis-server on port {} exited during startup ({status}).\n{}",
                    self.port,
                    self.log_tail(20)
                );
            }
            if self.answering_pid() == Some(pid) {
                return Launch::Ready;
            }
            if Instant::now() >= deadline {
                // `self` is dropped by the unwinding panic, which kills the process.
                panic!(
                    "redis-server on port {} did not answer within {READY_TIMEOUT:?}.\n{}",
                    self.port,
                    self.log_tail(20)
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// The `process_id` of whoever answers on our port with our password, if anyone.
    fn answering_pid(&self) -> Option<u32> {
        let mut con = self.try_connection(Duration::from_millis(500)).ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
        info_field(&info, "process_id")?.parse().ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`, or `redis://:PASSWORD@127.0.0.1:PORT/0` with a password.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "redis://:{}@127.0.0.1:{}/0",
                percent_encode(password),
                self.port
            ),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's directory (`--dir`), holding `redis.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last lines of the server log and of its stdout/stderr, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- {} ---\n{}\n--- stdout/stderr ---\n{}",
            self.log_path().display(),
            tail(&self.log_path(), lines),
            tail(&self.dir.path().join("stdio.log"), lines)
        )
    }

    /// The process id, while the process exists (running or frozen).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process exists (it may be frozen).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                // Died on its own: reap it so no zombie stays behind.
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// `run_id` from `INFO server`: differs for every start of a server.
    pub fn run_id(&self) -> String {
        let info: String = self.query(redis::cmd("INFO").arg("server"), "INFO server");
        info_field(&info, "run_id")
            .unwrap_or_else(|| panic!("no run_id in INFO server:\n{info}"))
            .to_owned()
    }

    // ---- fault injection -------------------------------------------------------------------

    /// SIGKILL, then reap. The port is free when this returns. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("reap redis-server");
        }
    }

    /// SIGSTOP: the process keeps its port (the kernel still accepts connections) but answers
    /// nothing, like a hung server. Returns once the process is stopped.
    pub fn freeze(&self) {
        let pid = self.pid().expect("freeze: redis-server is not running");
        self.signal(Signal::SIGSTOP);
        self.wait_state(pid, "stopped", |state| state == 'T');
    }

    /// SIGCONT after [`RedisServer::freeze`]. Returns once the process runs again.
    pub fn thaw(&self) {
        let pid = self.pid().expect("thaw: redis-server is not running");
        self.signal(Signal::SIGCONT);
        self.wait_state(pid, "running", |state| state != 'T');
    }

    /// Kills the server and starts a new, empty one on the same port with the same password.
    /// A cluster node keeps its `nodes.conf`, so it rejoins with its id and slots but no data.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.start_again();
    }

    /// After [`RedisServer::kill`]: starts an empty server on the same port. The port can be
    /// briefly held by someone else (an outgoing connection that got it as its source port),
    /// so binding is retried for a few seconds. Returns when the new server answered.
    pub fn start_again(&mut self) -> Instant {
        assert!(
            !self.is_running(),
            "start_again: redis-server on port {} is still running (use restart_empty)",
            self.port
        );
        // Persistence is off (unless started persistent), but make "empty" not depend on that.
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        let _ = std::fs::remove_dir_all(self.dir.path().join("appendonlydir"));
        self.relaunch()
    }

    /// After [`RedisServer::kill`]: starts the server again on the same port and directory,
    /// keeping what it wrote there: a server started with
    /// [`RedisServer::start_persistent_of`] loads its append-only file and comes back with
    /// its data (and a new run id). Returns when the new server answered.
    pub fn start_again_with_data(&mut self) -> Instant {
        assert!(
            !self.is_running(),
            "start_again_with_data: redis-server on port {} is still running",
            self.port
        );
        self.relaunch()
    }

    /// Launches on `self.port`, retrying the bind for a while.
    fn relaunch(&mut self) -> Instant {
        let deadline = Instant::now() + SAME_PORT_RETRY;
        loop {
            match self.launch() {
                Launch::Ready => return Instant::now(),
                Launch::PortInUse if Instant::now() < deadline => sleep(Duration::from_millis(100)),
                Launch::PortInUse => panic!(
                    "redis-server: port {} still in use after {SAME_PORT_RETRY:?}.\n{}",
                    self.port,
                    self.log_tail(20)
                ),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("redis-server is not running");
        nix::sys::signal::kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to redis-server {pid}: {e}"));
    }

    fn wait_state(&self, pid: u32, what: &str, wanted: impl Fn(char) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match process::state(pid) {
                Some(state) if wanted(state) => return,
                state => assert!(
                    Instant::now() < deadline,
                    "redis-server {pid} not {what} after 2 s (state {state:?})"
                ),
            }
            sleep(Duration::from_millis(2));
        }
    }

    // ---- data helpers ----------------------------------------------------------------------

    /// A new connection with connect, read and write timeouts of 2 s, authenticated.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection(COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to redis-server on port {}: {e}", self.port))
    }

    /// A connection like [`RedisServer::connection`], or the error when there is none.
    pub fn try_connection(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let con = client.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        Ok(con)
    }

    /// Runs `cmd` on a new connection; panics naming `what` on error.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, what: &str) -> T {
        cmd.query(&mut self.connection())
            .unwrap_or_else(|e| panic!("{what} on redis-server port {}: {e}", self.port))
    }

    /// Keys matching `pattern` (SCAN, all of them), sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut con = self.connection();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("SCAN on redis-server port {}: {e}", self.port));
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        keys.sort();
        keys.dedup();
        keys
    }

    /// `GET key` (`None` when the key does not exist).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key), "GET")
    }

    /// `EXISTS key`.
    pub fn exists(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key), "EXISTS") == 1
    }

    /// `PTTL key`: milliseconds left, -1 without expiry, -2 when the key does not exist.
    pub fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key), "PTTL")
    }

    pub fn flushall(&self) {
        let _: () = self.query(&redis::cmd("FLUSHALL"), "FLUSHALL");
    }

    /// The value of `field` in the `section` of `INFO` (`used_memory` in `memory`), if present.
    pub fn info_value(&self, section: &str, field: &str) -> Option<String> {
        let info: String = self.query(redis::cmd("INFO").arg(section), "INFO");
        info_field(&info, field).map(str::to_owned)
    }

    /// How many times this server ran `command` since it started, scripts' calls included
    /// (`INFO commandstats`; 0 for one it never ran).
    pub fn calls(&self, command: &str) -> u64 {
        self.info_value("commandstats", &format!("cmdstat_{command}"))
            .and_then(|stats| {
                stats
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    /// `CONFIG SET name value` (`maxmemory`, `maxmemory-policy`...).
    pub fn config_set(&self, name: &str, value: &str) {
        let _: () = self.query(
            redis::cmd("CONFIG").arg("SET").arg(name).arg(value),
            "CONFIG SET",
        );
    }

    /// How many of `keys` exist: one pipelined `EXISTS` per key, a thousand at a time.
    pub fn count_existing(&self, keys: &[String]) -> usize {
        let mut con = self.connection();
        let mut found = 0;
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("EXISTS").arg(key);
            }
            let exists: Vec<i64> = pipe
                .query(&mut con)
                .unwrap_or_else(|e| panic!("EXISTS on redis-server port {}: {e}", self.port));
            found += exists.iter().filter(|&&n| n > 0).count();
        }
        found
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds. SIGKILL works on a
        // frozen (SIGSTOP) process too.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of `name:` in an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Three cluster masters on 127.0.0.1 (no replicas), all slots assigned, `cluster_state:ok`.
/// Dropping it kills every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..CLUSTER_SIZE)
            .map(|_| RedisServer::start_new(None, true))
            .collect();
        let cluster = Self { nodes };
        cluster.create();
        cluster.wait_ok();
        cluster
    }

    /// `redis-cli --cluster create`, bounded; its output goes to the first node's directory.
    fn create(&self) {
        let output_path = self.nodes[0].dir().join("cluster-create.log");
        let output = File::create(&output_path).expect("create cluster-create.log");
        let mut command = Command::new("redis-cli");
        command
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone cluster-create.log"))
            .stderr(output);
        let mut child = spawn_program("redis-cli", command);
        let Some(status) = process::wait_or_kill(&mut child, CLUSTER_TIMEOUT) else {
            panic!(
                "redis-cli --cluster create did not finish within {CLUSTER_TIMEOUT:?}:\n{}",
                tail(&output_path, 40)
            );
        };
        assert!(
            status.success(),
            "redis-cli --cluster create failed ({status}):\n{}",
            tail(&output_path, 40)
        );
    }

    /// Waits until every node reports `cluster_state:ok` and knows all nodes, so a client
    /// gets the full slot map from whichever node it asks.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|node| {
                    node.try_connection(Duration::from_millis(500))
                        .and_then(|mut con| redis::cmd("CLUSTER").arg("INFO").query(&mut con))
                        .unwrap_or_else(|e| format!("(error: {e})"))
                })
                .collect();
            let known = CLUSTER_SIZE.to_string();
            let all_ok = infos.iter().all(|info| {
                info_field(info, "cluster_state") == Some("ok")
                    && info_field(info, "cluster_known_nodes") == Some(known.as_str())
            });
            if all_ok {
                return;
            }
            if Instant::now() >= deadline {
                let report: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&infos)
                    .map(|(node, info)| {
                        format!("== node {} ==\n{info}\n{}", node.port(), node.log_tail(10))
                    })
                    .collect();
                panic!(
                    "cluster not ok within {CLUSTER_TIMEOUT:?}:\n{}",
                    report.join("\n")
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// One `redis://127.0.0.1:PORT/` per node, for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port()))
            .collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// For fault injection on single nodes (`kill`, `freeze`, ...).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

// ---------------------------------------------------------------------------------------------
// Sentinel

/// A redis-server in sentinel mode watching one master, killed on drop.
pub struct RedisSentinel {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// A sentinel on a free port watching the master on `master_port` as `mymaster`; returns
    /// once it names that master.
    pub fn start(master_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds mymaster 5000\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel (scripts/test.sh installs redis-server)");
        let sentinel = Self {
            child,
            port,
            _dir: dir,
        };
        // Ready when it answers with the master's address.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg("mymaster")
                        .query::<Vec<String>>(&mut c)
                });
            if answer.is_ok_and(|addr| {
                addr.get(1).map(String::as_str) == Some(master_port.to_string().as_str())
            }) {
                return sentinel;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sentinel on {port} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

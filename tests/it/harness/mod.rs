//! Test harness: a keepalive server on a real port, either in this process (with a clock the
//! test moves) or as the real binary (for signals, crashes and exit codes).
pub mod caddy;
pub mod nginx;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keepalive::clock::ManualClock;
use keepalive::config::Layers;
use keepalive::server::{self, Environment};
use keepalive_testkit::redis::RedisServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fixed instant for tests with a manual clock.
pub const START: i64 = 1_800_000_000_000;

/// An in-process server on 127.0.0.1 with a fresh data directory.
pub struct TestServer {
    pub base: String,
    pub clock: ManualClock,
    /// The data directory, removed when the server is dropped.
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServerError>>>,
    /// The Redis this server's sessions live in, for a server started on [`Store::Redis`];
    /// stopped after the server.
    redis: Option<RedisServer>,
}

/// Where a test server keeps its sessions: the HTTP contract is written once and run on each
/// (see [`on_every_store`]), as tower-sessions runs one suite over every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded store alone.
    Local,
    /// A `redis-server` of the test's own, with the local store as its mirror.
    Redis,
}

impl Store {
    /// A server with these settings, its sessions in this store.
    pub async fn start(self, vars: &[(&str, &str)]) -> TestServer {
        match self {
            Self::Local => TestServer::start(vars).await,
            Self::Redis => {
                let redis = RedisServer::start();
                let url = redis.url();
                let mut all = vec![("REDIS_URL", url.as_str())];
                all.extend_from_slice(vars);
                let mut server = TestServer::start(&all).await;
                server.redis = Some(redis);
                // Sessions live in Redis once the first connect's re-sync is done.
                within(Duration::from_secs(10), "Redis answers", || async {
                    let (_, body) = keepalive(&server.base, None).await;
                    body["serverHealth"]["checks"]["redis"] == "ok"
                })
                .await;
                server
            }
        }
    }

    /// What `serverHealth.checks.redis` says with this store.
    pub fn redis_check(self) -> &'static str {
        match self {
            Self::Local => "disabled",
            Self::Redis => "ok",
        }
    }
}

/// Runs each listed `async fn(Store)` as two tests, `local_store::NAME` and
/// `redis_store::NAME`: the same contract on the embedded store and on Redis.
macro_rules! on_every_store {
    ($($test:ident),+ $(,)?) => {
        mod local_store {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::harness::Store::Local).await;
                }
            )+
        }
        mod redis_store {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::harness::Store::Redis).await;
                }
            )+
        }
    };
}
pub(crate) use on_every_store;

/// Settings every test server gets, before the test's own.
fn base_vars(data_dir: &Path) -> Vec<(String, String)> {
    vec![
        ("KEEPALIVE_BIND".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
        ("KEEPALIVE_DATA_DIR".into(), data_dir.display().to_string()),
        ("KEEPALIVE_HEALTH_INTERVAL".into(), "50ms".into()),
        ("KEEPALIVE_FLUSH_INTERVAL".into(), "50ms".into()),
    ]
}

impl TestServer {
    /// Starts a server with the given environment variables, timed by a manual clock and
    /// reading memory from the real `/proc` and `/sys`.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        Self::start_with_root(vars, PathBuf::from("/")).await
    }

    /// Starts a server whose manual clock stands at `start` (ms since the Unix epoch): at the
    /// real time for a session whose expiry a real application wrote.
    pub async fn start_at(vars: &[(&str, &str)], start: i64) -> Self {
        Self::start_with(vars, PathBuf::from("/"), start).await
    }

    /// Starts a server whose memory check reads `/proc` and `/sys` under `root`.
    pub async fn start_with_root(vars: &[(&str, &str)], root: PathBuf) -> Self {
        Self::start_with(vars, root, START).await
    }

    async fn start_with(vars: &[(&str, &str)], root: PathBuf, start: i64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = base_vars(dir.path());
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let config = Layers::new(None, all)
            .expect("layers")
            .validate()
            .expect("valid config");
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clock = ManualClock::new(start);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let env = Environment {
            clock: std::sync::Arc::new(clock.clone()),
            proc_root: root,
        };
        let task = tokio::spawn(server::run_with(
            config,
            listener,
            async move {
                let _ = stop_rx.await;
            },
            env,
        ));
        Self {
            base: format!("http://{addr}"),
            clock,
            _dir: dir,
            stop: Some(stop_tx),
            task: Some(task),
            redis: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Shuts the server down and checks it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops in time");
            result.expect("task").expect("clean shutdown");
        }
        drop(self.redis.take());
    }
}

/// A plain HTTP client; cookies are handled by hand so tests see exactly what is sent.
pub fn client() -> reqwest::Client {
    // One for the test process (nextest runs each test in a process of its own): building a
    // client loads the TLS roots, which costs more than most of the requests a test makes.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            keepalive::outbound::client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client")
        })
        .clone()
}

/// The `name=value` pair of a `Set-Cookie` header.
pub fn cookie_pair(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ascii");
    set.split(';').next().expect("pair").to_owned()
}

/// Creates a session and returns its cookie pair.
pub async fn create_session(base: &str) -> String {
    let response = client()
        .post(format!("{base}/api/v1/session"))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    cookie_pair(&response)
}

/// Logs the session of this cookie header out; returns the status.
pub async fn logout(base: &str, cookie: &str) -> u16 {
    client()
        .delete(format!("{base}/api/v1/session"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("logout")
        .status()
        .as_u16()
}

/// The server's `/metrics` text.
pub async fn metrics(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `/health` as the holder of the health token `token` reads it.
pub async fn health(base: &str, token: &str) -> serde_json::Value {
    client()
        .get(format!("{base}/health"))
        .bearer_auth(token)
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health JSON")
}

/// A keepalive with this cookie header; returns status and JSON body.
pub async fn keepalive(base: &str, cookie: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = client().get(format!("{base}/api/v1/keepalive/"));
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = request.send().await.expect("keepalive");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// The real binary, started with the given environment on a free port of 127.0.0.1.
pub struct Process {
    pub child: Child,
    pub base: String,
    pub lines: mpsc::Receiver<String>,
    /// Kept while the process runs: a thread drains its stderr into it, so the process never
    /// blocks on a full pipe.
    _stderr: mpsc::Receiver<String>,
    /// Lines read while waiting for the listening line.
    early: Vec<String>,
}

/// The binary under test: the one this test build made, or `KEEPALIVE_BIN` when set
/// (`scripts/test.sh` runs the start-up tests again on the release build, the one that ships).
pub fn binary() -> String {
    std::env::var("KEEPALIVE_BIN")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_keepalive").to_owned())
}

/// A command for the binary with a clean environment plus `vars`.
pub fn command(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn pipe_lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Process {
    /// Starts the binary with JSON logs and waits for its `listening` line.
    pub fn start(data_dir: &Path, vars: &[(&str, &str)]) -> Self {
        let mut all: Vec<(&str, &str)> = vec![
            ("KEEPALIVE_BIND", "127.0.0.1"),
            ("PORT", "0"),
            ("KEEPALIVE_LOG_FORMAT", "json"),
            ("KEEPALIVE_FLUSH_INTERVAL", "100ms"),
        ];
        let dir = data_dir.display().to_string();
        all.push(("KEEPALIVE_DATA_DIR", &dir));
        all.extend_from_slice(vars);
        let mut child = command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = pipe_lines(child.stdout.take().expect("stdout"));
        let stderr = pipe_lines(child.stderr.take().expect("stderr"));
        // Owned from here on, so a failed start still kills and reaps the child (Drop).
        let mut process = Self {
            child,
            base: String::new(),
            lines,
            _stderr: stderr,
            early: Vec::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = process
                .lines
                .recv_timeout(left)
                .expect("server printed its listening line in time");
            let addr = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|json| json.get("addr").and_then(|a| a.as_str()).map(str::to_owned));
            process.early.push(line);
            if let Some(addr) = addr {
                let addr: SocketAddr = addr.parse().expect("addr");
                process.base = format!("http://{addr}");
                return process;
            }
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines printed so far and not yet taken; once the process has exited, every line it
    /// printed (the reader thread may still be passing the last ones on).
    pub fn drain_lines(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.early);
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // The pipe's end of file ends the reader thread, which closes the channel.
            lines.extend(self.lines.iter());
        } else {
            lines.extend(self.lines.try_iter());
        }
        lines
    }

    /// Log lines printed so far and not yet taken, waiting up to `limit` for one that contains
    /// `needle`: what the server logs reaches the pipe a moment after what it answers over HTTP,
    /// so a test that saw an effect waits for the line that tells of it.
    pub fn lines_until(&mut self, needle: &str, limit: Duration) -> Vec<String> {
        let mut lines = self.drain_lines();
        let deadline = std::time::Instant::now() + limit;
        while !lines.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes on a fresh connection to `addr` (`host:port`) and returns everything the
/// server answered until it closed the connection or 3 s passed.
pub fn raw_exchange(addr: &str, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until the instance at `base` counted `outages` Redis outages and answers with Redis
/// `ok` again: its re-sync after the last of them is done (an `ok` alone may be one from before
/// a fault the instance has not noticed yet).
pub async fn resynced(base: &str, outages: u64) {
    let counted = format!("keepalive_redis_outages_total {outages}\n");
    within(
        Duration::from_secs(5),
        &format!("{base} re-synced after {outages} outages"),
        || async {
            metrics(base).await.contains(&counted)
                && keepalive(base, None).await.1["serverHealth"]["checks"]["redis"] == "ok"
        },
    )
    .await;
}

/// Polls `condition` every 20 ms until it holds; returns how long that took. Fails the test
/// if it does not hold within `limit`.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An RFC 3339 time of an answer, in Unix milliseconds; checks the documented form, UTC with
/// exactly three fractional digits (`"2026-11-25T18:40:15.053Z"`).
pub fn millis(rfc3339: &serde_json::Value) -> i64 {
    let text = rfc3339.as_str().expect("string time");
    assert!(
        text.len() == 24 && text.ends_with('Z') && text.as_bytes()[19] == b'.',
        "three fractional digits: {text}"
    );
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

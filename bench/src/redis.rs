//! A throw-away `redis-server` owned by the benchmark, and just enough of
//! the Redis protocol (RESP) to ping it and count keys.
//!
//! The server listens on a free loopback port (never 6379, the machine's
//! shared Redis), keeps nothing on disk (`--save "" --appendonly no`) and
//! works in its own temp dir, so a restart brings it back empty. It is killed
//! on every exit path (`kill_on_drop`).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The machine's shared Redis: never started, killed or written to by the bench.
const SHARED_PORT: u16 = 6379;

/// How long a (re)started redis-server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A redis-server process started by the benchmark.
pub struct RedisServer {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts `bin` on a free loopback port and waits until it answers PING.
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keepalive-bench-redis-")
            .tempdir()
            .context("create temp dir for redis-server")?;
        let mut port = crate::server::free_port()?;
        while port == SHARED_PORT {
            port = crate::server::free_port()?;
        }
        let mut redis = Self {
            bin: bin.to_owned(),
            child: None,
            port,
            dir,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT` for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Starts the process (again) on the same port; returns when it answers PING.
    pub async fn spawn(&mut self) -> anyhow::Result<Instant> {
        if self.port == SHARED_PORT {
            bail!(
                "refusing to run redis-server on port {SHARED_PORT} (the machine's shared Redis)"
            );
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .context("open redis-server log")?;
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("clone log handle")?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "redis-server exited during startup ({status}); log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
                );
            }
            if ping(self.addr()).await.is_ok() {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL, no goodbye: what a crashed or OOM-killed Redis looks like.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill redis-server")?;
        }
        Ok(())
    }

    /// CPU time (user + system) of the current process so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id()?;
        crate::server::process_cpu_time(&pid.to_string())
    }
}

/// A RESP command: an array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The integer of a `:N` reply line (without its CRLF); an error reply or
/// anything else is an error.
pub fn parse_integer_reply(line: &str) -> anyhow::Result<i64> {
    match line.strip_prefix(':') {
        Some(n) => n.trim().parse().context("integer reply"),
        None => bail!("unexpected Redis reply {line:?}"),
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<BufReader<TcpStream>> {
    let stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .context("connect to redis-server timed out")?
        .context("connect to redis-server")?;
    Ok(BufReader::new(stream))
}

/// One PING on a fresh connection.
pub async fn ping(addr: SocketAddr) -> anyhow::Result<()> {
    let exchange = async {
        let mut conn = connect(addr).await?;
        conn.get_mut()
            .write_all(&encode_command(&[b"PING"]))
            .await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        if line.trim_end() == "+PONG" {
            Ok(())
        } else {
            bail!("PING answered {line:?}")
        }
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .context("PING timed out")?
}

/// How many of `keys` exist, one pipelined `EXISTS` per key.
pub async fn count_existing(addr: SocketAddr, keys: &[String]) -> anyhow::Result<usize> {
    let exchange = async {
        let mut conn = connect(addr).await?;
        let mut found = 0;
        for chunk in keys.chunks(1000) {
            let mut batch = Vec::new();
            for key in chunk {
                batch.extend(encode_command(&[b"EXISTS", key.as_bytes()]));
            }
            conn.get_mut().write_all(&batch).await?;
            for _ in chunk {
                let mut line = String::new();
                if conn.read_line(&mut line).await? == 0 {
                    bail!("redis-server closed the connection");
                }
                if parse_integer_reply(line.trim_end())? > 0 {
                    found += 1;
                }
            }
        }
        Ok(found)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("counting keys in Redis timed out")?
}

/// The Redis key of the session whose cookie value is `id`.
pub fn session_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{{{id}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encoding() {
        assert_eq!(encode_command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode_command(&[b"EXISTS", b"keepalive:{a b}"]),
            b"*2\r\n$6\r\nEXISTS\r\n$15\r\nkeepalive:{a b}\r\n"
        );
    }

    #[test]
    fn integer_replies() {
        assert_eq!(parse_integer_reply(":1").expect("one"), 1);
        assert_eq!(parse_integer_reply(":0").expect("zero"), 0);
        assert!(parse_integer_reply("-ERR wrong").is_err());
        assert!(parse_integer_reply("+OK").is_err());
    }

    #[test]
    fn key_has_literal_braces() {
        assert_eq!(session_key("keepalive:", "AbC-_1"), "keepalive:{AbC-_1}");
    }
}

//! Connections to Redis, and what their failures mean, for the store and for `keepalive
//! doctor` alike: one server, a cluster, or the master that sentinels name, opened the same
//! way and diagnosed in the same words.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind,
    Value,
};

use crate::config::RedisTarget as Target;
use crate::session::StoreError;

/// A connection to one server or to a cluster; both pipeline concurrent requests.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens a connection to `target`: to the server, to the cluster (its seeds, then every
/// master), or to the master the sentinels name now. `connect_timeout` bounds each connection,
/// `response_timeout` each answer.
pub(crate) async fn open(
    target: &Target,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Conn, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    match target {
        Target::Single(url) => {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                .set_tcp_settings(tcp_settings());
            let client = redis::Client::open(info)?;
            Ok(Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ))
        }
        Target::Cluster(urls) => {
            let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .tcp_settings(tcp_settings())
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
        Target::Sentinel {
            sentinels,
            master,
            node,
        } => Ok(Conn::Single(
            sentinel_client(sentinels, master, node)?
                .get_async_connection()
                .await?,
        )),
    }
}

/// TCP settings of the connections operations use: `TCP_NODELAY`, which the client leaves off.
/// With Nagle's algorithm, a command written while the previous one is unacknowledged (a second
/// batch of keepalives, a login beside them: the connection is pipelined) waits for that
/// acknowledgement, which comes with Redis's answer: a whole round trip more.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// A client of the Sentinel-monitored master (resolved on each connection).
pub(crate) fn sentinel_client(
    sentinels: &[String],
    master: &str,
    node: &str,
) -> Result<redis::sentinel::SentinelClient, RedisError> {
    let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(node)?;
    let node_info = redis::sentinel::SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(info.redis_settings().clone())
        .set_tcp_settings(tcp_settings());
    redis::sentinel::SentinelClient::build(
        sentinels.iter().map(String::as_str).collect(),
        master,
        Some(node_info),
        redis::sentinel::SentinelServerType::Master,
    )
}

/// Why Redis could not be used, in words an operator can act on: what happened, and what to
/// do about it. Never the error's own text, which may quote the URL and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What happened.
    pub cause: String,
    /// What to do about it.
    pub fix: &'static str,
}

impl Diagnosis {
    /// The diagnosis of a failure of the Redis client.
    pub fn of(err: &RedisError) -> Self {
        let (cause, fix): (&str, &'static str) = match (err.kind(), err.code()) {
            (_, Some("NOAUTH")) => (
                "Redis requires a password and REDIS_URL carries none",
                "add it to REDIS_URL: redis://:PASSWORD@host:port/0 (or redis://USER:PASSWORD@... with ACL users)",
            ),
            _ if err.to_string().contains("without any password configured") => (
                "REDIS_URL carries a password but this Redis has none configured",
                "remove the password from REDIS_URL, or set requirepass on Redis",
            ),
            (ErrorKind::AuthenticationFailed, _) | (_, Some("WRONGPASS")) => (
                "authentication failed: Redis refused the user or password in REDIS_URL",
                "correct the password in REDIS_URL (percent-encode special characters)",
            ),
            _ if err.is_connection_refusal() => (
                "connection refused: nothing listens at that host and port",
                "start Redis (docker compose up -d redis, or systemctl start redis-server) or correct REDIS_URL",
            ),
            _ if err.is_timeout() => (
                "timed out: Redis is frozen or overloaded, or unreachable",
                "look at the Redis process (stopped, swapping, busy: redis-cli --latency, SLOWLOG GET) and the network to it",
            ),
            _ if err.is_connection_dropped() => (
                "connection dropped: Redis closed it (stopped, restarted, killed the client) or the network cut it",
                "check that Redis runs and stays up (its log, its memory limit) and the network between keepalive and Redis",
            ),
            (ErrorKind::MasterNameNotFoundBySentinel, _) => (
                "the sentinels know no master by the name in REDIS_URL",
                "correct the master name after the hosts in REDIS_URL (redis+sentinel://host:26379/NAME), as in the sentinels' `sentinel monitor` line",
            ),
            (
                ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::EmptySentinelList
                | ErrorKind::Server(ServerErrorKind::MasterDown),
                _,
            ) => (
                "the sentinels name no master that answers",
                "check the sentinels (SENTINEL masters) and the master they monitor",
            ),
            (
                ErrorKind::Server(ServerErrorKind::ClusterDown)
                | ErrorKind::ClusterConnectionNotFound,
                _,
            ) => (
                "the cluster is down or none of its nodes could be reached",
                "check CLUSTER INFO on a node (cluster_state:ok) and that every master is reachable from keepalive",
            ),
            _ => ("", "check the Redis logs"),
        };
        let code = err.code().map(|c| format!(" [{c}]")).unwrap_or_default();
        let cause = if cause.is_empty() {
            format!("Redis failed: {:?}{code}", err.kind())
        } else {
            format!("{cause}{code}")
        };
        Self { cause, fix }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.cause, self.fix)
    }
}

/// A failed operation as the store reports it: a key holding the wrong type is bad data in
/// that key (a corrupt session), not a Redis that is down; anything else is the backend's.
pub(crate) fn failure(err: &RedisError) -> StoreError {
    if err.code() == Some("WRONGTYPE") {
        StoreError::Corrupt(
            "a key of this session holds another type of value than keepalive writes".to_owned(),
        )
    } else {
        StoreError::Backend(Diagnosis::of(err).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::new(kind, "redis://:hunter2@cache:6379"))
    }

    #[test]
    fn each_failure_says_what_happened_and_what_to_do() {
        let refused = Diagnosis::of(&io(std::io::ErrorKind::ConnectionRefused));
        assert!(refused.cause.contains("connection refused"), "{refused}");
        assert!(refused.fix.contains("start Redis"), "{refused}");
        let dropped = Diagnosis::of(&io(std::io::ErrorKind::ConnectionReset));
        assert!(dropped.cause.contains("connection dropped"), "{dropped}");
        let late = Diagnosis::of(&io(std::io::ErrorKind::TimedOut));
        assert!(late.cause.contains("timed out"), "{late}");
        let auth = Diagnosis::of(&RedisError::from((
            ErrorKind::AuthenticationFailed,
            "invalid password",
        )));
        assert!(
            auth.cause.contains("refused the user or password"),
            "{auth}"
        );
        let master = Diagnosis::of(&RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "no master",
        )));
        assert!(master.fix.contains("master name"), "{master}");
    }

    #[test]
    fn a_diagnosis_never_quotes_the_error_text() {
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::Other,
        ] {
            let text = Diagnosis::of(&io(kind)).to_string();
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}

//! The connection a Redis-backed store works over, shared by the store of keepalive's own
//! sessions and that of an Express application's: opened and dropped by whoever decides about
//! outages (the failover), probed for Redis's run id and its epoch (see `epoch`), a timeout on every command, its latency
//! recorded, keepalives batched (a batcher on the shared connection, or one per thread, see the
//! `per_loop` module), and logouts heard on a connection of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::{Cmd, Script, Value};

use futures_util::future::join_all;

use crate::config::RedisTarget as Target;
use crate::metrics::Metrics;
use crate::session::StoreError;
use crate::store::failover::DataSet;

use super::batch::{self, How, Reply, Touch};
use super::connection::{Conn, failure, open, sentinel_client};
use super::{epoch, per_loop};

/// Gives each link an id of its own, for [`per_loop`].
static LINKS: AtomicU64 = AtomicU64::new(0);

/// How a link connects and times its commands.
#[derive(Debug, Clone)]
pub(crate) struct LinkOptions {
    /// Longest wait for one operation.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Whether each thread that asks for keepalives gets a batcher and a connection of its
    /// own (see `RedisOptions::connection_per_thread`).
    pub connection_per_thread: bool,
    /// The epoch key's name (in a cluster, the base of one per master; see `epoch`).
    pub epoch_key: String,
    /// The key of the notice that an instance is putting back sessions Redis lost.
    pub write_back_key: String,
}

/// The connection operations use now, with the batching of keepalives over it (none in a
/// cluster, see [`batch`]).
struct Current {
    conn: Conn,
    touches: Option<batch::Batcher>,
    /// Tells this connection from the ones before it, for the threads' own batchers.
    generation: u64,
    /// The epoch keys this connection watches.
    epochs: Vec<String>,
}

/// What an operation gets between a disconnect and the next connect.
pub(crate) fn not_connected() -> StoreError {
    StoreError::Backend("not connected to redis".to_owned())
}

/// A command that did not answer in time.
pub(crate) fn timed_out(what: &str, after: Duration) -> StoreError {
    StoreError::Backend(format!(
        "redis {what} timed out after {}",
        humantime::format_duration(after)
    ))
}

/// The link to one Redis (server, cluster, or the master the sentinels name).
pub(crate) struct Link {
    target: Target,
    options: LinkOptions,
    /// The script keepalives are batched into.
    touch: &'static Script,
    current: RwLock<Option<Current>>,
    /// The last connection's generation.
    generations: AtomicU64,
    id: u64,
    metrics: Arc<Metrics>,
}

impl Link {
    /// A link to `target`, batching keepalives into calls of `touch`; it connects on
    /// [`connect`](Self::connect).
    pub(crate) fn new(
        target: Target,
        options: LinkOptions,
        touch: &'static Script,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            target,
            options,
            touch,
            current: RwLock::new(None),
            generations: AtomicU64::new(0),
            id: LINKS.fetch_add(1, Ordering::Relaxed),
            metrics,
        }
    }

    /// Opens a fresh connection, checks it answers, and makes it the one operations use.
    /// Returns the data set it reached: the server's run id (changes when Redis restarts) and
    /// its epoch, written now by whichever instance finds none.
    pub(crate) async fn connect(&self) -> Result<DataSet, StoreError> {
        let conn = self.open().await?;
        let (server, evicted) = self.server_on(conn.clone()).await?;
        let epochs = self.epoch_keys(conn.clone()).await?;
        let epoch = self.epoch_on(conn.clone(), &epochs, true).await?;
        let touches = match &conn {
            Conn::Single(_) => Some(batch::Batcher::start(conn.clone(), self.batch_context())),
            Conn::Cluster(_) => None,
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Current {
            conn,
            touches,
            generation,
            epochs,
        });
        Ok(DataSet {
            server,
            epoch,
            evicted,
        })
    }

    /// Forgets the connection: operations fail fast until the next connect.
    pub(crate) fn disconnect(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Asks the current connection which data set Redis holds now; fails if there is none or
    /// Redis is silent. Writes nothing: a missing epoch key shows as missing.
    pub(crate) async fn probe(&self) -> Result<DataSet, StoreError> {
        let (conn, epochs) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|current| (current.conn.clone(), current.epochs.clone()))
            .ok_or_else(not_connected)?;
        let (server, evicted) = self.server_on(conn.clone()).await?;
        let epoch = self.epoch_on(conn, &epochs, false).await?;
        Ok(DataSet {
            server,
            epoch,
            evicted,
        })
    }

    /// The epoch keys to watch over `conn`: one, or one per master of a cluster.
    async fn epoch_keys(&self, mut conn: Conn) -> Result<Vec<String>, StoreError> {
        let base = &self.options.epoch_key;
        if matches!(conn, Conn::Single(_)) {
            return Ok(vec![base.clone()]);
        }
        let slots = self
            .run_on(&mut conn, "probe", redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        epoch::cluster_keys(base, &slots)
    }

    /// The tokens of the epoch keys, in order (`-` for a missing one); `create` writes a fresh
    /// token into a key that has none.
    async fn epoch_on(
        &self,
        conn: Conn,
        keys: &[String],
        create: bool,
    ) -> Result<String, StoreError> {
        let reads = keys.iter().map(|key| {
            let mut conn = conn.clone();
            async move {
                if create {
                    let mut invocation = epoch::ENSURE.prepare_invoke();
                    invocation.key(key).arg(epoch::token());
                    let started = Instant::now();
                    let result = tokio::time::timeout(
                        self.options.timeout,
                        invocation.invoke_async::<Value>(&mut conn),
                    )
                    .await;
                    self.observe("probe", started);
                    result
                        .map_err(|_| timed_out("probe", self.options.timeout))?
                        .map_err(|e| failure(&e))
                } else {
                    self.run_on(&mut conn, "probe", redis::cmd("GET").arg(key))
                        .await
                }
            }
        });
        let mut tokens = Vec::with_capacity(keys.len());
        for read in join_all(reads).await {
            tokens.push(epoch::token_of(&read?));
        }
        Ok(tokens.join(","))
    }

    /// A new connection, bounded by the connect timeout and one answer's.
    async fn open(&self) -> Result<Conn, StoreError> {
        open_bounded(&self.target, &self.options).await
    }

    /// Where Redis is (without credentials), with `what` it holds there (the database is in
    /// the URL; the caller adds its key prefix): which shared store this is beyond its run id.
    pub(crate) fn place(&self, what: &str) -> String {
        let redact = |u: &String| crate::config::redact_url(u);
        let place = match &self.target {
            Target::Single(url) => redact(url),
            Target::Cluster(urls) => {
                let mut urls: Vec<String> = urls.iter().map(redact).collect();
                urls.sort_unstable();
                urls.join(",")
            }
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let sentinels: Vec<String> = sentinels.iter().map(redact).collect();
                format!("{} {master} {}", sentinels.join(","), redact(node))
            }
        };
        format!("{place} {what}")
    }

    /// The connection operations use now.
    pub(crate) fn conn(&self) -> Result<Conn, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|current| current.conn.clone())
            .ok_or_else(not_connected)
    }

    /// Runs one command with the operation timeout, recording its latency as `op`.
    /// Tells every instance, for `lasting`, that one is putting back sessions Redis lost: until
    /// it lapses, a session missing from Redis may still come back. One key for every instance,
    /// renewed by each while it writes back and left to lapse: none can take it away from
    /// another that is still at it.
    pub(crate) async fn announce_write_back(&self, lasting: Duration) -> Result<(), StoreError> {
        let ms = u64::try_from(lasting.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(&self.options.write_back_key)
            .arg(1)
            .arg("PX")
            .arg(ms);
        self.run("notice", &mut set).await.map(drop)
    }

    /// Whether an instance's notice that it puts back sessions Redis lost is there.
    pub(crate) async fn write_back_under_way(&self) -> Result<bool, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&self.options.write_back_key);
        Ok(matches!(
            self.run("notice", &mut exists).await?,
            Value::Int(1)
        ))
    }

    pub(crate) async fn run(&self, op: &'static str, cmd: &mut Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn()?;
        self.run_on(&mut conn, op, cmd).await
    }

    async fn run_on(
        &self,
        conn: &mut Conn,
        op: &'static str,
        cmd: &mut Cmd,
    ) -> Result<Value, StoreError> {
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.options.timeout, cmd.query_async::<Value>(conn)).await;
        self.observe(op, started);
        result
            .map_err(|_| timed_out(op, self.options.timeout))?
            .map_err(|e| failure(&e))
    }

    /// Runs a script with the operation timeout, recording its latency as `op`.
    pub(crate) async fn invoke(
        &self,
        op: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.conn()?;
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.options.timeout,
            invocation.invoke_async::<Value>(&mut conn),
        )
        .await;
        self.observe(op, started);
        result
            .map_err(|_| timed_out(op, self.options.timeout))?
            .map_err(|e| failure(&e))
    }

    fn observe(&self, op: &'static str, started: Instant) {
        self.metrics
            .redis_operation_duration_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Extends one session: with the next batch of the thread's own batcher or the shared
    /// one, or, in a cluster (where one call's keys must share a slot), as a call of its own.
    pub(crate) async fn touch(&self, touch: Touch) -> Reply {
        // Only the batcher's handle is copied out of the lock (one reference count), not the
        // whole connection: this runs for every keepalive.
        let (touches, generation) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|current| (current.touches.clone(), current.generation))
            .ok_or_else(not_connected)?;
        if let Some(shared) = touches {
            let touches = self.thread_batcher(generation).unwrap_or(shared);
            return touches.touch(touch).await;
        }
        let args = match &touch.how {
            How::Script(args) => args,
            How::GetEx(secs) => {
                // A key of another type is `Corrupt` here, as the answer reads it in a batch.
                let mut conn = self.conn()?;
                let started = Instant::now();
                let result = tokio::time::timeout(
                    self.options.timeout,
                    Touch::getex(&touch.key, *secs).query_async::<Value>(&mut conn),
                )
                .await;
                self.observe("touch", started);
                return match result.map_err(|_| timed_out("touch", self.options.timeout))? {
                    Ok(value) => (touch.answer)(value),
                    Err(err) if batch::refuses_command(err.code(), err.detail()) => {
                        Err(batch::command_refused())
                    }
                    Err(err) => Err(failure(&err)),
                };
            }
        };
        let mut invocation = self.touch.prepare_invoke();
        invocation.key(&touch.key);
        for arg in args {
            invocation.arg(*arg);
        }
        match self.invoke("touch", invocation).await? {
            Value::Array(mut replies) if replies.len() == 1 => {
                (touch.answer)(replies.swap_remove(0))
            }
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply to a keepalive: {}",
                super::shape(&other)
            ))),
        }
    }

    /// This thread's own batcher, if it has one for the current connection (see
    /// [`per_loop`]); starts opening it otherwise, in the background: meanwhile the caller
    /// uses the shared one.
    fn thread_batcher(&self, generation: u64) -> Option<batch::Batcher> {
        if !self.options.connection_per_thread {
            return None;
        }
        per_loop::batcher(self.id, generation, || {
            let (target, options) = (self.target.clone(), self.options.clone());
            let ctx = self.batch_context();
            async move {
                let conn = open_bounded(&target, &options).await?;
                Ok(batch::Batcher::start(conn, ctx))
            }
        })
    }

    fn batch_context(&self) -> batch::BatchContext {
        batch::BatchContext {
            script: self.touch,
            timeout: self.options.timeout,
            latency: self
                .metrics
                .redis_operation_duration_seconds
                .with_label_values(&["touch"]),
        }
    }

    /// Subscribes to `channel` on a connection of its own (a subscribed connection takes no
    /// other command); in a cluster, to any node, since every node relays every message.
    pub(crate) async fn subscribe(
        &self,
        channel: String,
    ) -> Result<redis::aio::PubSubStream, StoreError> {
        let backend = |err: redis::RedisError| failure(&err);
        let budget = self.options.connect_timeout + self.options.timeout;
        let subscribe = async {
            let urls: Vec<&str> = match &self.target {
                Target::Single(url) => vec![url.as_str()],
                Target::Cluster(urls) => urls.iter().map(String::as_str).collect(),
                Target::Sentinel {
                    sentinels,
                    master,
                    node,
                } => {
                    let client = sentinel_client(sentinels, master, node)
                        .map_err(backend)?
                        .async_get_client()
                        .await
                        .map_err(backend)?;
                    let mut pubsub = client.get_async_pubsub().await.map_err(backend)?;
                    pubsub.subscribe(&channel).await.map_err(backend)?;
                    return Ok(pubsub.into_on_message());
                }
            };
            let mut last = StoreError::Backend("no Redis node to subscribe to".to_owned());
            for url in urls {
                let client = redis::Client::open(url).map_err(backend)?;
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        pubsub.subscribe(&channel).await.map_err(backend)?;
                        return Ok(pubsub.into_on_message());
                    }
                    Err(err) => last = backend(err),
                }
            }
            Err(last)
        };
        tokio::time::timeout(budget, subscribe)
            .await
            .map_err(|_| timed_out("subscription", budget))?
    }

    /// The server's identity (its run id; a cluster's masters', together) and how many keys it
    /// has evicted since it started, from one `INFO`.
    async fn server_on(&self, mut conn: Conn) -> Result<(String, u64), StoreError> {
        let info = self
            .run_on(&mut conn, "probe", &mut redis::cmd("INFO"))
            .await?;
        // A cluster answers once per master.
        let texts: Vec<String> = match info {
            Value::Map(pairs) => pairs.iter().map(|(_, v)| text_of(v)).collect(),
            other => vec![text_of(&other)],
        };
        let field = |name: &str| {
            texts
                .iter()
                .flat_map(|text| text.lines())
                .filter_map(move |l| l.strip_prefix(name).map(str::trim))
                .map(str::to_owned)
                .collect::<Vec<String>>()
        };
        // Sorted: a cluster's masters may answer in any order, and the same masters must give
        // the same id (a local store records it across restarts).
        let mut ids = field("run_id:");
        ids.sort_unstable();
        let evicted = field("evicted_keys:")
            .iter()
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        Ok((ids.join(","), evicted))
    }
}

/// The text of an `INFO` answer.
fn text_of(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Opens a connection to `target`, each step bounded by the link's timeouts and the whole by
/// their sum.
async fn open_bounded(target: &Target, options: &LinkOptions) -> Result<Conn, StoreError> {
    let budget = options.connect_timeout + options.timeout;
    tokio::time::timeout(
        budget,
        open(target, options.connect_timeout, options.timeout),
    )
    .await
    .map_err(|_| timed_out("connection", budget))?
    .map_err(|err| failure(&err))
}

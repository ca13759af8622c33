//! Sessions in Redis, shared by every instance.
//!
//! Each operation is one round trip (a Lua script or an atomic pipeline) over a multiplexed
//! connection that concurrent requests share, and each has a short timeout: a Redis that
//! refuses, hangs or drops never holds a request longer than that. Concurrent keepalives go
//! in one script call together (the private `batch` module), over a connection of the HTTP
//! event loop's own when they come from one (the private `per_loop` module). This store only
//! reports failures; deciding what to do about them is the [failover](super::failover) store's
//! job.

mod batch;
mod connection;
pub mod keys;
mod per_loop;
mod primary;
mod scripts;
pub mod value;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::{Cmd, Value};

use crate::clock::{Clock, Millis, duration_millis};
use crate::config::RedisTarget as Target;
use crate::metrics::Metrics;
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};
use crate::store::failover::Logouts;

pub use connection::Diagnosis;
use connection::failure;
pub(crate) use connection::{Conn, open, sentinel_client};
pub use keys::Keys;

/// Timing and naming of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key.
    pub prefix: String,
    /// Longest wait for one operation.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Marker lifetime for a logout of a session Redis does not know (its absolute lifetime is
    /// unknown then): the configured absolute lifetime.
    pub absolute_lifetime: Duration,
    /// Whether each thread that asks for keepalives gets a batcher and a connection of its
    /// own (the private `per_loop` module). For callers that run one single-threaded runtime
    /// per thread, as the standalone server's HTTP event loops do; off, every keepalive goes
    /// through the shared connection.
    pub connection_per_thread: bool,
}

/// One keepalive for Redis to extend.
struct KeepaliveTouch {
    id: SessionId,
    now: Millis,
    idle_ms: Millis,
}

impl KeepaliveTouch {
    /// The session as extended, from the script's answer: the value as it was before, which
    /// this extends by the same rule the script applied (nil: unknown or expired).
    fn answer(&self, value: &Value) -> Result<Option<SessionRecord>, StoreError> {
        Ok(decode(self.id, value)?.map(|mut record| {
            record.touch(self.now, Duration::from_millis(self.idle_ms.unsigned_abs()));
            record
        }))
    }

    /// Its arguments to [`scripts::TOUCH`], ready-written: the new expiry, and the key's TTL
    /// for when it must move, half an idle timeout past that (see [`scripts`]).
    fn args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        let expires = self.now.saturating_add(self.idle_ms);
        let ttl = self.idle_ms.saturating_add(self.idle_ms / 2);
        invocation
            .arg(self.now)
            .arg(expires)
            .arg(ttl)
            .arg(self.now.saturating_add(ttl));
    }
}

/// The connection operations use, with the batching of keepalives over it (none in a cluster,
/// see [`batch`]).
struct Link {
    conn: Conn,
    touches: Option<batch::Batcher>,
    /// Tells this link from the ones before it, for the HTTP loops' own batchers ([`per_loop`]).
    generation: u64,
}

/// Gives each store an id of its own, for [`per_loop`].
static STORES: AtomicU64 = AtomicU64::new(0);

/// The Redis session store.
pub struct RedisStore {
    target: Target,
    options: RedisOptions,
    keys: Keys,
    link: RwLock<Option<Link>>,
    /// The last link's generation.
    generations: AtomicU64,
    id: u64,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// What an operation gets between a disconnect and the next connect.
fn not_connected() -> StoreError {
    StoreError::Backend("not connected to redis".to_owned())
}

fn timed_out(what: &str, after: Duration) -> StoreError {
    StoreError::Backend(format!(
        "redis {what} timed out after {}",
        humantime::format_duration(after)
    ))
}

impl RedisStore {
    /// A store for `target`; it connects on [`connect`](Self::connect).
    pub fn new(
        target: Target,
        options: RedisOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            target,
            keys: Keys::new(options.prefix.clone()),
            options,
            link: RwLock::new(None),
            generations: AtomicU64::new(0),
            id: STORES.fetch_add(1, Ordering::Relaxed),
            clock,
            metrics,
        }
    }

    /// Lists a session in its user's set. A separate round trip from the session's own write:
    /// in a cluster the two keys live in different slots, which no transaction spans. It runs
    /// first, so a failure in between leaves a member without a session (dropped when the set
    /// is read), never a session its user's logout cannot find.
    async fn index(&self, record: &SessionRecord, now: Millis) -> Result<(), StoreError> {
        let Some(user) = &record.user else {
            return Ok(());
        };
        let mut invocation = scripts::INDEX.prepare_invoke();
        invocation
            .key(self.keys.user(user))
            .arg(record.id.to_string())
            .arg(record.absolute_expires_at)
            .arg(now);
        self.invoke("index", invocation).await?;
        Ok(())
    }

    /// Opens a fresh connection, checks it answers, and makes it the one operations use.
    /// Returns the server's run id (changes when Redis restarts).
    pub async fn connect(&self) -> Result<String, StoreError> {
        let budget = self.options.connect_timeout + self.options.timeout;
        let conn = tokio::time::timeout(budget, self.open())
            .await
            .map_err(|_| timed_out("connection", budget))??;
        let run_id = self.run_id_on(conn.clone()).await?;
        let touches = match &conn {
            Conn::Single(_) => Some(batch::Batcher::start(conn.clone(), self.batch_context())),
            Conn::Cluster(_) => None,
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = Some(Link {
            conn,
            touches,
            generation,
        });
        Ok(run_id)
    }

    /// Forgets the connection: operations fail fast until the next [`connect`](Self::connect).
    pub fn disconnect(&self) {
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Asks the current connection for the run id; fails if there is none or Redis is silent.
    pub async fn probe(&self) -> Result<String, StoreError> {
        let conn = self.current()?;
        self.run_id_on(conn).await
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        open_within(&self.target, &self.options).await
    }

    /// Which shared store this is, beyond Redis's run id: where Redis is (without credentials),
    /// the database and the key prefix. The same server seen under another database or prefix
    /// holds none of the sessions, though its run id is the same.
    pub fn place(&self) -> String {
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
        format!("{place} prefix={}", self.options.prefix)
    }

    /// This HTTP loop's own batcher, if it has one for the current link (see [`per_loop`]);
    /// starts opening it otherwise, in the background: meanwhile the caller uses the shared one.
    fn loop_batcher(&self, generation: u64) -> Option<batch::Batcher> {
        if !self.options.connection_per_thread {
            return None;
        }
        per_loop::batcher(self.id, generation, || {
            let (target, options) = (self.target.clone(), self.options.clone());
            let ctx = self.batch_context();
            async move {
                let budget = options.connect_timeout + options.timeout;
                let conn = tokio::time::timeout(budget, open_within(&target, &options))
                    .await
                    .map_err(|_| timed_out("connection", budget))??;
                Ok(batch::Batcher::start(conn, ctx))
            }
        })
    }

    fn batch_context(&self) -> batch::BatchContext {
        batch::BatchContext {
            keys: self.keys.clone(),
            timeout: self.options.timeout,
            latency: self
                .metrics
                .redis_operation_duration_seconds
                .with_label_values(&["touch"]),
        }
    }
}

/// Opens a connection for the store, each step bounded by its timeouts.
async fn open_within(target: &Target, options: &RedisOptions) -> Result<Conn, StoreError> {
    open(target, options.connect_timeout, options.timeout)
        .await
        .map_err(|err| failure(&err))
}

impl RedisStore {
    /// Subscribes to the logouts every instance publishes: a stream of the ids ended, until
    /// the connection drops. A connection of its own (a subscribed connection takes no other
    /// command); in a cluster, to any node, since every node relays every message. Messages
    /// that name no session are left out.
    pub async fn subscribe_ended(&self) -> Result<Logouts, StoreError> {
        let messages = self.subscribe_messages().await?;
        Ok(Box::pin(messages.filter_map(|message| async move {
            let id = message
                .get_payload::<String>()
                .ok()
                .and_then(|text| SessionId::parse(&text));
            if id.is_none() {
                tracing::debug!("[redis] ignored a logout message that names no session");
            }
            id
        })))
    }

    async fn subscribe_messages(&self) -> Result<redis::aio::PubSubStream, StoreError> {
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
                    pubsub
                        .subscribe(self.keys.logout_channel())
                        .await
                        .map_err(backend)?;
                    return Ok(pubsub.into_on_message());
                }
            };
            let mut last = StoreError::Backend("no Redis node to subscribe to".to_owned());
            for url in urls {
                let client = redis::Client::open(url).map_err(backend)?;
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        pubsub
                            .subscribe(self.keys.logout_channel())
                            .await
                            .map_err(backend)?;
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

    async fn run_id_on(&self, mut conn: Conn) -> Result<String, StoreError> {
        let info = self
            .run(&mut conn, "probe", redis::cmd("INFO").arg("server"))
            .await?;
        let text = match info {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            Value::SimpleString(s) => s,
            // A cluster answers once per node: any stable combination identifies it.
            Value::Map(pairs) => pairs
                .iter()
                .map(|(_, v)| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(","),
            other => format!("{other:?}"),
        };
        // Sorted: a cluster's nodes may answer in any order, and the same nodes must give the
        // same id (a local store records it across restarts).
        let mut ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once("run_id:").map(|(_, id)| id.trim().to_owned()))
            .collect();
        ids.sort_unstable();
        Ok(ids.join(","))
    }

    fn current(&self) -> Result<Conn, StoreError> {
        self.link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|link| link.conn.clone())
            .ok_or_else(not_connected)
    }

    /// Runs one command with the operation timeout, recording its latency.
    async fn run(
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

    async fn invoke(
        &self,
        op: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.current()?;
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

    /// Writes back a session kept locally unless Redis has newer activity or its logout.
    /// Returns whether it was written.
    pub async fn merge(&self, record: &SessionRecord, now: Millis) -> Result<bool, StoreError> {
        self.index(record, now).await?;
        let mut invocation = scripts::MERGE.prepare_invoke();
        invocation
            .key(self.keys.session(&record.id))
            .key(self.keys.marker(&record.id))
            .arg(value::encode(record, record.expires_at))
            .arg(record.last_seen_at)
            .arg(record.expires_at)
            .arg(now);
        let written = self.invoke("merge", invocation).await?;
        Ok(matches!(written, Value::Int(1)))
    }

    /// Whether a session's logout marker is in Redis: it was ended, here or elsewhere, within
    /// its absolute lifetime.
    pub async fn is_ended(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut conn = self.current()?;
        let found = self
            .run(
                &mut conn,
                "marker",
                redis::cmd("EXISTS").arg(self.keys.marker(id)),
            )
            .await?;
        Ok(matches!(found, Value::Int(1)))
    }

    /// Ends a session at `now`, leaving the logout marker.
    pub async fn end(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        let mut invocation = scripts::END.prepare_invoke();
        invocation
            .key(self.keys.session(id))
            .key(self.keys.marker(id))
            .arg(now)
            .arg(duration_millis(self.options.absolute_lifetime))
            .arg(self.keys.logout_channel())
            .arg(id.to_string());
        Ok(matches!(
            self.invoke("end", invocation).await?,
            Value::Int(1)
        ))
    }
}

fn field_string(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    }
}

/// What kind of reply an unexpected one was, for an error message: never its content, which
/// may hold session ids (bearer secrets), users or session data.
fn shape(value: &Value) -> String {
    match value {
        Value::Nil => "nil".to_owned(),
        Value::Int(n) => format!("the integer {n}"),
        Value::BulkString(b) => format!("a string of {} bytes", b.len()),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::SimpleString(_) => "a status".to_owned(),
        Value::ServerError(err) => format!("the error {}", err.code()),
        _ => "another kind of reply".to_owned(),
    }
}

/// A session's value as a script or `GET` returned it: nil for none, 0 for a key that holds
/// something else (see [`scripts`]).
fn decode(id: SessionId, value: &Value) -> Result<Option<SessionRecord>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => value::decode(id, bytes).map(|stored| Some(stored.record)),
        Value::Int(0) => Err(StoreError::Corrupt(format!(
            "redis key of session {id:?} holds something other than a keepalive session"
        ))),
        other => Err(StoreError::Corrupt(format!(
            "unexpected session reply: {}",
            shape(other)
        ))),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.index(&record, self.clock.now()).await?;
        let key = self.keys.session(&record.id);
        let ttl = (record.expires_at - record.created_at).max(1);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(value::encode(&record, record.expires_at))
            .arg("PX")
            .arg(ttl);
        let mut conn = self.current()?;
        self.run(&mut conn, "create", &mut set).await?;
        Ok(())
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.current()?;
        let value = self
            .run(
                &mut conn,
                "load",
                redis::cmd("GET").arg(self.keys.session(id)),
            )
            .await?;
        Ok(decode(*id, &value)?.filter(|r| r.is_live(now)))
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let touch = KeepaliveTouch {
            id: *id,
            now,
            idle_ms: duration_millis(idle),
        };
        // Only the batcher's handle is copied out of the lock (one reference count), not the
        // whole connection: this runs for every keepalive.
        let (touches, generation) = self
            .link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|link| (link.touches.clone(), link.generation))
            .ok_or_else(not_connected)?;
        if let Some(shared) = touches {
            let touches = self.loop_batcher(generation).unwrap_or(shared);
            return touches.touch(touch).await;
        }
        let mut invocation = scripts::TOUCH.prepare_invoke();
        invocation.key(self.keys.session(id));
        touch.args(&mut invocation);
        match self.invoke("touch", invocation).await? {
            Value::Array(replies) if replies.len() == 1 => touch.answer(&replies[0]),
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply to a keepalive: {}",
                shape(&other)
            ))),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.end(id, self.clock.now()).await
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Three round trips: the two ids live in different cluster slots, so no single script
        // may touch both. The new session exists before the old one ends, so a crash in
        // between leaves the user signed in, never out.
        let Some(mut record) = self.load(old, now).await? else {
            return Ok(None);
        };
        record.id = new;
        self.create(record.clone()).await?;
        self.end(old, now).await?;
        Ok(Some(record))
    }

    async fn update(
        &self,
        id: &SessionId,
        data: String,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut invocation = scripts::UPDATE.prepare_invoke();
        invocation.key(self.keys.session(id)).arg(now).arg(data);
        decode(*id, &self.invoke("update", invocation).await?)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        let key = self.keys.user(user);
        let mut conn = self.current()?;
        let members = self
            .run(
                &mut conn,
                "list_user",
                // Members still within their absolute lifetime (the score).
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(format!("({now}"))
                    .arg("+inf"),
            )
            .await?;
        let Value::Array(members) = members else {
            return Err(StoreError::Corrupt(format!(
                "unexpected reply to ZRANGE: {}",
                shape(&members)
            )));
        };
        let ids: Vec<SessionId> = members
            .iter()
            .filter_map(|m| SessionId::parse(&field_string(m)))
            .collect();
        // One load per member, all in flight together on the shared connection.
        let loads = ids.iter().map(|id| self.load(id, now));
        let mut sessions = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, loaded) in ids.iter().zip(join_all(loads).await) {
            match loaded? {
                Some(record) if record.user.as_deref() == Some(user) => sessions.push(record),
                _ => gone.push(id.to_string()),
            }
        }
        if !gone.is_empty() {
            self.run(
                &mut conn,
                "list_user",
                redis::cmd("ZREM").arg(&key).arg(&gone),
            )
            .await?;
        }
        sessions.sort_by_key(|r| (r.created_at, r.id));
        Ok(sessions)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.disconnect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_reply_is_described_by_its_kind_never_its_content() {
        let secret = b"sEcReT-session-id-and-data".to_vec();
        let replies = [
            Value::BulkString(secret.clone()),
            Value::Array(vec![Value::BulkString(secret.clone()), Value::Nil]),
            Value::SimpleString("sEcReT".to_owned()),
        ];
        for reply in &replies {
            let text = shape(reply);
            assert!(!text.contains("sEcReT"), "{text}");
        }
        assert_eq!(shape(&replies[0]), "a string of 26 bytes");
        assert_eq!(shape(&replies[1]), "an array of 2");
        let err = decode(SessionId::generate().expect("rng"), &replies[1]).expect_err("refused");
        assert!(!err.to_string().contains("sEcReT"), "{err}");
    }
}

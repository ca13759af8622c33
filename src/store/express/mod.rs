//! An Express application's sessions, in the Redis layout of connect-redis, served as the
//! application's own requests would serve them (`session_format = "express"`).
//!
//! A session is the JSON express-session wrote, under `{prefix}{sid}` (`sess:` by default),
//! with the TTL connect-redis set from its cookie. keepalive never changes it:
//!
//! - a keepalive is express-session's `touch` through connect-redis: the key's TTL moves as
//!   connect-redis would move it, the value stays (one script call for a batch of them, as for
//!   keepalive's own sessions);
//! - a logout through keepalive is `req.session.destroy()`: the key is deleted; keepalive also
//!   marks the logout for its other instances and announces it;
//! - what an instance kept through an outage goes back without overwriting the application:
//!   an existing session only gets its TTL moved later, and a missing one is written back only
//!   into a Redis that lost its data, never where the application may have destroyed it.
//!
//! Sessions are created, changed and given new ids by the application, not here: those
//! operations answer [`StoreError::Unsupported`], and the HTTP routes that would ask for them
//! are off in this mode. The connection is the Redis store's (its `Link`).

mod lifetimes;
mod primary;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::Value;

use crate::clock::{Clock, Millis, duration_millis};
use crate::config::RedisTarget as Target;
use crate::metrics::Metrics;
use crate::session::express::ExpressFormat;
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};
use crate::store::failover::{DataSet, Ended, Logouts, Over};
use crate::store::redis::{
    How, Keys, Link, LinkOptions, Touch, command_refused, failure, refuses_command,
};

use lifetimes::Lifetimes;

/// Naming and timing of the Express store.
#[derive(Debug, Clone)]
pub struct ExpressOptions {
    /// connect-redis's `prefix` (`sess:` by default).
    pub prefix: String,
    /// keepalive's own key prefix (`KEEPALIVE_REDIS_PREFIX`), for its marks and channel.
    pub own_prefix: String,
    /// How the sessions are read.
    pub format: ExpressFormat,
    /// Longest wait for one operation.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Whether each thread that asks for keepalives gets a connection of its own (see
    /// `RedisOptions::connection_per_thread`).
    pub connection_per_thread: bool,
    /// The least lifetime of a logout's mark (a session whose TTL is shorter leaves a mark this
    /// long): keepalive's absolute lifetime.
    pub mark_lifetime: Duration,
}

/// The store of an Express application's sessions.
pub struct ExpressStore {
    options: ExpressOptions,
    link: Link,
    clock: Arc<dyn Clock>,
    lifetimes: Lifetimes,
    /// The options' format, shared with each keepalive's answer without copying its user path.
    format: Arc<ExpressFormat>,
}

/// What this store does not do: the application creates and changes its sessions.
fn unsupported(what: &'static str) -> StoreError {
    StoreError::Unsupported(what)
}

impl ExpressStore {
    /// A store for the application's Redis at `target`; it connects on
    /// [`connect`](Self::connect).
    pub fn new(
        target: Target,
        options: ExpressOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let link = Link::new(
            target,
            LinkOptions {
                timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                connection_per_thread: options.connection_per_thread,
                epoch_key: Keys::new(options.own_prefix.clone()).epoch(),
                write_back_key: Keys::new(options.own_prefix.clone()).write_back(),
            },
            &scripts::TOUCH,
            metrics,
        );
        Self {
            format: Arc::new(options.format.clone()),
            options,
            link,
            clock,
            lifetimes: Lifetimes::default(),
        }
    }

    /// The key of session `id`, as connect-redis names it.
    pub fn session_key(&self, id: &SessionId) -> String {
        format!("{}{id}", self.options.prefix)
    }

    /// The key of keepalive's mark of a logout of session `id`: in the session's slot.
    pub fn mark_key(&self, id: &SessionId) -> String {
        format!(
            "{}{{{}}}:ended",
            self.options.own_prefix,
            self.session_key(id)
        )
    }

    /// The channel logouts through keepalive are announced on.
    pub fn logout_channel(&self) -> String {
        format!("{}express:ended", self.options.own_prefix)
    }

    /// How the sessions are read.
    pub fn format(&self) -> &ExpressFormat {
        &self.options.format
    }

    /// Opens a fresh connection, checks it answers, and makes it the one operations use.
    /// Returns the data set it reached.
    pub async fn connect(&self) -> Result<DataSet, StoreError> {
        self.link.connect().await
    }

    /// Forgets the connection.
    pub fn disconnect(&self) {
        self.link.disconnect();
    }

    /// Ends a session at `now` as `req.session.destroy()` would, leaving keepalive's mark and
    /// announcing it. Returns whether the session existed.
    pub async fn end(&self, id: &SessionId, _now: Millis) -> Result<bool, StoreError> {
        let mut invocation = scripts::END.prepare_invoke();
        invocation
            .key(self.session_key(id))
            .key(self.mark_key(id))
            .arg(duration_millis(self.options.mark_lifetime).max(1))
            .arg(self.logout_channel())
            .arg(id.to_string());
        Ok(matches!(
            self.link.invoke("end", invocation).await?,
            Value::Int(1)
        ))
    }

    /// Whether a session is over for keepalive: marked by a logout through keepalive, or gone
    /// from Redis, which the application's own logouts leave no other trace of.
    pub(crate) async fn over(&self, id: &SessionId) -> Result<Over, StoreError> {
        let mut invocation = scripts::OVER.prepare_invoke();
        invocation.key(self.session_key(id)).key(self.mark_key(id));
        Ok(match self.link.invoke("marker", invocation).await? {
            Value::Int(1) => Over::Marked,
            Value::Int(2) => Over::Gone,
            _ => Over::No,
        })
    }

    /// A keepalive by the touch script, which reads the session and sets the lifetime its
    /// value names in one step; what it read is learnt for the session's next keepalive.
    async fn touch_by_script(
        &self,
        id: &SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let ttl = duration_millis(self.options.format.ttl) / 1000;
        let format = Arc::clone(&self.format);
        let id_ = *id;
        let touch = Touch {
            key: self.session_key(id),
            how: How::Script(vec![ttl]),
            answer: Box::new(move |value| read(&format, id_, value, now, Left::Seconds)),
        };
        let record = self.link.touch(touch).await?;
        match &record {
            Some(record) => self
                .lifetimes
                .learn(id, self.options.format.ttl_of(&record.data)),
            None => self.lifetimes.forget(id),
        }
        Ok(record)
    }

    /// The logouts announced through keepalive, as ids.
    pub async fn subscribe_ended(&self) -> Result<Logouts, StoreError> {
        let messages = self.link.subscribe(self.logout_channel()).await?;
        Ok(Box::pin(messages.filter_map(|message| async move {
            message
                .get_payload::<String>()
                .ok()
                .and_then(|text| SessionId::parse_express(&text))
                .map(Ended::Session)
        })))
    }
}

type Reply = Result<Option<SessionRecord>, StoreError>;

fn unexpected() -> StoreError {
    StoreError::Corrupt("unexpected reply about an Express session".to_owned())
}

#[async_trait]
impl SessionStore for ExpressStore {
    async fn create(&self, _record: SessionRecord) -> Result<(), StoreError> {
        Err(unsupported(
            "creating a session (the Express application's login does)",
        ))
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        let mut invocation = scripts::LOAD.prepare_invoke();
        invocation.key(self.session_key(id));
        let value = self.link.invoke("load", invocation).await?;
        read(&self.options.format, *id, value, now, Left::Millis)
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        _idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(guess) = self.lifetimes.guess(id) else {
            return self.touch_by_script(id, now).await;
        };
        let format = Arc::clone(&self.format);
        let id_ = *id;
        let touch = Touch {
            key: self.session_key(id),
            how: How::GetEx(guess),
            answer: Box::new(move |value| read_value(&format, id_, value, guess, now)),
        };
        let reply = match self.link.touch(touch).await {
            Err(StoreError::Unsupported(what)) => {
                // From now on every keepalive is a script; said once in the log.
                if !self.lifetimes.give_up_native() {
                    tracing::warn!(
                        "[redis] Redis refused {what}: every keepalive of an Express session is \
                         now a script call, at several times the cost to Redis; upgrade Redis \
                         or allow GETEX to keepalive's user"
                    );
                }
                return self.touch_by_script(id, now).await;
            }
            other => other?,
        };
        match reply {
            Some(record) if self.options.format.ttl_of(&record.data) == guess => Ok(Some(record)),
            // The session's own lifetime is another: set by the script, from its value.
            Some(_) => self.touch_by_script(id, now).await,
            None => {
                self.lifetimes.forget(id);
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.end(id, self.clock.now()).await
    }

    async fn rotate(
        &self,
        _old: &SessionId,
        _new: SessionId,
        _now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Err(unsupported(
            "a new id for a session (the Express application's req.session.regenerate does)",
        ))
    }

    async fn update(
        &self,
        _id: &SessionId,
        _data: String,
        _now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Err(unsupported(
            "changing a session's data (the Express application does)",
        ))
    }

    async fn list_user(&self, _user: &str, _now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        Err(unsupported(
            "listing a user's sessions (connect-redis keeps no index of them)",
        ))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.disconnect();
        Ok(())
    }
}

/// How the second part of a `{value, ttl}` reply counts what is left of the key's TTL.
#[derive(Clone, Copy)]
enum Left {
    /// Seconds, as the touch script set it.
    Seconds,
    /// Milliseconds, as `PTTL` says (negative: no TTL).
    Millis,
}

fn another_type() -> StoreError {
    StoreError::Corrupt(
        "the session's key holds another type of value than connect-redis writes".to_owned(),
    )
}

/// A session's stored text, from Redis's bulk string (taken, not copied: it is the session's
/// whole value).
fn text(value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map_err(|_| StoreError::Corrupt("the session's value is not UTF-8 text".to_owned())),
        _ => Err(unexpected()),
    }
}

/// The session a `GETEX ... EX secs` reply describes, as read at `now`; nil is none.
fn read_value(
    format: &ExpressFormat,
    id: SessionId,
    value: Value,
    secs: i64,
    now: Millis,
) -> Reply {
    match value {
        Value::Nil => Ok(None),
        Value::ServerError(err) if err.code() == "WRONGTYPE" => Err(another_type()),
        Value::ServerError(err) if refuses_command(Some(err.code()), err.details()) => {
            Err(command_refused())
        }
        // Refused (a replica, a Redis loading its data): an outage, as for a script.
        Value::ServerError(err) => Err(failure(&err.into())),
        value => Ok(Some(format.record(id, text(value)?, secs, now))),
    }
}

/// The session a `{value, ttl}` reply describes, as read at `now`; nil is none.
fn read(format: &ExpressFormat, id: SessionId, value: Value, now: Millis, left: Left) -> Reply {
    match value {
        Value::Nil => Ok(None),
        Value::Int(0) => Err(another_type()),
        Value::Array(pair) if pair.len() == 2 => {
            let mut pair = pair.into_iter();
            let (Some(value), Some(Value::Int(count))) = (pair.next(), pair.next()) else {
                return Err(unexpected());
            };
            let json = text(value)?;
            let secs = match left {
                Left::Seconds => count,
                // A key without expiry (connect-redis's `disableTTL`) lives as long as its
                // cookie says.
                Left::Millis if count < 0 => format.idle_of(&json).as_secs() as i64,
                Left::Millis => count.div_euclid(1000) + i64::from(count.rem_euclid(1000) != 0),
            };
            Ok(Some(format.record(id, json, secs, now)))
        }
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests;

//! Sessions in Redis, shared by every instance.
//!
//! Each operation is one round trip (a Lua script or an atomic pipeline) over a multiplexed
//! connection that concurrent requests share, and each has a short timeout: a Redis that
//! refuses, hangs or drops never holds a request longer than that. Concurrent keepalives go
//! in one script call together (the private `batch` module), over a connection of the HTTP
//! event loop's own when they come from one (the private `per_loop` module); the connection
//! itself is the `link` module's, which the store of an Express application's sessions
//! ([`crate::store::express`]) shares. This store only reports failures; deciding what to do
//! about them is the [failover](super::failover) store's job.

mod batch;
mod connection;
mod epoch;
pub mod keys;
mod link;
mod per_loop;
mod primary;
mod scripts;
mod stream;
pub mod value;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::Value;

use crate::clock::{Clock, Millis, duration_millis};
use crate::config::RedisTarget as Target;
use crate::metrics::Metrics;
use crate::session::{OLD_ID_LOGOUT_WINDOW, SessionId, SessionRecord, SessionStore, StoreError};
use crate::store::failover::{DataSet, Ended, Logouts};

pub(crate) use batch::{How, Touch, command_refused, refuses_command};
pub use connection::Diagnosis;
pub(crate) use connection::{Conn, failure, open};
pub use keys::Keys;
pub(crate) use link::{Link, LinkOptions};

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
    /// About how many logouts the record of logouts keeps (see the `stream` module).
    pub logout_record_cap: u64,
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

    /// The keepalive as [`scripts::TOUCH`] takes it: the key, and its arguments
    /// ready-written: now, the new expiry, and the key's TTL for when it must move, half an
    /// idle timeout past that (see [`scripts`]).
    fn into_touch(self, keys: &Keys) -> Touch {
        let expires = self.now.saturating_add(self.idle_ms);
        let ttl = self.idle_ms.saturating_add(self.idle_ms / 2);
        Touch {
            key: keys.session(&self.id),
            how: How::Script(vec![self.now, expires, ttl, self.now.saturating_add(ttl)]),
            answer: Box::new(move |value| self.answer(&value)),
        }
    }
}

/// The Redis session store.
pub struct RedisStore {
    options: RedisOptions,
    keys: Keys,
    link: Link,
    clock: Arc<dyn Clock>,
}

impl RedisStore {
    /// A store for `target`; it connects on [`connect`](Self::connect).
    pub fn new(
        target: Target,
        options: RedisOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let link = Link::new(
            target,
            LinkOptions {
                timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                connection_per_thread: options.connection_per_thread,
                epoch_key: Keys::new(options.prefix.clone()).epoch(),
                write_back_key: Keys::new(options.prefix.clone()).write_back(),
            },
            &scripts::TOUCH,
            metrics,
        );
        Self {
            keys: Keys::new(options.prefix.clone()),
            options,
            link,
            clock,
        }
    }

    /// Lists a session in its user's set. A separate round trip from the session's own write:
    /// in a cluster the two keys live in different slots, which no transaction spans. It runs
    /// first, so a failure in between leaves a member without a session (dropped when the set
    /// is read), never a session its user's logout cannot find.
    ///
    /// `written_back`: the session comes from an instance's copy, kept while it could not
    /// reach Redis. Returns false, listing nothing, when its user was logged out everywhere
    /// since it was created: the copy is then of a session that ended, which the instance
    /// that logged the user out could not see (Redis did not hold it then).
    async fn index(
        &self,
        record: &SessionRecord,
        now: Millis,
        written_back: bool,
    ) -> Result<bool, StoreError> {
        let Some(user) = &record.user else {
            return Ok(true);
        };
        let one_slot = self.keys.user_keys_share_slot(user);
        let created = if written_back && one_slot {
            record.created_at.to_string()
        } else {
            String::new()
        };
        let set = self.keys.user(user);
        let ended = self.keys.user_ended(user);
        let mut invocation = scripts::INDEX.prepare_invoke();
        invocation
            .key(&set)
            // Never read without a creation time: named again where the time's key would be
            // in another slot.
            .key(if one_slot { &ended } else { &set })
            .arg(record.id.to_string())
            .arg(record.absolute_expires_at)
            .arg(now)
            .arg(created);
        let indexed = self.link.invoke("index", invocation).await?;
        if !written_back || one_slot {
            return Ok(!matches!(indexed, Value::Int(-1)));
        }
        // Listed first, then the time read: a logout that records its time after this read
        // lists the session (see `scripts::END_USER`).
        let time = self
            .link
            .run("index", redis::cmd("GET").arg(&ended))
            .await?;
        let ended_at = match &time {
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|t| t.parse::<Millis>().ok()),
            _ => None,
        };
        Ok(ended_at.is_none_or(|at| record.created_at > at))
    }

    /// Opens a fresh connection, checks it answers, and makes it the one operations use.
    /// Returns the data set it reached: the server's run id (changes when Redis restarts) and
    /// its epoch (written now if it has none; changes when Redis loses its data).
    pub async fn connect(&self) -> Result<DataSet, StoreError> {
        self.link.connect().await
    }

    /// Forgets the connection: operations fail fast until the next [`connect`](Self::connect).
    pub fn disconnect(&self) {
        self.link.disconnect();
    }

    /// Asks the current connection which data set Redis holds now; fails if there is none or
    /// Redis is silent.
    pub async fn probe(&self) -> Result<DataSet, StoreError> {
        self.link.probe().await
    }

    /// Which shared store this is, beyond Redis's run id: where Redis is (without credentials),
    /// the database and the key prefix. The same server seen under another database or prefix
    /// holds none of the sessions, though its run id is the same.
    pub fn place(&self) -> String {
        self.link.place(&format!("prefix={}", self.options.prefix))
    }
}

impl RedisStore {
    /// Subscribes to the logouts every instance publishes: a stream of the ids ended, until
    /// the connection drops. A connection of its own (a subscribed connection takes no other
    /// command); in a cluster, to any node, since every node relays every message. Messages
    /// that name no session are left out.
    pub async fn subscribe_ended(&self) -> Result<Logouts, StoreError> {
        let messages = self.link.subscribe(self.keys.logout_channel()).await?;
        Ok(Box::pin(messages.filter_map(|message| async move {
            let ended = message
                .get_payload::<String>()
                .ok()
                .and_then(|text| logout_message(&text));
            if ended.is_none() {
                tracing::debug!("[redis] ignored a logout message that names no session");
            }
            ended
        })))
    }

    /// The ids in `user`'s set within their absolute lifetime at `now`, whether Redis still
    /// holds their sessions or not.
    pub async fn user_ids(&self, user: &str, now: Millis) -> Result<Vec<SessionId>, StoreError> {
        let members = self
            .link
            .run(
                "user_ids",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys.user(user))
                    .arg(format!("({now}"))
                    .arg("+inf"),
            )
            .await?;
        member_ids(&members, "ZRANGEBYSCORE")
    }

    /// Announces that every session of `user` created at or before `at` ended.
    pub async fn announce_user_ended(&self, user: &str, at: Millis) -> Result<(), StoreError> {
        let message = user_logout_message(user, at);
        self.link
            .run(
                "announce_user_ended",
                redis::cmd("PUBLISH")
                    .arg(self.keys.logout_channel())
                    .arg(&message),
            )
            .await?;
        self.record_logout(&message).await
    }

    /// Records that `user` was logged out everywhere at `at`, so that no instance writes back
    /// a copy of a session of theirs created by then, and returns the ids in their set then,
    /// as [`user_ids`](Self::user_ids) does.
    pub async fn mark_user_ended(
        &self,
        user: &str,
        at: Millis,
    ) -> Result<Vec<SessionId>, StoreError> {
        let one_slot = self.keys.user_keys_share_slot(user);
        let ended = self.keys.user_ended(user);
        let mut invocation = scripts::END_USER.prepare_invoke();
        invocation
            .key(&ended)
            .key(if one_slot {
                self.keys.user(user)
            } else {
                ended.clone()
            })
            .arg(at)
            .arg(duration_millis(self.options.absolute_lifetime).max(1))
            .arg(at)
            .arg(if one_slot { "1" } else { "" });
        let members = self.link.invoke("end_user", invocation).await?;
        if one_slot {
            return member_ids(&members, "the script of \"log out everywhere\"");
        }
        // Recorded, then the set read (see `scripts::END_USER`).
        self.user_ids(user, at).await
    }

    /// Writes back a session kept locally unless Redis has newer activity or its logout, or
    /// its user was logged out everywhere since it was created. Returns whether it was
    /// written.
    pub async fn merge(&self, record: &SessionRecord, now: Millis) -> Result<bool, StoreError> {
        if !self.index(record, now, true).await? {
            // Ended by its user's "log out everywhere": marked like any logout, so that every
            // instance ends its copy and none answers the session as one Redis may have lost.
            self.end_recorded(&record.id, now).await?;
            return Ok(false);
        }
        let mut invocation = scripts::MERGE.prepare_invoke();
        invocation
            .key(self.keys.session(&record.id))
            .key(self.keys.marker(&record.id))
            .arg(value::encode(record, record.expires_at))
            .arg(record.last_seen_at)
            .arg(record.expires_at)
            .arg(now);
        let written = self.link.invoke("merge", invocation).await?;
        Ok(matches!(written, Value::Int(1)))
    }

    /// Whether a session's logout marker is in Redis: it was ended, here or elsewhere, within
    /// its absolute lifetime.
    pub async fn is_ended(&self, id: &SessionId) -> Result<bool, StoreError> {
        let found = self
            .link
            .run("marker", redis::cmd("EXISTS").arg(self.keys.marker(id)))
            .await?;
        Ok(matches!(found, Value::Int(1)))
    }

    /// Ends a session at `now`, leaving the logout marker.
    pub async fn end(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        self.end_marking(id, now, true).await
    }

    /// Ends this one session at `now`, leaving the logout marker, without following its
    /// rotations: a logout (or a rotation's end of the old id) an instance recorded and now
    /// writes back. A rotation recorded so must not end the id it rotated to, and a logout an
    /// instance made left a record of each id it ended.
    pub async fn end_recorded(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        Ok(self.end_once(id, now, true, None).await?.0)
    }

    /// Ends a session at `now`, leaving the logout marker if it existed or if `mark_unknown`;
    /// an unknown id is announced only when it is marked. A session whose id was rotated
    /// away less than [`OLD_ID_LOGOUT_WINDOW`] ago ends under its new id too (and so on, for
    /// a session rotated again meanwhile): the logout was sent before the browser had the new
    /// cookie. Returns whether a session existed.
    pub async fn end_marking(
        &self,
        id: &SessionId,
        now: Millis,
        mark_unknown: bool,
    ) -> Result<bool, StoreError> {
        let (mut existed, mut next) = self.end_once(id, now, mark_unknown, None).await?;
        // Each step is a rotation within the window: a handful at most, bounded anyway.
        for _ in 0..MAX_SUCCESSORS {
            let Some(successor) = next.take() else { break };
            let (ended, after) = self.end_once(&successor, now, true, None).await?;
            existed |= ended;
            next = after;
        }
        Ok(existed)
    }

    /// One run of the `END` script: for a rotation, `successor` is the new id and until when
    /// a logout of `id` ends it too. Returns whether the session existed and, for a logout,
    /// the new id its marker names within that time.
    async fn end_once(
        &self,
        id: &SessionId,
        now: Millis,
        mark_unknown: bool,
        successor: Option<(&SessionId, Millis)>,
    ) -> Result<(bool, Option<SessionId>), StoreError> {
        let unknown_ttl = if mark_unknown {
            duration_millis(self.options.absolute_lifetime)
        } else {
            0
        };
        let (new, until) =
            successor.map_or((String::new(), 0), |(new, until)| (new.to_string(), until));
        let mut invocation = scripts::END.prepare_invoke();
        invocation
            .key(self.keys.session(id))
            .key(self.keys.marker(id))
            .arg(now)
            .arg(unknown_ttl)
            .arg(self.keys.logout_channel())
            .arg(id.to_string())
            .arg(new)
            .arg(until);
        match self.link.invoke("end", invocation).await? {
            Value::Array(reply) if reply.len() == 3 => {
                let existed = matches!(reply[0], Value::Int(1));
                if matches!(reply[2], Value::Int(1)) {
                    self.record_logout(&id.to_string()).await?;
                }
                Ok((existed, SessionId::parse(&field_string(&reply[1]))))
            }
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply to a logout: {}",
                shape(&other)
            ))),
        }
    }
}

/// Most rotations a logout follows from the id it names: within [`OLD_ID_LOGOUT_WINDOW`] a
/// session is rarely rotated more than once.
const MAX_SUCCESSORS: usize = 16;

/// The message that announces "log out everywhere" for `user` at `at` on the logout channel,
/// next to the ids of single logouts: a user id has no space, a session id no space either.
fn user_logout_message(user: &str, at: Millis) -> String {
    format!("user {at} {user}")
}

/// What a message on the logout channel announces, if it is one keepalive sends.
fn logout_message(text: &str) -> Option<Ended> {
    match text.strip_prefix("user ") {
        Some(rest) => {
            let (at, user) = rest.split_once(' ')?;
            Some(Ended::User {
                user: user.to_owned(),
                at: at.parse().ok()?,
            })
        }
        None => SessionId::parse(text).map(Ended::Session),
    }
}

/// The session ids of a user's set, as a script or `ZRANGEBYSCORE` (`what`) returned them.
fn member_ids(members: &Value, what: &str) -> Result<Vec<SessionId>, StoreError> {
    let Value::Array(members) = members else {
        return Err(StoreError::Corrupt(format!(
            "unexpected reply to {what}: {}",
            shape(members)
        )));
    };
    Ok(members
        .iter()
        .filter_map(|m| SessionId::parse(&field_string(m)))
        .collect())
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
        self.index(&record, self.clock.now(), false).await?;
        let key = self.keys.session(&record.id);
        let ttl = (record.expires_at - record.created_at).max(1);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(value::encode(&record, record.expires_at))
            .arg("PX")
            .arg(ttl);
        self.link.run("create", &mut set).await?;
        Ok(())
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        let value = self
            .link
            .run("load", redis::cmd("GET").arg(self.keys.session(id)))
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
        self.link.touch(touch.into_touch(&self.keys)).await
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
        // The old id's marker names the new one for a while, so a logout of the old id that
        // comes just after ends the new one too. If the old session is gone by now, a logout
        // came first: the new id ends as well, and the rotation answers as for an ended
        // session. Either way a logout racing the rotation holds under both ids.
        let until = now.saturating_add(duration_millis(OLD_ID_LOGOUT_WINDOW));
        let (existed, _) = self.end_once(old, now, true, Some((&new, until))).await?;
        if !existed {
            self.end(&new, now).await?;
            return Ok(None);
        }
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
        decode(*id, &self.link.invoke("update", invocation).await?)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        let key = self.keys.user(user);
        // Members still within their absolute lifetime (the score).
        let ids = self.user_ids(user, now).await?;
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
            self.link
                .run("list_user", redis::cmd("ZREM").arg(&key).arg(&gone))
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

    #[test]
    fn logout_messages_name_a_session_or_a_user_and_nothing_else() {
        let id = SessionId::generate().expect("rng");
        assert_eq!(logout_message(&id.to_string()), Some(Ended::Session(id)));
        let text = user_logout_message("ana@example.com", 1_700_000_000_000);
        assert_eq!(
            logout_message(&text),
            Some(Ended::User {
                user: "ana@example.com".to_owned(),
                at: 1_700_000_000_000
            })
        );
        for junk in ["", "user", "user 12", "user x ana", "not an id"] {
            assert_eq!(logout_message(junk), None, "{junk:?}");
        }
    }
}

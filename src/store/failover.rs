//! Redis first, the local store as mirror and fallback, and the re-sync after an outage.
//!
//! While Redis answers, every operation goes to Redis and what it returns is mirrored into the
//! local store (batched, not flushed: Redis holds the primary copy; extensions only once the
//! copy trails by half an idle timeout). The first operation that
//! fails or times out marks Redis offline: from then on operations go straight to the local
//! store, which keeps every session this instance created or touched alive; new sessions and
//! logouts are written there durably, and their ids are remembered as changed.
//!
//! A background task owns the link to Redis. While online it probes Redis every probe interval
//! (a silent Redis is noticed even without traffic) and watches its run id (a restarted Redis
//! may have lost everything). While offline it reconnects with exponential backoff and jitter;
//! when Redis answers it writes back what changed during the outage (new sessions, extensions,
//! logouts; the newest activity wins, a logout always wins), and all live local sessions when
//! Redis came back with a new run id. Only then does it report Redis as ok: the last changed
//! ids are drained under the same lock that flips the state, so no change slips between the
//! re-sync and the return to Redis.
//!
//! An instance starts as if an outage had just begun, so its first connect is a re-sync too.
//! After a clean stop while Redis answered, the local store holds which store that was (where,
//! which database and key prefix), the run id of its Redis and the time of the stop; if the
//! same store with the same Redis answers at start, only what changed after the stop is
//! written back. Otherwise (a crash, a stop during an outage, another database or prefix, a
//! restarted Redis) every live session is, as the instance cannot tell what Redis lacks.
//!
//! A second task hears the logouts other instances publish and ends the local copies of those
//! sessions; after each subscription it also looks up, by their markers, the logouts it could
//! not hear before.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, join_all};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis};
use crate::metrics::Metrics;
use crate::session::{SessionId, SessionRecord, SessionStore, SharedStatus, StoreError};
use crate::task::Tasks;

use super::local::{LocalStore, SyncPoint};
use super::redis::RedisStore;

/// Changes written back concurrently during a re-sync (they share one pipelined connection).
const RESYNC_CONCURRENCY: usize = 64;
/// Slack subtracted from the outage start when choosing what to write back: a change made
/// just before Redis was declared offline may not have reached it.
const RESYNC_SLACK_MS: Millis = 2_000;
/// First wait before reconnecting.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Timing of the link to Redis.
#[derive(Debug, Clone, Copy)]
pub struct FailoverOptions {
    /// Period of the probe while Redis answers.
    pub probe_interval: Duration,
    /// Longest wait between two reconnection attempts.
    pub backoff_max: Duration,
    /// How long a logout made during an outage is remembered for Redis at most (a session
    /// cannot outlive it).
    pub absolute_lifetime: Duration,
}

/// State shared by request handlers and the link task.
struct Shared {
    redis: RedisStore,
    local: LocalStore,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Whether Redis answers: the flag health and "log out everywhere" read.
    status: SharedStatus,
    outage_began: AtomicI64,
    /// Sessions changed while offline and not yet written back.
    dirty: Mutex<HashSet<SessionId>>,
    /// Run id of the Redis the local changes were last reconciled with.
    run_id: Mutex<Option<String>>,
    /// Until the first re-sync after start: when the last clean stop recorded that every local
    /// change had reached the Redis of `run_id` (see [`SyncPoint`]). That re-sync then writes
    /// back only what changed since, instead of every live session.
    stopped_at: Mutex<Option<Millis>>,
    /// Told each time a re-sync brings Redis back: the logout listener subscribes again, in
    /// case its own connection went silent without closing.
    reconnected: tokio::sync::Notify,
    absolute_lifetime: Duration,
}

/// The failover store.
pub struct FailoverStore {
    shared: Arc<Shared>,
    /// The link and the logout listener.
    tasks: tokio::sync::Mutex<Tasks>,
}

impl FailoverStore {
    /// Composes the two stores, tries Redis once (bounded by its timeouts), and starts the
    /// task that keeps the link.
    pub async fn start(
        redis: RedisStore,
        local: LocalStore,
        options: FailoverOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = clock.now();
        // Read before the first connect, which it shortens: see `reconnect`.
        let sync_point = match local.take_sync_point(&redis.identity()).await {
            Ok(point) => point,
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot read where the local store stood with Redis at the last stop: {err}; every live local session is written back");
                None
            }
        };
        let (run_id, stopped_at) = match sync_point {
            Some(SyncPoint { run_id, at, .. }) => (Some(run_id), Some(at)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            redis,
            local,
            clock,
            metrics,
            status: SharedStatus::offline(),
            outage_began: AtomicI64::new(now),
            dirty: Mutex::new(HashSet::new()),
            run_id: Mutex::new(run_id),
            stopped_at: Mutex::new(stopped_at),
            reconnected: tokio::sync::Notify::new(),
            absolute_lifetime: options.absolute_lifetime,
        });
        shared.metrics.redis_up.set(0);
        if let Err(err) = shared.reconnect().await {
            tracing::warn!(reason = %err, "[redis] unreachable at start: {err}; degraded mode on: sessions are served from the local store until Redis answers");
        }
        let mut tasks = Tasks::new();
        let linked = Arc::clone(&shared);
        tasks.spawn("redis link", |stop| link(linked, options, stop));
        let listening = Arc::clone(&shared);
        tasks.spawn("logout listener", |stop| listen(listening, options, stop));
        Self {
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
        }
    }

    /// The local store behind this one.
    pub fn local(&self) -> &LocalStore {
        &self.shared.local
    }

    /// Whether Redis answers, as this store sees it: for the health check.
    pub fn status(&self) -> SharedStatus {
        self.shared.status.clone()
    }
}

impl Shared {
    fn is_online(&self) -> bool {
        self.status.is_online()
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, HashSet<SessionId>> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks Redis offline; logs and counts the transition once.
    fn go_offline(&self, reason: &str) {
        if self.status.set_online(false) {
            self.outage_began.store(self.clock.now(), Ordering::Release);
            self.redis.disconnect();
            self.metrics.redis_up.set(0);
            self.metrics.redis_outages_total.inc();
            tracing::warn!("[redis] connection lost: {reason}");
            tracing::warn!(
                "[redis] degraded mode on: sessions are served from the local store until Redis answers"
            );
        }
    }

    /// At a clean stop, while Redis answers and nothing waits to be written back: records in
    /// the local store that Redis has every change, so the next start with the same Redis
    /// writes back only what changes after now. Without it (a crash, a stop during an outage)
    /// the next start writes back every live session, which is always safe, only slower.
    async fn record_sync_point(&self) {
        let run_id = self
            .run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(run_id) = run_id else { return };
        if !self.is_online() || !self.dirty().is_empty() {
            return;
        }
        let point = SyncPoint {
            store: self.redis.identity(),
            run_id,
            at: self.clock.now(),
        };
        match self.local.save_sync_point(point).await {
            Ok(()) => tracing::info!(
                "[redis] every local change is in Redis: the next start writes back only what changes after now"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot record that every local change is in Redis: {err}; the next start writes every live session back")
            }
        }
    }

    /// An operation failed on Redis: a corrupt record is the caller's error; anything else
    /// is an outage.
    fn failed(&self, err: StoreError) -> Result<(), StoreError> {
        match err {
            StoreError::Corrupt(_) => Err(err),
            other => {
                self.go_offline(&other.to_string());
                Ok(())
            }
        }
    }

    /// Keeps the local copy of a session Redis just extended, without rewriting it on every
    /// keepalive: the copy is refreshed only once its expiry trails Redis's by half an idle
    /// timeout. It stays live (so the purge keeps it and an outage finds it), and an outage
    /// forgives the lag (see [`LocalStore::touch_in_outage`]), while the local store writes
    /// each busy session once per half idle timeout instead of once per flush.
    fn mirror_extension(&self, record: &SessionRecord, idle: Duration) -> Result<(), StoreError> {
        let slack = crate::clock::duration_millis(idle) / 2;
        let fresh = self
            .local
            .expires_at_of(&record.id)?
            .is_some_and(|local| local >= record.expires_at.saturating_sub(slack));
        if !fresh {
            self.local.mirror(record.clone())?;
        }
        Ok(())
    }

    /// Records a logout Redis has: it ends the local copy, and is written again should Redis
    /// come back empty (when the marker that keeps other instances' copies out is gone).
    fn remember_end(&self, id: &SessionId, now: Millis) -> Result<(), StoreError> {
        let keep_until = now.saturating_add(crate::clock::duration_millis(self.absolute_lifetime));
        self.local.remember_end(id, now, keep_until)
    }

    /// Ends the local copies of sessions whose logout this instance did not hear: published
    /// while it was not subscribed (it was stopped, offline, or between two subscriptions).
    /// Their markers tell: every live local copy is checked once the listener is subscribed,
    /// so that a logout is either heard or found. Returns how many copies it ended.
    async fn catch_up(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut ended = 0;
        for chunk in self.local.live_ids(now).await?.chunks(RESYNC_CONCURRENCY) {
            let checks: Vec<_> = chunk.iter().map(|id| self.redis.is_ended(id)).collect();
            for (id, is_ended) in chunk.iter().zip(join_all(checks).await) {
                let is_ended = is_ended.inspect_err(|err| {
                    // An outage like any other; the re-sync that ends it leads to a new
                    // subscription, and so to a new look-up.
                    self.go_offline(&err.to_string());
                })?;
                if is_ended && self.local.ended_elsewhere(id, now)? {
                    self.metrics.redis_remote_logouts_total.inc();
                    ended += 1;
                }
            }
        }
        Ok(ended)
    }

    /// Another instance ended a session (its logout was published): end the local copy.
    fn ended_elsewhere(&self, payload: &str) {
        let Some(id) = SessionId::parse(payload) else {
            tracing::debug!("[redis] ignored a logout message that names no session");
            return;
        };
        match self.local.ended_elsewhere(&id, self.clock.now()) {
            Ok(true) => self.metrics.redis_remote_logouts_total.inc(),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot end the local copy of a session another instance ended")
            }
        }
    }

    /// Ends a session in the local store while Redis is offline, recording the logout durably
    /// so it reaches Redis later, even across a restart. Returns whether it existed.
    async fn end_offline(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        let keep_until = now.saturating_add(crate::clock::duration_millis(self.absolute_lifetime));
        let existed = self.local.end_offline(id, now, keep_until).await?;
        self.changed(*id).await;
        Ok(existed)
    }

    /// Remembers a change made while offline. If Redis came back in the meantime, the change
    /// missed the re-sync, so it is written back here.
    async fn changed(&self, id: SessionId) {
        {
            let mut dirty = self.dirty();
            if !self.is_online() {
                dirty.insert(id);
                return;
            }
        }
        if let Err(err) = self.write_back(&id).await {
            self.go_offline(&err.to_string());
            self.dirty().insert(id);
        }
    }

    /// Writes the local state of one session to Redis: the session if it lives, its logout if
    /// it is gone. Returns (sessions written, logouts written).
    async fn write_back(&self, id: &SessionId) -> Result<(u64, u64), StoreError> {
        let now = self.clock.now();
        match self.local.get_any(id)? {
            Some(record) if record.is_live(now) => {
                Ok((u64::from(self.redis.merge(&record, now).await?), 0))
            }
            Some(_) => Ok((0, 0)),
            None => {
                self.redis.end(id, now).await?;
                Ok((0, 1))
            }
        }
    }

    /// Connects, writes back what changed, and only then reports Redis as ok.
    async fn reconnect(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let run_id = self.redis.connect().await?;
        let known = self
            .run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let same_redis = known.as_deref() == Some(run_id.as_str());
        // The same Redis as at the last clean stop has every change made before that stop: for
        // the first re-sync after start, the outage began then.
        let stopped_at = *self.stopped_at.lock().unwrap_or_else(|p| p.into_inner());
        let began = self.outage_began.load(Ordering::Acquire);
        let since =
            same_redis.then(|| stopped_at.map_or(began, |at| at.min(began)) - RESYNC_SLACK_MS);
        let what = match (same_redis, stopped_at) {
            (true, Some(_)) => {
                "what changed since this instance last stopped (the same Redis has the rest)"
            }
            (true, None) => "what changed during the outage",
            (false, _) => "every live local session",
        };
        tracing::info!(run_id = %run_id, "[redis] connected; writing back {what}");

        // What was written back, by id: a session that changes again while the re-sync runs is
        // written twice but counted once, so the counts are sessions and logouts, not writes.
        let mut sessions = HashSet::new();
        let mut logouts = HashSet::new();

        // Logouts first: a session another instance still holds a copy of is refused by the
        // marker from then on, even when Redis came back empty.
        let now = self.clock.now();
        let ended = self.local.ended_since(since).await?;
        for chunk in ended.chunks(RESYNC_CONCURRENCY) {
            let writes: Vec<BoxFuture<'_, Result<bool, StoreError>>> = chunk
                .iter()
                .map(|id| self.redis.end(id, now).boxed())
                .collect();
            for (id, written) in chunk.iter().zip(join_all(writes).await) {
                written?;
                logouts.insert(*id);
            }
        }

        let records = self.local.changed_since(since, now).await?;
        for chunk in records.chunks(RESYNC_CONCURRENCY) {
            let writes: Vec<BoxFuture<'_, Result<bool, StoreError>>> = chunk
                .iter()
                .map(|r| self.redis.merge(r, now).boxed())
                .collect();
            for (record, written) in chunk.iter().zip(join_all(writes).await) {
                if written? {
                    sessions.insert(record.id);
                }
            }
        }

        loop {
            let batch: Vec<SessionId> = {
                let mut dirty = self.dirty();
                if dirty.is_empty() {
                    self.status.set_online(true);
                    break;
                }
                dirty.drain().collect()
            };
            let mut failure = None;
            for chunk in batch.chunks(RESYNC_CONCURRENCY) {
                let writes: Vec<BoxFuture<'_, Result<(u64, u64), StoreError>>> =
                    chunk.iter().map(|id| self.write_back(id).boxed()).collect();
                for (id, result) in chunk.iter().zip(join_all(writes).await) {
                    match result {
                        Ok((s, l)) => {
                            if s > 0 {
                                sessions.insert(*id);
                            }
                            if l > 0 {
                                logouts.insert(*id);
                            }
                        }
                        Err(err) => failure = Some(err),
                    }
                }
            }
            if let Some(err) = failure {
                // Nothing is lost: put the whole batch back for the next attempt.
                self.dirty().extend(batch);
                self.redis.disconnect();
                return Err(err);
            }
        }
        *self.run_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_id);
        *self.stopped_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.reconnected.notify_waiters();
        self.metrics.redis_up.set(1);
        let (sessions, logouts) = (sessions.len() as u64, logouts.len() as u64);
        self.metrics.redis_resynced_sessions_total.inc_by(sessions);
        self.metrics.redis_resynced_logouts_total.inc_by(logouts);
        tracing::info!(
            sessions,
            logouts,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "[redis] re-sync done: {sessions} sessions and {logouts} logouts written back; sessions live in Redis"
        );
        Ok(())
    }
}

/// Waits `base/2 + random(base/2)`: spread out so many instances do not reconnect in step.
fn jittered(base: Duration) -> Duration {
    let fraction = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    base / 2 + base.mul_f64(fraction / 2.0)
}

/// The task that owns the link to Redis.
async fn link(shared: Arc<Shared>, options: FailoverOptions, stop: CancellationToken) {
    let mut backoff = BACKOFF_BASE;
    let mut attempts = 0u32;
    loop {
        if shared.is_online() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(options.probe_interval) => {}
            }
            if !shared.is_online() {
                continue;
            }
            match shared.redis.probe().await {
                Ok(run_id) => {
                    let known = shared
                        .run_id
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if known.as_deref() != Some(run_id.as_str()) {
                        shared.go_offline(
                            "Redis restarted (its run id changed) and may have lost sessions",
                        );
                    }
                }
                Err(err) => shared.go_offline(&err.to_string()),
            }
            backoff = BACKOFF_BASE;
            attempts = 0;
        } else {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(jittered(backoff)) => {}
            }
            match shared.reconnect().await {
                Ok(()) => {
                    backoff = BACKOFF_BASE;
                    attempts = 0;
                }
                Err(err) => {
                    attempts += 1;
                    // Every attempt would flood the log during a long outage; say it now and then.
                    if attempts.is_power_of_two() {
                        tracing::warn!(attempts, "[redis] still offline: {err}");
                    }
                    backoff = (backoff * 2).min(options.backoff_max);
                }
            }
        }
    }
}

/// The task that hears other instances' logouts and ends the local copies of those sessions,
/// so that a later outage, when this instance answers from its local store alone, cannot
/// revive them. Subscribed while Redis answers; after each subscription it looks up the
/// logouts it could not hear before (see [`Shared::catch_up`]).
async fn listen(shared: Arc<Shared>, options: FailoverOptions, stop: CancellationToken) {
    loop {
        if !shared.is_online() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(options.probe_interval) => continue,
            }
        }
        let subscribed = tokio::select! {
            () = stop.cancelled() => break,
            subscribed = shared.redis.subscribe_ended() => subscribed,
        };
        let mut messages = match subscribed {
            Ok(messages) => messages,
            Err(err) => {
                tracing::debug!(reason = %err, "[redis] cannot subscribe to logouts yet");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(jittered(options.probe_interval)) => continue,
                }
            }
        };
        // Messages published meanwhile wait in the subscription.
        let caught_up = tokio::select! {
            () = stop.cancelled() => break,
            caught_up = shared.catch_up() => caught_up,
        };
        match caught_up {
            Ok(0) => {}
            Ok(ended) => tracing::info!(
                ended,
                "[redis] {ended} local session copies ended: logged out elsewhere while this instance was not listening"
            ),
            Err(err) if !shared.is_online() => {
                tracing::debug!(reason = %err, "[redis] logouts missed not looked up: Redis went offline; looked up again once it is back")
            }
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot look up the logouts missed while not listening: {err}; the local store (KEEPALIVE_DATA_DIR) failed, so a session logged out elsewhere meanwhile could be served from its copy in a later outage; the look-up runs again after the next reconnection or restart")
            }
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.reconnected.notified() => break,
                message = messages.next() => match message {
                    Some(message) => match message.get_payload::<String>() {
                        Ok(payload) => shared.ended_elsewhere(&payload),
                        Err(_) => tracing::debug!("[redis] ignored a logout message that is not text"),
                    },
                    // The connection closed (Redis went away): subscribe again once it is back.
                    None => break,
                },
            }
        }
    }
}

#[async_trait]
impl SessionStore for FailoverStore {
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.create(record.clone()).await {
                Ok(()) => return s.local.mirror(record),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let id = record.id;
        s.local.create(record).await?;
        s.changed(id).await;
        Ok(())
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.load(id, now).await {
                Ok(record) => return Ok(record),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        s.local.load(id, now).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.touch(id, now, idle).await {
                Ok(Some(record)) => {
                    s.mirror_extension(&record, idle)?;
                    return Ok(Some(record));
                }
                Ok(None) => {
                    // Gone from Redis (expired, ended elsewhere): drop a stale local copy, if any,
                    // so a later outage cannot revive it. Unknown ids cost no write.
                    if s.local.get_any(id)?.is_some() {
                        s.local.forget(id)?;
                    }
                    return Ok(None);
                }
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let outage_began = s.outage_began.load(Ordering::Acquire);
        let record = s.local.touch_in_outage(id, now, idle, outage_began)?;
        if record.is_some() {
            s.changed(*id).await;
        }
        Ok(record)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            let now = s.clock.now();
            match s.redis.end(id, now).await {
                Ok(existed) => {
                    s.remember_end(id, now)?;
                    return Ok(existed);
                }
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        s.end_offline(id, s.clock.now()).await
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.rotate(old, new, now).await {
                Ok(Some(record)) => {
                    s.local.mirror(record.clone())?;
                    s.remember_end(old, now)?;
                    return Ok(Some(record));
                }
                Ok(None) => return Ok(None),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let Some(record) = s.local.rotate(old, new, now).await? else {
            return Ok(None);
        };
        // The old id's end is recorded for Redis, which still knows it.
        s.end_offline(old, now).await?;
        s.changed(new).await;
        Ok(Some(record))
    }

    async fn update(
        &self,
        id: &SessionId,
        data: String,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.update(id, data.clone(), now).await {
                Ok(Some(record)) => {
                    s.local.mirror(record.clone())?;
                    return Ok(Some(record));
                }
                Ok(None) => return Ok(None),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let record = s.local.update(id, data, now).await?;
        if record.is_some() {
            s.changed(*id).await;
        }
        Ok(record)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.redis.list_user(user, now).await {
                Ok(sessions) => return Ok(sessions),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        s.local.list_user(user, now).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.shared.local.flush().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.tasks.lock().await.stop().await;
        self.shared.record_sync_point().await;
        self.shared.redis.disconnect();
        self.shared.local.close().await
    }
}

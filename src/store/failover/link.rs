//! The link to the primary: the task that probes it while it answers and reconnects, with
//! backoff and jitter, while it does not; and the re-sync that writes back what changed
//! meanwhile before the primary is reported as ok again.
//!
//! While online the task probes every probe interval (a silent primary is noticed even
//! without traffic) and watches the data set's identity (Redis's run id: a restarted Redis may
//! have lost everything; its epoch: a Redis that lost its data without restarting, by
//! `FLUSHALL`, eviction or a failover to a replica that missed writes, is answered the same
//! way). A re-sync writes back, logouts first, then the sessions seen since the
//! outage began (the newest activity wins, a logout always wins), or every live copy when the
//! primary came back with another data set; then it drains the ids changed while it ran, and
//! the last, empty, drain flips the state under the journal's lock.
//!
//! An instance starts as if an outage had just begun, so its first connect is a re-sync too.
//! A clean stop while the primary answers leaves a note in the mirror: which store it was, its
//! data set, and the time. If the same store with the same data set answers at the next start,
//! only what changed after that time is written back; otherwise (a crash, a stop during an
//! outage, another database or prefix, a restarted Redis, a lost epoch) every live copy is, as
//! the instance cannot tell what the primary lacks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};

use super::{DataSet, FailoverOptions, Shared};

/// Changes written back concurrently during a re-sync (they share one pipelined connection).
const RESYNC_CONCURRENCY: usize = 64;
/// Slack subtracted from the outage start when choosing what to write back: a change made
/// just before the primary was declared offline may not have reached it. (A clean stop's time
/// needs none; see `resync`.)
const RESYNC_SLACK_MS: Millis = 2_000;
/// First wait before reconnecting.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// How long after Redis was last seen losing keys (evicting them, or coming back without its
/// data) a session missing from it may be one it lost: time for the instances that hold a copy
/// to notice (one probe interval and the Redis timeout, by default 600 ms; or their next
/// reconnection, within the backoff's 1 s) and put it back. The same after an outage this
/// instance saw end: a session created or kept alive during it by an instance still offline
/// is missing from Redis (or expired there) until that instance reconnects and writes it back.
const LOSS_DOUBT_MS: Millis = 2_000;
/// How long the notice that this instance puts back sessions Redis lost lasts: it is renewed
/// every [`NOTICE_RENEW`] while the write-back runs, and must outlast a chunk's writes between
/// two renewals (each bounded by the Redis timeout), then lapses soon after the last.
const NOTICE_LASTS: Duration = Duration::from_secs(3);
/// How often the notice is renewed while the write-back runs.
const NOTICE_RENEW: Duration = Duration::from_secs(1);
/// The mirror's note of a clean stop.
const STOP_NOTE: &str = "failover.clean-stop";
/// The mirror's note of the data set the local changes were last reconciled with.
const RECONCILED_NOTE: &str = "failover.reconciled";

/// What a probe found of the primary's data set.
pub(super) enum Checked {
    /// The one the local changes were reconciled with.
    Same(DataSet),
    /// Another one (Redis restarted, or lost its data without restarting), for the reason
    /// given: an outage, though Redis answers.
    Other(&'static str),
    /// No answer: an outage now.
    Silent,
}

/// What a session missing from Redis may mean, as far as this instance can tell.
#[derive(Debug, Clone, Copy)]
pub(super) enum Doubt {
    /// Redis kept its data: the session ended, expired, or never was.
    None,
    /// Redis lost keys lately (evicting, or its data set changed) or an instance says it puts
    /// back what Redis lost: only a logout's mark tells an ended session from a lost one.
    Lost,
    /// Redis answers with another data set than the one reconciled with, for the reason
    /// given: this instance cannot tell until its re-sync, and must go offline (the caller's
    /// to do, see [`Shared::probe_data_set`]).
    Unknown(&'static str),
    /// Redis does not answer: this instance is offline now.
    Silent,
}

/// This instance's notice to the others that it puts back sessions Redis lost: while it is
/// there, an instance without a copy of a session missing from Redis cannot tell it from one
/// this instance is about to put back, however long the write-back takes (the time window
/// after a loss, [`LOSS_DOUBT_MS`], covers only the time to notice it).
#[derive(Default)]
pub(super) struct Notice {
    renewed: Option<Instant>,
}

impl Notice {
    /// Renews the notice if it was not lately.
    pub(super) async fn renew(&mut self, shared: &Shared) -> Result<(), StoreError> {
        if self.renewed.is_some_and(|at| at.elapsed() < NOTICE_RENEW) {
            return Ok(());
        }
        shared.primary.announce_write_back(NOTICE_LASTS).await?;
        self.renewed = Some(Instant::now());
        Ok(())
    }
}

/// What the link knows of the primary's data set.
#[derive(Default)]
pub(super) struct LinkState {
    /// The data set the local changes were last reconciled with.
    data_set: Mutex<Option<DataSet>>,
    /// The server's `evicted_keys` when the local sessions were last written back.
    evicted: AtomicU64,
    /// When Redis was last seen losing keys (0: never): evicting them, or found without its
    /// data at a reconnection; or when this instance came back from an outage, after which
    /// Redis may lack what other instances still offline hold.
    losses_seen: AtomicI64,
    /// Until the first re-sync after start: when the last clean stop recorded that every local
    /// change had reached the data set of `data_set`. That re-sync then writes back only what
    /// changed since, instead of every live copy.
    stopped_at: Mutex<Option<Millis>>,
    /// This instance started without a clean stop's note but knows the data set it had
    /// reconciled with: until its first re-sync is done, every live copy goes back (what
    /// changed before the crash is not known), but into a Redis that kept its data, where a
    /// session gone was ended (see `Primary::merge`).
    crashed: std::sync::atomic::AtomicBool,
    /// Told each time a re-sync brings the primary back: the logout listener subscribes
    /// again, in case its own connection went silent without closing.
    pub(super) reconnected: tokio::sync::Notify,
    /// Told when a request finds the primary gone: the link task starts reconnecting at once
    /// instead of at the end of its probe interval.
    pub(super) lost: tokio::sync::Notify,
}

impl LinkState {
    /// The data set the local changes were last reconciled with.
    pub(super) fn data_set(&self) -> Option<DataSet> {
        self.data_set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_data_set(&self, data_set: Option<DataSet>) {
        if let Some(data_set) = &data_set {
            self.evicted.store(data_set.evicted, Ordering::Release);
        }
        *self.data_set.lock().unwrap_or_else(|p| p.into_inner()) = data_set;
    }

    /// Whether the server evicted keys since the local sessions were last written back (a
    /// count that went down was reset: `CONFIG RESETSTAT`).
    pub(super) fn evicted_since(&self, evicted: u64) -> bool {
        self.evicted.load(Ordering::Acquire) != evicted
    }

    /// Whether Redis was seen losing keys, or this instance came back from an outage, within
    /// [`LOSS_DOUBT_MS`] before `now`.
    pub(super) fn lost_lately(&self, now: Millis) -> bool {
        let seen = self.losses_seen.load(Ordering::Acquire);
        seen != 0 && now.saturating_sub(seen) < LOSS_DOUBT_MS
    }

    /// Redis was seen losing keys at `now`.
    pub(super) fn saw_losses(&self, now: Millis) {
        self.losses_seen.fetch_max(now, Ordering::AcqRel);
    }

    /// The local sessions were written back after `evicted` evictions.
    fn written_back_after(&self, evicted: u64) {
        self.evicted.store(evicted, Ordering::Release);
    }

    /// A background write-back of every local session completed (see `sweep`): begun after
    /// `evicted` evictions, if evictions were its reason. What made it needed no longer holds.
    pub(super) fn walked(&self, evicted: Option<u64>) {
        self.crashed.store(false, Ordering::Release);
        if let Some(evicted) = evicted {
            self.written_back_after(evicted);
        }
    }
}

/// Why the data set the primary holds now is not the one reconciled with, for the log.
pub(super) fn lost(before: &DataSet, now: &DataSet) -> &'static str {
    if before.server == now.server {
        "Redis lost keepalive's data without restarting (its epoch key is gone or replaced: FLUSHALL or FLUSHDB, eviction under maxmemory, or a failover to a replica that missed writes)"
    } else {
        "Redis restarted (its run id changed) and may have lost sessions"
    }
}

/// The note each re-sync leaves: the store `place` the local changes were reconciled with,
/// whose data set was `run_id` with `epoch`, after `evicted` evictions. Read at a start that
/// follows a crash: whether Redis kept its data since is then still known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reconciled {
    place: String,
    run_id: String,
    epoch: String,
    evicted: u64,
}

/// The note a clean stop leaves: every change in the mirror had reached the store `place`,
/// whose data set was `run_id` with `epoch`, by `at`. A note without an epoch (left by an
/// earlier version) matches no data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CleanStop {
    place: String,
    run_id: String,
    #[serde(default)]
    epoch: String,
    at: Millis,
    /// The server's `evicted_keys` when the local sessions were last written back; a note
    /// without it (an earlier version) counts as none, so any eviction since means a full
    /// write-back.
    #[serde(default)]
    evicted: u64,
}

impl Shared {
    /// Reads, and so removes, the note of the last clean stop: the start that follows it writes
    /// back less. A note left for another store is ignored.
    pub(super) async fn take_clean_stop(&self) {
        let note = match self.mirror.take_note(STOP_NOTE).await {
            Ok(note) => note,
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot read where the local store stood with Redis at the last stop: {err}; every live local session is written back");
                None
            }
        };
        let stop = note.and_then(|bytes| serde_json::from_slice::<CleanStop>(&bytes).ok());
        if let Some(stop) = stop.filter(|s| s.place == self.primary.place()) {
            self.link.set_data_set(Some(DataSet {
                server: stop.run_id,
                epoch: stop.epoch,
                evicted: stop.evicted,
            }));
            *self
                .link
                .stopped_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(stop.at);
            return;
        }
        // No clean stop: a crash. The data set last reconciled with still tells whether Redis
        // kept its data meanwhile.
        let reconciled = self.read_reconciled().await;
        if let Some(note) = reconciled.filter(|n| n.place == self.primary.place()) {
            self.link.set_data_set(Some(DataSet {
                server: note.run_id,
                epoch: note.epoch,
                evicted: note.evicted,
            }));
            self.link.crashed.store(true, Ordering::Release);
        }
    }

    /// The note of the data set last reconciled with, left in place: a crash before the next
    /// re-sync must find it again.
    async fn read_reconciled(&self) -> Option<Reconciled> {
        let read = match self.mirror.take_note(RECONCILED_NOTE).await {
            Ok(Some(bytes)) => match self.mirror.write_note(RECONCILED_NOTE, bytes.clone()).await {
                Ok(()) => Ok(Some(bytes)),
                Err(err) => Err(err),
            },
            other => other,
        };
        match read {
            Ok(bytes) => bytes.and_then(|b| serde_json::from_slice(&b).ok()),
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot read which Redis data set the local store was last reconciled with: {err}; every live local session is written back as into a Redis that lost its data");
                None
            }
        }
    }

    /// Notes in the mirror the data set the local changes are now reconciled with.
    async fn note_reconciled(&self, data_set: &DataSet) {
        let note = Reconciled {
            place: self.primary.place(),
            run_id: data_set.server.clone(),
            epoch: data_set.epoch.clone(),
            evicted: data_set.evicted,
        };
        let written = match serde_json::to_vec(&note) {
            Ok(bytes) => self.mirror.write_note(RECONCILED_NOTE, bytes).await,
            Err(err) => Err(StoreError::Backend(err.to_string())),
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "[redis] cannot record which Redis data set the local store is reconciled with: {err}; after a crash every live local session would be written back as into a Redis that lost its data");
        }
    }

    /// At a clean stop, while the primary answers and nothing waits to be written back: notes
    /// in the mirror that the primary has every change, so the next start with the same data
    /// set writes back only what changes after now. Without it (a crash, a stop during an
    /// outage) the next start writes back every live copy, which is always safe, only slower.
    pub(super) async fn note_clean_stop(&self) {
        let Some(data_set) = self.link.data_set() else {
            return;
        };
        // A background write-back that did not complete: the next start walks again.
        if !self.status.is_online() || !self.journal.changed().is_empty() || self.sweep.running() {
            return;
        }
        let stop = CleanStop {
            place: self.primary.place(),
            run_id: data_set.server,
            epoch: data_set.epoch,
            at: self.clock.now(),
            evicted: self.link.evicted.load(Ordering::Acquire),
        };
        let written = match serde_json::to_vec(&stop) {
            Ok(note) => self.mirror.write_note(STOP_NOTE, note).await,
            Err(err) => Err(StoreError::Backend(err.to_string())),
        };
        match written {
            Ok(()) => tracing::info!(
                "[redis] every local change is in Redis: the next start writes back only what changes after now"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot record that every local change is in Redis: {err}; the next start writes every live session back")
            }
        }
    }

    /// Probes the primary. A silent one is an outage; one that holds another data set than
    /// the one reconciled with (restarted, or lost its data without restarting) is treated as
    /// one too, so that the re-sync writes everything back.
    pub(super) async fn check_data_set(&self) -> Checked {
        let checked = self.probe_data_set().await;
        if let Checked::Other(reason) = checked {
            self.go_offline(reason);
        }
        checked
    }

    /// Probes the primary; a silent one is an outage. Another data set than the one
    /// reconciled with is one too, but the caller's to declare ([`Shared::go_offline`] with
    /// the reason given), once it has asked Redis what it must first: going offline drops the
    /// connection.
    pub(super) async fn probe_data_set(&self) -> Checked {
        match self.primary.probe().await {
            Ok(now) => match self.link.data_set() {
                Some(before) if before.same(&now) => Checked::Same(now),
                Some(before) => Checked::Other(lost(&before, &now)),
                None => Checked::Other("Redis's data set is not the one reconciled with"),
            },
            Err(err) => {
                self.go_offline(&err.to_string());
                Checked::Silent
            }
        }
    }

    /// Whether a session that Redis, answering, does not hold may be one it lost, which an
    /// instance holding a copy is about to put back. Redis is asked, since the probe may not
    /// have seen a loss yet: called only for a session missing, which is rare enough to cost
    /// a round trip or two more.
    pub(super) async fn doubt(&self, now: Millis) -> Result<Doubt, StoreError> {
        if self.link.lost_lately(now) {
            return Ok(Doubt::Lost);
        }
        match self.probe_data_set().await {
            // Another data set: the flush it means is an outage, the caller's to declare.
            Checked::Other(reason) => Ok(Doubt::Unknown(reason)),
            Checked::Silent => Ok(Doubt::Silent),
            Checked::Same(data_set) if self.link.evicted_since(data_set.evicted) => {
                self.link.saw_losses(now);
                Ok(Doubt::Lost)
            }
            Checked::Same(_) => match self.primary.write_back_under_way().await {
                Ok(false) => Ok(Doubt::None),
                Ok(true) => Ok(Doubt::Lost),
                Err(err) => {
                    self.failed(err)?;
                    Ok(Doubt::Silent)
                }
            },
        }
    }

    /// Connects, writes back what changed, and only then reports the primary as ok.
    ///
    /// `at_start`: the first connect, before the server listens. There a Redis that holds
    /// another data set than this instance last wrote to (it restarted empty, lost its data,
    /// or is another Redis) is not written back to at once when the local store holds
    /// anything: every live local session must go back before the instance may serve from
    /// Redis, seconds for a large store, and an instance that waited for it before listening
    /// would stay out of the pool that long. It starts as in an outage instead, serving from
    /// the local store, and the link writes everything back as after any outage, then serves
    /// from Redis ([`Reconnected::Deferred`]).
    pub(super) async fn reconnect(&self, at_start: bool) -> Result<Reconnected, StoreError> {
        let outcome = self.resync(at_start).await;
        // A write-back of every session before serving from Redis is over, done or not; a
        // background walk says so itself when it ends.
        if !matches!(outcome, Ok(Reconnected::Deferred)) && !self.sweep.running() {
            self.show_writing_back(false);
        }
        outcome
    }

    /// Tells health and metrics whether every local session is being written back.
    pub(super) fn show_writing_back(&self, running: bool) {
        self.status.set_writing_back(running);
        self.metrics.redis_writing_back.set(i64::from(running));
    }

    /// Whether the local store holds a live session or a kept logout: something a Redis that
    /// lost its data must get back.
    async fn holds_anything(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        if !self.mirror.first_to_expire(now, 1).await?.is_empty() {
            return Ok(true);
        }
        let (logouts, more) = self.mirror.removed_page(None, 1).await?;
        Ok(!logouts.is_empty() || more.is_some())
    }

    async fn resync(&self, at_start: bool) -> Result<Reconnected, StoreError> {
        let started = Instant::now();
        let data_set = self.primary.connect().await?;
        let same_redis = self
            .link
            .data_set()
            .is_some_and(|before| before.same(&data_set));
        // The same data set as at the last clean stop has every change made before that stop:
        // for the first re-sync after start, the outage began then.
        let stopped_at = *self
            .link
            .stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Keys Redis evicted since this instance last wrote its sessions back: a write-back
        // after an eviction that failed (Redis refusing writes under maxmemory, often the
        // outage this ends), or evictions while this instance was stopped. What Redis lost
        // was not changed here, so every live copy goes back, though the data set is the same.
        let evicted = same_redis && self.link.evicted_since(data_set.evicted);
        let crashed = self.link.crashed.load(Ordering::Acquire);
        let began = self.journal.outage_began();
        let since = (same_redis && !evicted && !crashed).then(|| {
            // An outage's start may come a moment after a change Redis did not get. A clean
            // stop's note is written once every request is over and only while nothing
            // waits to be written back, so Redis has every change made before it (what the
            // instance did after its start, offline, is in the journal): re-checking the
            // sessions served in the seconds before the stop would find each one there.
            stopped_at.unwrap_or(began - RESYNC_SLACK_MS)
        });
        let what = match (same_redis, evicted, stopped_at) {
            (true, false, _) if crashed => {
                "every live local session (this instance did not stop cleanly; Redis kept its data)"
            }
            (true, false, Some(_)) => {
                "what changed since this instance last stopped (the same Redis has the rest)"
            }
            (true, false, None) => "what changed during the outage",
            (true, true, _) => "every live local session (Redis evicted keys meanwhile)",
            (false, _, _) => "every live local session",
        };
        // Every live session goes back into a Redis that kept its data set: Redis holds all
        // but what this instance changed before it stopped or while Redis was away, so it
        // serves from Redis at once and a walk writes the rest back meanwhile (see `sweep`).
        let background = same_redis && since.is_none();
        let how = if background {
            "in the background while serving"
        } else {
            "before serving from Redis"
        };
        if !same_redis {
            if at_start && self.holds_anything().await? {
                self.primary.disconnect();
                self.show_writing_back(true);
                tracing::info!(run_id = %data_set.server, epoch = %data_set.epoch, "[redis] connected at start to a Redis that holds another data set than this instance last wrote to (it restarted empty, lost its data, or is another Redis): serving from the local store while every live local session is written back, then from Redis");
                return Ok(Reconnected::Deferred);
            }
            self.show_writing_back(true);
        }
        tracing::info!(run_id = %data_set.server, epoch = %data_set.epoch, "[redis] connected; writing back {what}, {how}");

        // What was written back, by id: a session that changes again while the re-sync runs is
        // written twice but counted once, so the counts are sessions and logouts, not writes.
        let mut sessions = HashSet::new();
        let mut logouts = HashSet::new();

        // Logouts first: a session another instance still holds a copy of is refused by the
        // marker from then on, even when the primary came back empty.
        let now = self.clock.now();
        let ended = if background {
            Vec::new()
        } else {
            self.mirror.removed_since(since).await?
        };
        for chunk in ended.chunks(RESYNC_CONCURRENCY) {
            let writes = chunk.iter().map(|id| self.primary.end(id, now));
            for (id, written) in chunk.iter().zip(join_all(writes).await) {
                written?;
                logouts.insert(*id);
            }
        }

        if since.is_none() {
            // Redis lost keys (known from an earlier connection): other instances may be
            // putting back sessions this one holds no copy of.
            if self.link.data_set().is_some() && (!same_redis || evicted) {
                self.link.saw_losses(self.clock.now());
            }
        }
        let records = if background {
            Vec::new()
        } else {
            self.mirror.live_since(since, now).await?
        };
        // Every live session goes back after a loss, and what changed during an outage after
        // one: others learn that it may take a while, as Redis lacks those sessions meanwhile.
        let mut notice =
            (!same_redis || (evicted && !background) || !records.is_empty()).then(Notice::default);
        for chunk in records.chunks(RESYNC_CONCURRENCY) {
            if let Some(notice) = &mut notice {
                notice.renew(self).await?;
            }
            let writes = chunk
                .iter()
                .map(|r| self.primary.merge(r, now, !same_redis));
            for (record, written) in chunk.iter().zip(join_all(writes).await) {
                if written? {
                    sessions.insert(record.id);
                }
            }
        }

        if background {
            // Before the flip: no request reaches Redis ahead of the walk.
            self.begin_walk(evicted.then_some(data_set.evicted)).await?;
        }
        let evicted_before = self.link.evicted.load(Ordering::Acquire);
        loop {
            let batch: Vec<SessionId> = {
                let mut changed = self.journal.changed();
                if changed.is_empty() {
                    // The data set is reconciled from here on: a probe compares with it.
                    self.link.set_data_set(Some(data_set.clone()));
                    // After an outage, other instances may still be offline, holding sessions
                    // created or kept alive during it that Redis lacks until they write them
                    // back: for a while a session missing here is in doubt, as after a loss.
                    if !at_start {
                        self.link.saw_losses(self.clock.now());
                    }
                    if background && evicted {
                        // Until the walk completes, Redis still lacks what it evicted.
                        self.link.written_back_after(evicted_before);
                    }
                    self.status.set_online(true);
                    break;
                }
                changed.drain().collect()
            };
            let mut failure = None;
            for chunk in batch.chunks(RESYNC_CONCURRENCY) {
                let writes = chunk.iter().map(|id| self.write_back(id, !same_redis));
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
                self.journal.changed().extend(batch);
                self.sweep_stopped();
                self.primary.disconnect();
                return Err(err);
            }
        }
        *self
            .link
            .stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if !background {
            self.link.crashed.store(false, Ordering::Release);
        }
        self.note_reconciled(&data_set).await;
        self.link.reconnected.notify_waiters();
        self.metrics.redis_up.set(1);
        let (sessions, logouts) = (sessions.len() as u64, logouts.len() as u64);
        self.metrics.redis_resynced_sessions_total.inc_by(sessions);
        self.metrics.redis_resynced_logouts_total.inc_by(logouts);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if background {
            tracing::info!(
                sessions,
                logouts,
                elapsed_ms,
                "[redis] serving from Redis; {sessions} sessions and {logouts} logouts changed during the outage written back, every other local session follows in the background"
            );
        } else {
            tracing::info!(
                sessions,
                logouts,
                elapsed_ms,
                "[redis] re-sync done: {sessions} sessions and {logouts} logouts written back; sessions live in Redis"
            );
        }
        Ok(Reconnected::Online)
    }
}

/// How a [`Shared::reconnect`] that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reconnected {
    /// The primary serves.
    Online,
    /// At start, to a primary that lost what this instance holds: it serves from the local
    /// store until the link has written everything back.
    Deferred,
}

/// Waits `base/2 + random(base/2)`: spread out so many instances do not reconnect in step.
pub(super) fn jittered(base: Duration) -> Duration {
    let fraction = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    base / 2 + base.mul_f64(fraction / 2.0)
}

/// The task that owns the link to the primary.
pub(super) async fn run(shared: Arc<Shared>, options: FailoverOptions, stop: CancellationToken) {
    let mut backoff = BACKOFF_BASE;
    let mut attempts = 0u32;
    let mut evictions = 0u64;
    let mut probed = Instant::now();
    loop {
        if shared.status.is_online() {
            if shared.sweep.running() {
                // A page of the background write-back between two probes.
                tokio::select! {
                    () = stop.cancelled() => break,
                    page = shared.sweep_page() => if let Err(err) = page {
                        // An outage: the walk begins again at the reconnection. Anything else
                        // (Redis answering what keepalive cannot read) ends it here, and the
                        // next start begins it again, the crash or the evictions still noted.
                        if let Err(err) = shared.failed(err) {
                            tracing::warn!(error = %err, "[redis] the background write-back of the local sessions stopped: {err}; sessions the walk had not reached go back at the next start (restart the instance to retry now; if it repeats, check that REDIS_URL names a Redis that only keepalive writes under KEEPALIVE_REDIS_PREFIX)");
                            shared.sweep_stopped();
                        }
                    },
                }
                if probed.elapsed() < options.probe_interval {
                    continue;
                }
            } else {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(options.probe_interval) => {}
                    () = shared.link.lost.notified() => {}
                }
            }
            if !shared.status.is_online() {
                continue;
            }
            probed = Instant::now();
            // Neither a probe nor what follows it holds a stop up: a frozen Redis keeps each
            // of them for the operation timeout. Cut short, they leave nothing half-done that
            // the next start does not redo (see the reconnection below).
            let checked = tokio::select! {
                () = stop.cancelled() => break,
                checked = shared.check_data_set() => checked,
            };
            let data_set = match checked {
                Checked::Same(data_set) => Some(data_set),
                Checked::Other(_) | Checked::Silent => None,
            };
            // Redis evicted keys since the last probe (`evicted_keys` grew) and kept its
            // epoch: some sessions and logout marks may be gone, one by one, and no keepalive
            // may come to tell (a user away for a while). Answered as a crash of this instance
            // is: every kept logout and live local session goes back in the background, each
            // request writing its own first, while Redis stays online. A walk under way puts
            // back what Redis evicted before it began; evictions since are seen once it ends.
            if let Some(data_set) = data_set.filter(|_| !shared.sweep.running())
                && shared.link.evicted_since(data_set.evicted)
            {
                shared.link.saw_losses(shared.clock.now());
                evictions += 1;
                // Each time would flood the log while Redis keeps evicting.
                if evictions.is_power_of_two() {
                    tracing::warn!(
                        evictions,
                        "[redis] Redis evicted keys (maxmemory reached with a maxmemory-policy other than noeviction): every local session and kept logout is written back in the background; set maxmemory-policy noeviction (keepalive doctor checks it)"
                    );
                }
                // Tried again at the next probe; a Redis that went away meanwhile is the next
                // operation's to notice.
                let began = tokio::select! {
                    () = stop.cancelled() => break,
                    began = shared.begin_walk(Some(data_set.evicted)) => began,
                };
                if let Err(err) = began {
                    tracing::warn!(error = %err, "[redis] Redis evicted keys; writing the local sessions back cannot begin: {err}");
                }
            }
            // The mirror's budget, a page between two probes; tried again at the next.
            let trimmed = tokio::select! {
                () = stop.cancelled() => break,
                trimmed = shared.trim_mirror() => trimmed,
            };
            if let Err(err) = trimmed {
                tracing::warn!(error = %err, "cannot drop the least lately active local copies beyond redis_mirror_max_sessions: {err}; the local store holds more than its budget until this succeeds");
            }
            backoff = BACKOFF_BASE;
            attempts = 0;
        } else {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(jittered(backoff)) => {}
            }
            // A stop does not wait for the re-sync: after a crash, or with a Redis that lost
            // its data, it walks every local session (seconds a million), longer than a
            // pod's grace period at ten million. Left half-way, it leaves no clean-stop note
            // (the link is not online), so the next start writes every session back.
            let reconnected = tokio::select! {
                () = stop.cancelled() => break,
                reconnected = shared.reconnect(false) => reconnected,
            };
            match reconnected {
                Ok(_) => {
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

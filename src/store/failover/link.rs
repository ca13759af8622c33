//! The link to the primary: the task that probes it while it answers and reconnects, with
//! backoff and jitter, while it does not; and the re-sync that writes back what changed
//! meanwhile before the primary is reported as ok again.
//!
//! While online the task probes every probe interval (a silent primary is noticed even
//! without traffic) and watches the data set's identity (Redis's run id: a restarted Redis may
//! have lost everything). A re-sync writes back, logouts first, then the sessions seen since the
//! outage began (the newest activity wins, a logout always wins), or every live copy when the
//! primary came back with another data set; then it drains the ids changed while it ran, and
//! the last, empty, drain flips the state under the journal's lock.
//!
//! An instance starts as if an outage had just begun, so its first connect is a re-sync too.
//! A clean stop while the primary answers leaves a note in the mirror: which store it was, its
//! data set, and the time. If the same store with the same data set answers at the next start,
//! only what changed after that time is written back; otherwise (a crash, a stop during an
//! outage, another database or prefix, a restarted Redis) every live copy is, as the instance
//! cannot tell what the primary lacks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};

use super::{FailoverOptions, Shared};

/// Changes written back concurrently during a re-sync (they share one pipelined connection).
const RESYNC_CONCURRENCY: usize = 64;
/// Slack subtracted from the outage start when choosing what to write back: a change made
/// just before the primary was declared offline may not have reached it.
const RESYNC_SLACK_MS: Millis = 2_000;
/// First wait before reconnecting.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// How often the remembered expiries of copies are swept of expired ones.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The mirror's note of a clean stop.
const STOP_NOTE: &str = "failover.clean-stop";

/// What the link knows of the primary's data set.
#[derive(Default)]
pub(super) struct LinkState {
    /// The data set the local changes were last reconciled with.
    run_id: Mutex<Option<String>>,
    /// Until the first re-sync after start: when the last clean stop recorded that every local
    /// change had reached the data set of `run_id`. That re-sync then writes back only what
    /// changed since, instead of every live copy.
    stopped_at: Mutex<Option<Millis>>,
    /// Told each time a re-sync brings the primary back: the logout listener subscribes
    /// again, in case its own connection went silent without closing.
    pub(super) reconnected: tokio::sync::Notify,
}

impl LinkState {
    fn run_id(&self) -> Option<String> {
        self.run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The note a clean stop leaves: every change in the mirror had reached the store `place`,
/// whose data set was `run_id`, by `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CleanStop {
    place: String,
    run_id: String,
    at: Millis,
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
            *self.link.run_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.run_id);
            *self
                .link
                .stopped_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(stop.at);
        }
    }

    /// At a clean stop, while the primary answers and nothing waits to be written back: notes
    /// in the mirror that the primary has every change, so the next start with the same data
    /// set writes back only what changes after now. Without it (a crash, a stop during an
    /// outage) the next start writes back every live copy, which is always safe, only slower.
    pub(super) async fn note_clean_stop(&self) {
        let Some(run_id) = self.link.run_id() else {
            return;
        };
        if !self.status.is_online() || !self.journal.changed().is_empty() {
            return;
        }
        let stop = CleanStop {
            place: self.primary.place(),
            run_id,
            at: self.clock.now(),
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

    /// Connects, writes back what changed, and only then reports the primary as ok.
    pub(super) async fn reconnect(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let run_id = self.primary.connect().await?;
        let same_redis = self.link.run_id().as_deref() == Some(run_id.as_str());
        // The same data set as at the last clean stop has every change made before that stop:
        // for the first re-sync after start, the outage began then.
        let stopped_at = *self
            .link
            .stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let began = self.journal.outage_began();
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
        // marker from then on, even when the primary came back empty.
        let now = self.clock.now();
        let ended = self.mirror.removed_since(since).await?;
        for chunk in ended.chunks(RESYNC_CONCURRENCY) {
            let writes = chunk.iter().map(|id| self.primary.end(id, now));
            for (id, written) in chunk.iter().zip(join_all(writes).await) {
                written?;
                logouts.insert(*id);
            }
        }

        if !same_redis {
            // Every live session goes back: each as Redis last had it, not as its copy trails.
            self.bring_up_all()?;
        }
        let records = self.mirror.live_since(since, now).await?;
        for chunk in records.chunks(RESYNC_CONCURRENCY) {
            let writes = chunk
                .iter()
                .map(|r| self.primary.merge(r, now, !same_redis));
            for (record, written) in chunk.iter().zip(join_all(writes).await) {
                if written? {
                    sessions.insert(record.id);
                }
            }
        }

        loop {
            let batch: Vec<SessionId> = {
                let mut changed = self.journal.changed();
                if changed.is_empty() {
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
                self.primary.disconnect();
                return Err(err);
            }
        }
        *self.link.run_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_id);
        *self
            .link
            .stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.link.reconnected.notify_waiters();
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
pub(super) fn jittered(base: Duration) -> Duration {
    let fraction = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    base / 2 + base.mul_f64(fraction / 2.0)
}

/// The task that owns the link to the primary.
pub(super) async fn run(shared: Arc<Shared>, options: FailoverOptions, stop: CancellationToken) {
    let mut backoff = BACKOFF_BASE;
    let mut attempts = 0u32;
    let mut swept = Instant::now();
    loop {
        if swept.elapsed() >= SWEEP_EVERY {
            shared.copies.sweep(shared.clock.now());
            swept = Instant::now();
        }
        if shared.status.is_online() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(options.probe_interval) => {}
            }
            if !shared.status.is_online() {
                continue;
            }
            match shared.primary.probe().await {
                Ok(run_id) => {
                    if shared.link.run_id().as_deref() != Some(run_id.as_str()) {
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
            // The outage just began: the copies that trail what Redis said catch up first,
            // durably, so that the purge and a restart of this instance find them so too.
            if let Err(err) = shared.bring_up_outage() {
                tracing::warn!(error = %err, "cannot bring the local copies up to what Redis last said: {err}; they are brought up one by one as they are asked for");
            }
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

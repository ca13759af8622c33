//! Logouts made on other instances: the task that hears them and ends this instance's copies
//! of those sessions, so that a later outage, when this instance answers from its mirror alone,
//! cannot revive them.
//!
//! It is subscribed while the primary answers. A logout announced while it was not (this
//! instance was stopped, offline, or between two subscriptions) is found after each
//! subscription, and announcements made meanwhile wait in the subscription, so that every
//! logout is either heard or found. Found in the primary's capped record of logouts when it
//! keeps one: read from this instance's place in it, at a cost that grows with the logouts
//! missed. The place moves on while the subscription lives (to where the record stood one
//! period earlier, so that whatever was announced before it has been heard) and is kept in the
//! mirror across a restart. Without a place in the same data set, or when the record dropped
//! logouts past it (capped), every live copy's mark is looked up instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};
use crate::store::{Tombstone, Write};

use super::link::jittered;
use super::{DataSet, Ended, FailoverOptions, LogoutMark, LogoutsRecord, Over, Shared};

/// Copies looked up at once after a subscription (they share one pipelined connection).
const LOOKUP_CONCURRENCY: usize = 64;
/// Copies read from the local store per page of the look-up.
const LOOKUP_PAGE: usize = 1024;
/// Logouts read from the primary's record per round trip.
const RECORD_PAGE: usize = 1024;
/// How often the place in the record moves on while subscribed: what was recorded a period
/// ago has been heard since (an announcement takes milliseconds to arrive).
const PLACE_EVERY: Duration = Duration::from_secs(10);
/// The mirror's note of the place.
const PLACE_NOTE: &str = "failover.logouts-heard";

/// Where this instance stands in the primary's record of logouts: every logout recorded up to
/// `mark` in the data set named was heard or found here. Kept in the mirror, so that a start
/// reads only what was recorded after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Place {
    place: String,
    run_id: String,
    epoch: String,
    mark: String,
    /// How many logouts the record had ever recorded at `mark`.
    added: u64,
}

/// This instance's place in the record, owned by the listener task.
#[derive(Default)]
pub(super) struct Heard {
    place: Mutex<Option<Place>>,
}

impl Heard {
    fn get(&self) -> Option<Place> {
        self.place.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, place: Option<Place>) {
        *self.place.lock().unwrap_or_else(|p| p.into_inner()) = place;
    }
}

impl Shared {
    /// Another instance ended this session: the copy, if there is one, ends too, with a
    /// tombstone kept as long as the session could have lived, so no outage or re-sync can
    /// revive it. Returns whether there was a copy.
    pub(super) fn ended_elsewhere(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        let mut had_copy = false;
        self.mirror.modify(id, &mut |copy| {
            let copy = copy?;
            had_copy = true;
            // As long as the session could have lived, and no longer than keepalive keeps a
            // logout for a session it does not know (a format without absolute expiry).
            let keep_until = copy
                .absolute_expires_at
                .min(self.tombstone(now).keep_until)
                .max(now);
            Some(Write::Remove(Some(Tombstone {
                at: now,
                keep_until,
            })))
        })?;
        if had_copy {
            self.metrics.redis_remote_logouts_total.inc();
        }
        Ok(had_copy)
    }

    /// Another instance logged `user` out everywhere at `at`: every copy of a session of theirs
    /// created by then ends as if its own logout had been heard. Redis may no longer list such
    /// a session (its user's set evicted), but its copy here could bring it back. Returns how
    /// many copies ended.
    pub(super) async fn user_ended_elsewhere(
        &self,
        user: &str,
        at: Millis,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut ended = 0;
        for copy in self.copies_of_user(user).await? {
            if copy.created_at <= at && self.ended_elsewhere(&copy.id, now)? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Ends the copies of sessions whose logout this instance did not hear: read from its
    /// place in the primary's record, or found by every live copy's mark. Returns how many
    /// copies it ended, and whether it read the record.
    async fn catch_up(&self) -> Result<(u64, bool), StoreError> {
        let record = self
            .primary
            .logouts_record()
            .await
            .inspect_err(|err| self.go_offline(&err.to_string()))?;
        let data_set = self.link.data_set();
        let from = self
            .heard
            .get()
            .filter(|heard| self.same_place(heard, data_set.as_ref()))
            .and_then(|heard| Some((LogoutMark::parse(&heard.mark)?, heard.added)));
        let read = match (record, from) {
            (Some(record), Some((from, added))) if record.holds_after(from, added) => {
                Some(self.read_record(from, record.last).await?)
            }
            _ => None,
        };
        let ended = match read {
            Some(ended) => ended,
            None => self.look_up_all().await?,
        };
        if let (Some(record), Some(data_set)) = (record, data_set) {
            self.move_place(&record, &data_set).await;
        }
        Ok((ended, read.is_some()))
    }

    /// Whether `heard` is a place in the record of this primary's data set.
    fn same_place(&self, heard: &Place, data_set: Option<&DataSet>) -> bool {
        data_set.is_some_and(|d| {
            heard.place == self.primary.place()
                && heard.run_id == d.server
                && heard.epoch == d.epoch
        })
    }

    /// Every logout heard or found up to where `record` stood, in `data_set`: the place moves
    /// there, and is noted in the mirror for the next start. A record that does not count
    /// what it added gives no place.
    async fn move_place(&self, record: &LogoutsRecord, data_set: &DataSet) {
        let Some(added) = record.added else {
            return;
        };
        let place = Place {
            place: self.primary.place(),
            run_id: data_set.server.clone(),
            epoch: data_set.epoch.clone(),
            mark: record.last.to_string(),
            added,
        };
        if self.heard.get().as_ref() == Some(&place) {
            return;
        }
        let written = match serde_json::to_vec(&place) {
            Ok(bytes) => self.mirror.write_note(PLACE_NOTE, bytes).await,
            Err(err) => Err(StoreError::Backend(err.to_string())),
        };
        if let Err(err) = written {
            tracing::debug!(error = %err, "[redis] cannot note the place in the record of logouts; the next start looks up every copy");
        }
        self.heard.set(Some(place));
    }

    /// Reads the place noted at the last run, leaving the note for a crash before the next.
    pub(super) async fn read_place(&self) {
        let note = match self.mirror.take_note(PLACE_NOTE).await {
            Ok(Some(bytes)) => {
                let kept = self.mirror.write_note(PLACE_NOTE, bytes.clone()).await;
                kept.ok()
                    .and_then(|()| serde_json::from_slice::<Place>(&bytes).ok())
            }
            _ => None,
        };
        self.heard.set(note);
    }

    /// Ends the copies of the sessions logged out after `from` up to `upto` in the record, as
    /// if each announcement had been heard. Returns how many copies it ended.
    async fn read_record(&self, from: LogoutMark, upto: LogoutMark) -> Result<u64, StoreError> {
        let mut ended = 0;
        let mut after = from;
        loop {
            let (logouts, next) = self
                .primary
                .logouts_after(after, upto, RECORD_PAGE)
                .await
                .inspect_err(|err| self.go_offline(&err.to_string()))?;
            let now = self.clock.now();
            for logout in logouts {
                ended += match logout {
                    Ended::Session(id) => u64::from(self.ended_elsewhere(&id, now)?),
                    Ended::User { user, at } => self.user_ended_elsewhere(&user, at).await?,
                };
            }
            match next {
                Some(mark) => after = mark,
                None => return Ok(ended),
            }
        }
    }

    /// Ends the copies of sessions whose logout this instance did not hear, found by their
    /// marks. Returns how many copies it ended.
    async fn look_up_all(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        // Every live copy, a page at a time: a million copies are never held at once. The
        // pages read the file, so what waits in the overlay goes first; a copy written after
        // this flush was answered by Redis after the subscription, which hears its logout.
        self.mirror.flush().await?;
        let mut ended = 0;
        let mut after = None;
        loop {
            let (copies, next) = self.mirror.live_page(after, now, LOOKUP_PAGE).await?;
            let ids = copies.into_iter().map(|copy| copy.id).collect();
            ended += self.look_up(ids, now).await?;
            match next {
                Some(id) => after = Some(id),
                None => return Ok(ended),
            }
        }
    }

    /// Looks up the marks of `ids` and ends the copies of those logged out. Returns how many
    /// copies it ended.
    async fn look_up(&self, ids: Vec<SessionId>, now: Millis) -> Result<u64, StoreError> {
        let mut ended = 0;
        for chunk in ids.chunks(LOOKUP_CONCURRENCY) {
            let lookups = chunk.iter().map(|id| self.primary.over(id));
            for (id, over) in chunk.iter().zip(join_all(lookups).await) {
                let over = over.inspect_err(|err| {
                    // An outage like any other; the re-sync that ends it leads to a new
                    // subscription, and so to a new look-up.
                    self.go_offline(&err.to_string());
                })?;
                if over != Over::No && self.ended_elsewhere(id, now)? {
                    ended += 1;
                }
            }
        }
        Ok(ended)
    }
}

/// The listener task.
pub(super) async fn run(shared: Arc<Shared>, options: FailoverOptions, stop: CancellationToken) {
    shared.read_place().await;
    loop {
        if !shared.status.is_online() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(options.probe_interval) => continue,
            }
        }
        let subscribed = tokio::select! {
            () = stop.cancelled() => break,
            subscribed = shared.primary.subscribe_ended() => subscribed,
        };
        let mut logouts = match subscribed {
            Ok(logouts) => logouts,
            Err(err) => {
                tracing::debug!(reason = %err, "[redis] cannot subscribe to logouts yet");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(jittered(options.probe_interval)) => continue,
                }
            }
        };
        let caught_up = tokio::select! {
            () = stop.cancelled() => break,
            caught_up = shared.catch_up() => caught_up,
        };
        match caught_up {
            Ok((0, _)) => {}
            Ok((ended, read)) => tracing::info!(
                ended,
                "[redis] {ended} local session copies ended: logged out elsewhere while this instance was not listening ({})",
                if read {
                    "read from the record of logouts"
                } else {
                    "found by looking up every copy"
                }
            ),
            Err(err) if !shared.status.is_online() => {
                tracing::debug!(reason = %err, "[redis] logouts missed not looked up: Redis went offline; looked up again once it is back")
            }
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot look up the logouts missed while not listening: {err}; the local store (KEEPALIVE_DATA_DIR) failed, so a session logged out elsewhere meanwhile could be served from its copy in a later outage; the look-up runs again after the next reconnection or restart")
            }
        }
        // Where the record stood a period ago: heard since, if the subscription still lives.
        let mut seen: Option<LogoutsRecord> = None;
        let mut period =
            tokio::time::interval_at(tokio::time::Instant::now() + PLACE_EVERY, PLACE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.link.reconnected.notified() => break,
                _ = period.tick() => {
                    if let (Some(record), Some(data_set)) = (&seen, shared.link.data_set()) {
                        shared.move_place(record, &data_set).await;
                    }
                    // A failure is an outage the requests notice; the place waits.
                    seen = shared.primary.logouts_record().await.ok().flatten();
                }
                logout = logouts.next() => match logout {
                    Some(Ended::Session(id)) => {
                        if let Err(err) = shared.ended_elsewhere(&id, shared.clock.now()) {
                            tracing::warn!(error = %err, "cannot end the local copy of a session another instance ended");
                        }
                    }
                    Some(Ended::User { user, at }) => {
                        if let Err(err) = shared.user_ended_elsewhere(&user, at).await {
                            tracing::warn!(error = %err, "cannot end the local copies of the sessions of a user logged out everywhere on another instance");
                        }
                    }
                    // The connection closed (the primary went away): subscribe again once it
                    // is back.
                    None => break,
                },
            }
        }
    }
}

//! Logouts made on other instances: the task that hears them and ends this instance's copies
//! of those sessions, so that a later outage, when this instance answers from its mirror alone,
//! cannot revive them.
//!
//! It is subscribed while the primary answers. A logout announced while it was not (this
//! instance was stopped, offline, or between two subscriptions) is found by its mark: after
//! each subscription every live copy is looked up once, and announcements made meanwhile wait
//! in the subscription, so that every logout is either heard or found.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};
use crate::store::{Tombstone, Write};

use super::link::jittered;
use super::{Ended, FailoverOptions, Over, Shared};

/// Copies looked up at once after a subscription (they share one pipelined connection).
const LOOKUP_CONCURRENCY: usize = 64;

impl Shared {
    /// Another instance ended this session: the copy, if there is one, ends too, with a
    /// tombstone kept as long as the session could have lived, so no outage or re-sync can
    /// revive it. Returns whether there was a copy.
    pub(super) fn ended_elsewhere(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        let mut had_copy = false;
        self.mirror.modify(id, &mut |copy| {
            let copy = copy?;
            had_copy = true;
            self.copies.removed(id);
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

    /// Ends the copies of sessions whose logout this instance did not hear, found by their
    /// marks. Returns how many copies it ended.
    async fn catch_up(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut ended = 0;
        // The live copies, and those that trail what Redis said and live by it.
        let mut ids = self.mirror.live_ids(now).await?;
        let listed: HashSet<SessionId> = ids.iter().copied().collect();
        ids.extend(
            self.copies
                .ahead(Some(now))
                .into_iter()
                .filter(|id| !listed.contains(id)),
        );
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
            Ok(0) => {}
            Ok(ended) => tracing::info!(
                ended,
                "[redis] {ended} local session copies ended: logged out elsewhere while this instance was not listening"
            ),
            Err(err) if !shared.status.is_online() => {
                tracing::debug!(reason = %err, "[redis] logouts missed not looked up: Redis went offline; looked up again once it is back")
            }
            Err(err) => {
                tracing::warn!(error = %err, "[redis] cannot look up the logouts missed while not listening: {err}; the local store (KEEPALIVE_DATA_DIR) failed, so a session logged out elsewhere meanwhile could be served from its copy in a later outage; the look-up runs again after the next reconnection or restart")
            }
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.link.reconnected.notified() => break,
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

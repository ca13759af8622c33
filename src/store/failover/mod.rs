//! Redis first, the local store as mirror and fallback: everything about outages.
//!
//! While the primary (Redis) answers, every operation goes to it and what it returns is
//! copied into the mirror (the local store): batched, not flushed, since the primary holds the
//! first copy, so that a crash of this instance loses what the mirror's last batch held at
//! most. A write's answer becomes the session's copy; a read's answer brings up the copy of a
//! session the mirror holds, without making it hold one. Neither reads the mirror first, and
//! the failover keeps nothing of its own per session: what it knows of a session is its copy,
//! in the mirror's memory until the batch is written, then on its file. The first operation
//! that fails or times out marks the primary offline: from then on operations go straight to
//! the mirror, which keeps every session this instance created or served alive as long as
//! Redis last said it lives; new sessions and logouts are written there durably, and their ids
//! are remembered as changed (`journal`). Health and "log out everywhere" read that state
//! through the [`SharedStatus`] this store owns.
//!
//! Two background tasks do the rest:
//! - `link` owns the link to the primary: it probes it, notices a restart, reconnects with
//!   backoff, and writes back what changed during the outage before reporting it ok again;
//!   after a crash of this instance, it writes every local session back while serving
//!   (`sweep`), each request writing its own session back first if the walk has not yet;
//! - `logouts` hears the logouts of other instances and ends this instance's copies of those
//!   sessions, and looks up, after each subscription, the ones it could not hear.
//!
//! The failover knows the two stores only through what it asks of them: the `Primary` and
//! `Mirror` interfaces (crate-private, in the `primary` and `mirror` modules). A store of
//! another session format plugs in as another primary, with no branch here.

mod budget;
mod journal;
mod link;
mod logouts;
mod mirror;
mod primary;
mod sweep;

pub(crate) use mirror::Mirror;
pub use primary::{DataSet, Ended, LogoutMark, LogoutsRecord};
pub(crate) use primary::{Logouts, Over, Primary};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::{Clock, Millis, duration_millis};
use crate::metrics::Metrics;
use crate::session::{
    OLD_ID_LOGOUT_WINDOW, SessionId, SessionRecord, SessionStore, SharedStatus, StoreError,
};
use crate::store::{Tombstone, Write};
use crate::task::Tasks;

use journal::Journal;
use link::{Checked, Doubt, LinkState};

/// Most rotations a logout follows from the id it names: within the window a session is
/// rarely rotated more than once.
const MAX_SUCCESSORS: usize = 16;

/// Timing of the link to the primary.
#[derive(Debug, Clone, Copy)]
pub struct FailoverOptions {
    /// Period of the probe while the primary answers.
    pub probe_interval: Duration,
    /// Longest wait between two reconnection attempts.
    pub backoff_max: Duration,
    /// How long a logout is remembered for the primary at most (a session cannot outlive it).
    pub absolute_lifetime: Duration,
    /// Sessions and logouts a second that a background write-back sends at most (0: as fast
    /// as the primary answers).
    pub write_back_rate: u32,
    /// Most live sessions the mirror keeps copies of while the primary answers (0: no bound;
    /// see `budget`).
    pub mirror_max_sessions: u64,
}

/// State shared by request handlers and the two tasks.
struct Shared {
    primary: Arc<dyn Primary>,
    mirror: Arc<dyn Mirror>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Whether the primary answers: the one flag every operation, health and "log out
    /// everywhere" read.
    status: SharedStatus,
    journal: Journal,
    link: LinkState,
    /// The background write-back of every local session, while one runs.
    sweep: sweep::Sweep,
    /// This instance's place in the primary's record of logouts.
    heard: logouts::Heard,
    write_back_rate: u32,
    mirror_max_sessions: u64,
    absolute_lifetime: Duration,
}

/// What a session missing from the primary turned out to be (see `Shared::missing`).
enum Missing {
    /// The keepalive's answer.
    Answer(Option<SessionRecord>),
    /// Served from the copy: the primary lost its data or went away meanwhile (an outage),
    /// or did not keep the session it was given back.
    Local,
}

/// The failover store.
pub struct FailoverStore {
    shared: Arc<Shared>,
    /// The link and the logout listener.
    tasks: tokio::sync::Mutex<Tasks>,
}

impl FailoverStore {
    /// Composes the two stores, tries the primary once (bounded by its timeouts), and starts
    /// the link and the logout listener.
    pub(crate) async fn compose(
        primary: Arc<dyn Primary>,
        mirror: Arc<dyn Mirror>,
        options: FailoverOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = clock.now();
        let shared = Arc::new(Shared {
            primary,
            mirror,
            clock,
            metrics,
            status: SharedStatus::offline(),
            journal: Journal::new(now),
            link: LinkState::default(),
            sweep: sweep::Sweep::default(),
            heard: logouts::Heard::default(),
            write_back_rate: options.write_back_rate,
            mirror_max_sessions: options.mirror_max_sessions,
            absolute_lifetime: options.absolute_lifetime,
        });
        shared.metrics.redis_up.set(0);
        // Read before the first connect, which it shortens.
        shared.take_clean_stop().await;
        if let Err(err) = shared.reconnect(true).await {
            tracing::warn!(reason = %err, "[redis] unreachable at start: {err}; degraded mode on: sessions are served from the local store until Redis answers");
        }
        let mut tasks = Tasks::new();
        let linked = Arc::clone(&shared);
        tasks.spawn("redis link", |stop| link::run(linked, options, stop));
        let listening = Arc::clone(&shared);
        tasks.spawn("logout listener", |stop| {
            logouts::run(listening, options, stop)
        });
        Self {
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
        }
    }

    /// Whether the primary answers, as this store sees it: for the health check.
    pub fn status(&self) -> SharedStatus {
        self.shared.status.clone()
    }
}

impl Shared {
    fn is_online(&self) -> bool {
        self.status.is_online()
    }

    /// Marks the primary offline; logs and counts the transition once.
    fn go_offline(&self, reason: &str) {
        if self.status.set_online(false) {
            self.journal.begin_outage(self.clock.now());
            self.sweep_stopped();
            self.primary.disconnect();
            self.metrics.redis_up.set(0);
            self.metrics.redis_outages_total.inc();
            self.link.lost.notify_one();
            tracing::warn!("[redis] connection lost: {reason}");
            tracing::warn!(
                "[redis] degraded mode on: sessions are served from the local store until Redis answers"
            );
        }
    }

    /// An operation failed on the primary: a corrupt record is the caller's error; anything
    /// else is an outage.
    fn failed(&self, err: StoreError) -> Result<(), StoreError> {
        match err {
            StoreError::Corrupt(_) | StoreError::Unsupported(_) => Err(err),
            other => {
                self.go_offline(&other.to_string());
                Ok(())
            }
        }
    }

    /// A tombstone for a logout at `now`, kept as long as the session could have lived.
    fn tombstone(&self, now: Millis) -> Tombstone {
        Tombstone {
            at: now,
            keep_until: now.saturating_add(duration_millis(self.absolute_lifetime)),
        }
    }

    /// Writes `record` as the copy of its session, with the next batch.
    fn keep_copy(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.mirror.copy(record)
    }

    /// Removes the copy of a session, with the next batch, leaving `tombstone` if given.
    /// Returns whether there was one.
    fn remove_copy(
        &self,
        id: &SessionId,
        tombstone: Option<Tombstone>,
    ) -> Result<bool, StoreError> {
        let mut existed = false;
        self.mirror.modify(id, &mut |copy| {
            existed = copy.is_some();
            // An unknown id leaves a tombstone only when asked: a logout's must reach the
            // primary whatever this instance held.
            (existed || tombstone.is_some()).then_some(Write::Remove(tombstone))
        })?;
        Ok(existed)
    }

    /// Keeps the copy of a session the primary just extended: every answer becomes the copy in
    /// the mirror's memory, and reaches its file with the next batch, so that a crash of this
    /// instance loses what the local store's own sessions lose (one flush interval), and a
    /// Redis that loses its data afterwards gets the session back with the expiry its user was
    /// told. A session kept alive many times a second costs the mirror one write a batch.
    fn copy_extension(&self, record: &SessionRecord, idle: Duration) -> Result<(), StoreError> {
        // Another instance's keepalives extend the session in Redis, not here: this copy may
        // trail by the time since this instance last served it. The mirror keeps expired
        // copies half an idle timeout, so that such a copy is still there to be written back
        // should Redis lose its data, or to be told apart from an unknown id in an outage; a
        // format whose sessions carry a longer idle timeout of their own is held to
        // keepalive's.
        let idle = self.primary.idle_of(record, idle).min(idle);
        self.mirror.keep_expired(idle / 2);
        self.keep_copy(record)
    }

    /// The session as this instance knows it (its copy: what the primary last answered this
    /// instance, or what it did during an outage), if that is live at `now`.
    fn live_copy(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.mirror.get(id)?.filter(|record| record.is_live(now)))
    }

    /// A keepalive found no live session `id` in the primary. Usually it expired or was ended
    /// elsewhere, and a stale copy goes, so that a later outage cannot revive it (an unknown
    /// id costs no write). But if this instance holds it live, the primary may have lost it:
    /// all its data (`FLUSHALL`, a failover to a replica that missed writes: the data set
    /// changed, an outage begins and the re-sync writes everything back), or this key alone
    /// (evicted): the copy goes back unless a logout marks the session (ended elsewhere; a
    /// format that leaves no mark says so by not taking it back). A session Redis did not keep
    /// though no logout marks it (evicted again at once) is answered from the copy.
    async fn missing(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Missing, StoreError> {
        let Some(copy) = self.live_copy(id, now)? else {
            let answer = self.none_online(id, now).await?;
            self.remove_copy(id, None)?;
            return Ok(Missing::Answer(answer));
        };
        match self.probe_data_set().await {
            Checked::Same(_) => {}
            // Redis lost its data: an outage, served from the copies until the re-sync. Redis
            // answers, though, and a logout made since the loss at an instance that held no
            // copy left its mark there (see `delete`): asked before the outage drops the
            // connection, so that the copy does not outlive the logout.
            Checked::Other(reason) => {
                let over = self.primary.over(id).await;
                self.go_offline(reason);
                return match over {
                    Ok(Over::Marked) => {
                        self.ended_elsewhere(id, now)?;
                        Ok(Missing::Answer(None))
                    }
                    Ok(Over::No | Over::Gone) => Ok(Missing::Local),
                    Err(err) => {
                        self.failed(err)?;
                        Ok(Missing::Local)
                    }
                };
            }
            Checked::Silent => return Ok(Missing::Local),
        }
        if let Err(err) = self.primary.merge(&copy, now, false).await {
            self.failed(err)?;
            return Ok(Missing::Local);
        }
        match self.primary.touch(id, now, idle).await {
            Ok(Some(record)) => {
                tracing::debug!(session = ?id, "[redis] a session missing from Redis was put back from this instance's copy (evicted?)");
                self.copy_extension(&record, idle)?;
                Ok(Missing::Answer(Some(record)))
            }
            // Still missing: ended elsewhere if a logout marks it (or, for a format whose
            // logouts leave no mark, if it is gone at all). Otherwise Redis did not keep it
            // (evicting as it came): this instance answers from its copy, which goes back at
            // the next write-back.
            Ok(None) => match self.primary.over(id).await {
                Ok(Over::Marked | Over::Gone) => {
                    self.ended_elsewhere(id, now)?;
                    Ok(Missing::Answer(None))
                }
                Ok(Over::No) => Ok(Missing::Local),
                Err(err) => {
                    self.failed(err)?;
                    Ok(Missing::Local)
                }
            },
            Err(err) => {
                self.failed(err)?;
                Ok(Missing::Local)
            }
        }
    }

    /// Offline, the mirror holds no live session `id`. That is the answer only where this
    /// instance knows the session is over: its logout is remembered here, its copy is past the
    /// absolute lifetime (which nothing extends), or the session was created here during this
    /// outage (no other instance can know it). Otherwise the session may live in Redis, kept
    /// alive through another instance since this one last heard of it (its copy judged by what
    /// Redis said then, or no copy at all): [`StoreError::Undecided`], which the HTTP layer
    /// answers with a 503 the client retries, rather than a 401 that signs its user out.
    fn none_offline(
        &self,
        id: &SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if self.mirror.ended(id)? {
            return Ok(None);
        }
        match self.mirror.get(id)? {
            Some(copy)
                if copy.absolute_expires_at <= now
                    || copy.created_at >= self.journal.outage_began() =>
            {
                Ok(None)
            }
            _ => Err(StoreError::Undecided),
        }
    }

    /// Every copy of a session of `user` this instance holds, expired or not: one that looks
    /// expired may trail what Redis said, and any may be written back to a Redis that lost
    /// the session.
    async fn copies_of_user(&self, user: &str) -> Result<Vec<SessionRecord>, StoreError> {
        // The mirror lists the sessions live at a time: at the earliest time, every one.
        self.mirror.list_user(user, Millis::MIN).await
    }

    /// "Log out everywhere" while the primary answers: records it there first, so that no
    /// instance writes back a session of theirs it kept while offline; ends every session the
    /// primary lists for `user`, whether it still holds it or not (a session it evicted may
    /// come back from another instance's copy: its mark keeps it out), and every copy of
    /// theirs here, then announces it, so that each instance ends its own copies, even of
    /// sessions Redis no longer lists. Returns how many were live.
    async fn end_user_online(&self, user: &str, now: Millis) -> Result<u64, StoreError> {
        let mut ids = self.primary.mark_user_ended(user, now).await?;
        let copies = self.copies_of_user(user).await?;
        for copy in &copies {
            if !ids.contains(&copy.id) {
                ids.push(copy.id);
            }
        }
        let mut ended = 0;
        for id in &ids {
            let existed = self.primary.end(id, now).await?;
            let held = self.remove_copy(id, Some(self.tombstone(now)))?;
            let live_copy = held && copies.iter().any(|c| c.id == *id && c.is_live(now));
            if existed || live_copy {
                ended += 1;
            }
            for successor in self.successors(id, now) {
                self.remove_copy(&successor, Some(self.tombstone(now)))?;
            }
        }
        self.primary.announce_user_ended(user, now).await?;
        Ok(ended)
    }

    /// Redis, answering, holds no live session `id`, and this instance no copy that could
    /// bring it back. That is the answer, unless Redis lost keys lately or an instance says it
    /// is putting back what Redis lost: then the session may be one it lost, which an instance
    /// holding a copy is about to put back, and only a logout's mark tells it from that
    /// ([`StoreError::Undecided`] otherwise, a 503 the client retries): an eviction or a flush
    /// that began a moment ago, or a write-back that takes longer than noticing a loss, must
    /// not sign anyone out.
    async fn none_online(
        &self,
        id: &SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // This instance saw the session end (its logout here, or one heard or found from
        // elsewhere, its tombstone kept): whatever comes back, it stays ended.
        if self.mirror.ended(id)? {
            return Ok(None);
        }
        let doubt = self.doubt(now).await?;
        if matches!(doubt, Doubt::None) {
            return Ok(None);
        }
        if matches!(doubt, Doubt::Silent) {
            return Err(StoreError::Undecided);
        }
        // Only a mark tells: a session gone without one (in a format whose application leaves
        // none at its logouts) may be one Redis lost, which another instance is putting back.
        // Asked before the outage that another data set means drops the connection.
        let over = self.primary.over(id).await;
        if let Doubt::Unknown(reason) = doubt {
            self.go_offline(reason);
        }
        match over {
            Ok(Over::Marked) => Ok(None),
            Ok(Over::No | Over::Gone) => Err(StoreError::Undecided),
            Err(err) => {
                self.failed(err)?;
                Err(StoreError::Undecided)
            }
        }
    }

    /// The ids `id` was lately rotated to, in order, whose session a logout of `id` at `now`
    /// ends too (see [`OLD_ID_LOGOUT_WINDOW`]).
    fn successors(&self, id: &SessionId, now: Millis) -> Vec<SessionId> {
        let mut ids = Vec::new();
        let mut next = self.mirror.rotated_to(id, now);
        while let Some(successor) = next.filter(|_| ids.len() < MAX_SUCCESSORS) {
            ids.push(successor);
            next = self.mirror.rotated_to(&successor, now);
        }
        ids
    }

    /// Ends a session in the mirror while the primary is offline, with a tombstone on disk
    /// before this returns, so the logout reaches the primary later, even across a restart.
    /// Returns whether it existed.
    async fn end_offline(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        let existed = self.remove_copy(id, Some(self.tombstone(now)))?;
        self.mirror.flush().await?;
        self.changed(*id).await;
        Ok(existed)
    }

    /// Remembers a change made while offline. If the primary came back in the meantime, the
    /// change missed the re-sync, so it is written back here.
    async fn changed(&self, id: SessionId) {
        {
            let mut changed = self.journal.changed();
            if !self.is_online() {
                changed.insert(id);
                return;
            }
        }
        // The primary is back with the data set the re-sync reconciled.
        if let Err(err) = self.write_back(&id, false).await {
            self.go_offline(&err.to_string());
            self.journal.changed().insert(id);
        }
    }

    /// Writes the mirror's state of one session to the primary: the session if it lives, its
    /// logout if it is gone. `data_lost`: the primary came back without its data. Returns
    /// (sessions written, logouts written).
    async fn write_back(&self, id: &SessionId, data_lost: bool) -> Result<(u64, u64), StoreError> {
        let now = self.clock.now();
        match self.mirror.get(id)? {
            Some(record) if record.is_live(now) => Ok((
                u64::from(self.primary.merge(&record, now, data_lost).await?),
                0,
            )),
            Some(_) => Ok((0, 0)),
            None => {
                self.primary.end(id, now).await?;
                Ok((0, 1))
            }
        }
    }
}

#[async_trait]
impl SessionStore for FailoverStore {
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        let s = &self.shared;
        if s.is_online() {
            match s.primary.create(record.clone()).await {
                Ok(()) => return s.keep_copy(&record),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let id = record.id;
        s.mirror.create(record).await?;
        s.changed(id).await;
        Ok(())
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        s.write_back_early(id).await?;
        if s.is_online() {
            match s.primary.load(id, now).await {
                Ok(Some(record)) => {
                    // What Redis says now is known here, should an outage follow.
                    s.mirror.refresh(&record)?;
                    return Ok(Some(record));
                }
                Ok(None) => return s.none_online(id, now).await,
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        match s.mirror.load(id, now).await? {
            Some(record) => Ok(Some(record)),
            None => s.none_offline(id, now),
        }
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        s.write_back_early(id).await?;
        if s.is_online() {
            match s.primary.touch(id, now, idle).await {
                Ok(Some(record)) => {
                    s.copy_extension(&record, idle)?;
                    return Ok(Some(record));
                }
                Ok(None) => match s.missing(id, now, idle).await? {
                    Missing::Answer(answer) => return Ok(answer),
                    // Served from the copy below: an outage (Redis lost its data, or went
                    // away) until the re-sync, or a copy Redis did not keep, offered again.
                    Missing::Local => {}
                },
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let mut touched = None;
        s.mirror.modify(id, &mut |copy| {
            // The copy as the primary last answered it here: no grace.
            let mut record = copy?.clone();
            if !record.is_live(now) {
                return None;
            }
            // The session's own idle timeout, for a format whose sessions carry one.
            let idle = s.primary.idle_of(&record, idle);
            record.touch(now, idle);
            touched = Some(record.clone());
            Some(Write::Put(record))
        })?;
        match touched {
            Some(record) => {
                s.changed(*id).await;
                Ok(Some(record))
            }
            None => s.none_offline(id, now),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let s = &self.shared;
        let now = s.clock.now();
        if s.is_online() {
            // An id that neither the primary nor this instance holds leaves no mark and no
            // tombstone, unless the primary may have just lost it (below): a logout of a
            // made-up id must cost no storage. While the primary is offline (further below)
            // every logout is kept, since this instance cannot tell such an id from a session
            // the primary or another instance holds.
            let held = s.mirror.get(id)?.is_some();
            'online: {
                let existed = match s.primary.log_out(id, now, held).await {
                    Ok(existed) => existed,
                    Err(err) => {
                        s.failed(err)?;
                        break 'online;
                    }
                };
                // Neither holds it: a made-up id, one ended before, or one that Redis has just
                // lost and that an instance holding a copy would serve, then put back. In
                // doubt the logout leaves its mark after all, and is announced, so that
                // instance ends its copy and its write-back skips it.
                let marked = !existed
                    && !held
                    && match s.doubt(now).await? {
                        Doubt::None => false,
                        Doubt::Silent => break 'online,
                        doubt @ (Doubt::Lost | Doubt::Unknown(_)) => {
                            let marking = s.primary.log_out(id, now, true).await;
                            // Marked before the outage the loss means drops the connection.
                            if let Doubt::Unknown(reason) = doubt {
                                s.go_offline(reason);
                            }
                            if let Err(err) = marking {
                                s.failed(err)?;
                                break 'online;
                            }
                            true
                        }
                    };
                // Kept should the primary come back empty, when the mark that keeps other
                // instances' copies out is gone.
                if existed || held || marked {
                    s.remove_copy(id, Some(s.tombstone(now)))?;
                }
                // The primary ended the ids this one was lately rotated to; so do the copies
                // here, without waiting to hear it.
                for successor in s.successors(id, now) {
                    s.remove_copy(&successor, Some(s.tombstone(now)))?;
                }
                return Ok(existed);
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let mut existed = s.end_offline(id, now).await?;
        // A logout sent with the old id while its rotation was on its way ends the new one.
        for successor in s.successors(id, now) {
            existed |= s.end_offline(&successor, now).await?;
        }
        Ok(existed)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.shared;
        s.write_back_early(old).await?;
        if s.is_online() {
            match s.primary.rotate(old, new, now).await {
                Ok(Some(record)) => {
                    s.keep_copy(&record)?;
                    s.remove_copy(old, Some(s.tombstone(now)))?;
                    let until = now.saturating_add(duration_millis(OLD_ID_LOGOUT_WINDOW));
                    s.mirror.note_rotation(old, &new, until);
                    // A logout of the old id made elsewhere just now may have ended the new one
                    // before its copy existed here, and its announcement found nothing to end.
                    return match s.primary.over(&new).await {
                        Ok(Over::No) => Ok(Some(record)),
                        Ok(Over::Marked | Over::Gone) => {
                            s.ended_elsewhere(&new, now)?;
                            Ok(None)
                        }
                        // Offline from now on: the re-sync finds the new id's mark, if any,
                        // and the look-up of missed logouts ends its copy.
                        Err(err) => s.failed(err).map(|()| Some(record)),
                    };
                }
                Ok(None) => return s.none_online(old, now).await,
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let Some(record) = s.mirror.rotate(old, new, now).await? else {
            return s.none_offline(old, now);
        };
        // The old id's end is recorded for the primary, which still knows it.
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
        s.write_back_early(id).await?;
        if s.is_online() {
            match s.primary.update(id, data.clone(), now).await {
                Ok(Some(record)) => {
                    s.keep_copy(&record)?;
                    return Ok(Some(record));
                }
                Ok(None) => return s.none_online(id, now).await,
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        match s.mirror.update(id, data, now).await? {
            Some(record) => {
                s.changed(*id).await;
                Ok(Some(record))
            }
            None => s.none_offline(id, now),
        }
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        let s = &self.shared;
        s.write_back_user_early(user).await?;
        if s.is_online() {
            match s.primary.list_user(user, now).await {
                Ok(sessions) => return Ok(sessions),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        s.mirror.list_user(user, now).await
    }

    async fn end_user(&self, user: &str, now: Millis) -> Result<u64, StoreError> {
        let s = &self.shared;
        s.write_back_user_early(user).await?;
        if s.is_online() {
            match s.end_user_online(user, now).await {
                Ok(ended) => return Ok(ended),
                Err(err) => s.failed(err)?,
            }
        }
        s.metrics.redis_fallbacks_total.inc();
        let mut ended = 0;
        for session in s.mirror.list_user(user, now).await? {
            if self.delete(&session.id).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The mirror's count: the sessions this instance created or served within their idle
    /// timeout (every session, with one instance). Redis's own total would cost a scan.
    async fn live_count(&self, now: Millis) -> Result<Option<u64>, StoreError> {
        self.shared.mirror.live_count(now).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.shared.mirror.flush().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.tasks.lock().await.stop().await;
        self.shared.note_clean_stop().await;
        self.shared.primary.disconnect();
        self.shared.mirror.close().await
    }
}

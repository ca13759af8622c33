//! The write-back of every local session that runs while the primary serves: after this
//! instance stopped without a clean stop (a crash, SIGKILL, an OOM kill), or Redis evicted keys
//! (while this instance was away, or while it serves), into a Redis that kept its data set.
//!
//! What such a start must write back is every kept logout and every live copy, since it cannot
//! tell what changed before it stopped: a million of them take seconds, and an instance that
//! waited for them before serving would stay out of the pool that long. Redis holds every
//! session but those this instance changed during an outage before it stopped, so the instance
//! serves from Redis at once, and a walk through its local store writes the rest back in the
//! background, logouts first, in the order of ids, page by page, at a bounded rate so that a
//! fleet restarting at once does not crowd out the live traffic.
//!
//! The guarantees are those of the blocking write-back (no logout revived, the newest activity
//! wins) because a request never reaches Redis for a session the walk has not passed yet
//! before that session's own write-back: the request does it first (`write_back_early`), and
//! the walk skips what requests already did. Redis's own rules do the rest: a merge never
//! writes over newer activity or a logout's mark, and a logout wins over everything. A session
//! this instance created during an outage before it stopped is in Redis only once written
//! back, so the walk renews the write-back notice while it runs: another instance asked for a
//! session missing from Redis answers that it cannot tell yet, not that it does not exist.
//!
//! The walk holds its place, not the ids: memory does not grow with the store. If Redis goes
//! away meanwhile, the walk stops and the reconnection starts it again from the first id (the
//! reasons for it, a crash or evictions, are cleared only once a walk completes); a stop leaves
//! no clean-stop note while it runs, so the next start walks again.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::session::{SessionId, StoreError};

use super::Shared;
use super::link::Notice;

/// Ids read from the local store per page of the walk.
const PAGE: usize = 256;
/// Write-backs in flight at once within a page (they share one pipelined connection).
const CONCURRENCY: usize = 64;
/// Longest sleep between two turns of the walk when it keeps to its rate: the link task probes
/// and the walk renews its notice in between.
const PAUSE_MAX: Duration = Duration::from_millis(250);

/// Which part of the walk runs: every kept logout first, then every live copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Logouts,
    Sessions,
}

/// A walk under way.
struct Walk {
    stage: Stage,
    /// The last id the walk has written back in its stage (`None`: none yet).
    passed: Option<SessionId>,
    /// The ids requests wrote back ahead of the walk: it skips them. Bounded by the sessions
    /// requested while the walk runs, and dropped with it.
    early: HashSet<SessionId>,
    /// When the walk began Redis had evicted this many keys: recorded as written back after
    /// once it completes.
    evicted: Option<u64>,
    began: Instant,
    /// The rate the walk keeps to (0: as fast as Redis answers).
    rate: u32,
    /// Write-backs issued (sessions and logouts, merged or refused), for the rate.
    issued: u64,
    sessions: u64,
    logouts: u64,
    /// Renewed while the walk runs: a session this instance created during an outage before
    /// it stopped is in Redis only once the walk (or a request here) writes it, and until then
    /// another instance must not answer that it does not exist.
    notice: Option<Notice>,
}

impl Walk {
    /// Whether the walk has yet to write `id` back in `stage`.
    fn ahead(&self, stage: Stage, id: &SessionId) -> bool {
        match (self.stage, stage) {
            (Stage::Logouts, Stage::Sessions) => true,
            (Stage::Sessions, Stage::Logouts) => false,
            _ => self.passed.is_none_or(|passed| *id > passed),
        }
    }
}

/// The walk, owned by the link task; requests read whether it runs and claim the sessions they
/// are about to send to Redis.
#[derive(Default)]
pub(super) struct Sweep {
    running: AtomicBool,
    walk: Mutex<Option<Walk>>,
}

/// What a request must write back before its session reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    /// Its kept logout, if it has one.
    logout: bool,
    /// Its copy, if live.
    session: bool,
}

impl Sweep {
    /// Whether a walk runs: one atomic load, the cost every request pays when none does.
    pub(super) fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Walk>> {
        self.walk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins a walk from the first id, replacing one that did not complete.
    pub(super) fn begin(&self, evicted: Option<u64>, rate: u32) {
        *self.lock() = Some(Walk {
            stage: Stage::Logouts,
            passed: None,
            early: HashSet::new(),
            evicted,
            began: Instant::now(),
            rate,
            issued: 0,
            sessions: 0,
            logouts: 0,
            notice: Some(Notice::default()),
        });
        self.running.store(true, Ordering::Release);
    }

    /// Claims `id` for a request about to send it to Redis: what it must write back first,
    /// if the walk has not passed it and no other request claimed it.
    fn claim(&self, id: &SessionId) -> Option<Claim> {
        let mut walk = self.lock();
        let walk = walk.as_mut()?;
        let claim = Claim {
            logout: walk.ahead(Stage::Logouts, id),
            session: walk.ahead(Stage::Sessions, id),
        };
        (claim.session && walk.early.insert(*id)).then_some(claim)
    }
}

impl Shared {
    /// Begins a walk from the first id (`evicted`: after that many evictions, if evictions
    /// are its reason): the copies on disk first, since the walk reads the file.
    pub(super) async fn begin_walk(&self, evicted: Option<u64>) -> Result<(), StoreError> {
        self.mirror.flush().await?;
        self.sweep.begin(evicted, self.write_back_rate);
        self.status.set_writing_back(true);
        self.metrics.redis_writing_back.set(1);
        Ok(())
    }

    /// Before a request sends session `id` to Redis while a walk runs: writes back what the
    /// walk has yet to (its kept logout, or its live copy), so that Redis judges the request
    /// with it. A failure is an outage, as for the request itself.
    pub(super) async fn write_back_early(&self, id: &SessionId) -> Result<(), StoreError> {
        if !self.sweep.running() || !self.is_online() {
            return Ok(());
        }
        let Some(claim) = self.sweep.claim(id) else {
            return Ok(());
        };
        let now = self.clock.now();
        let written = async {
            if claim.logout && self.mirror.ended(id)? {
                return self.primary.end(id, now).await.map(|_| ());
            }
            if let Some(copy) = self.live_copy(id, now)? {
                self.primary.merge(&copy, now, false).await?;
            }
            Ok(())
        }
        .await;
        match written {
            Ok(()) => Ok(()),
            Err(err) => self.failed(err),
        }
    }

    /// Before "log out everywhere" or a listing of `user`'s sessions reaches Redis while a
    /// walk runs: writes back the copies of theirs the walk has yet to, so that Redis lists
    /// (and ends) the sessions this instance created during an outage before it stopped.
    pub(super) async fn write_back_user_early(&self, user: &str) -> Result<(), StoreError> {
        if !self.sweep.running() || !self.is_online() {
            return Ok(());
        }
        for copy in self.copies_of_user(user).await? {
            self.write_back_early(&copy.id).await?;
        }
        Ok(())
    }

    /// One turn of the walk: a page, or a pause that keeps it to its rate. Returns whether
    /// the walk is done (or none runs). An error stops the walk where it is; the reconnection
    /// begins it again.
    pub(super) async fn sweep_page(&self) -> Result<bool, StoreError> {
        let Some((stage, passed, pause)) = self.sweep.lock().as_ref().map(|walk| {
            let due = walk.issued + PAGE as u64;
            (walk.stage, walk.passed, pace(walk.began, due, walk.rate))
        }) else {
            return Ok(true);
        };
        let renew = self.sweep.lock().as_mut().and_then(|w| w.notice.take());
        if let Some(mut notice) = renew {
            let renewed = notice.renew(self).await;
            if let Some(walk) = self.sweep.lock().as_mut() {
                walk.notice = Some(notice);
            }
            renewed?;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(PAUSE_MAX)).await;
            return Ok(false);
        }
        let now = self.clock.now();
        let (read, written, next) = match stage {
            Stage::Logouts => {
                let (ids, next) = self.mirror.removed_page(passed, PAGE).await?;
                let read = ids.len();
                let ids = self.not_early(ids, |id| id);
                let mut written = 0;
                for chunk in ids.chunks(CONCURRENCY) {
                    for ended in join_all(chunk.iter().map(|id| self.primary.end(id, now))).await {
                        ended?;
                        written += 1;
                    }
                }
                (read, written, next)
            }
            Stage::Sessions => {
                let (records, next) = self.mirror.live_page(passed, now, PAGE).await?;
                let read = records.len();
                let records = self.not_early(records, |r| &r.id);
                let mut written = 0;
                for chunk in records.chunks(CONCURRENCY) {
                    let merges = chunk.iter().map(|r| self.primary.merge(r, now, false));
                    for merged in join_all(merges).await {
                        written += u64::from(merged?);
                    }
                }
                (read, written, next)
            }
        };
        let mut guard = self.sweep.lock();
        let Some(walk) = guard.as_mut() else {
            return Ok(true);
        };
        walk.issued += read as u64;
        match stage {
            Stage::Logouts => walk.logouts += written,
            Stage::Sessions => walk.sessions += written,
        }
        match (next, stage) {
            (Some(id), _) => walk.passed = Some(id),
            (None, Stage::Logouts) => {
                walk.stage = Stage::Sessions;
                walk.passed = None;
            }
            (None, Stage::Sessions) => {
                let walk = guard.take().expect("a walk runs");
                drop(guard);
                self.walk_done(walk);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Leaves out of a page what requests wrote back ahead of the walk.
    fn not_early<T>(&self, page: Vec<T>, id: impl Fn(&T) -> &SessionId) -> Vec<T> {
        let guard = self.sweep.lock();
        let Some(walk) = guard.as_ref().filter(|w| !w.early.is_empty()) else {
            return page;
        };
        page.into_iter()
            .filter(|item| !walk.early.contains(id(item)))
            .collect()
    }

    /// The walk wrote every local session back: the reasons for it are cleared.
    fn walk_done(&self, walk: Walk) {
        self.sweep.running.store(false, Ordering::Release);
        self.link.walked(walk.evicted);
        self.status.set_writing_back(false);
        self.metrics.redis_writing_back.set(0);
        self.metrics
            .redis_resynced_sessions_total
            .inc_by(walk.sessions);
        self.metrics
            .redis_resynced_logouts_total
            .inc_by(walk.logouts);
        let (sessions, logouts) = (walk.sessions, walk.logouts);
        tracing::info!(
            sessions,
            logouts,
            early = walk.early.len(),
            elapsed_ms = walk.began.elapsed().as_millis() as u64,
            "[redis] background write-back done: {sessions} sessions and {logouts} logouts written back"
        );
    }

    /// Stops a walk that will not complete (Redis went away): the next reconnection begins
    /// another.
    pub(super) fn sweep_stopped(&self) {
        if self.sweep.lock().take().is_some() {
            self.sweep.running.store(false, Ordering::Release);
            self.status.set_writing_back(false);
            self.metrics.redis_writing_back.set(0);
        }
    }
}

/// How long to wait before the next page so that `issued` write-backs since `began` keep to
/// `rate` a second.
fn pace(began: Instant, issued: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(issued as f64 / f64::from(rate));
    due.saturating_sub(began.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> SessionId {
        SessionId::from_bytes([byte; 16])
    }

    #[test]
    fn a_request_claims_what_the_walk_has_not_passed_once() {
        let sweep = Sweep::default();
        assert_eq!(sweep.claim(&id(1)), None, "no walk, nothing to claim");
        sweep.begin(None, 0);
        assert!(sweep.running());
        assert_eq!(
            sweep.claim(&id(5)),
            Some(Claim {
                logout: true,
                session: true
            })
        );
        assert_eq!(sweep.claim(&id(5)), None, "claimed once");
        {
            let mut walk = sweep.lock();
            let walk = walk.as_mut().expect("walk");
            walk.stage = Stage::Sessions;
            walk.passed = Some(id(7));
        }
        assert_eq!(sweep.claim(&id(6)), None, "passed");
        assert_eq!(
            sweep.claim(&id(8)),
            Some(Claim {
                logout: false,
                session: true
            }),
            "its logout was passed, its copy is ahead"
        );
    }

    #[test]
    fn the_pace_keeps_to_the_rate() {
        let began = Instant::now();
        assert_eq!(pace(began, 1_000_000, 0), Duration::ZERO, "no rate");
        let pause = pace(began, 1_000, 1_000);
        assert!(pause > Duration::from_millis(900) && pause <= Duration::from_secs(1));
        assert_eq!(
            pace(began - Duration::from_secs(2), 1_000, 1_000),
            Duration::ZERO
        );
    }
}

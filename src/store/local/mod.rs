//! The durable embedded session store: a redb file in the data directory.
//!
//! It is the default store and, with Redis, the local copy that keeps sessions alive through
//! an outage. Creations and logouts are on disk before they are answered; keepalive extensions
//! gather in an overlay and one background writer commits them together every flush
//! interval (at most a second), so a keepalive never costs a disk flush; the commits run on a
//! thread of lower CPU priority (the `committer` module), so they never hold up an answer. The same writer
//! purges expired sessions through the expiry index. The writer owns the database's write side
//! and stops, after a last flush, when the store is closed.

pub mod codec;
mod committer;
mod db;
mod overlay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis};
use crate::metrics::Metrics;
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};
use crate::task::Tasks;

use committer::Committer;
use db::Change;
use overlay::Overlay;

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "sessions.redb";
/// Most sessions one purge transaction removes; the purge loops until none is left.
const PURGE_BATCH: usize = 10_000;

/// Timing of the store's background work.
#[derive(Debug, Clone, Copy)]
pub struct LocalStoreOptions {
    /// Period of the batched writes.
    pub flush_interval: Duration,
    /// Period of the purge of expired sessions.
    pub purge_interval: Duration,
}

/// State shared by the request side and the writer.
struct Shared {
    db: Database,
    overlay: Overlay,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// Where the local store stood with the shared store at a clean stop: every change it held
/// had reached the shared store `store`, whose Redis had the run id `run_id`, by `at`. The next
/// start then writes back only what changed after `at`, rather than every live session, if the
/// same store with the same Redis is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPoint {
    /// Which shared store: where, which database, which key prefix (no credentials).
    pub store: String,
    /// The Redis run id (several, comma-separated, for a cluster).
    pub run_id: String,
    /// The store's clock when the stop was recorded.
    pub at: Millis,
}

/// The durable embedded store.
pub struct LocalStore {
    shared: Arc<Shared>,
    flush_requests: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    closed: AtomicBool,
    /// The writer. A store dropped without `close` still stops it, and it flushes on its way
    /// out.
    tasks: Mutex<Tasks>,
    path: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer.
    pub async fn open(
        data_dir: &Path,
        options: LocalStoreOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let dir = data_dir.to_owned();
        let file = path.clone();
        let db = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|err| {
                StoreError::Backend(format!(
                    "cannot create the data directory {}: {err}; set KEEPALIVE_DATA_DIR to a directory this user can write",
                    dir.display()
                ))
            })?;
            db::open(&file)
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))??;

        let shared = Arc::new(Shared {
            db,
            overlay: Overlay::default(),
            clock,
            metrics,
        });
        let (tx, rx) = mpsc::channel(1024);
        let committer = Committer::start()?;
        let mut tasks = Tasks::new();
        let writing = Arc::clone(&shared);
        tasks.spawn("local store writer", |stop| {
            writer(writing, committer, rx, options, stop)
        });
        Ok(Self {
            shared,
            flush_requests: tx,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of stored sessions (live, or expired and awaiting the purge).
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || db::count(&shared.db))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Purges the sessions expired at the store's current time now; returns how many went.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || purge_all(&shared))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Keeps a copy of a session that lives elsewhere (Redis): written with the next batch,
    /// not durably on return, since the primary copy is already safe.
    pub fn mirror(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared
            .overlay
            .shard(&record.id)
            .put(record.id, Change::Put(record));
        Ok(())
    }

    /// Drops the copy of a session that ended or expired elsewhere, with the next batch.
    pub fn forget(&self, id: &SessionId) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared.overlay.shard(id).put(*id, Change::Delete);
        Ok(())
    }

    /// Like [`SessionStore::touch`], but during an outage of the shared store. A session last
    /// seen here before the outage began may have been kept alive on another instance since,
    /// up to `outage_began + idle` at the latest; until then it is accepted (within its absolute
    /// lifetime) even if this copy's idle expiry passed, rather than dropped because Redis
    /// blinked. Sessions seen here during the outage follow the normal rule.
    pub fn touch_in_outage(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
        outage_began: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let mut shard = self.shared.overlay.shard(id);
        let grace_until = outage_began.saturating_add(crate::clock::duration_millis(idle));
        let alive = |r: &SessionRecord| {
            r.is_live(now)
                || (r.last_seen_at < outage_began
                    && now < grace_until
                    && now < r.absolute_expires_at)
        };
        let Some(mut record) = self.current(&shard, id)?.filter(alive) else {
            return Ok(None);
        };
        record.touch(now, idle);
        shard.put(*id, Change::Put(record.clone()));
        Ok(Some(record))
    }

    /// Ends a session durably and records the logout for the shared store, which was offline:
    /// the record outlives a restart, so the logout reaches Redis even then. Kept until
    /// `keep_until` at most.
    pub async fn end_offline(
        &self,
        id: &SessionId,
        ended_at: Millis,
        keep_until: Millis,
    ) -> Result<bool, StoreError> {
        self.check_open()?;
        let existed = {
            let mut shard = self.shared.overlay.shard(id);
            let existed = self.current(&shard, id)?.is_some();
            shard.put(
                *id,
                Change::End {
                    ended_at,
                    keep_until,
                },
            );
            existed
        };
        self.flush().await?;
        Ok(existed)
    }

    /// Logouts recorded since `since` (all for `None`) that the shared store has not seen.
    pub async fn ended_since(&self, since: Option<Millis>) -> Result<Vec<SessionId>, StoreError> {
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || db::ended_since(&shared.db, since))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Records a logout the shared store already has, with the next batch: kept until
    /// `keep_until`, so that it is written again if the shared store comes back empty.
    pub fn remember_end(
        &self,
        id: &SessionId,
        ended_at: Millis,
        keep_until: Millis,
    ) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared.overlay.shard(id).put(
            *id,
            Change::End {
                ended_at,
                keep_until,
            },
        );
        Ok(())
    }

    /// Another instance ended this session: the local copy, if there is one, is ended too
    /// (with the next batch), so no outage or re-sync can revive it. Returns whether there was
    /// a copy.
    pub fn ended_elsewhere(&self, id: &SessionId, ended_at: Millis) -> Result<bool, StoreError> {
        self.check_open()?;
        let mut shard = self.shared.overlay.shard(id);
        let Some(copy) = self.current(&shard, id)? else {
            return Ok(false);
        };
        shard.put(
            *id,
            Change::End {
                ended_at,
                keep_until: copy.absolute_expires_at.max(ended_at),
            },
        );
        Ok(true)
    }

    /// The idle expiry of the newest local state of a session (live or not), without copying
    /// the session: what the failover store compares on every keepalive.
    pub fn expires_at_of(&self, id: &SessionId) -> Result<Option<Millis>, StoreError> {
        self.check_open()?;
        self.shared
            .overlay
            .shard(id)
            .expiry(id, || db::expires_at(&self.shared.db, id))
    }

    /// The newest local state of a session, live or not.
    pub fn get_any(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let shard = self.shared.overlay.shard(id);
        self.current(&shard, id)
    }

    /// Live sessions (at `now`) last seen at or after `since` (all live sessions for `None`),
    /// for the re-sync of the shared store.
    pub async fn changed_since(
        &self,
        since: Option<Millis>,
        now: Millis,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            db::scan(&shared.db, |r| {
                (r.is_live(now) && since.is_none_or(|s| r.last_seen_at >= s)).then_some(r)
            })
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// The ids of the sessions live at `now`: only the ids are kept, so an instance with many
    /// sessions can check them all against the shared store's logouts.
    pub async fn live_ids(&self, now: Millis) -> Result<Vec<SessionId>, StoreError> {
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            db::scan(&shared.db, |r| r.is_live(now).then_some(r.id))
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Records that every change in this store had reached the shared store whose run id is
    /// `run_id` by `at` (see [`SyncPoint`]); durable on return. The failover store says so when
    /// it stops cleanly while connected.
    pub async fn save_sync_point(&self, point: SyncPoint) -> Result<(), StoreError> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            db::save_synced(&shared.db, &point.store, &point.run_id, point.at)
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// The [`SyncPoint`] the last clean stop left for the shared store `store` (none if it was
    /// left for another), removed from the file either way: it describes the moment of that
    /// stop only, so it is read once, at start.
    pub async fn take_sync_point(&self, store: &str) -> Result<Option<SyncPoint>, StoreError> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        let key = store.to_owned();
        let taken = tokio::task::spawn_blocking(move || db::take_synced(&shared.db, &key))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))??;
        Ok(taken.map(|(run_id, at)| SyncPoint {
            store: store.to_owned(),
            run_id,
            at,
        }))
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Reads the newest state of a session: the overlay, else the database.
    fn current(
        &self,
        shard: &overlay::Shard,
        id: &SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match shard.get(id) {
            Some(Change::Put(record)) => Ok(Some(record.clone())),
            Some(Change::Delete | Change::End { .. }) => Ok(None),
            None => db::get(&self.shared.db, id),
        }
    }
}

#[async_trait]
impl SessionStore for LocalStore {
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.check_open()?;
        self.shared
            .overlay
            .shard(&record.id)
            .put(record.id, Change::Put(record));
        self.flush().await
    }

    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let shard = self.shared.overlay.shard(id);
        Ok(self.current(&shard, id)?.filter(|r| r.is_live(now)))
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let mut shard = self.shared.overlay.shard(id);
        let Some(mut record) = self.current(&shard, id)?.filter(|r| r.is_live(now)) else {
            return Ok(None);
        };
        record.touch(now, idle);
        shard.put(*id, Change::Put(record.clone()));
        Ok(Some(record))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.check_open()?;
        let existed = {
            let mut shard = self.shared.overlay.shard(id);
            let existed = self.current(&shard, id)?.is_some();
            shard.put(*id, Change::Delete);
            existed
        };
        self.flush().await?;
        Ok(existed)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let current = {
            let shard = self.shared.overlay.shard(old);
            self.current(&shard, old)?.filter(|r| r.is_live(now))
        };
        let Some(mut record) = current else {
            return Ok(None);
        };
        record.id = new;
        self.shared
            .overlay
            .shard(&new)
            .put(new, Change::Put(record.clone()));
        // A keepalive of the old id racing this sees the deletion from here on; both changes
        // reach the disk in the same commit.
        self.shared.overlay.shard(old).put(*old, Change::Delete);
        self.flush().await?;
        Ok(Some(record))
    }

    async fn update(
        &self,
        id: &SessionId,
        data: String,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let updated = {
            let mut shard = self.shared.overlay.shard(id);
            match self.current(&shard, id)?.filter(|r| r.is_live(now)) {
                Some(mut record) => {
                    record.data = data;
                    record.last_seen_at = record.last_seen_at.max(now);
                    shard.put(*id, Change::Put(record.clone()));
                    Some(record)
                }
                None => None,
            }
        };
        if updated.is_some() {
            self.flush().await?;
        }
        Ok(updated)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        // The index is on disk: write what the overlay holds first, then read the newest state
        // of each session through the overlay (one may have ended since).
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        let owned = user.to_owned();
        let ids = tokio::task::spawn_blocking(move || db::user_sessions(&shared.db, &owned))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))??;
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            let shard = self.shared.overlay.shard(&id);
            if let Some(record) = self.current(&shard, &id)?.filter(|r| r.is_live(now)) {
                sessions.push(record);
            }
        }
        sessions.sort_by_key(|r| (r.created_at, r.id));
        Ok(sessions)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flush_requests
            .send(tx)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Backend)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        self.tasks.lock().await.stop().await;
        Ok(())
    }
}

/// The writer: commits the overlay every flush interval or when asked (group commit: every
/// request waiting when a commit starts is answered by it), purges every purge interval, and
/// flushes one last time when stopped.
async fn writer(
    shared: Arc<Shared>,
    committer: Committer,
    mut requests: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    options: LocalStoreOptions,
    stop: CancellationToken,
) {
    let mut flush_tick = tokio::time::interval(options.flush_interval);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge_tick = tokio::time::interval(options.purge_interval);
    purge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purge_tick.reset();
    loop {
        let mut waiters = Vec::new();
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(waiter) = requests.recv() => waiters.push(waiter),
            _ = flush_tick.tick() => {}
            _ = purge_tick.tick() => {
                let s = Arc::clone(&shared);
                let purged = match flush(&shared, &committer).await {
                    Ok(()) => committer.run(move || purge_all(&s)).await,
                    Err(err) => Err(err),
                };
                match purged {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "expired sessions purged"),
                    Ok(_) => {}
                    Err(err) => tracing::error!(error = %err, "purge of expired sessions failed"),
                }
                continue;
            }
        }
        while let Ok(waiter) = requests.try_recv() {
            waiters.push(waiter);
        }
        let result = flush(&shared, &committer).await.map_err(|e| e.to_string());
        if let Err(err) = &result {
            tracing::error!(error = %err, "writing sessions to the local store failed; will retry");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
    requests.close();
    let mut waiters = Vec::new();
    while let Ok(waiter) = requests.try_recv() {
        waiters.push(waiter);
    }
    let result = flush(&shared, &committer).await.map_err(|e| e.to_string());
    committer.stop().await;
    match &result {
        Ok(()) => tracing::debug!("local store flushed and closed"),
        Err(err) => tracing::error!(error = %err, "last flush of the local store failed"),
    }
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
}

async fn flush(shared: &Arc<Shared>, committer: &Committer) -> Result<(), StoreError> {
    // Moving changes into and out of the overlay takes its shard locks, which request handlers
    // wait on: that happens here, at normal priority. Only the commit itself runs on the
    // low-priority thread, which holds no lock a request needs.
    let batches = shared.overlay.begin_flush();
    if batches.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let s = Arc::clone(shared);
    let committed = committer
        .run(move || db::apply(&s.db, batches.iter().map(|b| b.as_ref())))
        .await;
    match committed {
        Ok(written) => {
            shared.overlay.end_flush();
            shared
                .metrics
                .store_flush_seconds
                .observe(started.elapsed().as_secs_f64());
            shared.metrics.store_writes_total.inc_by(written as u64);
            Ok(())
        }
        Err(err) => {
            shared.overlay.abort_flush();
            Err(err)
        }
    }
}

fn purge_all(shared: &Shared) -> Result<usize, StoreError> {
    let now = shared.clock.now();
    let mut total = 0;
    loop {
        let removed = db::purge(&shared.db, now, PURGE_BATCH)?;
        total += removed;
        if removed < PURGE_BATCH {
            break;
        }
    }
    shared.overlay.forget_expired(now);
    shared.metrics.sessions_purged_total.inc_by(total as u64);
    Ok(total)
}

#[cfg(test)]
mod tests;

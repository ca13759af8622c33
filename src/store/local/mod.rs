//! The durable embedded session store: a redb file in the data directory.
//!
//! It is the default store and, with Redis, the mirror that keeps sessions alive through an
//! outage (its side of that, in the `mirror` module, is what the failover's `Mirror` interface
//! asks). Creations and logouts are on disk before they are answered; keepalive extensions
//! gather in an overlay and one background writer commits them together every flush interval
//! (at most a second), so a keepalive never costs a disk flush. Commits append to a write-ahead
//! log, and every few seconds a fold writes what it holds into the tables (the `wal` module
//! says why): a creation or a logout waits for an append, a caller that reads the tables (a
//! user's sessions, a walk of the file) for a fold. The commits run on a thread of lower CPU
//! priority (the `committer` module), so they never hold up an answer. The same
//! writer purges expired sessions through the expiry index. The writer owns the database's
//! write side and stops, after a last fold, when the store is closed. The store on its own
//! also keeps every session's times in memory (the `times` module), so that a keepalive
//! extends a session without reading the file, and the extension waits there, not in the
//! overlay, for the fold.

pub mod codec;
mod committer;
mod db;
mod mirror;
mod overlay;
mod rotations;
mod times;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis, duration_millis};
use crate::metrics::Metrics;
use crate::session::{
    Expiry, OLD_ID_LOGOUT_WINDOW, SessionId, SessionRecord, SessionStore, StoreError,
};
use crate::store::Write;
use crate::task::Tasks;

use committer::Committer;
use overlay::{Kept, Newest, Overlay};
use rotations::Rotations;
use times::{Known, Stamp, Times};

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "sessions.redb";
/// Most rotations a logout follows from the id it names: within the window a session is
/// rarely rotated more than once.
const MAX_SUCCESSORS: usize = 16;
/// Most sessions one purge transaction removes; the purge loops until none is left.
const PURGE_BATCH: usize = 10_000;
/// Longest time the log holds changes before a fold writes them into the tables. The
/// longer, the more extensions of one session and of one leaf a fold writes at once, and the
/// more the overlay keeps in memory meanwhile; a store that goes quiet folds at its next tick.
const FOLD_EVERY: Duration = Duration::from_secs(5);
/// The same for the store on its own, whose overlay does not keep extensions (its table of
/// times does): the rarer the folds, the more extensions of one session a fold writes as one.
const FOLD_EVERY_TIMES_KEPT: Duration = Duration::from_secs(30);
/// Most changes the log holds before a fold: bounds what a crashed store reads back into the
/// overlay before it serves when it opens again (a store must be ready within a second, and a
/// log of half a million changes kept it from that), and the overlay's memory under a load
/// that changes many sessions.
const FOLD_AFTER_CHANGES: usize = 200_000;

/// What a caller of a commit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Its changes durable: appended to the write-ahead log is enough.
    Durable,
    /// Every change in the tables, for a caller that reads them (an index, a walk).
    Folded,
}

/// A caller's request to the writer, and where the answer goes.
type Request = (Commit, oneshot::Sender<Result<(), String>>);

/// The pages of the file redb keeps in memory for the store on its own. Its keepalives read
/// the table of times, not the file; what reads the file (a read of a session's data, the
/// folds, in key order, the read of the times at start) needs the B-tree's branches, a few
/// hundred kilobytes at a million sessions, and reads a leaf beyond them from the kernel's
/// page cache with a system call. A larger cache would hold more leaves and grow the process
/// by as much (redb's default, 1 GiB, lets it grow with the store): at a million sessions each
/// MiB is about a byte a session, of the 64 the store aims to keep under.
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// The same for Redis's mirror: a keepalive reads Redis, not the file, which is read by the
/// folds (in key order), the walks and an outage. Its branches still fit many times over (a
/// few hundred kilobytes at a million sessions).
pub const MIRROR_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Timing of the store's background work, and its memory.
#[derive(Debug, Clone, Copy)]
pub struct LocalStoreOptions {
    /// The pages of the file kept in memory ([`CACHE_BYTES`], [`MIRROR_CACHE_BYTES`]).
    pub cache_bytes: usize,
    /// Period of the batched writes.
    pub flush_interval: Duration,
    /// Period of the purge of expired sessions.
    pub purge_interval: Duration,
    /// Whether to keep every session's times in memory, for keepalives that do not read the
    /// file: for the store on its own. The failover's mirror does not, as a keepalive there
    /// reads Redis, and the memory would be spent for nothing.
    pub times_in_memory: bool,
    /// Whether the expiry index orders sessions to within a minute rather than ten: for the
    /// mirror of a Redis under a budget, which drops the copies that expire first (see
    /// `db::BUDGET_EXPIRY_BUCKET_MS`, which says what it costs).
    pub fine_expiry_order: bool,
}

/// State shared by the request side and the writer.
struct Shared {
    db: Database,
    overlay: Overlay,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// How long past its expiry a session is kept before the purge removes it, in ms: none
    /// for the store on its own; as a mirror, as long as a copy may trail Redis (see
    /// `Mirror::keep_expired`).
    purge_margin: AtomicI64,
    /// Which new id replaced an old one lately: a logout of the old id ends the new one too.
    rotations: Rotations,
    /// Every session's times, when the store keeps them in memory.
    times: Option<Times>,
}

impl Shared {
    /// Records a change to the session `id` in its shard of the overlay (which the caller
    /// holds) and in the table of times: under the same lock, so the two agree.
    fn put(&self, shard: &mut overlay::Shard, id: SessionId, change: Write) {
        if let Some(times) = &self.times {
            match &change {
                Write::Put(record) => times.set(&id, Stamp::of(record)),
                // Its times are what the file holds and Redis answered: the file tells.
                Write::Refresh(_) => times.set_in_file(&id),
                Write::Remove(_) => times.set_gone(&id),
            }
        }
        shard.put(id, change);
    }
}

/// The durable embedded store.
pub struct LocalStore {
    shared: Arc<Shared>,
    flush_requests: mpsc::Sender<Request>,
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
            let width = if options.fine_expiry_order {
                db::BUDGET_EXPIRY_BUCKET_MS
            } else {
                db::EXPIRY_BUCKET_MS
            };
            let db = db::open(&file, options.cache_bytes, width)?;
            let log = db::read_wal(&db)?;
            Ok::<_, StoreError>((db, log))
        })
        .await
        .map_err(|err| StoreError::Backend(err.to_string()))??;
        let (db, (logged, next_seq)) = db;

        let now = clock.now();
        let shared = Arc::new(Shared {
            db,
            overlay: Overlay::default(),
            clock,
            metrics,
            purge_margin: AtomicI64::new(0),
            rotations: Rotations::default(),
            times: options.times_in_memory.then(|| Times::new(now)),
        });
        // What a crash left in the log is served from memory at once and written into the
        // tables by the writer's first fold, while the store serves: a start does not wait for
        // it.
        let wal = Wal::new(logged.len(), next_seq, options.times_in_memory);
        if !logged.is_empty() {
            tracing::info!(
                changes = logged.len(),
                "the local store holds changes its write-ahead log kept at the last stop; it writes them into its tables while it serves"
            );
            if let Some(times) = &shared.times {
                for (id, change) in &logged {
                    match change {
                        Kept::Put(bytes) => match Stamp::read(bytes) {
                            Ok(stamp) => times.set(id, stamp),
                            Err(_) => times.set_in_file(id),
                        },
                        Kept::Remove(_) => times.set_gone(id),
                        Kept::Refresh(_) | Kept::Extend { .. } => times.set_in_file(id),
                    }
                }
            }
            shared.overlay.restore(logged);
        }
        let (tx, rx) = mpsc::channel(1024);
        let committer = Committer::start()?;
        let mut tasks = Tasks::new();
        let writing = Arc::clone(&shared);
        tasks.spawn("local store writer", |stop| {
            writer(writing, committer, rx, options, wal, stop)
        });
        if shared.times.is_some() {
            let reading = Arc::clone(&shared);
            tasks.spawn("local store times", |stop| read_times(reading, stop));
        }
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
        self.blocking(db::count).await
    }

    /// Purges the sessions expired at the store's current time now; returns how many went.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = self.shared.clock.now();
        self.flush().await?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || purge_all(&shared, now))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Runs `work` on a blocking thread with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared.db))
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
    }

    /// Asks the writer for a commit and waits for it: every change made before is durable on
    /// return, and with [`Commit::Folded`] in the tables.
    async fn commit(&self, kind: Commit) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flush_requests
            .send((kind, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Backend)
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
        let db = &self.shared.db;
        let mut record = match shard.get(id)? {
            Some(Newest::Write(Write::Put(record))) => Some(record),
            Some(Newest::Write(Write::Refresh(answer))) => {
                db::get(db, id)?.map(|copy| crate::store::answered(&copy, &answer))
            }
            Some(Newest::Write(Write::Remove(_))) => None,
            Some(Newest::Extended {
                last_seen_at,
                expires_at,
            }) => db::get(db, id)?.map(|mut record| {
                overlay::extend(&mut record, last_seen_at, expires_at);
                record
            }),
            None => db::get(db, id)?,
        };
        // The keepalives since the last fold live in the table and the log only (see
        // `Overlay::end_log`): the table brings the record up to them.
        if let (Some(record), Some(times)) = (&mut record, &self.shared.times)
            && let Known::Times(stamp) = times.get(id)
        {
            stamp.bring_up(record);
        }
        Ok(record)
    }

    /// A keepalive from the table of times, without reading the file: `Err(())` when the
    /// table cannot answer for `id` (still being read, not an id it keeps, a change whose
    /// times it does not hold), and the caller reads the file. The shard's lock is held from
    /// the table's answer to the overlay's change, as a keepalive that reads the file holds it,
    /// so a logout cannot fall in between.
    fn extend_in_memory(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<Expiry>, ()> {
        let times = self.shared.times.as_ref().ok_or(())?;
        if !times.is_complete() {
            return Err(());
        }
        let mut shard = self.shared.overlay.shard(id);
        match times.extend(id, now, duration_millis(idle)) {
            Known::Absent => Ok(None),
            Known::InFile => Err(()),
            Known::Times(stamp) => {
                shard.extend(*id, now, stamp.expires_at);
                Ok(Some(Expiry {
                    expires_at: stamp.expires_at,
                    absolute_expires_at: stamp.absolute_expires_at,
                }))
            }
        }
    }
}

#[async_trait]
impl SessionStore for LocalStore {
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.check_open()?;
        {
            let mut shard = self.shared.overlay.shard(&record.id);
            self.shared.put(&mut shard, record.id, Write::Put(record));
        }
        self.commit(Commit::Durable).await
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
        self.shared.put(&mut shard, *id, Write::Put(record.clone()));
        Ok(Some(record))
    }

    async fn extend(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<Expiry>, StoreError> {
        self.check_open()?;
        match self.extend_in_memory(id, now, idle) {
            Ok(expiry) => Ok(expiry),
            Err(()) => Ok(self.touch(id, now, idle).await?.as_ref().map(Expiry::of)),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.check_open()?;
        let now = self.shared.clock.now();
        let mut existed = false;
        // The id, then the one that replaced it if it was rotated away within the window
        // (see `rotate`), and so on.
        let mut next = Some(*id);
        for _ in 0..=MAX_SUCCESSORS {
            let Some(id) = next.take() else { break };
            let mut shard = self.shared.overlay.shard(&id);
            // An unknown id has nothing to remove: no write, no flush, so a flood of made-up
            // ids costs the disk nothing.
            if self.current(&shard, &id)?.is_some() {
                self.shared.put(&mut shard, id, Write::Remove(None));
                existed = true;
            }
            next = self.shared.rotations.successor(&id, now);
        }
        if existed {
            self.commit(Commit::Durable).await?;
        }
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
        // The new id exists before the old one ends, and the old one is taken under its lock,
        // where the rotation is noted: a logout of the old id that came first leaves nothing
        // to take (the new id goes again), and one that comes after finds the new id named and
        // ends it too. A keepalive of the old id sees the removal from then on; both changes
        // reach the disk in the same commit.
        {
            let mut shard = self.shared.overlay.shard(&new);
            self.shared.put(&mut shard, new, Write::Put(record.clone()));
        }
        let taken = {
            let mut shard = self.shared.overlay.shard(old);
            let live = self.current(&shard, old)?.is_some_and(|r| r.is_live(now));
            if live {
                self.shared.put(&mut shard, *old, Write::Remove(None));
                let until = now.saturating_add(duration_millis(OLD_ID_LOGOUT_WINDOW));
                self.shared.rotations.note(*old, new, until, now);
            }
            live
        };
        if !taken {
            let mut shard = self.shared.overlay.shard(&new);
            self.shared.put(&mut shard, new, Write::Remove(None));
        }
        self.commit(Commit::Durable).await?;
        Ok(taken.then_some(record))
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
                    self.shared.put(&mut shard, *id, Write::Put(record.clone()));
                    Some(record)
                }
                None => None,
            }
        };
        if updated.is_some() {
            self.commit(Commit::Durable).await?;
        }
        Ok(updated)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError> {
        // The index is on disk: write what the overlay holds first, then read the newest state
        // of each session through the overlay (one may have ended since).
        self.flush().await?;
        let owned = user.to_owned();
        let ids = self
            .blocking(move |db| db::user_sessions(db, &owned))
            .await?;
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

    async fn live_count(&self, now: Millis) -> Result<Option<u64>, StoreError> {
        self.check_open()?;
        self.blocking(move |db| db::live_count(db, now))
            .await
            .map(Some)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Commit::Folded).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        self.tasks.lock().await.stop().await;
        Ok(())
    }
}

/// The writer: commits the overlay every flush interval or when asked (group commit: every
/// request waiting when a commit starts is answered by it), purges every purge interval, and
/// folds one last time when stopped. A commit appends to the log, unless a caller waits for
/// the tables ([`Commit::Folded`]) or the log is due: then it folds.
async fn writer(
    shared: Arc<Shared>,
    committer: Committer,
    mut requests: mpsc::Receiver<Request>,
    options: LocalStoreOptions,
    mut wal: Wal,
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
                let now = shared.clock.now();
                let purged = match fold(&shared, &committer, &mut wal).await {
                    Ok(()) => committer.run(move || purge_all(&s, now)).await,
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
        let folded = waiters.iter().any(|(kind, _)| *kind == Commit::Folded);
        let result = if folded || wal.due() {
            fold(&shared, &committer, &mut wal).await
        } else {
            // A tick that finds nothing pending folds: the store went quiet. A caller's changes
            // may have been appended by a tick since it made them: nothing to do for it.
            log(&shared, &committer, &mut wal, waiters.is_empty()).await
        }
        .map_err(|e| e.to_string());
        if let Err(err) = &result {
            tracing::error!(error = %err, "writing sessions to the local store failed; will retry");
        }
        for (_, waiter) in waiters {
            let _ = waiter.send(result.clone());
        }
    }
    requests.close();
    let mut waiters = Vec::new();
    while let Ok(waiter) = requests.try_recv() {
        waiters.push(waiter);
    }
    let result = fold(&shared, &committer, &mut wal)
        .await
        .map_err(|e| e.to_string());
    committer.stop().await;
    match &result {
        Ok(()) => tracing::debug!("local store flushed and closed"),
        Err(err) => tracing::error!(error = %err, "last flush of the local store failed"),
    }
    for (_, waiter) in waiters {
        let _ = waiter.send(result.clone());
    }
}

/// What the log holds since the last fold, as the writer (its only user) counts it.
struct Wal {
    /// Changes appended (a session changed in two commits counts twice).
    changes: usize,
    /// The key of the next value.
    seq: u64,
    /// When the log was last emptied.
    folded_at: Instant,
    /// Whether the store keeps a table of times, whose extensions the overlay does not keep.
    times_kept: bool,
}

impl Wal {
    fn new(changes: usize, seq: u64, times_kept: bool) -> Self {
        Self {
            changes,
            seq,
            folded_at: Instant::now(),
            times_kept,
        }
    }

    /// The log was folded into the tables.
    fn emptied(&mut self) {
        *self = Self::new(0, self.seq, self.times_kept);
    }

    /// Whether the next commit should fold rather than append.
    fn due(&self) -> bool {
        let every = if self.times_kept {
            FOLD_EVERY_TIMES_KEPT
        } else {
            FOLD_EVERY
        };
        self.changes > 0
            && (self.changes >= FOLD_AFTER_CHANGES || self.folded_at.elapsed() >= every)
    }
}

/// A commit of what is pending to the log; when nothing is, a fold if `fold_if_quiet` (a
/// store gone quiet writes its log into the tables at once).
async fn log(
    shared: &Arc<Shared>,
    committer: &Committer,
    wal: &mut Wal,
    fold_if_quiet: bool,
) -> Result<(), StoreError> {
    // Moving changes into and out of the overlay takes its shard locks, which request handlers
    // wait on: that happens here, at normal priority. Only the commit itself runs on the
    // low-priority thread, which holds no lock a request needs.
    let batches = shared.overlay.begin_flush();
    if batches.is_empty() {
        return if fold_if_quiet {
            fold(shared, committer, wal).await
        } else {
            Ok(())
        };
    }
    let started = Instant::now();
    let changes: usize = batches.iter().map(|b| b.len()).sum();
    let seq = wal.seq;
    let s = Arc::clone(shared);
    let committed = committer
        .run(move || {
            let value = wal::encode(batches.iter().flat_map(|b| b.iter()));
            drop(batches);
            db::append_wal(&s.db, seq, &value)
        })
        .await;
    match committed {
        Ok(()) => {
            shared.overlay.end_log(shared.times.is_some());
            wal.changes += changes;
            wal.seq += 1;
            committed_metrics(shared, started, changes);
            Ok(())
        }
        Err(err) => {
            shared.overlay.abort_flush();
            Err(err)
        }
    }
}

/// Writes what the log and the pending changes hold into the tables, in one transaction
/// that empties the log.
async fn fold(
    shared: &Arc<Shared>,
    committer: &Committer,
    wal: &mut Wal,
) -> Result<(), StoreError> {
    let batches = shared.overlay.begin_fold();
    // The log may hold extensions the overlay does not (see `Overlay::end_log`).
    if batches.is_empty() && wal.changes == 0 {
        shared.overlay.forget_recent();
        return Ok(());
    }
    let started = Instant::now();
    // The log's changes were counted when they were appended.
    let changes: usize = batches.newer.iter().map(|b| b.len()).sum();
    let s = Arc::clone(shared);
    let committed = committer
        .run(move || {
            let all = batches.older.iter().chain(&batches.newer);
            // The extensions the log holds and the overlay does not, from the table of times
            // (newer than any change the overlay holds for their sessions, and than the log's).
            let extended = s.times.iter().flat_map(Times::extended);
            db::apply(&s.db, all.flat_map(|batch| batch.iter()), extended)
        })
        .await;
    match committed {
        Ok(_) => {
            shared.overlay.end_fold();
            wal.emptied();
            committed_metrics(shared, started, changes);
            Ok(())
        }
        Err(err) => {
            shared.overlay.abort_flush();
            if let Some(times) = &shared.times {
                times.unwritten();
            }
            Err(err)
        }
    }
}

/// Reads the times of every session of the file into the table, while the store serves,
/// and then marks it complete. What changed since the read began is in the table already
/// and stays (see `Times::fill`).
async fn read_times(shared: Arc<Shared>, stop: CancellationToken) {
    let reading = Arc::clone(&shared);
    let stopped = stop.clone();
    let started = Instant::now();
    let read = tokio::task::spawn_blocking(move || {
        let Some(times) = &reading.times else {
            return Ok(0);
        };
        db::native_times(&reading.db, |id, stamp| {
            times.fill(id, stamp);
            !stopped.is_cancelled()
        })
    })
    .await;
    match read {
        Ok(Ok(_)) if stop.is_cancelled() => {}
        Ok(Ok(sessions)) => {
            if let Some(times) = &shared.times {
                times.set_complete();
            }
            tracing::debug!(
                sessions,
                seconds = started.elapsed().as_secs_f64(),
                "the local store read its sessions' times into memory; keepalives no longer read the file"
            );
        }
        Ok(Err(err)) => tracing::error!(
            error = %err,
            "the local store could not read its sessions' times into memory; keepalives read the file, which is slower as the store grows"
        ),
        Err(err) => tracing::error!(error = %err, "reading the sessions' times stopped abnormally"),
    }
}

fn committed_metrics(shared: &Shared, started: Instant, changes: usize) {
    shared
        .metrics
        .store_flush_seconds
        .observe(started.elapsed().as_secs_f64());
    shared.metrics.store_writes_total.inc_by(changes as u64);
}

/// Purges what expired by `now`, read before the fold that came first: a session the fold
/// found live holds there the times the table of times held when the fold began, so one
/// expired by then cannot have been extended since (only a live session is) and the purge
/// never removes a session whose extension waits for the next fold, which would find no
/// record to extend.
fn purge_all(shared: &Shared, now: Millis) -> Result<usize, StoreError> {
    let expired_by = now.saturating_sub(shared.purge_margin.load(Ordering::Relaxed));
    let mut total = 0;
    loop {
        let removed = db::purge(&shared.db, expired_by, now, PURGE_BATCH)?;
        total += removed;
        if removed < PURGE_BATCH {
            break;
        }
    }
    // Not while the file is read into the table: a logout's entry must outlive that read,
    // which works from a view of the file older than the logout.
    if let Some(times) = shared.times.as_ref().filter(|t| t.is_complete()) {
        times.purge(expired_by);
    }
    shared.metrics.sessions_purged_total.inc_by(total as u64);
    Ok(total)
}

#[cfg(test)]
mod tests;

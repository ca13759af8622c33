//! The trait every session store implements, and its error type.
//!
//! A store keeps records and their expiry; the lifetime rules themselves live in
//! [`SessionRecord`]. Stores compose: the failover store is two stores
//! behind this same trait.

use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Millis;

use super::{Expiry, SessionId, SessionRecord};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk, database, network).
    #[error("session store backend failed: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored session record is corrupt: {0}")]
    Corrupt(String),
    /// The store is shutting down and accepts no more work.
    #[error("session store is closed")]
    Closed,
    /// This store does not do that (an Express application's sessions are created and changed
    /// by the application).
    #[error("this session store does not do that: {0}")]
    Unsupported(&'static str),
    /// This instance cannot tell whether the session lives: Redis is offline, or has just lost
    /// keys (evicting them, or back without its data) and another instance may be putting the
    /// session back; this one holds no live copy of it and no mark of its end. The caller
    /// should try again.
    #[error(
        "Redis is offline or has just lost keys, and this instance holds no live copy of the session: whether it lives is known to Redis (or another instance) only"
    )]
    Undecided,
}

/// A place sessions live.
///
/// Where a method answers `None` for an unknown or expired session, a store that cannot tell
/// (the failover store while Redis is offline or has just lost keys, for a session it holds
/// no live copy of and no logout of) answers [`StoreError::Undecided`] instead.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session. It is durable when this returns.
    async fn create(&self, record: SessionRecord) -> Result<(), StoreError>;

    /// The live session with this id at `now`, without extending it.
    async fn load(&self, id: &SessionId, now: Millis) -> Result<Option<SessionRecord>, StoreError>;

    /// Keeps a live session alive at `now` (see [`SessionRecord::touch`]) and returns it as
    /// extended; `None` when it is unknown or expired. Extensions may be batched: a crash may
    /// lose the last second of them, never a creation.
    async fn touch(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Keeps a live session alive as [`touch`](Self::touch) does and answers its new
    /// expiries only, which a store that keeps them apart from the rest of the session can do
    /// without reading it (the embedded store on its own); the others touch.
    async fn extend(
        &self,
        id: &SessionId,
        now: Millis,
        idle: Duration,
    ) -> Result<Option<Expiry>, StoreError> {
        Ok(self.touch(id, now, idle).await?.as_ref().map(Expiry::of))
    }

    /// Ends a session. It is durable when this returns. Returns whether it existed.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Moves a live session to a new id (after a privilege change): the same times and data
    /// under `new`, and `old` no longer valid. Durable when this returns. `None` when `old` is
    /// unknown or expired at `now`.
    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Replaces the data of a live session with `data` (JSON object text, or empty). Counts as
    /// activity (its last-seen time moves to `now`) without extending it. Durable when this
    /// returns. `None` when it is unknown or expired at `now`.
    async fn update(
        &self,
        id: &SessionId,
        data: String,
        now: Millis,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// The sessions created for `user` that are live at `now`, oldest first.
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<SessionRecord>, StoreError>;

    /// Ends every session of `user` at `now` ("log out everywhere"), each durable when this
    /// returns. Returns how many were live.
    async fn end_user(&self, user: &str, now: Millis) -> Result<u64, StoreError> {
        let mut ended = 0;
        for session in self.list_user(user, now).await? {
            if self.delete(&session.id).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// How many sessions this store holds live at `now`, from its own bookkeeping, cheap
    /// enough for every metrics scrape (no scan of the sessions). `None` for a store that
    /// keeps no such count (Redis: its sessions are the whole fleet's, and counting them
    /// would mean a scan).
    async fn live_count(&self, now: Millis) -> Result<Option<u64>, StoreError> {
        let _ = now;
        Ok(None)
    }

    /// Writes everything pending to durable storage.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Flushes and stops the store's background work; later calls fail with `Closed`.
    async fn close(&self) -> Result<(), StoreError>;
}

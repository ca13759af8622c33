//! The local store as the failover's mirror: the side of it that
//! [`crate::store::failover::Mirror`] asks for.
//!
//! Writes go into the overlay under the session's shard lock and reach the file with the next
//! batch, like keepalive extensions: the primary copy is in Redis, and a copy need not be on
//! disk before the answer. Reads of many sessions (what changed since a time, the live ids)
//! write the overlay first, then scan the file on a blocking thread.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::{Millis, duration_millis};
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};
use crate::store::failover::Mirror;
use crate::store::{Write, brought_up};

use super::overlay::Held;
use super::{LocalStore, db};

#[async_trait]
impl Mirror for LocalStore {
    fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.check_open()?;
        let shard = self.shared.overlay.shard(id);
        self.current(&shard, id)
    }

    fn ended(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.check_open()?;
        // A tombstone is kept on the file whatever is written for the session later.
        if self.shared.overlay.shard(id).tombstoned(id) {
            return Ok(true);
        }
        db::ended(&self.shared.db, id)
    }

    fn modify(
        &self,
        id: &SessionId,
        change: &mut dyn FnMut(Option<&SessionRecord>) -> Option<Write>,
    ) -> Result<(), StoreError> {
        self.check_open()?;
        // The shard's lock is held from the read to the write: no other change to this
        // session can fall in between.
        let mut shard = self.shared.overlay.shard(id);
        let current = self.current(&shard, id)?;
        if let Some(write) = change(current.as_ref()) {
            self.shared.put(&mut shard, *id, write);
        }
        Ok(())
    }

    fn copy(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.check_open()?;
        let mut shard = self.shared.overlay.shard(&record.id);
        // The held change's times only, read from its encoding: a keepalive's copy of a
        // session in use decodes nothing.
        let copy = match shard.held(&record.id)? {
            Some(Held::Record {
                last_seen_at,
                expires_at,
                ..
            }) => brought_up(record, last_seen_at, expires_at),
            _ => record.clone(),
        };
        self.shared.put(&mut shard, record.id, Write::Put(copy));
        Ok(())
    }

    fn refresh(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.check_open()?;
        let mut shard = self.shared.overlay.shard(&record.id);
        let write = match shard.held(&record.id)? {
            Some(Held::Removed) => return Ok(()),
            Some(Held::Record {
                refresh,
                last_seen_at,
                expires_at,
            }) => {
                let record = brought_up(record, last_seen_at, expires_at);
                if refresh {
                    Write::Refresh(record)
                } else {
                    Write::Put(record)
                }
            }
            None => Write::Refresh(record.clone()),
        };
        self.shared.put(&mut shard, record.id, write);
        Ok(())
    }

    async fn removed_since(&self, since: Option<Millis>) -> Result<Vec<SessionId>, StoreError> {
        self.flush().await?;
        self.blocking(move |db| db::removed_since(db, since)).await
    }

    async fn live_since(
        &self,
        since: Option<Millis>,
        now: Millis,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.flush().await?;
        self.blocking(move |db| {
            db::scan(db, |r| {
                (r.is_live(now) && since.is_none_or(|s| r.last_seen_at >= s)).then_some(r)
            })
        })
        .await
    }

    async fn live_page(
        &self,
        after: Option<SessionId>,
        now: Millis,
        limit: usize,
    ) -> Result<(Vec<SessionRecord>, Option<SessionId>), StoreError> {
        self.check_open()?;
        // The file alone, not the overlay: a walk's pages are many, and flushing before each
        // would cost a commit a page. The caller flushes once when the walk begins.
        self.blocking(move |db| {
            db::sessions_page(db, after.as_ref(), limit, |r| r.is_live(now).then_some(r))
        })
        .await
    }

    async fn first_to_expire(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(SessionId, Millis)>, StoreError> {
        self.check_open()?;
        // The file alone: a copy changed since the last flush was just served, and is not
        // among the least lately active anyway.
        self.blocking(move |db| db::first_to_expire(db, now, limit))
            .await
    }

    async fn removed_page(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<(Vec<SessionId>, Option<SessionId>), StoreError> {
        self.check_open()?;
        self.blocking(move |db| db::removed_page(db, after.as_ref(), limit))
            .await
    }

    fn keep_expired(&self, margin: Duration) {
        let margin = duration_millis(margin);
        // Asked on every keepalive: a read, and a write only when the margin grows.
        if self.shared.purge_margin.load(Ordering::Relaxed) < margin {
            self.shared
                .purge_margin
                .fetch_max(margin, Ordering::Relaxed);
        }
    }

    fn note_rotation(&self, old: &SessionId, new: &SessionId, until: Millis) {
        let now = self.shared.clock.now();
        self.shared.rotations.note(*old, *new, until, now);
    }

    fn rotated_to(&self, old: &SessionId, now: Millis) -> Option<SessionId> {
        self.shared.rotations.successor(old, now)
    }

    async fn write_note(&self, key: &str, note: Vec<u8>) -> Result<(), StoreError> {
        self.check_open()?;
        let key = key.to_owned();
        self.blocking(move |db| db::write_note(db, &key, &note))
            .await
    }

    async fn take_note(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_open()?;
        let key = key.to_owned();
        self.blocking(move |db| db::take_note(db, &key)).await
    }
}

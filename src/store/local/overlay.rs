//! Changes not yet on disk, in front of the database.
//!
//! Keepalive extensions are not written one by one: each lands here and the writer commits
//! them in one transaction per flush interval. Reads look here first. A change moves from
//! `pending` to `flushing` while the writer commits it, then to `recent` once it is on disk,
//! where it stays until the next commit replaces it: a read always sees the newest state, and
//! a session in use (touched at least once per two flush intervals) is read from memory, not
//! from the file. `recent` holds what one commit wrote, so its size follows the sessions in use,
//! not those stored. Each shard's lock is held across a keepalive's read,
//! extend and write, so a logout can never be undone by a keepalive that read the session
//! just before it.
//!
//! Each shard also remembers the idle expiry of the sessions the failover store asked about
//! ([`Shard::expiry`]): with Redis, a keepalive compares the mirror's expiry with Redis's, and
//! the mirror is rewritten only once per half idle timeout, so without this the comparison
//! would read the file on almost every keepalive.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};

use super::db::Change;

const SHARDS: usize = 64;

/// One shard of the overlay.
#[derive(Default)]
pub struct Shard {
    pending: HashMap<SessionId, Change>,
    flushing: Arc<HashMap<SessionId, Change>>,
    /// The changes of this shard's last commit, as they are on disk (nothing but the purge of
    /// expired sessions changes the file behind them).
    recent: Arc<HashMap<SessionId, Change>>,
    /// The newest idle expiry of the sessions [`Shard::expiry`] was asked about, kept up to
    /// date by [`Shard::put`]; entries go when the session ends or expires
    /// ([`Overlay::forget_expired`]), so its size follows the live sessions the failover store
    /// mirrors.
    expiries: HashMap<SessionId, Millis>,
}

impl Shard {
    /// The newest change to `id` this overlay knows: not yet on disk, or just written.
    pub fn get(&self, id: &SessionId) -> Option<&Change> {
        self.pending
            .get(id)
            .or_else(|| self.flushing.get(id))
            .or_else(|| self.recent.get(id))
    }

    /// Records a change.
    pub fn put(&mut self, id: SessionId, change: Change) {
        match &change {
            Change::Put(record) => {
                if let Some(expiry) = self.expiries.get_mut(&id) {
                    *expiry = record.expires_at;
                }
            }
            Change::Delete | Change::End { .. } => {
                self.expiries.remove(&id);
            }
        }
        self.pending.insert(id, change);
    }

    /// The newest idle expiry of `id` (`None`: no session, or an ended one), from memory when
    /// it is known there; `read` fetches it from the file otherwise, and it is remembered.
    pub fn expiry(
        &mut self,
        id: &SessionId,
        read: impl FnOnce() -> Result<Option<Millis>, StoreError>,
    ) -> Result<Option<Millis>, StoreError> {
        if let Some(expiry) = self.expiries.get(id) {
            return Ok(Some(*expiry));
        }
        let expiry = match self.get(id) {
            Some(Change::Put(record)) => Some(record.expires_at),
            Some(Change::Delete | Change::End { .. }) => return Ok(None),
            None => read()?,
        };
        // Unknown ids are not remembered: anyone can send them.
        if let Some(expiry) = expiry {
            self.expiries.insert(*id, expiry);
        }
        Ok(expiry)
    }
}

/// The sharded overlay.
pub struct Overlay {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for Overlay {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Overlay {
    /// Locks the shard that holds `id`. A poisoned lock only means a thread panicked while
    /// holding it; the maps stay consistent, so the guard is taken back.
    pub fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(id) as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves every pending change to `flushing` and returns them for the writer.
    pub fn begin_flush(&self) -> Vec<Arc<HashMap<SessionId, Change>>> {
        let mut batches = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            if shard.pending.is_empty() {
                continue;
            }
            let batch = Arc::new(mem::take(&mut shard.pending));
            shard.flushing = Arc::clone(&batch);
            batches.push(batch);
        }
        batches
    }

    /// The flushed changes are on disk: they become the shards' `recent` changes.
    pub fn end_flush(&self) {
        for shard in self.shards.iter() {
            let previous = {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                if shard.flushing.is_empty() {
                    continue;
                }
                let flushed = mem::take(&mut shard.flushing);
                mem::replace(&mut shard.recent, flushed)
            };
            // Freed after the lock is released: requests to the shard need not wait for it.
            drop(previous);
        }
    }

    /// Forgets the remembered expiries that passed by `now`: those sessions are dead, and the
    /// purge may remove them from the file. Called with each purge.
    pub fn forget_expired(&self, now: Millis) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.expiries.retain(|_, expiry| *expiry > now);
        }
    }

    /// The commit failed: put the flushed changes back under any newer pending ones, so the
    /// next flush retries them.
    pub fn abort_flush(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let flushing = mem::take(&mut shard.flushing);
            for (id, change) in flushing.iter() {
                shard.pending.entry(*id).or_insert_with(|| change.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;
    use crate::session::SessionRecord;

    const NOW: Millis = 1_700_000_000_000;
    const IDLE: Duration = Duration::from_secs(600);

    fn record(id: SessionId, now: Millis) -> SessionRecord {
        SessionRecord::new(id, now, IDLE, 6 * IDLE, String::new())
    }

    #[test]
    fn an_expiry_is_read_from_the_file_once_then_follows_every_change() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("rng");
        let reads = Cell::new(0);
        let on_disk = NOW + 600_000;
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(on_disk))
        };

        assert_eq!(
            overlay.shard(&id).expiry(&id, read).expect("expiry"),
            Some(on_disk)
        );
        assert_eq!(
            overlay.shard(&id).expiry(&id, read).expect("expiry"),
            Some(on_disk)
        );
        assert_eq!(reads.get(), 1, "the second answer comes from memory");

        // A newer copy is written: the remembered expiry is the new one, without a read,
        // and stays after the copy has left the overlay.
        let newer = record(id, NOW + 300_000);
        overlay.shard(&id).put(id, Change::Put(newer.clone()));
        assert_eq!(
            overlay.shard(&id).expiries.get(&id),
            Some(&newer.expires_at)
        );
        {
            let mut shard = overlay.shard(&id);
            shard.pending.clear();
            shard.recent = Arc::default();
        }
        assert_eq!(
            overlay.shard(&id).expiry(&id, read).expect("expiry"),
            Some(newer.expires_at)
        );
        assert_eq!(reads.get(), 1);

        // Ended here: no expiry, none remembered.
        overlay.shard(&id).put(
            id,
            Change::End {
                ended_at: NOW,
                keep_until: NOW,
            },
        );
        assert_eq!(overlay.shard(&id).expiry(&id, read).expect("expiry"), None);
        assert!(!overlay.shard(&id).expiries.contains_key(&id));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn unknown_ids_are_not_remembered_and_expired_ones_are_forgotten() {
        let overlay = Overlay::default();
        let unknown = SessionId::generate().expect("rng");
        let reads = Cell::new(0);
        let none = || {
            reads.set(reads.get() + 1);
            Ok(None)
        };
        for _ in 0..2 {
            let answer = overlay.shard(&unknown).expiry(&unknown, none);
            assert_eq!(answer.expect("expiry"), None);
        }
        assert_eq!(
            reads.get(),
            2,
            "an unknown id costs a read each time, no memory"
        );

        let id = SessionId::generate().expect("rng");
        let expiry = NOW + 1_000;
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(expiry))
        };
        overlay.shard(&id).expiry(&id, read).expect("read");
        overlay.forget_expired(expiry - 1);
        overlay.shard(&id).expiry(&id, read).expect("read");
        assert_eq!(reads.get(), 1, "still live at expiry - 1 ms: kept");
        overlay.forget_expired(expiry);
        overlay.shard(&id).expiry(&id, read).expect("read");
        assert_eq!(reads.get(), 2, "expired: forgotten, read again");
    }
}

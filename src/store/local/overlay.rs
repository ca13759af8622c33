//! Changes not yet on disk, in front of the database.
//!
//! Keepalive extensions are not written one by one: each lands here and the writer commits
//! them in one transaction per flush interval. Reads look here first. A change moves from
//! `pending` to `flushing` while the writer commits it, then to `recent` once it is on disk,
//! where it stays until the next commit replaces it: a read always sees the newest state, and
//! a session in use (touched at least once per two flush intervals) is read from memory, not
//! from the file. `recent` holds what one commit wrote, and nothing once a flush finds nothing to
//! write, so its size follows the sessions in use, not those stored. Each shard's lock is held across a keepalive's read,
//! extend and write, so a logout can never be undone by a keepalive that read the session
//! just before it. A refresh (what Redis answered a read, for a copy the mirror may hold)
//! stays one here: whether it lands depends on the file, so reading it reads the file too.
//!
//! Under a load that keeps every core busy, the overlay holds every session extended while a
//! commit runs, and a commit over a large file takes a second or more: hundreds of thousands
//! of changes. So it keeps each in the form the file stores ([`Kept`]: the encoded record,
//! about 23 bytes without user or data) rather than as a [`Write`] (about 130 bytes and one
//! or two more allocations). It decodes a change when it is read; bringing a copy up to an
//! answer reads only the change's times ([`Held`]).

use std::collections::HashMap;
use std::mem;
use std::sync::{Arc, MutexGuard};

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};
use crate::store::{Sharded, Tombstone, Write};

use super::codec;

const SHARDS: usize = 64;

/// A change as the overlay keeps it: a record in its stored encoding (see `codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// [`Write::Put`].
    Put(Box<[u8]>),
    /// [`Write::Refresh`].
    Refresh(Box<[u8]>),
    /// [`Write::Remove`]; the tombstone boxed, as logouts are rare and an extension's entry
    /// then stays two words.
    Remove(Option<Box<Tombstone>>),
}

impl Kept {
    /// The change in its stored form.
    pub fn of(change: Write) -> Self {
        let encoded = |record| codec::encode(&record).into_boxed_slice();
        match change {
            Write::Put(record) => Self::Put(encoded(record)),
            Write::Refresh(record) => Self::Refresh(encoded(record)),
            Write::Remove(tombstone) => Self::Remove(tombstone.map(Box::new)),
        }
    }

    /// The change to session `id`.
    pub fn write(&self, id: SessionId) -> Result<Write, StoreError> {
        Ok(match self {
            Self::Put(bytes) => Write::Put(codec::decode(id, bytes)?),
            Self::Refresh(bytes) => Write::Refresh(codec::decode(id, bytes)?),
            Self::Remove(tombstone) => Write::Remove(tombstone.as_deref().copied()),
        })
    }
}

/// What the newest change to a session holds, as far as bringing a copy up to an answer
/// needs: read from the change's encoding without decoding the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A record ([`Write::Put`], or [`Write::Refresh`] when `refresh`), by its times.
    Record {
        refresh: bool,
        last_seen_at: Millis,
        expires_at: Millis,
    },
    /// A removal.
    Removed,
}

/// One shard of the overlay.
#[derive(Default)]
pub struct Shard {
    pending: HashMap<SessionId, Kept>,
    flushing: Arc<HashMap<SessionId, Kept>>,
    /// The changes of this shard's last commit, as they are on disk (nothing but the purge of
    /// expired sessions changes the file behind them).
    recent: Arc<HashMap<SessionId, Kept>>,
}

impl Shard {
    fn kept(&self, id: &SessionId) -> Option<&Kept> {
        self.pending
            .get(id)
            .or_else(|| self.flushing.get(id))
            .or_else(|| self.recent.get(id))
    }

    /// The newest change to `id` this overlay knows: not yet on disk, or just written.
    pub fn get(&self, id: &SessionId) -> Result<Option<Write>, StoreError> {
        self.kept(id).map(|kept| kept.write(*id)).transpose()
    }

    /// What the newest change to `id` holds, without decoding its record.
    pub fn held(&self, id: &SessionId) -> Result<Option<Held>, StoreError> {
        let record = |bytes: &[u8], refresh| {
            let (last_seen_at, expires_at) = codec::activity(bytes)?;
            Ok(Held::Record {
                refresh,
                last_seen_at,
                expires_at,
            })
        };
        self.kept(id)
            .map(|kept| match kept {
                Kept::Put(bytes) => record(bytes, false),
                Kept::Refresh(bytes) => record(bytes, true),
                Kept::Remove(_) => Ok(Held::Removed),
            })
            .transpose()
    }

    /// Whether the newest change to `id` is a removal that leaves a tombstone.
    pub fn tombstoned(&self, id: &SessionId) -> bool {
        matches!(self.kept(id), Some(Kept::Remove(Some(_))))
    }

    /// Records a change.
    pub fn put(&mut self, id: SessionId, change: Write) {
        self.pending.insert(id, Kept::of(change));
    }
}

/// The sharded overlay.
pub struct Overlay {
    shards: Sharded<Shard>,
}

impl Default for Overlay {
    fn default() -> Self {
        Self {
            shards: Sharded::new(SHARDS),
        }
    }
}

impl Overlay {
    /// Locks the shard that holds `id`. A poisoned lock only means a thread panicked while
    /// holding it; the maps stay consistent, so the guard is taken back.
    pub fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        self.shards.of(id)
    }

    /// Moves every pending change to `flushing` and returns them for the writer.
    pub fn begin_flush(&self) -> Vec<Arc<HashMap<SessionId, Kept>>> {
        let mut batches = Vec::new();
        for mut shard in self.shards.each() {
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
        for mut shard in self.shards.each() {
            let previous = {
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

    /// A flush found nothing to write: what the last commit wrote is on disk and has not been
    /// touched since, so it leaves memory (kept, a burst's batch, every session touched during
    /// one slow commit, would stay until traffic came back to each shard).
    pub fn forget_recent(&self) {
        for mut shard in self.shards.each() {
            if shard.recent.is_empty() {
                continue;
            }
            let previous = mem::take(&mut shard.recent);
            drop(shard);
            drop(previous);
        }
    }

    /// The commit failed: put the flushed changes back under any newer pending ones, so the
    /// next flush retries them.
    pub fn abort_flush(&self) {
        for mut shard in self.shards.each() {
            let flushing = mem::take(&mut shard.flushing);
            for (id, change) in flushing.iter() {
                shard.pending.entry(*id).or_insert_with(|| change.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_with_nothing_to_write_lets_the_last_commit_go() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        overlay.shard(&id).put(id, Write::Remove(None));
        assert_eq!(overlay.begin_flush().len(), 1);
        overlay.end_flush();
        // Committed, and still read from memory until the next flush.
        assert_eq!(
            overlay.shard(&id).get(&id).expect("reads"),
            Some(Write::Remove(None))
        );
        assert!(overlay.begin_flush().is_empty());
        overlay.forget_recent();
        assert!(
            overlay.shard(&id).get(&id).expect("reads").is_none(),
            "read from the file from now on"
        );
    }

    #[test]
    fn a_kept_change_is_three_words() {
        // An extension's entry is the id and these; the encoded record is one allocation.
        assert!(std::mem::size_of::<Kept>() <= 3 * std::mem::size_of::<usize>());
    }

    #[test]
    fn a_change_reads_back_as_it_was_put() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        let mut record = crate::session::SessionRecord::new(
            id,
            1_700_000_000_000,
            std::time::Duration::from_secs(1800),
            std::time::Duration::from_secs(43_200),
            r#"{"cart":3}"#.to_owned(),
        );
        record.user = Some("ada".to_owned());
        let tombstone = Tombstone {
            at: 1_700_000_001_000,
            keep_until: 1_700_043_200_000,
        };
        for change in [
            Write::Put(record.clone()),
            Write::Refresh(record.clone()),
            Write::Remove(Some(tombstone)),
            Write::Remove(None),
        ] {
            let mut shard = overlay.shard(&id);
            shard.put(id, change.clone());
            assert_eq!(shard.get(&id).expect("reads"), Some(change.clone()));
            let held = match &change {
                Write::Put(r) | Write::Refresh(r) => Held::Record {
                    refresh: matches!(change, Write::Refresh(_)),
                    last_seen_at: r.last_seen_at,
                    expires_at: r.expires_at,
                },
                Write::Remove(_) => Held::Removed,
            };
            assert_eq!(shard.held(&id).expect("reads"), Some(held));
            assert_eq!(
                shard.tombstoned(&id),
                matches!(change, Write::Remove(Some(_)))
            );
        }
    }
}

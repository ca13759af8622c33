//! Changes not yet in the database's tables, in front of them.
//!
//! Keepalive extensions are not written one by one: each lands here and the writer commits
//! them together once per flush interval. Reads look here first. A change moves from `pending`
//! to `flushing` while the writer commits it. A periodic commit appends it to the write-ahead
//! log (see `wal`), after which it waits in `logged`, durable, for the next fold; a fold
//! writes `logged` (then `folding`) and `pending` into the tables, after which what was
//! pending stays in `recent` until the next fold replaces it: a read always sees the newest
//! state, and a session in use is read from memory, not from the file. `recent` holds what one
//! fold took from `pending`, and nothing once a flush finds nothing to write, so its size
//! follows the sessions in use, not those stored; `logged` holds what the log holds, which
//! the writer bounds. Each shard's lock is held across a keepalive's read, extend and write,
//! so a logout can never be undone by a keepalive that read the session just before it. A
//! refresh (what Redis answered a read, for a copy the mirror may hold) stays one here:
//! whether it lands depends on the file, so reading it reads the file too.
//!
//! Under a load that keeps every core busy, the overlay holds every session extended since the
//! last fold: hundreds of thousands of changes. So it keeps each in the form the file stores
//! ([`Kept`]: the encoded record, about 23 bytes without user or data) rather than as a
//! [`Write`] (about 130 bytes and one or two more allocations). It decodes a change when it is
//! read; bringing a copy up to an answer reads only the change's times ([`Held`]). A
//! keepalive of the store on its own keeps only the new times ([`Kept::Extend`]), read from
//! the table of times rather than the file: an extension of the newest change under it in the
//! layers, or of what the file holds if none. A read brings that change up to the times, a
//! layer taking in a newer one merges them, and the fold reads the file to write one that
//! extends the file. Once the log holds such an extension, with no other change to its
//! session waiting there, it leaves the overlay (`end_log`): the table of times answers for
//! it until the fold takes it from there.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::mem;
use std::sync::{Arc, MutexGuard};

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::store::{Sharded, Tombstone, Write};

use super::codec;

const SHARDS: usize = 64;

/// The overlay's maps, by session id. A keepalive looks its id up in up to five of them, and
/// under load they hold hundreds of thousands of ids: the standard library's SipHash cost a
/// few percent of a keepalive there. foldhash (the default of `hashbrown`, which the standard
/// map is built on) is several times cheaper and still seeded per map, so that a client who
/// picks the ids that land here (a logout of a made-up id during an outage leaves a
/// tombstone) cannot aim them at one slot of a map it cannot see the seed of.
pub type Changes<V = Kept> = HashMap<SessionId, V, foldhash::fast::RandomState>;

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
    /// The session the file holds, extended to these times (each the later of the two).
    Extend {
        last_seen_at: Millis,
        expires_at: Millis,
    },
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
    pub fn newest(&self, id: SessionId) -> Result<Newest, StoreError> {
        Ok(match self {
            Self::Put(bytes) => Newest::Write(Write::Put(codec::decode(id, bytes)?)),
            Self::Refresh(bytes) => Newest::Write(Write::Refresh(codec::decode(id, bytes)?)),
            Self::Remove(tombstone) => Newest::Write(Write::Remove(tombstone.as_deref().copied())),
            Self::Extend {
                last_seen_at,
                expires_at,
            } => Newest::Extended {
                last_seen_at: *last_seen_at,
                expires_at: *expires_at,
            },
        })
    }

    /// This change made after `older`, as one: an extension of a record is that record
    /// extended (whatever the layers it sits in); anything else replaces what came before.
    pub fn over(older: &Self, newer: Self) -> Self {
        let Self::Extend {
            last_seen_at,
            expires_at,
        } = newer
        else {
            return newer;
        };
        match older {
            Self::Put(bytes) | Self::Refresh(bytes) => {
                // Any id decodes a record: the encoding does not hold it. One that does not
                // decode is kept as it is, and the fold that reads it says so.
                let Ok(mut record) = codec::decode(SessionId::from_bytes([0; 16]), bytes) else {
                    return older.clone();
                };
                extend(&mut record, last_seen_at, expires_at);
                let bytes = codec::encode(&record).into_boxed_slice();
                if matches!(older, Self::Put(_)) {
                    Self::Put(bytes)
                } else {
                    Self::Refresh(bytes)
                }
            }
            Self::Extend {
                last_seen_at: seen,
                expires_at: expires,
            } => Self::Extend {
                last_seen_at: last_seen_at.max(*seen),
                expires_at: expires_at.max(*expires),
            },
            // An ended session is not extended.
            Self::Remove(tombstone) => Self::Remove(tombstone.clone()),
        }
    }
}

/// Brings `record` up to an extension's times: each the later of the two.
pub fn extend(record: &mut SessionRecord, last_seen_at: Millis, expires_at: Millis) {
    record.last_seen_at = record.last_seen_at.max(last_seen_at);
    record.expires_at = record.expires_at.max(expires_at);
}

/// The newest change to a session, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Newest {
    /// The change in full.
    Write(Write),
    /// An extension of what the file holds ([`Kept::Extend`]).
    Extended {
        last_seen_at: Millis,
        expires_at: Millis,
    },
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
    pending: Changes,
    flushing: Arc<Changes>,
    /// Changes in the log, not yet folded into the tables.
    logged: Changes,
    /// Tombstones in the log that a later change to their session replaced in `logged`: the
    /// file keeps a tombstone whatever is written for the session later, so the next fold
    /// writes them too.
    replaced_tombstones: Changes<Tombstone>,
    /// `logged` while a fold writes it.
    folding: Arc<Changes>,
    /// What the last fold took from `pending`, as it is in the tables (nothing but the purge
    /// of expired sessions changes the file behind them).
    recent: Arc<Changes>,
}

impl Shard {
    fn kept(&self, id: &SessionId) -> Option<&Kept> {
        self.pending
            .get(id)
            .or_else(|| self.flushing.get(id))
            .or_else(|| self.logged.get(id))
            .or_else(|| self.folding.get(id))
            .or_else(|| self.recent.get(id))
    }

    /// The newest change to `id` that is not an extension, and the times of the extensions
    /// made after it (each the latest of them), through every layer, newest first.
    fn layered(&self, id: &SessionId) -> (Option<&Kept>, Option<(Millis, Millis)>) {
        let layers = [
            &self.pending,
            &*self.flushing,
            &self.logged,
            &*self.folding,
            &*self.recent,
        ];
        let mut extended: Option<(Millis, Millis)> = None;
        for layer in layers {
            match layer.get(id) {
                None => {}
                Some(Kept::Extend {
                    last_seen_at,
                    expires_at,
                }) => {
                    extended = Some(match extended {
                        Some((seen, expires)) => {
                            (seen.max(*last_seen_at), expires.max(*expires_at))
                        }
                        None => (*last_seen_at, *expires_at),
                    });
                }
                Some(kept) => return (Some(kept), extended),
            }
        }
        (None, extended)
    }

    /// The newest state of `id` this overlay knows (not yet on disk, or just written): a
    /// change, with the extensions made since, or extensions of what the file holds.
    pub fn get(&self, id: &SessionId) -> Result<Option<Newest>, StoreError> {
        let (kept, extended) = self.layered(id);
        let Some(kept) = kept else {
            return Ok(extended.map(|(last_seen_at, expires_at)| Newest::Extended {
                last_seen_at,
                expires_at,
            }));
        };
        let mut newest = kept.newest(*id)?;
        if let (
            Some((last_seen_at, expires_at)),
            Newest::Write(Write::Put(record) | Write::Refresh(record)),
        ) = (extended, &mut newest)
        {
            extend(record, last_seen_at, expires_at);
        }
        Ok(Some(newest))
    }

    /// What the newest state of `id` holds, without decoding its record.
    pub fn held(&self, id: &SessionId) -> Result<Option<Held>, StoreError> {
        let (kept, extended) = self.layered(id);
        let (seen, expires) = extended.unwrap_or((Millis::MIN, Millis::MIN));
        let record = |bytes: &[u8], refresh| {
            let (last_seen_at, expires_at) = codec::activity(bytes)?;
            Ok(Held::Record {
                refresh,
                last_seen_at: last_seen_at.max(seen),
                expires_at: expires_at.max(expires),
            })
        };
        match kept {
            Some(Kept::Put(bytes)) => record(bytes, false).map(Some),
            Some(Kept::Refresh(bytes)) => record(bytes, true).map(Some),
            Some(Kept::Remove(_)) => Ok(Some(Held::Removed)),
            Some(Kept::Extend { .. }) | None => {
                Ok(extended.map(|(last_seen_at, expires_at)| Held::Record {
                    refresh: false,
                    last_seen_at,
                    expires_at,
                }))
            }
        }
    }

    /// Whether a change not yet folded into the file left a tombstone for `id`.
    pub fn tombstoned(&self, id: &SessionId) -> bool {
        matches!(self.kept(id), Some(Kept::Remove(Some(_))))
            || self.replaced_tombstones.contains_key(id)
    }

    /// Records a change.
    pub fn put(&mut self, id: SessionId, change: Write) {
        self.pending.insert(id, Kept::of(change));
    }

    /// Records a keepalive's new times for a session, read from the table of times: over a
    /// change pending for it, that change extended.
    pub fn extend(&mut self, id: SessionId, last_seen_at: Millis, expires_at: Millis) {
        let change = Kept::Extend {
            last_seen_at,
            expires_at,
        };
        match self.pending.entry(id) {
            Entry::Occupied(mut pending) => {
                let merged = Kept::over(pending.get(), change);
                pending.insert(merged);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(change);
            }
        }
    }

    /// Records a change the log holds, newer than those `logged` holds: a tombstone it
    /// replaces is kept aside for the fold, and an extension of a record it holds extends it.
    fn logged_change(&mut self, id: SessionId, change: Kept) {
        let change = match self.logged.get(&id) {
            Some(older) => Kept::over(older, change),
            None => change,
        };
        if let Some(Kept::Remove(Some(tombstone))) = self.logged.insert(id, change)
            && !matches!(self.logged.get(&id), Some(Kept::Remove(Some(_))))
        {
            self.replaced_tombstones.insert(id, *tombstone);
        }
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
    pub fn begin_flush(&self) -> Vec<Arc<Changes>> {
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

    /// The flushed changes are in the log: they wait in `logged` for the next fold. The
    /// caller holds no batch of [`begin_flush`](Self::begin_flush) any more, so each moves
    /// without a copy. With `times_kept` (the store keeps a table of times, which answers
    /// reads for an extended session and from which the fold takes it), an extension with no
    /// older change to its session in `logged` leaves memory here: between two folds the
    /// overlay then holds what was created, changed or ended, not every session kept alive.
    pub fn end_log(&self, times_kept: bool) {
        for mut shard in self.shards.each() {
            if shard.flushing.is_empty() {
                continue;
            }
            let flushed = mem::take(&mut shard.flushing);
            let flushed = Arc::try_unwrap(flushed).unwrap_or_else(|shared| (*shared).clone());
            if shard.logged.is_empty() && !times_kept {
                shard.logged = flushed;
                continue;
            }
            for (id, change) in flushed {
                let in_times = times_kept && matches!(change, Kept::Extend { .. });
                if !in_times || shard.logged.contains_key(&id) {
                    shard.logged_change(id, change);
                }
            }
        }
    }

    /// Takes in what the log held at open (a crash left it unfolded), in its order: read from
    /// memory from now on, and written into the tables by the next fold.
    pub fn restore(&self, changes: Vec<(SessionId, Kept)>) {
        for (id, change) in changes {
            self.shard(&id).logged_change(id, change);
        }
    }

    /// Moves what the log holds to `folding` and every pending change to `flushing`, and
    /// returns them for a fold, older first: `(folding, flushing)`, after the tombstones that
    /// later changes replaced.
    pub fn begin_fold(&self) -> Batches {
        let mut batches = Batches::default();
        for mut shard in self.shards.each() {
            if !shard.replaced_tombstones.is_empty() {
                let tombstones = shard
                    .replaced_tombstones
                    .iter()
                    .map(|(id, t)| (*id, Kept::Remove(Some(Box::new(*t)))))
                    .collect();
                batches.older.push(Arc::new(tombstones));
            }
            if !shard.logged.is_empty() {
                let batch = Arc::new(mem::take(&mut shard.logged));
                shard.folding = Arc::clone(&batch);
                batches.older.push(batch);
            }
            if !shard.pending.is_empty() {
                let batch = Arc::new(mem::take(&mut shard.pending));
                shard.flushing = Arc::clone(&batch);
                batches.newer.push(batch);
            }
        }
        batches
    }

    /// The fold is committed: what was pending becomes the shards' `recent` changes, and what
    /// the log held leaves memory. The `recent` of an earlier fold goes whatever this one
    /// took from `pending`: the log held changes newer than it (a logout after the keepalive
    /// that a `recent` entry holds), now in the tables, which it would hide.
    pub fn end_fold(&self) {
        for mut shard in self.shards.each() {
            let folded = mem::take(&mut shard.folding);
            let tombstones = mem::take(&mut shard.replaced_tombstones);
            let flushed = mem::take(&mut shard.flushing);
            let previous = mem::replace(&mut shard.recent, flushed);
            // Freed after the lock is released: requests to the shard need not wait for it.
            drop(shard);
            drop((folded, tombstones, previous));
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

    /// The commit failed: put the flushed changes back under any newer pending ones, and what
    /// a fold took from the log back in `logged`, so the next commit retries them.
    pub fn abort_flush(&self) {
        for mut shard in self.shards.each() {
            let flushing = mem::take(&mut shard.flushing);
            for (id, change) in flushing.iter() {
                put_under(&mut shard.pending, *id, change);
            }
            let folding = mem::take(&mut shard.folding);
            for (id, change) in folding.iter() {
                put_under(&mut shard.logged, *id, change);
            }
        }
    }
}

/// Puts `older` back under the change `changes` holds for `id`, if any.
fn put_under(changes: &mut Changes, id: SessionId, older: &Kept) {
    let change = match changes.remove(&id) {
        Some(newer) => Kept::over(older, newer),
        None => older.clone(),
    };
    changes.insert(id, change);
}

/// What a fold writes: the log's changes and the pending ones, each a batch per shard.
#[derive(Default)]
pub struct Batches {
    /// What the log held (the tombstones later changes replaced there first).
    pub older: Vec<Arc<Changes>>,
    /// What was pending, newer than `older` where both change a session.
    pub newer: Vec<Arc<Changes>>,
}

impl Batches {
    pub fn is_empty(&self) -> bool {
        self.older.is_empty() && self.newer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest change to `id`, which these tests make in full.
    fn written(overlay: &Overlay, id: &SessionId) -> Option<Write> {
        match overlay.shard(id).get(id).expect("reads") {
            Some(Newest::Write(write)) => Some(write),
            None => None,
            Some(extended) => panic!("an extension: {extended:?}"),
        }
    }

    #[test]
    fn a_change_is_read_from_memory_through_the_log_and_the_fold() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        let read = |overlay: &Overlay| written(overlay, &id);
        let tombstone = Tombstone {
            at: 1,
            keep_until: 2,
        };
        overlay.shard(&id).put(id, Write::Remove(None));
        let batches = overlay.begin_flush();
        assert_eq!(batches.len(), 1);
        drop(batches);
        overlay.end_log(false);
        assert_eq!(read(&overlay), Some(Write::Remove(None)), "in the log");
        overlay.shard(&id).put(id, Write::Remove(Some(tombstone)));

        // A fold that fails leaves both where they were, the newer on top.
        let batches = overlay.begin_fold();
        assert_eq!((batches.older.len(), batches.newer.len()), (1, 1));
        assert_eq!(read(&overlay), Some(Write::Remove(Some(tombstone))));
        drop(batches);
        overlay.abort_flush();
        assert_eq!(read(&overlay), Some(Write::Remove(Some(tombstone))));

        let batches = overlay.begin_fold();
        assert_eq!((batches.older.len(), batches.newer.len()), (1, 1));
        drop(batches);
        overlay.end_fold();
        // Folded, and still read from memory until a flush finds nothing to write.
        assert_eq!(read(&overlay), Some(Write::Remove(Some(tombstone))));
        assert!(overlay.begin_fold().is_empty());
        overlay.forget_recent();
        assert!(read(&overlay).is_none(), "read from the file from now on");
    }

    /// A fold that takes nothing from `pending` still drops what an earlier fold left in
    /// `recent`: the log it folded held newer changes to those sessions, and once they are in
    /// the tables an older copy in memory must not answer for them.
    #[test]
    fn a_fold_of_the_log_alone_leaves_no_older_change_in_memory() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        let read = |overlay: &Overlay| written(overlay, &id);
        let minute = std::time::Duration::from_secs(60);
        let record = crate::session::SessionRecord::new(id, 0, minute, minute * 10, String::new());
        // A keepalive, pending when a caller asked for a fold: it lands in `recent`.
        overlay.shard(&id).put(id, Write::Put(record));
        let batches = overlay.begin_fold();
        assert_eq!((batches.older.len(), batches.newer.len()), (0, 1));
        drop(batches);
        overlay.end_fold();
        assert!(matches!(read(&overlay), Some(Write::Put(_))));
        // A logout, appended to the log, then folded on its own.
        overlay.shard(&id).put(id, Write::Remove(None));
        drop(overlay.begin_flush());
        overlay.end_log(false);
        assert_eq!(read(&overlay), Some(Write::Remove(None)));
        let batches = overlay.begin_fold();
        assert_eq!((batches.older.len(), batches.newer.len()), (1, 0));
        drop(batches);
        overlay.end_fold();
        assert_eq!(
            read(&overlay),
            None,
            "the logout is in the tables; the keepalive before it must not answer"
        );
    }

    #[test]
    fn a_tombstone_in_the_log_outlives_a_later_change_until_the_fold() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        let tombstone = Tombstone {
            at: 1,
            keep_until: 2,
        };
        overlay.shard(&id).put(id, Write::Remove(Some(tombstone)));
        drop(overlay.begin_flush());
        overlay.end_log(false);
        overlay.shard(&id).put(id, Write::Remove(None));
        drop(overlay.begin_flush());
        overlay.end_log(false);
        assert_eq!(written(&overlay, &id), Some(Write::Remove(None)));
        assert!(overlay.shard(&id).tombstoned(&id), "the tombstone is kept");
        let batches = overlay.begin_fold();
        let changes: Vec<_> = batches.older.iter().flat_map(|b| b.iter()).collect();
        assert_eq!(
            changes,
            [
                (&id, &Kept::Remove(Some(Box::new(tombstone)))),
                (&id, &Kept::Remove(None))
            ],
            "the fold writes the tombstone, then the newest change"
        );
        drop(batches);
        overlay.end_fold();
        overlay.forget_recent();
        assert!(
            !overlay.shard(&id).tombstoned(&id),
            "on the file from now on"
        );
    }

    #[test]
    fn an_extension_over_a_record_extends_it_and_never_a_removal() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        let minute = std::time::Duration::from_secs(60);
        let record =
            crate::session::SessionRecord::new(id, 0, minute, minute * 10, r#"{"a":1}"#.into());
        overlay.shard(&id).put(id, Write::Put(record.clone()));
        drop(overlay.begin_flush());
        overlay.end_log(false);
        // An extension pending over the record in the log: read as the record extended, and
        // one record once both are logged.
        overlay.shard(&id).extend(id, 30_000, 90_000);
        overlay.shard(&id).extend(id, 20_000, 80_000);
        let mut extended = record.clone();
        extended.last_seen_at = 30_000;
        extended.expires_at = 90_000;
        assert_eq!(written(&overlay, &id), Some(Write::Put(extended.clone())));
        assert_eq!(
            overlay.shard(&id).held(&id).expect("reads"),
            Some(Held::Record {
                refresh: false,
                last_seen_at: 30_000,
                expires_at: 90_000
            })
        );
        drop(overlay.begin_flush());
        overlay.end_log(false);
        assert_eq!(written(&overlay, &id), Some(Write::Put(extended.clone())));
        // A failed fold puts the log back under a newer extension: still one record.
        let batches = overlay.begin_fold();
        drop(batches);
        overlay.shard(&id).extend(id, 40_000, 100_000);
        overlay.abort_flush();
        drop(overlay.begin_flush());
        overlay.end_log(false);
        extended.last_seen_at = 40_000;
        extended.expires_at = 100_000;
        assert_eq!(written(&overlay, &id), Some(Write::Put(extended)));
        // A removal is not extended.
        overlay.shard(&id).put(id, Write::Remove(None));
        overlay.shard(&id).extend(id, 50_000, 110_000);
        assert_eq!(written(&overlay, &id), Some(Write::Remove(None)));
        drop(overlay.begin_flush());
        overlay.end_log(false);
        overlay.shard(&id).extend(id, 60_000, 120_000);
        assert_eq!(written(&overlay, &id), Some(Write::Remove(None)));
        assert_eq!(
            overlay.shard(&id).held(&id).expect("reads"),
            Some(Held::Removed)
        );
    }

    #[test]
    fn extensions_alone_extend_what_the_file_holds() {
        let overlay = Overlay::default();
        let id = SessionId::generate().expect("id");
        overlay.shard(&id).extend(id, 30_000, 90_000);
        drop(overlay.begin_flush());
        overlay.end_log(false);
        overlay.shard(&id).extend(id, 40_000, 95_000);
        assert_eq!(
            overlay.shard(&id).get(&id).expect("reads"),
            Some(Newest::Extended {
                last_seen_at: 40_000,
                expires_at: 95_000
            })
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
            assert_eq!(
                shard.get(&id).expect("reads"),
                Some(Newest::Write(change.clone()))
            );
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

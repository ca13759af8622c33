//! What this instance knows of each session it serves beyond its copy in the mirror, kept in
//! memory, and the one rule that judges a copy while the primary is away.
//!
//! While Redis answers, a keepalive extends the session there and the copy in the mirror is
//! left to trail it: the copy is rewritten only once its expiry trails Redis's by half an idle
//! timeout, so a busy session costs the mirror one write per half idle timeout instead of one
//! per flush. Deciding that takes the copy's expiry on every keepalive; read from the mirror it
//! would cost a read of its file on almost every one (a copy written that rarely is rarely in
//! the overlay), so the failover remembers the expiry it wrote. Unknown ids are never
//! remembered (anyone can send them); expired entries are swept, so the memory follows the live
//! sessions this instance serves.
//!
//! Beside it, each entry keeps what Redis last answered this instance for that session (its
//! last activity and expiry): [`Known`]. The copy may trail that by up to half an idle timeout;
//! while Redis is away, a copy is judged as it would be with what is known (the rule:
//! [`Known::apply`]), never by how far the copy was allowed to trail, and never beyond what
//! Redis or this instance's own keepalives said: no grace revives a session that expired. The
//! failover brings copies up to what is known when an outage begins and at a clean stop, and
//! the mirror keeps expired copies for half an idle timeout before purging them, so that a
//! trailing copy is still there to be brought up.
//!
//! An entry may trail the copy (a copy extended during an outage): the next keepalive then
//! rewrites the copy once more, which is harmless. It must never claim a later expiry than the
//! copy has, or a live session could lack a fresh copy when an outage begins; so it is updated
//! under the mirror's lock of that session, in the same step as the copy (the lock order is
//! always the mirror's, then this one's). What is known only ever comes from Redis's answers.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};

const SHARDS: usize = 64;

/// The latest activity and expiry Redis answered this instance for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    last_seen_at: Millis,
    expires_at: Millis,
}

impl Known {
    fn of(record: &SessionRecord) -> Self {
        Self {
            last_seen_at: record.last_seen_at,
            expires_at: record.expires_at,
        }
    }

    /// The session as this instance knows it: `copy`, brought up to what Redis last answered.
    /// Its expiry is one Redis gave (or the copy's own), so the result lives exactly as long
    /// as the session did in Redis when this instance last asked, never longer.
    pub(super) fn apply(&self, copy: &SessionRecord) -> SessionRecord {
        let mut record = copy.clone();
        record.last_seen_at = record.last_seen_at.max(self.last_seen_at);
        record.expires_at = record
            .expires_at
            .max(self.expires_at.min(record.absolute_expires_at));
        record
    }
}

/// One session's entry: the copy's expiry, and what Redis last said.
#[derive(Debug, Clone, Copy)]
struct Entry {
    copy: Millis,
    known: Option<Known>,
}

impl Entry {
    /// What is known beyond the copy, if anything.
    fn ahead(&self) -> Option<Known> {
        self.known.filter(|k| k.expires_at > self.copy)
    }
}

/// The remembered entries, sharded like the mirror's overlay.
pub(super) struct Copies {
    shards: Box<[Mutex<HashMap<SessionId, Entry>>]>,
    hasher: RandomState,
}

impl Default for Copies {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Copies {
    fn shard(&self, id: &SessionId) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        let index = (self.hasher.hash_one(id) as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The copy's idle expiry (`None`: no copy), from memory when known; `read` fetches it from
    /// the mirror otherwise, without this lock held, and a found one is remembered.
    pub(super) fn expiry(
        &self,
        id: &SessionId,
        read: impl FnOnce() -> Result<Option<Millis>, StoreError>,
    ) -> Result<Option<Millis>, StoreError> {
        if let Some(entry) = self.shard(id).get(id) {
            return Ok(Some(entry.copy));
        }
        let expiry = read()?;
        if let Some(expiry) = expiry {
            // A copy written meanwhile has put its own, newer, entry: keep that one.
            self.shard(id).entry(*id).or_insert(Entry {
                copy: expiry,
                known: None,
            });
        }
        Ok(expiry)
    }

    /// Redis answered `record` for a session whose copy is remembered: kept as known, if it
    /// is newer than what was.
    pub(super) fn answered(&self, record: &SessionRecord) {
        if let Some(entry) = self.shard(&record.id).get_mut(&record.id) {
            let answer = Known::of(record);
            entry.known = Some(match entry.known {
                Some(known) => Known {
                    last_seen_at: known.last_seen_at.max(answer.last_seen_at),
                    expires_at: known.expires_at.max(answer.expires_at),
                },
                None => answer,
            });
        }
    }

    /// What is known of a session beyond its copy (`None`: the copy is as new as anything
    /// known, or nothing is).
    pub(super) fn known(&self, id: &SessionId) -> Option<Known> {
        self.shard(id).get(id).and_then(Entry::ahead)
    }

    /// The sessions whose copy trails what is known, and lives by it at `now` when given.
    pub(super) fn ahead(&self, now: Option<Millis>) -> Vec<SessionId> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            ids.extend(shard.iter().filter_map(|(id, entry)| {
                let known = entry.ahead()?;
                now.is_none_or(|now| known.expires_at > now).then_some(*id)
            }));
        }
        ids
    }

    /// The copy now expires at `expires_at`: the entry follows, if there is one.
    pub(super) fn written(&self, id: &SessionId, expires_at: Millis) {
        if let Some(entry) = self.shard(id).get_mut(id) {
            entry.copy = expires_at;
        }
    }

    /// The copy is gone.
    pub(super) fn removed(&self, id: &SessionId) {
        self.shard(id).remove(id);
    }

    /// Forgets the entries whose session ended by `now`, by its copy and by what is known:
    /// those sessions are over here, and the mirror's purge may remove their copies.
    pub(super) fn sweep(&self, now: Millis) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, entry| entry.copy.max(entry.known.map_or(0, |k| k.expires_at)) > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn an_expiry_is_read_from_the_mirror_once_then_follows_every_write() {
        let copies = Copies::default();
        let id = SessionId::generate().expect("rng");
        let reads = Cell::new(0);
        let on_disk = NOW + 600_000;
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(on_disk))
        };
        assert_eq!(copies.expiry(&id, read).expect("expiry"), Some(on_disk));
        assert_eq!(copies.expiry(&id, read).expect("expiry"), Some(on_disk));
        assert_eq!(reads.get(), 1, "the second answer comes from memory");

        copies.written(&id, NOW + 900_000);
        assert_eq!(
            copies.expiry(&id, read).expect("expiry"),
            Some(NOW + 900_000)
        );
        assert_eq!(reads.get(), 1);

        copies.removed(&id);
        let none = || {
            reads.set(reads.get() + 1);
            Ok(None)
        };
        assert_eq!(copies.expiry(&id, none).expect("expiry"), None);
        assert_eq!(reads.get(), 2, "removed: asked again");
    }

    #[test]
    fn unknown_ids_are_not_remembered_and_expired_ones_are_swept() {
        let copies = Copies::default();
        let unknown = SessionId::generate().expect("rng");
        let reads = Cell::new(0);
        let none = || {
            reads.set(reads.get() + 1);
            Ok(None)
        };
        for _ in 0..2 {
            assert_eq!(copies.expiry(&unknown, none).expect("expiry"), None);
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
        copies.expiry(&id, read).expect("read");
        copies.sweep(expiry - 1);
        copies.expiry(&id, read).expect("read");
        assert_eq!(reads.get(), 1, "still live at expiry - 1 ms: kept");
        copies.sweep(expiry);
        copies.expiry(&id, read).expect("read");
        assert_eq!(reads.get(), 2, "expired: swept, read again");
    }

    fn session(expires_at: Millis, absolute: Millis) -> SessionRecord {
        SessionRecord {
            id: SessionId::generate().expect("rng"),
            created_at: NOW,
            last_seen_at: NOW,
            expires_at,
            absolute_expires_at: absolute,
            user: None,
            data: String::new(),
        }
    }

    #[test]
    fn what_redis_answered_beyond_the_copy_is_known_until_the_copy_catches_up() {
        let copies = Copies::default();
        let copy = session(NOW + 600_000, NOW + 3_600_000);
        let id = copy.id;
        copies
            .expiry(&id, || Ok(Some(copy.expires_at)))
            .expect("read");
        assert_eq!(copies.known(&id), None, "nothing known beyond the copy");

        // Redis extended it to 14 min; the copy stays at 10.
        let mut answer = copy.clone();
        answer.touch(NOW + 240_000, std::time::Duration::from_secs(600));
        copies.answered(&answer);
        let known = copies.known(&id).expect("known beyond the copy");
        assert_eq!(known.apply(&copy), answer, "the copy as Redis last had it");
        assert_eq!(copies.ahead(None), vec![id]);
        assert_eq!(copies.ahead(Some(NOW + 840_000)), Vec::<SessionId>::new());

        // An older answer never moves it back.
        copies.answered(&copy);
        assert_eq!(copies.known(&id), Some(known));

        // The copy catches up: nothing is known beyond it any more.
        copies.written(&id, answer.expires_at);
        assert_eq!(copies.known(&id), None);
        assert!(copies.ahead(None).is_empty());
    }

    #[test]
    fn what_is_known_never_passes_the_absolute_expiry_nor_revives_an_unknown_id() {
        let copies = Copies::default();
        let copy = session(NOW + 600_000, NOW + 700_000);
        let mut answer = copy.clone();
        answer.expires_at = NOW + 900_000;
        copies.answered(&answer);
        assert_eq!(
            copies.known(&copy.id),
            None,
            "an id without a copy is not remembered"
        );
        copies
            .expiry(&copy.id, || Ok(Some(copy.expires_at)))
            .expect("read");
        copies.answered(&answer);
        let known = copies.known(&copy.id).expect("known");
        assert_eq!(known.apply(&copy).expires_at, NOW + 700_000);
    }

    #[test]
    fn an_entry_whose_copy_expired_is_kept_while_what_is_known_lives() {
        let copies = Copies::default();
        let copy = session(NOW + 1_000, NOW + 3_600_000);
        let id = copy.id;
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(copy.expires_at))
        };
        copies.expiry(&id, read).expect("read");
        let mut answer = copy.clone();
        answer.expires_at = NOW + 5_000;
        copies.answered(&answer);
        copies.sweep(NOW + 2_000);
        assert!(
            copies.known(&id).is_some(),
            "kept: Redis said it lives until 5 s"
        );
        copies.sweep(NOW + 5_000);
        copies.expiry(&id, read).expect("read");
        assert_eq!(
            reads.get(),
            2,
            "swept once what is known expired, read again"
        );
    }

    #[test]
    fn a_write_unknown_to_memory_is_not_remembered() {
        let copies = Copies::default();
        let id = SessionId::generate().expect("rng");
        copies.written(&id, NOW);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(NOW + 5))
        };
        assert_eq!(copies.expiry(&id, read).expect("expiry"), Some(NOW + 5));
        assert_eq!(reads.get(), 1, "only ids asked about are remembered");
    }
}

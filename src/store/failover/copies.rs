//! What this instance knows of each session it serves beyond its copy in the mirror, kept in
//! memory, and the one rule that judges a copy while the primary is away.
//!
//! While Redis answers, each keepalive this instance serves extends the session there and
//! rewrites its copy in the mirror (batched) once the copy trails by a second, and the
//! failover remembers the expiry it wrote, so that deciding costs no read of the mirror.
//! Only sessions Redis confirmed get an entry, never an id a client merely sent; expired
//! entries are swept, so the memory follows the live sessions this instance serves.
//!
//! Beside it, each entry keeps what Redis last answered this instance for that session (its
//! last activity and expiry): [`Known`]. A read (`GET /api/v1/session`, forward auth that does
//! not extend) learns it without rewriting the copy, and other instances extend the session
//! without this one hearing of it, so the copy may trail what is known; while Redis is away, a
//! copy is judged as it would be with what is known (the rule:
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

use std::sync::MutexGuard;

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord};
use crate::store::{IdMap, Sharded};

const SHARDS: usize = 64;

/// The latest activity and expiry Redis answered this instance for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    last_seen_at: Millis,
    expires_at: Millis,
}

impl Known {
    /// Nothing answered yet: earlier than any answer, so the first one replaces it, and
    /// never ahead of a copy. A sentinel rather than an `Option`, which would add eight bytes
    /// to every entry.
    const NONE: Self = Self {
        last_seen_at: Millis::MIN,
        expires_at: Millis::MIN,
    };

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

/// One session's entry: the copy's expiry, and what Redis last said ([`Known::NONE`] if
/// nothing yet). 24 bytes: with the 16-byte key of [`IdMap`], 40 a session.
#[derive(Debug, Clone, Copy)]
struct Entry {
    copy: Millis,
    known: Known,
}

impl Entry {
    /// What is known beyond the copy, if anything.
    fn ahead(&self) -> Option<Known> {
        Some(self.known).filter(|k| k.expires_at > self.copy)
    }
}

/// The remembered entries, sharded like the mirror's overlay.
pub(super) struct Copies {
    shards: Sharded<IdMap<Entry>>,
}

impl Default for Copies {
    fn default() -> Self {
        Self {
            shards: Sharded::new(SHARDS),
        }
    }
}

impl Copies {
    fn shard(&self, id: &SessionId) -> MutexGuard<'_, IdMap<Entry>> {
        self.shards.of(id)
    }

    /// Redis answered `record` for a session whose copy is remembered: kept as known, if it
    /// is newer than what was.
    pub(super) fn answered(&self, record: &SessionRecord) {
        if let Some(entry) = self.shard(&record.id).get_mut(&record.id) {
            let answer = Known::of(record);
            entry.known = Known {
                last_seen_at: entry.known.last_seen_at.max(answer.last_seen_at),
                expires_at: entry.known.expires_at.max(answer.expires_at),
            };
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
        for shard in self.shards.each() {
            ids.extend(shard.iter().filter_map(|(id, entry)| {
                let known = entry.ahead()?;
                now.is_none_or(|now| known.expires_at > now).then_some(id)
            }));
        }
        ids
    }

    /// The copy of a session Redis confirmed (or this instance made) now expires at
    /// `expires_at`: remembered, or the entry follows.
    pub(super) fn written(&self, id: &SessionId, expires_at: Millis) {
        self.shard(id).upsert(
            id,
            Entry {
                copy: expires_at,
                known: Known::NONE,
            },
            |entry| entry.copy = expires_at,
        );
    }

    /// The entry of a session, if remembered.
    fn entry(&self, id: &SessionId) -> Option<Entry> {
        self.shard(id).get(id).copied()
    }

    /// The expiry the copy of a session was last written with, if remembered.
    pub(super) fn copy(&self, id: &SessionId) -> Option<Millis> {
        self.entry(id).map(|entry| entry.copy)
    }

    /// The copy is gone.
    pub(super) fn removed(&self, id: &SessionId) {
        self.shard(id).remove(id);
    }

    /// Forgets the entries whose session ended by `now`, by its copy and by what is known:
    /// those sessions are over here, and the mirror's purge may remove their copies.
    pub(super) fn sweep(&self, now: Millis) {
        for mut shard in self.shards.each() {
            shard.retain(|entry| entry.copy.max(entry.known.expires_at) > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn a_written_copy_is_remembered_until_removed_or_swept() {
        let copies = Copies::default();
        let id = SessionId::generate().expect("rng");
        let expiry = NOW + 1_000;
        copies.written(&id, expiry);
        assert_eq!(copies.entry(&id).map(|e| e.copy), Some(expiry));
        copies.written(&id, expiry + 1_000);
        assert_eq!(copies.entry(&id).map(|e| e.copy), Some(expiry + 1_000));
        copies.removed(&id);
        assert!(copies.entry(&id).is_none(), "removed");

        copies.written(&id, expiry);
        copies.sweep(expiry - 1);
        assert!(
            copies.entry(&id).is_some(),
            "still live at expiry - 1 ms: kept"
        );
        copies.sweep(expiry);
        assert!(copies.entry(&id).is_none(), "expired: swept");
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
        copies.written(&id, copy.expires_at);
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
        copies.written(&copy.id, copy.expires_at);
        copies.answered(&answer);
        let known = copies.known(&copy.id).expect("known");
        assert_eq!(known.apply(&copy).expires_at, NOW + 700_000);
    }

    #[test]
    fn an_entry_whose_copy_expired_is_kept_while_what_is_known_lives() {
        let copies = Copies::default();
        let copy = session(NOW + 1_000, NOW + 3_600_000);
        let id = copy.id;
        copies.written(&id, copy.expires_at);
        let mut answer = copy.clone();
        answer.expires_at = NOW + 5_000;
        copies.answered(&answer);
        copies.sweep(NOW + 2_000);
        assert!(
            copies.known(&id).is_some(),
            "kept: Redis said it lives until 5 s"
        );
        copies.sweep(NOW + 5_000);
        assert!(
            copies.entry(&id).is_none(),
            "swept once what is known expired"
        );
    }
}

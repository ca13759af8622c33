//! The idle expiry of each copy the failover keeps in the mirror, remembered in memory.
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
//! An entry may trail the copy (a copy extended during an outage): the next keepalive then
//! rewrites the copy once more, which is harmless. It must never claim a later expiry than the
//! copy has, or a live session could lack a fresh copy when an outage begins; so it is updated
//! under the mirror's lock of that session, in the same step as the copy (the lock order is
//! always the mirror's, then this one's).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use crate::clock::Millis;
use crate::session::{SessionId, StoreError};

const SHARDS: usize = 64;

/// The remembered expiries, sharded like the mirror's overlay.
pub(super) struct Copies {
    shards: Box<[Mutex<HashMap<SessionId, Millis>>]>,
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
    fn shard(&self, id: &SessionId) -> MutexGuard<'_, HashMap<SessionId, Millis>> {
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
        if let Some(expiry) = self.shard(id).get(id) {
            return Ok(Some(*expiry));
        }
        let expiry = read()?;
        if let Some(expiry) = expiry {
            // A copy written meanwhile has put its own, newer, entry: keep that one.
            self.shard(id).entry(*id).or_insert(expiry);
        }
        Ok(expiry)
    }

    /// The copy now expires at `expires_at`: the entry follows, if there is one.
    pub(super) fn written(&self, id: &SessionId, expires_at: Millis) {
        if let Some(expiry) = self.shard(id).get_mut(id) {
            *expiry = expires_at;
        }
    }

    /// The copy is gone.
    pub(super) fn removed(&self, id: &SessionId) {
        self.shard(id).remove(id);
    }

    /// Forgets the entries whose expiry passed by `now`: those sessions are over here, and the
    /// mirror's purge may remove their copies.
    pub(super) fn sweep(&self, now: Millis) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, expiry| *expiry > now);
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

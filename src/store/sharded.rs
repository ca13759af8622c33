//! Per-session state split over several locks, so that requests for different sessions seldom
//! wait for one another: the local store's overlay of changes, the failover's knowledge of its
//! copies, the Express store's session lifetimes. Each holds its own map (or more) per shard
//! and updates it in several steps under the shard's lock, which a concurrent map crate's
//! per-entry API would not give; what they share is the choosing of a shard, here.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use crate::session::SessionId;

/// `T`, once per shard; a session's shard is chosen by a keyed hash of its id.
pub(crate) struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
    hasher: RandomState,
}

impl<T: Default> Sharded<T> {
    /// `count` shards (at least one), each a `T::default()`.
    pub(crate) fn new(count: usize) -> Self {
        Self {
            shards: (0..count.max(1)).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<T> Sharded<T> {
    /// Locks the shard that holds `id`. A poisoned lock only means a thread panicked while
    /// holding it; every update leaves the shard consistent, so the guard is taken back.
    pub(crate) fn of(&self, id: &SessionId) -> MutexGuard<'_, T> {
        let index = (self.hasher.hash_one(id) as usize) % self.shards.len();
        lock(&self.shards[index])
    }

    /// Each shard in turn, locked while the caller holds it.
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_always_reaches_the_same_shard() {
        let sharded: Sharded<Vec<SessionId>> = Sharded::new(8);
        let ids: Vec<SessionId> = (0..64u8).map(|n| SessionId::from_bytes([n; 16])).collect();
        for id in &ids {
            sharded.of(id).push(*id);
        }
        for id in &ids {
            assert!(sharded.of(id).contains(id));
        }
        let all: usize = sharded.each().map(|shard| shard.len()).sum();
        assert_eq!(all, ids.len());
        assert!(
            sharded.each().filter(|shard| !shard.is_empty()).count() > 1,
            "spread over the shards"
        );
    }
}

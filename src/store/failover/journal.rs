//! What changed while the primary was away.
//!
//! The mirror holds the durable part of the journal: each session's last-seen time (a re-sync
//! writes back what was seen since the outage began) and a tombstone for each logout. What
//! lives here, in memory, is when the outage began and the ids changed since: the re-sync's
//! last round drains them under the lock that also brings the primary back, so that no change
//! slips between the re-sync and the return (see the `link` module).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::clock::Millis;
use crate::session::SessionId;

/// The outage's start and the ids changed since, not yet written back.
pub(super) struct Journal {
    outage_began: AtomicI64,
    changed: Mutex<HashSet<SessionId>>,
}

impl Journal {
    /// A journal whose outage began at `began` (an instance starts as if one just had).
    pub(super) fn new(began: Millis) -> Self {
        Self {
            outage_began: AtomicI64::new(began),
            changed: Mutex::new(HashSet::new()),
        }
    }

    /// When the current (or last) outage began.
    pub(super) fn outage_began(&self) -> Millis {
        self.outage_began.load(Ordering::Acquire)
    }

    /// An outage begins at `now`.
    pub(super) fn begin_outage(&self, now: Millis) {
        self.outage_began.store(now, Ordering::Release);
    }

    /// The ids changed while offline and not yet written back. Whoever flips the primary's
    /// state holds this lock while doing so.
    pub(super) fn changed(&self) -> MutexGuard<'_, HashSet<SessionId>> {
        self.changed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outage_start_is_kept() {
        let journal = Journal::new(5);
        assert_eq!(journal.outage_began(), 5);
        journal.begin_outage(9);
        assert_eq!(journal.outage_began(), 9);
        let id = SessionId::generate().expect("rng");
        journal.changed().insert(id);
        assert!(journal.changed().contains(&id));
    }
}

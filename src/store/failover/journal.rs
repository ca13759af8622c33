//! What changed while the primary was away, and the rule that keeps sessions alive meanwhile.
//!
//! The mirror holds the durable part of the journal: each session's last-seen time (a re-sync
//! writes back what was seen since the outage began) and a tombstone for each logout. What
//! lives here, in memory, is when the outage began and the ids changed since: the re-sync's
//! last round drains them under the lock that also brings the primary back, so that no change
//! slips between the re-sync and the return (see the `link` module).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Millis, duration_millis};
use crate::session::{SessionId, SessionRecord};

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

/// Whether a copy may be kept alive at `now`, during an outage that began at `began`.
///
/// This instance's copy of a session last seen here before the outage may trail Redis: the
/// session may have been kept alive through another instance up to the outage's start, and
/// so live until `began + idle` at the latest. Until then it is accepted, within its absolute
/// lifetime, even if this copy's idle expiry passed, rather than dropped because Redis blinked.
/// A session seen here during the outage follows the normal rule: this copy is the newest.
pub(super) fn alive_in_outage(
    copy: &SessionRecord,
    now: Millis,
    idle: Duration,
    began: Millis,
) -> bool {
    let grace_until = began.saturating_add(duration_millis(idle));
    copy.is_live(now)
        || (copy.last_seen_at < began && now < grace_until && now < copy.absolute_expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const MIN_MS: Millis = 60_000;

    fn record(at: Millis, idle: Duration) -> SessionRecord {
        SessionRecord::new(
            SessionId::generate().expect("rng"),
            at,
            idle,
            60 * MIN,
            String::new(),
        )
    }

    #[test]
    fn in_an_outage_sessions_seen_before_it_get_one_idle_timeout_of_grace() {
        let idle = 10 * MIN;
        let start = 1_700_000_000_000;
        let a = record(start, idle);
        let began = start + 5 * MIN_MS;
        let mut c = record(began, idle);

        // 12 minutes after creation: a's copy expired at 10, but another instance may have
        // kept it alive until 15 at the latest (outage start + idle timeout).
        let now = start + 12 * MIN_MS;
        assert!(alive_in_outage(&a, now, idle, began), "within the grace");

        // c was seen here during the outage: no other instance knows better, the normal
        // rule holds (it expired at 15).
        c.touch(began, idle);
        assert!(!alive_in_outage(&c, start + 16 * MIN_MS, idle, began));
        assert!(alive_in_outage(&c, start + 14 * MIN_MS, idle, began));

        // 16 minutes: the grace is over for a.
        assert!(!alive_in_outage(&a, start + 16 * MIN_MS, idle, began));
    }

    #[test]
    fn the_grace_never_passes_the_absolute_lifetime() {
        let idle = 10 * MIN;
        let start = 1_700_000_000_000;
        let a = record(start, idle);
        // The outage began one minute before the absolute lifetime ends.
        let began = a.absolute_expires_at - MIN_MS;
        assert!(!alive_in_outage(&a, a.absolute_expires_at, idle, began));
        assert!(!alive_in_outage(&a, a.absolute_expires_at + 1, idle, began));
    }

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

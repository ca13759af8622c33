//! The lifetime a session's next keepalive will give its key, guessed before its value is
//! read, so that a keepalive costs Redis a native `GETEX` rather than a script.
//!
//! connect-redis gives a session's key the lifetime its cookie names (`maxAge`), which only the
//! session's value tells. The touch script reads the value and sets the lifetime in one step;
//! `GETEX key EX <seconds>` is a seventh of its cost to Redis but needs the lifetime first. An
//! application gives nearly all its sessions the same `maxAge`, so the guess is the shortest
//! lifetime read so far, and for the sessions read with a longer one ("remember me"), theirs.
//! The value `GETEX` returns says whether the guess was right; when it was not, the script
//! runs at once for that session and sets the lifetime its value names.
//!
//! A wrong guess is short-lived and errs short: the shortest lifetime seen is the guess of a
//! session not known to differ, so a key is given a longer lifetime than its own only when the
//! application has just shortened that session's `maxAge`, or when a session is the first to
//! read shorter than every other so far. Until the script has run (the next round trip), such a
//! key would outlive its session if this instance stopped in between and no request came for
//! it again (docs/redis.md). Sessions with a longer lifetime are remembered up to
//! [`MAX_LONGER`]; past that the list starts over, and each is learnt again on its next
//! keepalive (one more round trip, never a longer lifetime).

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use crate::session::SessionId;
use crate::store::Sharded;

/// Most sessions remembered with a lifetime longer than the shortest (about 64 bytes each).
const MAX_LONGER: usize = 100_000;

const SHARDS: usize = 16;

/// What the store has learnt of its sessions' lifetimes, in seconds.
pub(super) struct Lifetimes {
    /// The shortest lifetime read so far (0: none yet, every keepalive runs the script).
    shortest: AtomicI64,
    /// The sessions read with a longer lifetime than the shortest, and theirs.
    longer: Sharded<HashMap<SessionId, i64>>,
    /// How many there are: none, the usual case, costs a keepalive no lock.
    count: AtomicUsize,
    /// Redis refused `GETEX`: nothing is guessed, every keepalive runs the script.
    script_only: AtomicBool,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            shortest: AtomicI64::new(0),
            longer: Sharded::new(SHARDS),
            count: AtomicUsize::new(0),
            script_only: AtomicBool::new(false),
        }
    }
}

impl Lifetimes {
    fn shard(&self, id: &SessionId) -> MutexGuard<'_, HashMap<SessionId, i64>> {
        self.longer.of(id)
    }

    /// The lifetime session `id`'s next keepalive should give its key, if anything is known.
    pub(super) fn guess(&self, id: &SessionId) -> Option<i64> {
        let shortest = self.shortest.load(Ordering::Relaxed);
        if shortest <= 0 || self.script_only.load(Ordering::Relaxed) {
            return None;
        }
        if self.count.load(Ordering::Relaxed) > 0
            && let Some(longer) = self.shard(id).get(id)
        {
            return Some(*longer);
        }
        Some(shortest)
    }

    /// Session `id` was read with a lifetime of `secs`.
    pub(super) fn learn(&self, id: &SessionId, secs: i64) {
        if secs <= 0 {
            self.forget(id);
            return;
        }
        // 0 is "none yet": any reading is shorter.
        let before = self
            .shortest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |shortest| {
                (shortest <= 0 || secs < shortest).then_some(secs)
            })
            .unwrap_or_else(|unchanged| unchanged);
        if before <= 0 || secs <= before {
            self.forget(id);
            return;
        }
        if self.count.load(Ordering::Relaxed) >= MAX_LONGER {
            self.start_over();
        }
        if self.shard(id).insert(*id, secs).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Redis refused `GETEX` (older than 6.2, or an ACL without it): from now on nothing is
    /// guessed. Returns whether that was already so.
    pub(super) fn give_up_native(&self) -> bool {
        self.script_only.swap(true, Ordering::Relaxed)
    }

    /// Session `id` is gone: nothing to remember of it.
    pub(super) fn forget(&self, id: &SessionId) {
        if self.count.load(Ordering::Relaxed) > 0 && self.shard(id).remove(id).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forgets every longer lifetime: their sessions are guessed the shortest again, and
    /// corrected on their next keepalive.
    fn start_over(&self) {
        for mut shard in self.longer.each() {
            self.count.fetch_sub(shard.len(), Ordering::Relaxed);
            shard.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    #[test]
    fn nothing_is_guessed_before_a_reading() {
        assert_eq!(Lifetimes::default().guess(&id(1)), None);
    }

    #[test]
    fn the_guess_is_the_shortest_lifetime_or_a_sessions_own_longer_one() {
        let lifetimes = Lifetimes::default();
        lifetimes.learn(&id(1), 3600);
        assert_eq!(lifetimes.guess(&id(2)), Some(3600), "an unknown session");
        lifetimes.learn(&id(3), 30 * 86_400);
        assert_eq!(lifetimes.guess(&id(3)), Some(30 * 86_400), "remember me");
        assert_eq!(lifetimes.guess(&id(2)), Some(3600));
        // A shorter one appears: every session not known to be longer is guessed that.
        lifetimes.learn(&id(4), 600);
        assert_eq!(lifetimes.guess(&id(2)), Some(600));
        assert_eq!(lifetimes.guess(&id(3)), Some(30 * 86_400));
        // The remember-me session read shorter again, then gone.
        lifetimes.learn(&id(3), 600);
        assert_eq!(lifetimes.guess(&id(3)), Some(600));
        lifetimes.learn(&id(5), 7200);
        lifetimes.forget(&id(5));
        assert_eq!(lifetimes.guess(&id(5)), Some(600));
        assert_eq!(lifetimes.count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_lifetime_of_zero_or_less_is_no_guess() {
        let lifetimes = Lifetimes::default();
        lifetimes.learn(&id(1), 0);
        lifetimes.learn(&id(2), -1);
        assert_eq!(lifetimes.guess(&id(1)), None);
    }

    #[test]
    fn the_longer_lifetimes_start_over_when_full() {
        let lifetimes = Lifetimes::default();
        lifetimes.learn(&id(0), 60);
        for n in 0..MAX_LONGER as u32 + 1 {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            bytes[15] = 1;
            lifetimes.learn(&SessionId::from_bytes(bytes), 120);
        }
        assert_eq!(lifetimes.count.load(Ordering::Relaxed), 1);
        assert_eq!(lifetimes.guess(&id(9)), Some(60));
    }
}

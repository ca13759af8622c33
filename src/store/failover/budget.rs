//! The mirror's budget: the most live sessions this instance keeps copies of while Redis
//! answers (`redis_mirror_max_sessions`), and the rule for what goes first beyond it.
//!
//! Behind routing that sends each session to one instance, a mirror holds about its share of
//! the fleet's sessions. Behind round-robin it ends up holding nearly all of them, and its disk
//! and memory grow with the fleet. The budget bounds that: once the mirror holds more live
//! copies than it allows, the link task drops the copies whose expiry comes first, those this
//! instance served least lately, a page at a time between two probes. Redis holds every one of
//! them, so nothing changes while it answers: the next request for such a session is served
//! from Redis and copied again.
//!
//! What it costs is what the copies were for. During an outage a session without a copy here
//! is answered `503` (the client retries; nobody is signed out) unless the request reaches an
//! instance that holds one. And after Redis loses keys (evicted, restarted empty), a session no
//! instance holds a copy of is not put back. Copies only go while Redis answers and its data
//! set is whole, never during or just after an outage or a loss, so no change made here that
//! Redis lacks is ever dropped.

use crate::session::StoreError;
use crate::store::Write;

use super::Shared;

/// Most copies dropped between two probes: a backlog (a budget lowered, a burst of sign-ins)
/// goes over a few seconds rather than in one long pass.
const TRIM_PAGE: usize = 10_000;

impl Shared {
    /// Drops the least lately active copies beyond the budget, up to a page of them. Returns how
    /// many went. Nothing goes without a budget, while Redis is away or lately lost keys, or
    /// while a write-back walks the local store.
    pub(super) async fn trim_mirror(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        if self.mirror_max_sessions == 0 || !self.can_drop_copies() || self.link.lost_lately(now) {
            return Ok(0);
        }
        let live = self.mirror.live_count(now).await?.unwrap_or(0);
        let excess = live.saturating_sub(self.mirror_max_sessions);
        if excess == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(excess).unwrap_or(usize::MAX).min(TRIM_PAGE);
        let mut dropped = 0;
        for (id, expires_by) in self.mirror.first_to_expire(now, limit).await? {
            let mut gone = false;
            self.mirror.modify(&id, &mut |copy| {
                // Served since the page was read (its copy expires later now), or Redis went
                // away meanwhile (the copy may be what serves the session): it stays.
                let stale = copy.is_some_and(|copy| copy.expires_at <= expires_by);
                if !stale || !self.can_drop_copies() {
                    return None;
                }
                gone = true;
                Some(Write::Remove(None))
            })?;
            dropped += u64::from(gone);
        }
        self.metrics.redis_mirror_trimmed_total.inc_by(dropped);
        Ok(dropped)
    }

    /// Redis answers and no write-back walks the local store: every copy is in Redis too.
    fn can_drop_copies(&self) -> bool {
        self.status.is_online() && !self.sweep.running()
    }
}

//! Session stores. Each implements [`SessionStore`](crate::session::SessionStore).
//!
//! - [`local`]: the durable embedded store (redb) that runs with no other service.
//! - [`redis`]: sessions in Redis, shared by every instance.
//! - [`express`]: an Express application's sessions in connect-redis's layout, served in its
//!   place.
//! - [`failover`]: Redis first, the local store as mirror and fallback, and everything about
//!   outages. It knows the two stores only through the interfaces it defines (`Primary` and
//!   `Mirror`, crate-private); they are put together here
//!   ([`FailoverStore::start`](failover::FailoverStore::start)).
//!
//! [`Write`] and [`Tombstone`] are the words a mirror and the failover share: what to write
//! for one session.

pub mod express;
pub mod failover;
pub mod local;
pub mod redis;
mod sharded;

pub(crate) use sharded::Sharded;

use std::sync::Arc;

use crate::clock::{Clock, Millis};
use crate::metrics::Metrics;

/// A removed session's tombstone: when it was removed, and until when it is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// When the session was removed (the logout's time).
    pub at: Millis,
    /// When the tombstone may go: by then the session could no longer have lived.
    pub keep_until: Millis,
}

/// What to write for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Keep this record (a creation, a copy, an extension).
    Put(crate::session::SessionRecord),
    /// What the shared store answered a read of a session this store may hold a copy of:
    /// the copy, if there is one, becomes the answer (see [`answered`]); without a copy,
    /// nothing is written, so that reading a session does not make this store hold it.
    Refresh(crate::session::SessionRecord),
    /// Remove the session, leaving a tombstone or not.
    Remove(Option<Tombstone>),
}

/// A copy brought up to `answer`, what the shared store said of the same session: the
/// answer, with the later of the two's last activity and expiry. Answers to requests that
/// overlap may arrive in any order, and the later times are the newer state (a session's times
/// only grow), so a late answer never moves a copy back.
pub fn answered(
    copy: &crate::session::SessionRecord,
    answer: &crate::session::SessionRecord,
) -> crate::session::SessionRecord {
    brought_up(answer, copy.last_seen_at, copy.expires_at)
}

/// [`answered`] for a copy known only by its last activity and expiry (all it takes of the
/// copy): what a store that keeps copies encoded reads without decoding them.
pub fn brought_up(
    answer: &crate::session::SessionRecord,
    last_seen_at: Millis,
    expires_at: Millis,
) -> crate::session::SessionRecord {
    let mut record = answer.clone();
    record.last_seen_at = record.last_seen_at.max(last_seen_at);
    record.expires_at = record
        .expires_at
        .max(expires_at.min(answer.absolute_expires_at));
    record
}

impl failover::FailoverStore {
    /// Redis first, `local` as its mirror and fallback: tries Redis once (bounded by its
    /// timeouts) and starts the tasks that keep the link and hear other instances' logouts.
    ///
    /// Assembled here, where the concrete stores are known: the failover itself reaches them
    /// only through its `Primary` and `Mirror` interfaces.
    pub async fn start(
        redis: redis::RedisStore,
        local: local::LocalStore,
        options: failover::FailoverOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::compose(Arc::new(redis), Arc::new(local), options, clock, metrics).await
    }

    /// An Express application's sessions in its Redis first, `local` as their mirror and
    /// fallback: the same failover, over another primary.
    pub async fn start_express(
        express: express::ExpressStore,
        local: local::LocalStore,
        options: failover::FailoverOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::compose(Arc::new(express), Arc::new(local), options, clock, metrics).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionId, SessionRecord};

    #[test]
    fn an_answer_takes_the_later_times_and_its_own_data() {
        let min = std::time::Duration::from_secs(60);
        let copy = SessionRecord::new(
            SessionId::generate().expect("rng"),
            1_000_000,
            10 * min,
            30 * min,
            "{}".to_owned(),
        );
        let mut newer = copy.clone();
        newer.touch(1_000_000 + 25 * 60_000, 10 * min);
        assert_eq!(newer.expires_at, copy.absolute_expires_at, "capped");
        let mut older = copy.clone();
        older.data = r#"{"step":2}"#.to_owned();

        let brought_up = answered(&newer, &older);
        assert_eq!(brought_up.data, older.data, "the answer's data");
        assert_eq!(brought_up.last_seen_at, newer.last_seen_at);
        assert_eq!(brought_up.expires_at, newer.expires_at, "never moved back");
        assert_eq!(answered(&copy, &newer), newer, "a newer answer wins");
    }
}

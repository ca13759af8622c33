//! What the failover asks of the shared store it puts first: the primary (Redis,
//! [`crate::store::redis`]; a second session format would be another).
//!
//! Beyond being a session store, a primary has a link that the failover opens, probes and
//! drops; tells which data set it reached (Redis's run id changes when Redis restarts, and a
//! restarted Redis may have lost everything; its epoch key goes when Redis loses its data
//! without restarting); takes back what an instance kept during an
//! outage without overwriting newer activity or reviving a logout; marks logouts so that no
//! instance's copy can bring a session back; and publishes each logout to every instance.
//! Failures are reported, never handled here: deciding what an error means is the failover's
//! job.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};

/// Which data set a primary holds. Another one (another server, or the same whose epoch is
/// gone or replaced) may lack sessions this instance holds: it gets every one of them back.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// The server's identity: Redis's run id (in a cluster, its masters'), which changes when
    /// it restarts.
    pub server: String,
    /// The token of the epoch key (one per master in a cluster; `-` for a missing one), which
    /// changes when Redis loses its data without restarting.
    pub epoch: String,
    /// How many keys the server has evicted since it started (`evicted_keys`, summed over a
    /// cluster's masters): not the data set's identity, but when it grows, some keys of this
    /// data set may be gone one by one.
    pub evicted: u64,
}

impl DataSet {
    /// Whether `other` is the same data set: the same server, the same epoch.
    pub fn same(&self, other: &Self) -> bool {
        self.server == other.server && self.epoch == other.epoch
    }
}

/// A logout as announced to every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// This session was logged out.
    Session(SessionId),
    /// Every session of a user created by a time was ("log out everywhere").
    User {
        /// The user.
        user: String,
        /// When: the sessions created at or before it ended.
        at: Millis,
    },
}

/// Whether a session is over, as the primary tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// Not as far as the primary tells: no logout marked (and, for a format whose logouts
    /// leave no mark, the session is there).
    No,
    /// Its logout is marked: ended through keepalive, here or elsewhere.
    Marked,
    /// Gone without a mark, in a format whose application ends its sessions itself and
    /// leaves none: destroyed by the application, expired, or lost by Redis (only the last
    /// may come back, from an instance's copy).
    Gone,
}

/// The logouts made on any instance, as they are announced.
pub type Logouts = Pin<Box<dyn Stream<Item = Ended> + Send>>;

/// A place in the primary's record of announced logouts: the record's own entry id (a Redis
/// stream id, `<ms>-<seq>`), ordered as the record is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogoutMark {
    /// The time part.
    pub ms: u64,
    /// The sequence within that time.
    pub seq: u64,
}

impl LogoutMark {
    /// Reads `<ms>-<seq>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for LogoutMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where the primary's record of announced logouts stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutsRecord {
    /// The newest logout recorded (the zero mark: none yet).
    pub last: LogoutMark,
    /// How many logouts were ever recorded, if the primary tells.
    pub added: Option<u64>,
    /// How many it holds now: the newest ones, the oldest dropped to keep it capped.
    pub held: u64,
}

impl LogoutsRecord {
    /// Whether every logout recorded after a place (`from`, when `added_then` had been
    /// recorded) is still there to read: the record holds at least as many as were added
    /// since, and was not started again meanwhile.
    pub fn holds_after(&self, from: LogoutMark, added_then: u64) -> bool {
        self.last >= from
            && self
                .added
                .and_then(|added| added.checked_sub(added_then))
                .is_some_and(|since| self.held >= since)
    }
}

/// The shared store.
#[async_trait]
pub trait Primary: SessionStore {
    /// Opens a fresh link, checks that it answers and makes it the one operations use.
    /// Returns the data set it reached (writing its epoch if it has none).
    async fn connect(&self) -> Result<DataSet, StoreError>;

    /// Drops the link: operations fail fast until the next [`connect`](Self::connect).
    fn disconnect(&self);

    /// Asks the current link which data set it holds now; fails on a silent primary.
    async fn probe(&self) -> Result<DataSet, StoreError>;

    /// Which shared store this is, beyond its data set: where, which database, which key
    /// prefix; no credentials. A local note names it, so a note left for another one is
    /// ignored.
    fn place(&self) -> String;

    /// How long `record` may stay idle: `configured` (keepalive's idle timeout) for the
    /// sessions whose format has one for all, the session's own for those that carry it.
    fn idle_of(&self, record: &SessionRecord, configured: Duration) -> Duration {
        let _ = record;
        configured
    }

    /// Writes back a session kept locally during an outage, unless the primary knows newer
    /// activity of it or its logout. `data_lost`: the primary came back with another data set
    /// (restarted empty), so a session missing from it was lost, not ended. Returns whether it
    /// was written.
    async fn merge(
        &self,
        record: &SessionRecord,
        now: Millis,
        data_lost: bool,
    ) -> Result<bool, StoreError>;

    /// Ends a session at `now`, as this instance recorded it (a logout or a rotation's end of
    /// its old id, written back after an outage; an id "log out everywhere" names): marks the
    /// logout so that no copy can be written back over it, and announces it. Ends that id
    /// alone: a rotation written back must not end the id it rotated to, and a logout this
    /// instance made recorded each id it ended. Returns whether the session existed.
    async fn end(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError>;

    /// Ends a session a client logged out of while the primary answers: as [`end`](Self::end),
    /// except that an id the primary does not hold is marked and announced only if
    /// `mark_unknown` (this instance holds a copy of it). A logout of an id nobody holds then
    /// leaves nothing behind, so made-up ids cost no storage. By default every logout is
    /// marked: a primary whose ids cannot be made up (signed cookies) need not tell them apart.
    async fn log_out(
        &self,
        id: &SessionId,
        now: Millis,
        mark_unknown: bool,
    ) -> Result<bool, StoreError> {
        let _ = mark_unknown;
        self.end(id, now).await
    }

    /// Records that `user` is logged out everywhere at `at`, so that no instance writes back
    /// a copy of a session of theirs created by then ([`merge`](Self::merge) refuses it: the
    /// instance that logs the user out cannot see a session that another one, offline,
    /// created or kept alive, and the copy would otherwise bring it back once written), then
    /// returns the ids of the sessions created for `user` that may still live at `at` (within
    /// their absolute lifetime), whether or not the primary still holds them: one it lost
    /// (evicted) may come back from an instance's copy, so "log out everywhere" ends it too.
    /// A copy written back is either refused or among the ids. By default (a format without
    /// users' sets) nothing is recorded and the ids are those of its live sessions.
    async fn mark_user_ended(&self, user: &str, at: Millis) -> Result<Vec<SessionId>, StoreError> {
        Ok(self
            .list_user(user, at)
            .await?
            .into_iter()
            .map(|record| record.id)
            .collect())
    }

    /// Announces to every instance that each session of `user` created at or before `at`
    /// ended, so that each ends its copies of them, even those the primary no longer lists.
    /// By default nothing: a format without users.
    async fn announce_user_ended(&self, user: &str, at: Millis) -> Result<(), StoreError> {
        let _ = (user, at);
        Ok(())
    }

    /// Whether a session is over: its logout marked, or, in a format whose logouts leave no
    /// mark, the session gone.
    async fn over(&self, id: &SessionId) -> Result<Over, StoreError>;

    /// Tells every instance, for `lasting`, that this one is putting back sessions the
    /// primary lost: until it lapses, a session missing from the primary may still come back.
    async fn announce_write_back(&self, lasting: Duration) -> Result<(), StoreError>;

    /// Whether an instance's notice that it puts back sessions the primary lost is there.
    async fn write_back_under_way(&self) -> Result<bool, StoreError>;

    /// Where the primary's capped record of announced logouts stands, if it keeps one: an
    /// instance that was not listening reads what it missed there rather than looking up
    /// every copy it holds. `None` (the default): no record, every copy is looked up.
    async fn logouts_record(&self) -> Result<Option<LogoutsRecord>, StoreError> {
        Ok(None)
    }

    /// Up to `count` logouts recorded after `after` and at or before `upto`, oldest first, and
    /// the mark to read after next (`None`: none left up to `upto`).
    async fn logouts_after(
        &self,
        after: LogoutMark,
        upto: LogoutMark,
        count: usize,
    ) -> Result<(Vec<Ended>, Option<LogoutMark>), StoreError> {
        let _ = (after, upto, count);
        Ok((Vec::new(), None))
    }

    /// Subscribes to the logouts of every instance: the ids as announced, until the link
    /// drops. Announcements made between this call's return and the first read wait in the
    /// subscription.
    async fn subscribe_ended(&self) -> Result<Logouts, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_as_redis_writes_it_and_orders_by_time_then_sequence() {
        let mark = LogoutMark::parse("1700000000000-3").expect("mark");
        assert_eq!(mark.to_string(), "1700000000000-3");
        assert!(mark < LogoutMark::parse("1700000000000-4").expect("mark"));
        assert!(mark < LogoutMark::parse("1700000000001-0").expect("mark"));
        for junk in ["", "12", "a-1", "1-b", "1-2-3"] {
            assert_eq!(LogoutMark::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_record_holds_what_was_added_after_a_place_unless_it_dropped_some() {
        let at = |ms| LogoutMark { ms, seq: 0 };
        let record = LogoutsRecord {
            last: at(50),
            added: Some(120),
            held: 100,
        };
        assert!(record.holds_after(at(40), 30), "90 added since, 100 held");
        assert!(record.holds_after(at(50), 120), "none added since");
        assert!(!record.holds_after(at(10), 10), "110 added since, 100 held");
        assert!(
            !record.holds_after(at(60), 10),
            "a place past the record's last: it started again"
        );
        assert!(
            !record.holds_after(at(40), 130),
            "more added at the place than now: it started again"
        );
        let uncounted = LogoutsRecord {
            added: None,
            ..record
        };
        assert!(!uncounted.holds_after(at(50), 120), "cannot tell");
    }
}

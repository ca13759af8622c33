//! What the failover asks of the store that keeps copies of the shared store's sessions and
//! serves them through an outage: the mirror (the local store, [`crate::store::local`]).
//!
//! Beyond being a session store itself (it serves every operation while Redis is away), a
//! mirror keeps copies written lazily and without a read first (Redis holds the primary copy,
//! so a copy need not be on disk before the answer, and a keepalive must not wait on the
//! file), changes one session atomically against every other change to it
//! (a keepalive must not undo a logout it raced), keeps tombstones of the sessions it removed
//! (so a logout reaches Redis after an outage, and is written again to a Redis that came back
//! empty), lists what changed since a time, keeps one small note across a restart (where it
//! stood with Redis at a clean stop), and keeps expired copies a while before purging them (a
//! copy trails Redis when other instances served the session since, and is still worth
//! writing back should Redis lose its data). How it does so is its own business.

use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, SessionStore, StoreError};
use crate::store::Write;

/// The store that mirrors the shared store. Writes made through this interface are batched:
/// durable after the next [`SessionStore::flush`], not on return.
#[async_trait]
pub trait Mirror: SessionStore {
    /// The newest state of a session, live or not; `None` if unknown or removed.
    fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Whether the mirror keeps the tombstone of the session: it was logged out, and the
    /// logout is still remembered.
    fn ended(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Writes what `change` makes of the newest state of a session (`None`: write nothing),
    /// with no other change to that session in between.
    fn modify(
        &self,
        id: &SessionId,
        change: &mut dyn FnMut(Option<&SessionRecord>) -> Option<Write>,
    ) -> Result<(), StoreError>;

    /// Keeps `record`, what the primary answered a write, as the copy of its session, brought
    /// up to a newer answer the mirror still has in memory (see [`crate::store::answered`]).
    /// Never reads the file: a keepalive's copy costs no read. An answer that arrives after a
    /// newer one has left the mirror's memory (a batch later) is kept as it is: the copy then
    /// trails by the time between the two answers until the session's next request.
    fn copy(&self, record: &SessionRecord) -> Result<(), StoreError>;

    /// What the primary answered a read: the copy of the session, if the mirror holds one,
    /// is brought up to it; a session without a copy gets none ([`Write::Refresh`]). Never
    /// reads the file: whether there is a copy is settled when the batch is written.
    fn refresh(&self, record: &SessionRecord) -> Result<(), StoreError>;

    /// The sessions removed with a tombstone dated at or after `since` (all for `None`) whose
    /// tombstone is still kept.
    async fn removed_since(&self, since: Option<Millis>) -> Result<Vec<SessionId>, StoreError>;

    /// The sessions live at `now` and last seen at or after `since` (all live ones for
    /// `None`).
    async fn live_since(
        &self,
        since: Option<Millis>,
        now: Millis,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// One page of a walk through the sessions live at `now`, in the order of ids: up to
    /// `limit` ids read after `after` (from the first for `None`), the live ones among them,
    /// and the id the next page starts after (`None`: the walk is done). A page reads what is
    /// durable: a change still waiting for the next [`SessionStore::flush`] may be missed.
    async fn live_page(
        &self,
        after: Option<SessionId>,
        now: Millis,
        limit: usize,
    ) -> Result<(Vec<SessionRecord>, Option<SessionId>), StoreError>;

    /// Up to `limit` of the sessions live at `now` whose copies expire first (the least lately
    /// active here), first first, each with a time its copy expires by. Reads what is durable,
    /// like [`live_page`](Self::live_page): a copy changed since may expire later.
    async fn first_to_expire(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(SessionId, Millis)>, StoreError>;

    /// One page of a walk through the kept tombstones, as [`live_page`](Self::live_page).
    async fn removed_page(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<(Vec<SessionId>, Option<SessionId>), StoreError>;

    /// From now on, keeps a session for at least `margin` past its expiry before purging it
    /// (the largest margin asked for holds). Its answers do not change: an expired session is
    /// expired.
    fn keep_expired(&self, margin: Duration);

    /// `old` was rotated to `new` elsewhere than through this mirror's own `rotate` (which
    /// notes it itself): until `until`, a logout of `old` ends `new` too.
    fn note_rotation(&self, old: &SessionId, new: &SessionId, until: Millis);

    /// The id that replaced `old` in a rotation, if a logout of `old` at `now` ends it too
    /// (the rotation was recent enough).
    fn rotated_to(&self, old: &SessionId, now: Millis) -> Option<SessionId>;

    /// Keeps `note` under `key`, durably on return, replacing an earlier one.
    async fn write_note(&self, key: &str, note: Vec<u8>) -> Result<(), StoreError>;

    /// The note under `key`, removed from the store: a note is read once.
    async fn take_note(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

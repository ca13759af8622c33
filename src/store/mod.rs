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
mod id_map;
pub mod local;
pub mod redis;
mod sharded;

pub(crate) use id_map::IdMap;
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
    /// Remove the session, leaving a tombstone or not.
    Remove(Option<Tombstone>),
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

//! Session stores. Each implements [`SessionStore`](crate::session::SessionStore).
//!
//! - [`local`]: the durable embedded store (redb) that runs with no other service.
//! - [`redis`]: sessions in Redis, shared by every instance.
//! - [`failover`]: Redis first, the local store as mirror and fallback, and the re-sync after
//!   an outage.

pub mod failover;
pub mod local;
pub mod redis;

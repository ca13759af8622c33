//! Session stores. Each implements [`SessionStore`](crate::session::SessionStore).
//!
//! - [`local`]: the durable embedded store (redb) that runs with no other service.

pub mod local;

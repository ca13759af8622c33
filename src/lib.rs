//! # keepalive
//!
//! A service that keeps web sessions alive and tells browsers and operators how healthy the
//! server is. Browsers ping `GET /api/v1/keepalive/` while their user is active; the server
//! extends the session (idle timeout, capped by an absolute lifetime) and answers with the
//! session's expiry and the server's health.
//!
//! A map of the crate (drawn, with the life of a keepalive and of an outage, in
//! `docs/architecture.md`):
//!
//! - [`config`]: the layered configuration (defaults per environment, an optional file,
//!   environment variables), validated into one [`config::Config`] before anything binds; it
//!   owns every settings type and imports no other module.
//! - [`clock`]: the wall clock, and the manual one tests move.
//! - [`task`]: background tasks spawned with a stop token and awaited on stop.
//! - [`session`]: the session model, its identifiers, the [`session::SessionStore`] trait
//!   every store implements, [`session::Sessions`] (the idle and absolute lifetimes) and
//!   [`session::SharedStatus`] (whether the shared store answers).
//! - [`store`]: the stores: [`store::local`], the durable embedded store (redb);
//!   [`store::redis`], sessions shared in Redis; [`store::failover`], Redis first with the
//!   local store as its mirror, which owns everything about outages and reaches the two
//!   stores only through the interfaces it defines.
//! - [`health`]: the memory check and the background monitor whose cached result every
//!   answer reads.
//! - [`http`]: the axum router (sessions, keepalive, probes, metrics, the browser client), the
//!   listener with its limits and per-client rate limits, and the event loops (one per CPU)
//!   that serve its connections.
//! - [`metrics`]: the Prometheus registry and the metrics every part records.
//! - [`alert`]: the built-in alert rules and their webhooks.
//! - [`outbound`]: outgoing HTTP clients (webhooks, `check`, `doctor`).
//! - [`server`]: wires it all together, serves, and shuts down cleanly; [`server::Keepalive`]
//!   is the same for an axum application that embeds keepalive (`examples/axum_app.rs`), which
//!   reads the session in its handlers with [`http::CurrentSession`].
//! - [`cli`]: the command line (`serve`, `check`, `doctor`, `config`); `main.rs` only calls it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod session;
pub mod store;
pub mod task;

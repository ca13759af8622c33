//! keepalive's integration tests, in one binary: the server over a real port (in this process
//! with a clock the test moves, or the real binary for signals, crashes and exit codes), real
//! `redis-server` processes (`keepalive-testkit`), a real nginx and a real Caddy.

mod alerts;
mod checker;
mod cli;
mod deploy;
mod express;
mod harness;
mod hostile;
mod http;
mod integration;
mod limits;
mod process;
mod redis_store;
mod startup;
mod store_conformance;
mod workers;

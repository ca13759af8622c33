//! What keepalive's tests and benchmarks share to run against the real thing: `redis-server`
//! processes (one server, a cluster, a sentinel) with fault injection, started on free ports
//! of 127.0.0.1 and killed with the process that started them; a reader of the Prometheus
//! text `/metrics` serves; and the checker that holds a fleet of instances to the session
//! invariants through faults.
//!
//! - [`redis`]: the servers, their faults (`kill`, `freeze`, `thaw`, `restart_empty`) and
//!   data helpers;
//! - [`ports`]: free ports, never the machine's shared Redis on 6379;
//! - [`process`]: child processes tied to this one, bounded waits, log tails;
//! - [`metrics`]: a sample's value in `/metrics` text;
//! - [`check`]: the fault-injecting checker of the session invariants, several instances
//!   over one Redis (optionally behind nginx) driven by simulated users through a seeded
//!   schedule of faults; run briefly by the integration tests and at length by
//!   `keepalive-bench check`.

pub mod check;
pub mod metrics;
pub mod ports;
pub mod process;
pub mod redis;

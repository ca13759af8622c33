//! What keepalive's tests and benchmarks share to run against the real thing: `redis-server`
//! processes (one server, a cluster, a sentinel) with fault injection, started on free ports
//! of 127.0.0.1 and killed with the process that started them; and a reader of the Prometheus
//! text `/metrics` serves.
//!
//! - [`redis`]: the servers, their faults (`kill`, `freeze`, `thaw`, `restart_empty`) and
//!   data helpers;
//! - [`ports`]: free ports, never the machine's shared Redis on 6379;
//! - [`process`]: child processes tied to this one, bounded waits, log tails;
//! - [`metrics`]: a sample's value in `/metrics` text.

pub mod metrics;
pub mod ports;
pub mod process;
pub mod redis;

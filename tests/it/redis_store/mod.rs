//! The Redis store and the failover over real `redis-server` processes.

mod failover;
mod fleet;
mod invariants;
mod keepalives;

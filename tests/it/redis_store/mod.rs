//! The Redis store and the failover over real `redis-server` processes.

mod failover;
mod invariants;
mod keepalives;

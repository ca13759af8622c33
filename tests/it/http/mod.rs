//! The HTTP contract over a real port: sessions and keepalive on every store (`contract`),
//! probes, health and metrics (`health`), routing, cookies and the browser client (`routes`).

mod contract;
mod health;
mod routes;

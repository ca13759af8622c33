//! The HTTP contract over a real port: sessions and keepalive on every store (`contract`),
//! probes, health and metrics (`health`), routing, cookies and the browser client (`routes`),
//! the client's compression, validators and versioned URLs (`assets`).

mod assets;
mod contract;
mod health;
mod routes;

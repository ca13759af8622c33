//! The HTTP/1.1 listener, with the limits enforced before any handler runs.
//!
//! axum's own `serve` offers none of these knobs, so the accept loop is written here on
//! hyper's connection builder (the same pieces `axum::serve` uses):
//! - at most `max_connections` open connections: past it, new connections wait in the
//!   kernel's backlog instead of costing memory here;
//! - at most `max_connections_per_client` of them from one client address that is not a
//!   trusted proxy ([`per_client`](super::per_client)): past it, its new connections are closed at once, so one
//!   client cannot hold every slot;
//! - request headers must arrive within `header_read_timeout` (slowloris), and may take at
//!   most `max_header_bytes` and `max_headers` (hyper answers 431 past either);
//! - shutdown stops accepting, lets in-flight requests finish and closes idle connections.
//!
//! This loop only accepts; the connections are served by the [`workers`], one
//! single-threaded event loop per CPU.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::per_client::PerClient;
use super::workers::{self, Accepted, Serving, Workers};
use crate::config::ConnectionLimits as Limits;
use crate::metrics::Metrics;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open requests.
///
/// Connections are served on `workers` threads of their own (0: one per CPU this process may
/// use); `serve` returns once they have ended. Dropped before that, it aborts the connections
/// still open. Connections from `trusted_proxies` are not bound per client.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    trusted_proxies: &[IpNet],
    workers: usize,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let threads = workers::count(workers);
    tracing::info!(
        workers = threads,
        "serving HTTP connections on {threads} threads"
    );
    let workers = Workers::start(
        threads,
        &Serving {
            router,
            builder,
            metrics,
        },
    )?;
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::new(limits.max_connections_per_client, trusted_proxies);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Running out of file descriptors or a connection reset before accept:
                    // wait a little rather than spin, and keep serving.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Its permit goes back with it: the slot is free for someone else at once.
        let Some(slot) = per_client.admit(peer.ip()) else {
            tracing::debug!(peer = %peer, "closing a connection: its address holds the most connections one client may (max_connections_per_client)");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, peer = %peer, "cannot hand a connection over");
                continue;
            }
        };
        workers.hand_over(Accepted {
            stream,
            peer,
            permit,
            slot,
            watcher: graceful.watcher(),
        });
    }
    drop(listener);
    graceful.shutdown().await;
    workers.finish().await;
    Ok(())
}

//! The threads that serve HTTP connections: one event loop per CPU, each a single-threaded
//! tokio runtime that runs the connections handed to it from start to end.
//!
//! Why not the multi-threaded scheduler the rest of the server runs on: a keepalive with Redis
//! waits for the batch of keepalives it travels in, so its task sleeps and is woken once per
//! request, and every such wake-up in the multi-threaded scheduler may wake an idle worker
//! thread to look for work to steal, then park it again. On the benchmark's two cores those
//! futex wake-ups and context switches were a third of a keepalive's server CPU, and this
//! layout raised the Redis throughput ratio well past its target (the measurements are in the
//! history of docs/BENCHMARKS.md). `/livez`, which never waits, costs the same either way.
//! actix-web runs its workers the same way, one single-threaded runtime per core.
//!
//! Each accepted connection goes to the loop with the fewest open connections and stays
//! there. The price is that no loop takes work from another: a thread the OS does not run for
//! a while delays its own connections only. No handler blocks its thread (store reads are
//! short, writes and disk flushes are awaited), so one loop per CPU keeps them all busy.
//!
//! Tasks a handler spawns run on its loop, and blocking work goes to that loop's own pool of
//! blocking threads. With Redis, each loop also gets a batcher and a Redis connection of its
//! own (the Redis store's `per_loop` module), so a keepalive never leaves its loop's thread.
//! The loops stop when [`Workers::finish`] is awaited (after the listener's graceful shutdown:
//! their connections end, then the threads), or at once, aborting their connections, when
//! [`Workers`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

use super::per_client::Slot;
use crate::metrics::Metrics;

/// One accepted connection on its way to a loop.
pub(super) struct Accepted {
    /// The socket, taken off the accepting runtime: the loop registers it with its own.
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    /// Its place under the connection bound, given back when it closes.
    pub(super) permit: OwnedSemaphorePermit,
    /// Its place under its client's bound, given back when it closes.
    pub(super) slot: Slot,
    /// Tells it when the server shuts down, and lets the shutdown wait for it.
    pub(super) watcher: Watcher,
}

/// What every loop serves its connections with.
#[derive(Clone)]
pub(super) struct Serving {
    pub(super) router: Router,
    pub(super) builder: http1::Builder,
    pub(super) metrics: Arc<Metrics>,
}

/// The running loops.
pub(super) struct Workers {
    loops: Vec<Loop>,
    /// Cancelled when this is dropped: the loops then abort their connections.
    _stop: DropGuard,
}

struct Loop {
    queue: mpsc::UnboundedSender<Accepted>,
    /// Connections handed to it and not yet closed.
    open: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

/// How many loops `requested` means: itself, or with 0 one per CPU this process may use
/// (which the standard library reads from the cgroup's CPU quota in a container).
pub(super) fn count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `count` loops; fails if a runtime or a thread cannot be created.
    pub(super) fn start(count: usize, serving: &Serving) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut loops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("http-block-{index}"))
                .build()?;
            let (queue, accepted) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let run = run(accepted, serving.clone(), Arc::clone(&open), stop.clone());
            let thread = std::thread::Builder::new()
                // Short enough for the kernel's 15 characters, so `top -H` tells them apart.
                .name(format!("http-loop-{index}"))
                .spawn(move || {
                    runtime.block_on(run);
                    // Dropping the runtime waits for its blocking work (store reads and writes
                    // of requests aborted by a drop), so the store is not closed under them.
                    drop(runtime);
                })?;
            loops.push(Loop {
                queue,
                open,
                thread,
            });
        }
        Ok(Self {
            loops,
            _stop: stop.drop_guard(),
        })
    }

    /// Hands a connection to the loop with the fewest open ones.
    pub(super) fn hand_over(&self, accepted: Accepted) {
        // A loop ends on its own only if its runtime panicked; the others carry on.
        let Some(target) = self
            .loops
            .iter()
            .filter(|l| !l.queue.is_closed())
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
        else {
            tracing::error!("every HTTP worker thread has stopped; closing a new connection");
            return;
        };
        target.open.fetch_add(1, Ordering::Relaxed);
        if target.queue.send(accepted).is_err() {
            // It ended just now: the connection is dropped, so closed, and its permit returned.
            target.open.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("an HTTP worker thread has stopped; closing a new connection");
        }
    }

    /// Lets each loop finish the connections it has (the listener's graceful shutdown tells
    /// them to close), then waits until every thread has ended.
    pub(super) async fn finish(self) {
        let Self { loops, _stop } = self;
        let threads: Vec<_> = loops
            .into_iter()
            .map(|Loop { queue, thread, .. }| {
                drop(queue);
                thread
            })
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("an HTTP worker thread ended with a panic");
                }
            }
        })
        .await;
        if let Err(err) = joined {
            tracing::error!(error = %err, "waiting for the HTTP worker threads failed");
        }
    }
}

/// One loop: serves what it is handed until its queue closes and its connections have ended,
/// or until `stop`.
async fn run(
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    serving: Serving,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let mut accepting = true;
    while accepting || !connections.is_empty() {
        tokio::select! {
            biased;
            // Dropping the set aborts what is still open.
            () = stop.cancelled() => return,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = ended {
                    tracing::error!(error = %err, "an HTTP connection task failed");
                }
            }
            next = accepted.recv(), if accepting => match next {
                Some(connection) => {
                    connections.spawn(serve_one(connection, serving.clone(), Arc::clone(&open)));
                }
                None => accepting = false,
            },
        }
    }
}

async fn serve_one(accepted: Accepted, serving: Serving, open: Arc<AtomicUsize>) {
    let Accepted {
        stream,
        peer,
        permit,
        slot,
        watcher,
    } = accepted;
    let Serving {
        router,
        builder,
        metrics,
    } = serving;
    let _counted = Counted::new(metrics, open, permit, slot);
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(error = %err, peer = %peer, "cannot register a connection");
            return;
        }
    };
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer));
        request
    });
    let connection = watcher
        .watch(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, peer = %peer, "connection ended with an error");
    }
}

/// An open connection in the gauge, its loop's count, the connection bound and its client's
/// bound, for as long as its task lives (also when it is aborted).
struct Counted {
    metrics: Arc<Metrics>,
    open: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
    _slot: Slot,
}

impl Counted {
    fn new(
        metrics: Arc<Metrics>,
        open: Arc<AtomicUsize>,
        permit: OwnedSemaphorePermit,
        slot: Slot,
    ) -> Self {
        metrics.http_connections.inc();
        Self {
            metrics,
            open,
            _permit: permit,
            _slot: slot,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.http_connections.dec();
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

//! A batcher and a Redis connection of its own for each HTTP event loop.
//!
//! The HTTP connections are served by one single-threaded runtime per CPU
//! ([`crate::http`]'s loops). With one shared batcher, every keepalive crosses threads twice:
//! to the batching task and the Redis connection's task on the control runtime, and back to
//! its loop, each a wake-up of a thread that may be idle. Below saturation, where each request
//! pays its own wake-ups, those dominate what a keepalive costs the server. A loop with its own
//! batcher and connection keeps a keepalive on its thread from the request to the answer.
//!
//! The loop's batcher is opened in the background on the loop's first keepalive of a link;
//! until it is ready (or if it cannot be opened), keepalives use the shared one, so none ever
//! waits for a connection to be set up. It belongs to one link (its generation): after a
//! reconnect the next keepalive opens a new one, and the old one ends when its handle is
//! dropped. No library keeps per-thread state of this kind for a Redis client, hence this
//! module.
//!
//! Whoever builds the store chooses it (`RedisOptions::connection_per_thread`): the
//! standalone server does, as it serves HTTP on its own loops; an application that embeds
//! keepalive on its own runtime, or a test, gets the shared connection unless it asks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;

use super::batch::Batcher;
use crate::session::StoreError;

/// What a loop holds for one store.
enum Slot {
    /// Being opened for this link generation.
    Opening(u64),
    Ready(u64, Batcher),
    /// Could not be opened for this generation: the shared batcher serves it.
    Failed(u64),
}

thread_local! {
    /// By store (a process may run several, as tests do).
    static SLOTS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

/// This loop's batcher for `store` at link `generation`, if ready. Otherwise starts opening
/// one with `open` (unless it is being opened or failed for that generation) and returns
/// `None`: the caller uses the shared batcher this time.
///
/// The task that opens it must run on this thread to record the batcher where this thread
/// finds it: on a single-threaded runtime, as the loops are, a spawned task stays on its
/// thread. (Called from a multi-threaded runtime it would record it on whichever thread ran
/// it; this thread would keep using the shared batcher, slower but correct.)
pub(super) fn batcher<F, Fut>(store: u64, generation: u64, open: F) -> Option<Batcher>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Batcher, StoreError>> + Send + 'static,
{
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        match slots.get(&store) {
            Some(Slot::Ready(g, b)) if *g == generation && !b.is_closed() => return Some(b.clone()),
            Some(Slot::Opening(g) | Slot::Failed(g)) if *g == generation => return None,
            // Another link's, or its task is gone (the runtime that ran it ended).
            _ => {}
        }
        slots.insert(store, Slot::Opening(generation));
        let opening = open();
        // On a single-threaded runtime the task runs on this thread, so it finds this
        // thread's slots.
        tokio::spawn(async move {
            let slot = match opening.await {
                Ok(batcher) => Slot::Ready(generation, batcher),
                Err(err) => {
                    tracing::debug!(error = %err, "[redis] no connection of its own for this HTTP loop; it shares the main one");
                    Slot::Failed(generation)
                }
            };
            SLOTS.with(|slots| {
                let mut slots = slots.borrow_mut();
                // A newer link may have started opening meanwhile: keep the newer.
                let current = match slots.get(&store) {
                    Some(Slot::Opening(g) | Slot::Ready(g, _) | Slot::Failed(g)) => *g,
                    None => 0,
                };
                if current <= generation {
                    slots.insert(store, slot);
                }
            });
        });
        None
    })
}

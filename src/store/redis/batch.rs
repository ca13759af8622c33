//! Keepalives that travel to Redis together.
//!
//! A keepalive is one script call, but concurrent keepalives need not be one call *each*:
//! the keepalives that arrive while the previous call is on the wire are sent as the next call
//! of the same script, over several keys. Each key is still extended atomically and answered on its
//! own; Redis pays its per-call cost (dispatch, the script's argument tables, the reply) once
//! per batch instead of once per keepalive, which halves what a keepalive costs it
//! (`redis-benchmark`, 16 keys per call against one), and the server builds, sends and parses
//! one command per batch. When keepalives are rare, a batch is one keepalive, sent at once;
//! under light load a keepalive need not wait behind a small batch on the wire either
//! ([`MAX_IN_FLIGHT`]).
//!
//! A keepalive whose caller knows the key's lifetime beforehand (an Express session's, see
//! `store::express`) is a native `GETEX` instead ([`How::GetEx`]): those of a batch leave as
//! one pipeline beside the script's call, each answered by its own reply.
//!
//! A connection-level pipeline (what the Redis client does) already shares the socket; no
//! client library batches *script calls*, hence this module. Only for a single Redis server
//! (or a Sentinel's master): in a cluster the keys of one call must share a slot, so there
//! each keepalive is its own call.
//!
//! The task that sends the batches is owned by the connection it uses: it ends once the
//! connection is replaced or dropped and its last batches are answered.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::{Conn, failure};
use super::link::{not_connected, timed_out};
use crate::session::{SessionRecord, StoreError};

/// Most keepalives in one call: a call this size holds Redis for well under a millisecond.
const MAX_BATCH: usize = 64;

/// Batches on the wire at once: one, plus a second while the first is small.
///
/// While a batch is on the wire, newer keepalives gather into the next, which is what makes
/// batches grow with the load. Under heavy load that wait pays: with two large batches in
/// flight at saturation, batches were smaller and each keepalive cost Redis more. Under light
/// load it only adds latency: a keepalive that finds a batch of three on the wire waits for its
/// whole round trip, and then for its own. So a second batch may leave while the one in flight
/// holds at most [`SMALL_BATCH`] keepalives: light load goes out at once, heavy load still
/// gathers. At half the benchmark's Redis throughput this raised the share of keepalives the
/// server answers within 2.5 ms (the measurements are in the history of docs/BENCHMARKS.md).
const MAX_IN_FLIGHT: usize = 2;

/// Largest batch in flight that still lets a second one leave (see [`MAX_IN_FLIGHT`]).
const SMALL_BATCH: usize = 8;

/// What a keepalive gets back: the session as extended, or none.
pub(crate) type Reply = Result<Option<SessionRecord>, StoreError>;

/// One keepalive: its key, how Redis extends it, and how to read its part of the answer.
pub(crate) struct Touch {
    pub(crate) key: String,
    pub(crate) how: How,
    pub(crate) answer: Box<dyn FnOnce(Value) -> Reply + Send>,
}

/// How one keepalive extends its key.
pub(crate) enum How {
    /// With the link's script and these arguments (the same number for every key of the
    /// script); the answer reads the script's reply for its key.
    Script(Vec<i64>),
    /// With `GETEX key EX <seconds>`, a native command: a seventh of what a script costs Redis,
    /// for a caller that knows the lifetime before it reads the value. The answer reads the
    /// value (nil: none), or the command's error.
    GetEx(i64),
}

/// Whether a command's error says this Redis does not run `GETEX` at all: older than 6.2
/// (`ERR unknown command`), or an ACL that leaves it out (`NOPERM`). Not an outage: the caller
/// has the script instead.
pub(crate) fn refuses_command(code: Option<&str>, detail: Option<&str>) -> bool {
    match code {
        Some("NOPERM") => true,
        Some("ERR") => detail.is_some_and(|d| d.starts_with("unknown command")),
        _ => false,
    }
}

/// The answer to a keepalive by `GETEX` where Redis refuses it (see [`refuses_command`]).
pub(crate) fn command_refused() -> StoreError {
    StoreError::Unsupported("GETEX (Redis older than 6.2, or an ACL without it)")
}

impl Touch {
    /// The `GETEX` of a [`How::GetEx`] touch.
    pub(crate) fn getex(key: &str, secs: i64) -> redis::Cmd {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(key).arg("EX").arg(secs);
        cmd
    }
}

/// One keepalive waiting for its batch.
struct Pending {
    touch: Touch,
    /// When its caller stops waiting: the Redis timeout after it asked.
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

/// Where keepalives are handed to the batching task of one connection.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
    timeout: Duration,
}

impl Batcher {
    /// Starts the task that sends batches over `conn`; it stops when every handle is dropped.
    pub(crate) fn start(conn: Conn, ctx: BatchContext) -> Self {
        // Unbounded on purpose: every entry is a request waiting for its answer, so the
        // queue is bounded by the connection limit, and each is answered (at worst with a
        // timeout) within the Redis timeout.
        let (queue, rx) = mpsc::unbounded_channel();
        let timeout = ctx.timeout;
        tokio::spawn(run(conn, rx, ctx));
        Self { queue, timeout }
    }

    /// Whether its task is gone (its runtime ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Extends one session, in the next batch. Answers within the Redis timeout: a batch's
    /// call is bounded by the earliest deadline among its keepalives, and a keepalive only
    /// waits for room behind batches that asked before it (so whose deadlines come first).
    pub(crate) async fn touch(&self, touch: Touch) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                touch,
                deadline: Instant::now() + self.timeout,
                reply,
            })
            .map_err(|_| not_connected())?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("redis connection closed".to_owned())))
    }
}

/// What the batching task needs of the store: the script and recording latency.
pub(crate) struct BatchContext {
    /// The script every batch calls, with all of its keepalives' keys and arguments.
    pub(crate) script: &'static redis::Script,
    /// The Redis timeout: how long each keepalive may wait in all.
    pub(crate) timeout: Duration,
    pub(crate) latency: prometheus::Histogram,
}

async fn run(conn: Conn, mut queue: mpsc::UnboundedReceiver<Pending>, ctx: BatchContext) {
    let mut in_flight = FuturesUnordered::new();
    // Keepalives in the batches on the wire.
    let mut on_the_wire = 0;
    loop {
        let room = room_for_a_batch(in_flight.len(), on_the_wire);
        tokio::select! {
            // Answers first: they free room for the next batch.
            biased;
            Some(sent) = in_flight.next(), if !in_flight.is_empty() => on_the_wire -= sent,
            first = queue.recv(), if room => {
                let Some(first) = first else { break };
                let mut batch = Vec::with_capacity(MAX_BATCH.min(queue.len() + 1));
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                // A waiter that went away (its client left) needs no answer.
                batch.retain(|p| !p.reply.is_closed());
                if !batch.is_empty() {
                    on_the_wire += batch.len();
                    in_flight.push(send(conn.clone(), batch, &ctx));
                }
            }
        }
    }
    // Every handle is gone: answer what is already on the wire, then stop.
    while in_flight.next().await.is_some() {}
}

/// Whether the next batch may leave, with `batches` on the wire carrying `keepalives`.
fn room_for_a_batch(batches: usize, keepalives: usize) -> bool {
    batches == 0 || (batches < MAX_IN_FLIGHT && keepalives <= SMALL_BATCH)
}

/// Sends one batch and answers each of its keepalives; returns how many it was given.
async fn send(conn: Conn, batch: Vec<Pending>, ctx: &BatchContext) -> usize {
    let given = batch.len();
    answer(conn, batch, ctx).await;
    given
}

async fn answer(conn: Conn, batch: Vec<Pending>, ctx: &BatchContext) {
    let now = Instant::now();
    let (late, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.deadline <= now);
    fail_all(late, || timed_out("touch", ctx.timeout));
    let (scripted, native): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|p| matches!(p.touch.how, How::Script(_)));
    // Both leave at once on the multiplexed connection.
    tokio::join!(
        call_script(conn.clone(), scripted, ctx),
        call_native(conn, native, ctx)
    );
}

/// The script's keepalives of a batch, as one call of the script over all their keys.
async fn call_script(mut conn: Conn, batch: Vec<Pending>, ctx: &BatchContext) {
    let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
        return;
    };
    let mut invocation = ctx.script.prepare_invoke();
    for p in &batch {
        invocation.key(&p.touch.key);
    }
    for p in &batch {
        if let How::Script(args) = &p.touch.how {
            for arg in args {
                invocation.arg(*arg);
            }
        }
    }
    let started = Instant::now();
    let result =
        tokio::time::timeout_at(deadline, invocation.invoke_async::<Value>(&mut conn)).await;
    ctx.latency.observe(started.elapsed().as_secs_f64());
    deliver(batch, result, ctx.timeout);
}

/// The native keepalives of a batch, as one pipeline of their commands; a command's error
/// (a key of another type) is that keepalive's answer alone.
async fn call_native(mut conn: Conn, batch: Vec<Pending>, ctx: &BatchContext) {
    let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
        return;
    };
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for p in &batch {
        if let How::GetEx(secs) = p.touch.how {
            pipe.add_command(Touch::getex(&p.touch.key, secs));
        }
    }
    let started = Instant::now();
    let result = tokio::time::timeout_at(deadline, pipe.query_async::<Value>(&mut conn)).await;
    ctx.latency.observe(started.elapsed().as_secs_f64());
    deliver(batch, result, ctx.timeout);
}

/// Answers each keepalive of a batch with its part of `result`.
fn deliver(
    batch: Vec<Pending>,
    result: Result<redis::RedisResult<Value>, tokio::time::error::Elapsed>,
    timeout: Duration,
) {
    match result {
        Ok(Ok(Value::Array(replies))) if replies.len() == batch.len() => {
            for (p, value) in batch.into_iter().zip(replies) {
                let _ = p.reply.send((p.touch.answer)(value));
            }
        }
        Ok(Ok(other)) => fail_all(batch, || {
            StoreError::Corrupt(format!(
                "unexpected reply to a batch of keepalives: {}",
                super::shape(&other)
            ))
        }),
        Ok(Err(err)) => fail_all(batch, || failure(&err)),
        Err(_) => fail_all(batch, || timed_out("touch", timeout)),
    }
}

fn fail_all(batch: Vec<Pending>, err: impl Fn() -> StoreError) {
    for p in batch {
        let _ = p.reply.send(Err(err()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_without_getex_is_told_from_an_outage() {
        assert!(refuses_command(
            Some("ERR"),
            Some("unknown command 'GETEX', with args beginning with: 'sess:x'")
        ));
        assert!(refuses_command(
            Some("NOPERM"),
            Some("User keepalive has no permissions to run the 'getex' command")
        ));
        for (code, detail) in [
            (Some("ERR"), Some("max number of clients reached")),
            (
                Some("READONLY"),
                Some("You can't write against a read only replica."),
            ),
            (Some("LOADING"), None),
            (None, None),
        ] {
            assert!(!refuses_command(code, detail), "{code:?} {detail:?}");
        }
    }

    #[test]
    fn a_second_batch_leaves_only_behind_a_small_one() {
        assert!(room_for_a_batch(0, 0), "nothing on the wire: send at once");
        assert!(
            room_for_a_batch(1, 1),
            "light load: a lone keepalive does not wait"
        );
        assert!(room_for_a_batch(1, SMALL_BATCH));
        assert!(
            !room_for_a_batch(1, SMALL_BATCH + 1),
            "heavy load: gather behind the batch in flight"
        );
        assert!(!room_for_a_batch(1, MAX_BATCH));
        assert!(
            !room_for_a_batch(MAX_IN_FLIGHT, 2),
            "never more than {MAX_IN_FLIGHT} on the wire"
        );
    }
}

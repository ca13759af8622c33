//! Background tasks with an owner.
//!
//! Every background task of the server (the health monitor, the alert rules and their
//! deliveries, the rate limits' sweeper, the local store's writer, the failover's link and
//! logout listener) is spawned through [`Tasks`]: each gets the owner's stop token, watches it
//! in its loop, and ends on its own once it is cancelled. The owner stops them with
//! [`Tasks::stop`], which cancels the token and waits until every task has ended, so whoever
//! stops a part knows its work is over (a last flush written, a last notice sent). Dropping the
//! owner cancels the token too, so a part that is dropped without being stopped does not leave
//! its tasks running.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A group of background tasks that stop together.
pub struct Tasks {
    stop: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// An empty group with a fresh stop token.
    pub fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            running: Vec::new(),
        }
    }

    /// Spawns the task `run` makes of the group's stop token. `name` says which task it is
    /// when it ends abnormally.
    pub fn spawn<F>(&mut self, name: &'static str, run: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(run(self.stop.clone()));
        self.running.push((name, task));
    }

    /// The group's stop token, for work that is not a task of its own but must end with them.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Cancels the stop token and waits until every task has ended. A task that panicked is
    /// logged by name. Safe to call again: later calls find nothing left to wait for.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for (name, task) in std::mem::take(&mut self.running) {
            if let Err(err) = task.await {
                tracing::warn!(task = name, error = %err, "background task {name} ended abnormally");
            }
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        // Dropped without `stop`: the tasks still end, only nobody waits for them.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_every_task_to_finish_its_last_work() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::new();
        for _ in 0..3 {
            let finished = Arc::clone(&finished);
            tasks.spawn("worker", move |stop| async move {
                stop.cancelled().await;
                // Work done after the stop was asked for, such as a last flush.
                tokio::task::yield_now().await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        tasks.stop().await;
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        tasks.stop().await;
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_the_tasks() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tasks = Tasks::new();
        tasks.spawn("worker", move |stop| async move {
            stop.cancelled().await;
            let _ = tx.send(());
        });
        drop(tasks);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the task saw the cancellation")
            .expect("the task ended normally");
    }

    #[tokio::test]
    async fn a_panicking_task_does_not_stop_the_others_from_being_awaited() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::new();
        tasks.spawn("panics", |_| async { panic!("boom") });
        let done = Arc::clone(&finished);
        tasks.spawn("worker", move |stop| async move {
            stop.cancelled().await;
            done.fetch_add(1, Ordering::SeqCst);
        });
        tasks.stop().await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}

//! The thread that commits to the database file, at a lower CPU priority than the request
//! workers.
//!
//! A batched commit writes every session extended in the last flush interval, thousands under
//! load: milliseconds of CPU in one burst. On a blocking thread of normal priority that burst
//! competes with the threads answering requests, and keepalive's slowest answers were those
//! that waited for it (docs/BENCHMARKS.md). Here the work runs on one thread of its own, with
//! its nice value raised by [`NICE`], and the commit offers the CPU back every few records
//! ([`YIELD_EVERY`], used by the database code): a request waiting for a core gets it within
//! tens of microseconds instead of at the end of the commit's time slice (milliseconds), which
//! the raised nice value alone does not give on a kernel that lets the running thread finish
//! its slice. Under full load the commit still gets its share, so it lands within the
//! one-second durability bound.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::session::StoreError;

/// How much the commit thread's nice value is raised (0 to 19; 10 weighs about a tenth of a
/// normal thread).
const NICE: i32 = 10;

/// Records written between two offers of the CPU (`sched_yield`): about 30 µs of work.
pub const YIELD_EVERY: usize = 32;

type Job = Box<dyn FnOnce() + Send>;

/// The commit thread and the queue that feeds it.
pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread.
    pub fn start() -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("keepalive-commit".to_owned())
            .spawn(move || {
                lower_priority();
                for job in queue {
                    job();
                }
            })
            .map_err(|err| StoreError::Backend(format!("cannot start the commit thread: {err}")))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the commit thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Backend("the commit thread has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Lets the thread finish the jobs it has and waits for it to end.
    pub async fn stop(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the commit thread ended abnormally");
            }
        }
    }
}

/// Raises this thread's nice value. On Linux the nice value belongs to the thread named by
/// its id; elsewhere `setpriority` would renice the whole process, so the thread stays as it is.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(err) = rustix::process::setpriority_process(Some(thread), NICE) {
            tracing::debug!(error = %err, "cannot lower the commit thread's priority; it commits at normal priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_at_a_lower_priority_and_stops() {
        let committer = Committer::start().expect("start");
        let answer = committer.run(|| Ok(6 * 7)).await.expect("runs");
        assert_eq!(answer, 42);
        let failed = committer
            .run(|| Err::<(), _>(StoreError::Backend("disk full".to_owned())))
            .await;
        assert!(matches!(failed, Err(StoreError::Backend(m)) if m == "disk full"));
        #[cfg(target_os = "linux")]
        {
            let nice = committer
                .run(|| {
                    rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                        .map_err(|e| StoreError::Backend(e.to_string()))
                })
                .await
                .expect("reads its priority");
            // A process started above the default keeps its own, higher, value.
            assert!(nice >= NICE, "nice {nice}");
            let here = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("this thread's priority");
            if here < NICE {
                assert!(here < nice, "only the commit thread is reniced");
            }
        }
        committer.stop().await;
    }
}

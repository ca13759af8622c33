//! Fixed-rate (open-loop) load with coordinated-omission correction.
//!
//! A closed-loop load (send, wait, send) measures latency at saturation: with
//! C connections, mean latency = C ÷ throughput, whatever the server does.
//! Here the requests follow a schedule instead: request `j` of the whole run
//! is *intended* to be sent at `start + j ÷ rate` on connection `j mod C`, so
//! each connection sends every `C ÷ rate` seconds, staggered. Latency is
//! measured from the intended send time to the last byte of the answer (as
//! wrk2 does): when the server stalls, a connection's next requests go out
//! late, and that wait is part of their latency instead of being silently
//! omitted (coordinated omission).
//!
//! Tokio's timers tick in whole milliseconds, which alone would add up to
//! 1 ms to every measured latency. A dedicated pacer thread therefore sleeps
//! with the OS's own precision (tens of µs) and hands each intended send time
//! to its connection's task through a channel; the task sends at once, or as
//! soon as its previous request completes. How late each request left
//! (`send lag`) is recorded separately, so generator delay is visible.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::load::{Counters, Endpoint, Outcome, PhaseStats, SessionPool, Timeouts, Worker};
use crate::stats::{self, Latency};
use crate::target::Target;

/// The global send schedule: request `j` is intended at `start + j ÷ rate`
/// on connection `j mod connections`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    /// Total requests per second over all connections.
    pub rate: f64,
    pub connections: usize,
}

impl Schedule {
    /// Offset of request `j` from `start`.
    pub fn offset(&self, j: u64) -> Duration {
        // Whole nanoseconds, rounded: exact for every rate that divides 1e9.
        Duration::from_nanos((j as f64 * 1e9 / self.rate).round() as u64)
    }

    /// When request `j` is intended to be sent.
    pub fn intended(&self, j: u64) -> Instant {
        self.start + self.offset(j)
    }

    /// Which connection sends request `j`.
    pub fn connection(&self, j: u64) -> usize {
        (j % self.connections as u64) as usize
    }

    /// Time between two requests of the same connection.
    pub fn per_connection_interval(&self) -> Duration {
        Duration::from_secs_f64(self.connections as f64 / self.rate)
    }
}

/// Latency corrected for coordinated omission: from the intended send time
/// (not the actual one) to completion, in whole microseconds (at least 1).
pub fn corrected_latency_us(intended: Instant, done: Instant) -> u64 {
    let us = done.saturating_duration_since(intended).as_micros();
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// One scheduled request and what became of it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub intended: Instant,
    /// When it actually left (after any wait for the previous answer); for
    /// an unsent request, when it was given up.
    pub sent: Instant,
    pub done: Instant,
    /// Index of the session in [`SessionPool::all`] order, for keepalive.
    pub session: Option<usize>,
    pub outcome: Outcome,
}

impl Sample {
    pub fn latency_us(&self) -> u64 {
        corrected_latency_us(self.intended, self.done)
    }

    pub fn send_lag_us(&self) -> u64 {
        u64::try_from(
            self.sent
                .saturating_duration_since(self.intended)
                .as_micros(),
        )
        .unwrap_or(u64::MAX)
    }
}

/// Extra figures of a fixed-rate phase.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRateInfo {
    /// Offered rate, requests per second over all connections.
    pub rate: f64,
    /// Time between two requests of one connection, in milliseconds.
    pub per_connection_interval_ms: f64,
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// How late the measured requests left compared with their intended time
    /// (pacer precision plus waiting for the previous answer on the connection).
    pub send_lag: Option<Latency>,
    /// Requests scheduled but never sent before the drain deadline (counted as errors).
    pub unsent: u64,
}

/// Everything a fixed-rate run produced.
pub struct OpenLoopRun {
    /// Every scheduled request in order of intended time.
    pub samples: Vec<Sample>,
    pub counters: Counters,
    pub unsent: u64,
}

/// Sends `endpoint` at `schedule.rate` from `schedule.start` until `stop`
/// (intended times), then waits at most `request + connect` timeouts for the
/// stragglers. The session cookies are taken from `sessions` and given back.
pub async fn run(
    target: &Target,
    endpoint: Endpoint,
    schedule: Schedule,
    stop: Instant,
    timeouts: Timeouts,
    sessions: &mut SessionPool,
) -> anyhow::Result<OpenLoopRun> {
    if !(schedule.rate.is_finite() && schedule.rate > 0.0) {
        bail!("the request rate must be a positive number");
    }
    if schedule.connections == 0 {
        bail!("at least one connection is needed");
    }
    let bases = sessions.bases();
    let drain_deadline = stop + timeouts.request + timeouts.connect;
    let mut senders = Vec::with_capacity(schedule.connections);
    let mut tasks = JoinSet::new();
    for index in 0..schedule.connections {
        let cookies = sessions.take(index, endpoint)?;
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let w = Worker::new(target.clone(), endpoint, timeouts, cookies);
        let base = bases.get(index).copied().unwrap_or(0);
        tasks.spawn(connection(index, w, rx, base, drain_deadline));
    }
    // The pacer ends by itself at `stop`, or as soon as the tasks are gone
    // (the phase was abandoned): its sends then fail.
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || pace(schedule, stop, &senders))
        .context("start the pacer thread")?;

    let hard_stop = tokio::time::Instant::from_std(drain_deadline + Duration::from_secs(5));
    let mut results = Vec::with_capacity(schedule.connections);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(joined)) => results.push(joined.context("load worker panicked")?),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                bail!(
                    "{} fixed-rate phase did not finish by its deadline",
                    endpoint.name()
                );
            }
        }
    }
    // Every task has ended, so the pacer's next send fails if it is still
    // running; it has passed `stop` by now anyway.
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;

    let mut counters = Counters::default();
    let mut samples = Vec::new();
    let mut unsent = 0;
    results.sort_by_key(|r| r.index);
    for r in results {
        counters.merge(r.worker.counters);
        unsent += r.unsent;
        samples.extend(r.samples);
        sessions.put_back(r.index, endpoint, r.worker.cookies);
    }
    samples.sort_by_key(|s| s.intended);
    Ok(OpenLoopRun {
        samples,
        counters,
        unsent,
    })
}

/// Runs one fixed-rate phase (`warmup` then the measured `duration`) and
/// turns it into the figures of the report.
pub async fn phase(
    target: &Target,
    endpoint: Endpoint,
    rate: f64,
    timing: crate::load::PhaseTiming,
    timeouts: Timeouts,
    sessions: &mut SessionPool,
) -> anyhow::Result<PhaseStats> {
    // A short lead so the first requests are not late before the tasks exist.
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let schedule = Schedule {
        start,
        rate,
        connections: timing.connections,
    };
    let run = run(target, endpoint, schedule, end, timeouts, sessions).await?;
    let mut stats = phase_stats(endpoint, rate, run, (measure_from, end))?;
    if let Some(info) = stats.fixed_rate.as_mut() {
        info.per_connection_interval_ms = schedule.per_connection_interval().as_secs_f64() * 1e3;
    }
    Ok(stats)
}

/// Figures of a fixed-rate phase: only requests *intended* inside the
/// measured window count towards latency and throughput; errors (unsent
/// requests included) count over the whole phase.
pub fn phase_stats(
    endpoint: Endpoint,
    rate: f64,
    run: OpenLoopRun,
    (measure_from, end): (Instant, Instant),
) -> anyhow::Result<PhaseStats> {
    let mut hist = stats::new_histogram()?;
    let mut lag = stats::new_histogram()?;
    let mut ok = 0;
    let mut scheduled = 0;
    for s in run
        .samples
        .iter()
        .filter(|s| s.intended >= measure_from && s.intended < end)
    {
        scheduled += 1;
        if s.outcome == Outcome::Ok {
            ok += 1;
            hist.saturating_record(s.latency_us());
            lag.saturating_record(s.send_lag_us().max(1));
        }
    }
    let mut stats = PhaseStats::new(endpoint, ok, end - measure_from, run.counters);
    stats.errors += run.unsent;
    stats.latency = Latency::from_histogram(&hist);
    stats.fixed_rate = Some(FixedRateInfo {
        rate,
        per_connection_interval_ms: 0.0,
        scheduled,
        send_lag: Latency::from_histogram(&lag),
        unsent: run.unsent,
    });
    Ok(stats)
}

/// Hands every intended send time before `stop` to its connection, on time.
fn pace(schedule: Schedule, stop: Instant, senders: &[mpsc::UnboundedSender<Instant>]) {
    for j in 0u64.. {
        let at = schedule.intended(j);
        if at >= stop {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let Some(tx) = senders.get(schedule.connection(j)) else {
            break;
        };
        if tx.send(at).is_err() {
            break;
        }
    }
}

struct ConnResult {
    index: usize,
    worker: Worker,
    samples: Vec<Sample>,
    unsent: u64,
}

/// One connection: sends each scheduled request as soon as it is due and
/// the previous answer is in.
async fn connection(
    index: usize,
    mut w: Worker,
    mut due: mpsc::UnboundedReceiver<Instant>,
    base: usize,
    drain_deadline: Instant,
) -> ConnResult {
    let deadline = tokio::time::Instant::from_std(drain_deadline);
    let mut samples = Vec::new();
    let mut unsent = 0;
    loop {
        let intended = match tokio::time::timeout_at(deadline, due.recv()).await {
            Ok(Some(at)) => at,
            Ok(None) => break,
            Err(_) => {
                // Past the drain deadline: whatever is still queued was never sent.
                due.close();
                while let Ok(at) = due.try_recv() {
                    unsent += 1;
                    let now = Instant::now();
                    samples.push(Sample {
                        intended: at,
                        sent: now,
                        done: now,
                        session: None,
                        outcome: Outcome::Unsent,
                    });
                }
                break;
            }
        };
        if !w.ensure_conn(deadline).await {
            let now = Instant::now();
            samples.push(Sample {
                intended,
                sent: now,
                done: now,
                session: None,
                outcome: Outcome::Transport,
            });
            continue;
        }
        let sent = Instant::now();
        let (session, outcome) = w.exchange().await;
        let done = Instant::now();
        samples.push(Sample {
            intended,
            sent,
            done,
            session: session.map(|i| base + i),
            outcome,
        });
    }
    ConnResult {
        index,
        worker: w,
        samples,
        unsent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_requests_evenly() {
        let start = Instant::now();
        let s = Schedule {
            start,
            rate: 1000.0,
            connections: 4,
        };
        assert_eq!(s.intended(0), start);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(2500), Duration::from_millis(2500));
        // Round robin over the connections, each every 4 ms.
        let conns: Vec<usize> = (0..6).map(|j| s.connection(j)).collect();
        assert_eq!(conns, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(s.per_connection_interval(), Duration::from_millis(4));
        assert_eq!(s.offset(5) - s.offset(1), s.per_connection_interval());
        // A whole second holds exactly `rate` requests.
        let in_first_second = (0..).take_while(|&j| s.offset(j) < Duration::from_secs(1));
        assert_eq!(in_first_second.count(), 1000);
    }

    #[test]
    fn schedule_handles_fractional_rates() {
        let s = Schedule {
            start: Instant::now(),
            rate: 3.0,
            connections: 1,
        };
        let third = s.offset(1).as_secs_f64();
        assert!((third - 1.0 / 3.0).abs() < 1e-9, "{third}");
        assert!((s.offset(3).as_secs_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn latency_counts_from_the_intended_time() {
        let intended = Instant::now();
        // Sent 30 ms late because the connection was busy, answered in 1 ms:
        // the corrected latency is 31 ms, not 1 ms.
        let sample = Sample {
            intended,
            sent: intended + Duration::from_millis(30),
            done: intended + Duration::from_millis(31),
            session: None,
            outcome: Outcome::Ok,
        };
        assert_eq!(sample.latency_us(), 31_000);
        assert_eq!(sample.send_lag_us(), 30_000);
        // Never zero (the histograms start at 1 µs), never negative.
        assert_eq!(corrected_latency_us(intended, intended), 1);
        assert_eq!(
            corrected_latency_us(intended + Duration::from_millis(1), intended),
            1
        );
    }

    #[test]
    fn phase_stats_count_only_the_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let sample = |intended: u64, done: u64, outcome| Sample {
            intended: ms(intended),
            sent: ms(intended),
            done: ms(done),
            session: None,
            outcome,
        };
        let run = OpenLoopRun {
            samples: vec![
                sample(5, 6, Outcome::Ok),            // warm-up: ignored
                sample(10, 12, Outcome::Ok),          // 2 ms
                sample(20, 24, Outcome::Ok),          // 4 ms
                sample(30, 31, Outcome::Status(401)), // an error, no latency
                sample(1010, 1011, Outcome::Ok),      // after the window
            ],
            counters: Counters {
                unexpected_status: [(401, 1)].into(),
                ..Counters::default()
            },
            unsent: 2,
        };
        let p = phase_stats(Endpoint::Keepalive, 4.0, run, (ms(10), ms(1010))).expect("stats");
        assert_eq!(p.ok, 2);
        assert!((p.requests_per_sec - 2.0).abs() < 1e-9);
        let l = p.latency.expect("latency");
        assert!((l.max_ms - 4.0).abs() < 0.01, "{l:?}");
        assert!((l.p50_ms - 2.0).abs() < 0.01, "{l:?}");
        // The 401 and the two unsent requests are errors.
        assert_eq!(p.errors, 3);
        let info = p.fixed_rate.expect("fixed-rate info");
        assert_eq!(info.scheduled, 3);
        assert_eq!(info.unsent, 2);
    }

    #[test]
    fn stalled_server_shows_up_in_every_waiting_request() {
        // One connection, a request every 10 ms, the server stalls 100 ms on
        // the first request and then answers in 1 ms. A closed-loop view would
        // see one slow request; corrected, the ten requests that queued behind
        // it are slow too, decreasingly.
        let start = Instant::now();
        let s = Schedule {
            start,
            rate: 100.0,
            connections: 1,
        };
        let mut free_at = start;
        let mut latencies = Vec::new();
        for j in 0..12 {
            let intended = s.intended(j);
            let sent = intended.max(free_at);
            let service = if j == 0 { 100 } else { 1 };
            let done = sent + Duration::from_millis(service);
            free_at = done;
            latencies.push(corrected_latency_us(intended, done) / 1000);
        }
        assert_eq!(latencies[0], 100);
        assert_eq!(latencies[1], 91);
        assert_eq!(latencies[9], 19);
        assert_eq!(latencies[10], 10);
        assert_eq!(latencies[11], 1);
    }
}

//! The background health monitor: recomputes every check each interval, publishes the result
//! on a watch channel, and logs each change of state once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::session::SharedStatus;
use crate::task::Tasks;

use super::{
    Checks, Health, MemoryCheck, RedisCheck, ServerHealth, memory, memory_check, status_of,
};

/// What the monitor checks and how often.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// Period of the checks.
    pub interval: Duration,
    /// Memory warning threshold, percent.
    pub memory_warning: f64,
    /// Memory critical threshold, percent.
    pub memory_critical: f64,
    /// Root of `/proc` and `/sys`; `/` outside tests.
    pub root: PathBuf,
}

/// Evaluates the checks; owns nothing but their inputs.
struct Checker {
    options: HealthOptions,
    shared: SharedStatus,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Checker {
    async fn evaluate(&self) -> Health {
        let root = self.options.root.clone();
        let reading = match tokio::task::spawn_blocking(move || memory::read(&root)).await {
            Ok(Ok(reading)) => Some(reading),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot read memory use; the memory check reports ok");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "memory check task failed");
                None
            }
        };
        let memory = reading.map_or(MemoryCheck::Ok, |r| {
            memory_check(
                r.percent(),
                self.options.memory_warning,
                self.options.memory_critical,
            )
        });
        let checks = Checks {
            redis: RedisCheck::from(self.shared.state()),
            memory,
        };
        if let Some(r) = reading {
            self.metrics.memory_used_bytes.set(r.used_bytes as f64);
            self.metrics.memory_limit_bytes.set(r.limit_bytes as f64);
        }
        Health {
            summary: ServerHealth {
                status: status_of(checks),
                checks,
            },
            memory: reading,
            checked_at: self.clock.now(),
        }
    }
}

/// The running monitor: a handle to read the latest health and to stop the task.
pub struct HealthMonitor {
    latest: watch::Receiver<Health>,
    tasks: Tasks,
}

impl HealthMonitor {
    /// Runs the checks once, then keeps running them every interval until stopped.
    pub async fn start(
        options: HealthOptions,
        shared: SharedStatus,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let checker = Checker {
            options,
            shared,
            clock,
            metrics,
        };
        let first = checker.evaluate().await;
        record(&checker.metrics, None, &first);
        let (tx, rx) = watch::channel(first);
        let mut tasks = Tasks::new();
        tasks.spawn("health monitor", |stop| run(checker, tx, stop));
        Self { latest: rx, tasks }
    }

    /// A receiver of the latest health, for request handlers.
    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.latest.clone()
    }

    /// Stops the monitor and waits for it.
    pub async fn stop(mut self) {
        self.tasks.stop().await;
    }
}

async fn run(checker: Checker, tx: watch::Sender<Health>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(checker.options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let health = checker.evaluate().await;
        let previous = tx.borrow().summary;
        record(&checker.metrics, Some(previous), &health);
        tx.send_replace(health);
    }
}

/// Updates the status gauge and logs the state when it changed (and once at start).
fn record(metrics: &Metrics, previous: Option<ServerHealth>, health: &Health) {
    let summary = health.summary;
    if previous == Some(summary) {
        return;
    }
    for status in [
        super::Status::Healthy,
        super::Status::Degraded,
        super::Status::Critical,
    ] {
        metrics
            .health_status
            .with_label_values(&[status.as_str()])
            .set(i64::from(status == summary.status));
    }
    let percent = health
        .memory
        .map(|m| format!("{:.1}", m.percent()))
        .unwrap_or_else(|| "unknown".to_owned());
    let line = format!(
        "Server health: {} {{redis: {}, memory: {}}}",
        summary.status.as_str(),
        summary.checks.redis.as_str(),
        summary.checks.memory.as_str()
    );
    match summary.status {
        super::Status::Healthy => tracing::info!(memory_percent = %percent, "{line}"),
        super::Status::Degraded => tracing::warn!(memory_percent = %percent, "{line}"),
        super::Status::Critical => tracing::error!(memory_percent = %percent, "{line}"),
    }
}

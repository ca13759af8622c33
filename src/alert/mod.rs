//! Alerts: the built-in rules, evaluated in the background, and where their notices go.
//!
//! Rules (see [`rules`]): Redis offline for 5 minutes, memory at warning or above for a set
//! duration, status critical for a set duration. Each fires once when its condition has held
//! for its duration, repeats at the repeat interval while it holds, and sends a resolved notice
//! when it clears; a blip shorter than the duration sends nothing.
//!
//! Every notice is logged. Configured webhooks (an Alertmanager-compatible JSON receiver, a
//! Slack-style `{"text": ...}` one) each get a bounded outbox and a delivery task that retries
//! with backoff: sending never blocks a request, and a dead webhook costs at most a full outbox
//! (later notices are dropped and counted) rather than growing memory.

pub mod rules;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::config::RuleTimings;
pub use rules::{Evaluator, Event, Rule, Transition};
pub use webhook::{WebhookKind, alertmanager_payload, slack_payload};

use crate::clock::{Clock, Millis, duration_millis};
use crate::config::Secret;
use crate::health::ServerHealth;
use crate::metrics::Metrics;
use crate::task::Tasks;

/// Notices one outbox holds while its webhook is slow or down.
pub const OUTBOX_CAPACITY: usize = 32;

/// One notice of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The rule.
    pub rule: Rule,
    /// Firing, repeated, or resolved.
    pub transition: Transition,
    /// When the condition began (wall clock).
    pub starts_at: Millis,
    /// When it cleared, for a resolved notice.
    pub ends_at: Option<Millis>,
    /// Which instance sends it.
    pub instance: String,
}

impl Notification {
    /// One line for logs and chat.
    pub fn text(&self) -> String {
        let state = match self.transition {
            Transition::Firing => "FIRING",
            Transition::Repeat => "STILL FIRING",
            Transition::Resolved => "RESOLVED",
        };
        format!(
            "[{state}] {} on {}: {}",
            self.rule.name(),
            self.instance,
            self.rule.summary()
        )
    }
}

/// A webhook to notify.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Payload format.
    pub kind: WebhookKind,
    /// Where to POST (a secret: it often embeds a token).
    pub url: Secret,
}

/// Everything the alert task needs to know.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Rule durations and repeat interval.
    pub timings: RuleTimings,
    /// How often the rules are evaluated.
    pub interval: Duration,
    /// Webhooks to notify.
    pub webhooks: Vec<Webhook>,
    /// This instance's name in notices.
    pub instance: String,
}

/// Where the rules read health from: the monitor's result with the store's live Redis state.
pub type HealthSource = Arc<dyn Fn() -> ServerHealth + Send + Sync>;

/// A bounded queue in front of one destination.
#[derive(Clone)]
pub struct Outbox {
    name: &'static str,
    tx: mpsc::Sender<Notification>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// An outbox and the receiver its delivery task drains.
    pub fn new(name: &'static str, metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (Self { name, tx, metrics }, rx)
    }

    /// Queues a notice without waiting; a full outbox drops it (and says so).
    fn offer(&self, notification: Notification) {
        if self.tx.try_send(notification).is_err() {
            self.metrics
                .alerts_dropped_total
                .with_label_values(&[self.name])
                .inc();
            tracing::warn!(
                sink = self.name,
                "alert notice dropped: the {} webhook is not keeping up",
                self.name
            );
        }
    }
}

/// The running alert tasks.
pub struct Alerts {
    tasks: Tasks,
}

impl Alerts {
    /// Starts the rule task and one delivery task per webhook.
    pub fn start(
        options: AlertOptions,
        source: HealthSource,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut tasks = Tasks::new();
        let mut outboxes = Vec::new();
        if !options.webhooks.is_empty() {
            let client = crate::outbound::client_builder()
                .timeout(webhook::SEND_TIMEOUT)
                .build();
            match client {
                Ok(client) => {
                    for hook in &options.webhooks {
                        let (outbox, rx) = Outbox::new(hook.kind.name(), Arc::clone(&metrics));
                        outboxes.push(outbox);
                        let (hook, client) = (hook.clone(), client.clone());
                        let metrics = Arc::clone(&metrics);
                        tasks.spawn("alert delivery", |stop| {
                            webhook::deliver(hook, rx, client, stop, metrics)
                        });
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot build the webhook client; alerts go to the log only")
                }
            }
        }
        tasks.spawn("alert rules", |stop| {
            evaluate(options, source, clock, outboxes, stop)
        });
        Self { tasks }
    }

    /// Starts only the rule task, sending to the given outboxes (for tests and embedding).
    pub fn start_with_outboxes(
        options: AlertOptions,
        source: HealthSource,
        clock: Arc<dyn Clock>,
        outboxes: Vec<Outbox>,
    ) -> Self {
        let mut tasks = Tasks::new();
        tasks.spawn("alert rules", |stop| {
            evaluate(options, source, clock, outboxes, stop)
        });
        Self { tasks }
    }

    /// Stops the tasks (pending retries are abandoned) and waits for them.
    pub async fn stop(mut self) {
        self.tasks.stop().await;
    }
}

async fn evaluate(
    options: AlertOptions,
    source: HealthSource,
    clock: Arc<dyn Clock>,
    outboxes: Vec<Outbox>,
    stop: CancellationToken,
) {
    let mut evaluator = Evaluator::new(options.timings);
    // When each firing alert's condition began, so every notice of one alert carries the same
    // start even if the wall clock jumps meanwhile.
    let mut started: std::collections::HashMap<Rule, Millis> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        for event in evaluator.observe(now, &source()) {
            let wall = clock.now();
            let held = duration_millis(event.held_for);
            let starts_at = match event.transition {
                Transition::Firing => *started.entry(event.rule).insert_entry(wall - held).get(),
                Transition::Repeat => *started.entry(event.rule).or_insert(wall - held),
                Transition::Resolved => started.remove(&event.rule).unwrap_or(wall - held),
            };
            let notification = Notification {
                rule: event.rule,
                transition: event.transition,
                starts_at,
                ends_at: (event.transition == Transition::Resolved).then_some(wall),
                instance: options.instance.clone(),
            };
            let held_for =
                humantime::format_duration(Duration::from_secs(event.held_for.as_secs()));
            match event.transition {
                Transition::Resolved => {
                    tracing::info!(alert = event.rule.name(), held_for = %held_for, "alert resolved: {}", notification.text())
                }
                _ if event.rule.severity() == "critical" => {
                    tracing::error!(alert = event.rule.name(), held_for = %held_for, "alert: {}", notification.text())
                }
                _ => {
                    tracing::warn!(alert = event.rule.name(), held_for = %held_for, "alert: {}", notification.text())
                }
            }
            for outbox in &outboxes {
                outbox.offer(notification.clone());
            }
        }
    }
}

/// This instance's name: `HOSTNAME` (set in containers), else the kernel's host name.
pub fn instance_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keepalive".to_owned())
}

#[cfg(test)]
mod tests;

//! Webhook payloads and their delivery with retries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::rfc3339;
use crate::metrics::Metrics;

use super::{Notification, Transition, Webhook};

/// Longest wait for one POST.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per notice before it is given up.
const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles after each.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Payload format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// Alertmanager's webhook JSON (version 4), understood by most alert routers.
    Alertmanager,
    /// `{"text": ...}`, for Slack, Mattermost, Rocket.Chat and the like.
    Slack,
}

impl WebhookKind {
    /// Name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::Slack => "slack",
        }
    }
}

/// The Alertmanager webhook payload of one notice.
pub fn alertmanager_payload(n: &Notification) -> Value {
    let status = if n.transition == Transition::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let labels = json!({
        "alertname": n.rule.name(),
        "severity": n.rule.severity(),
        "service": "keepalive",
        "instance": n.instance,
    });
    let annotations = json!({
        "summary": n.rule.summary(),
        "runbook": "docs/deployment.md",
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", instance=\"{}\"}}", n.rule.name(), n.instance),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "keepalive",
        "groupLabels": {"alertname": n.rule.name()},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(n.starts_at),
            "endsAt": n.ends_at.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned()),
            "generatorURL": "",
            "fingerprint": format!("{:016x}", fingerprint(n.rule.name(), &n.instance)),
        }],
    })
}

/// The Slack-style payload of one notice.
pub fn slack_payload(n: &Notification) -> Value {
    json!({ "text": n.text() })
}

/// A stable identifier of an alert (rule and instance), as Alertmanager gives one.
fn fingerprint(name: &str, instance: &str) -> u64 {
    // FNV-1a: tiny, stable across versions and processes, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain([0]).chain(instance.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Drains one outbox into one webhook until stopped.
pub async fn deliver(
    hook: Webhook,
    mut rx: mpsc::Receiver<Notification>,
    client: reqwest::Client,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let sink = hook.kind.name();
    loop {
        let notification = tokio::select! {
            () = stop.cancelled() => return,
            next = rx.recv() => match next { Some(n) => n, None => return },
        };
        let body = match hook.kind {
            WebhookKind::Alertmanager => alertmanager_payload(&notification),
            WebhookKind::Slack => slack_payload(&notification),
        };
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            // The URL is a secret: errors are reported without it.
            let outcome = match client.post(hook.url.expose()).json(&body).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(err) if err.is_timeout() => Err("timed out".to_owned()),
                Err(err) if err.is_connect() => Err("connection failed".to_owned()),
                Err(_) => Err("request failed".to_owned()),
            };
            match outcome {
                Ok(()) => {
                    metrics
                        .alert_deliveries_total
                        .with_label_values(&[sink, "sent"])
                        .inc();
                    break;
                }
                Err(reason) if attempt == ATTEMPTS => {
                    metrics
                        .alert_deliveries_total
                        .with_label_values(&[sink, "failed"])
                        .inc();
                    tracing::error!(sink, reason = %reason, attempts = ATTEMPTS, "alert notice to the {sink} webhook given up: {reason}");
                }
                Err(reason) => {
                    tracing::debug!(sink, reason = %reason, attempt, "alert webhook failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay *= 2;
                }
            }
        }
    }
}

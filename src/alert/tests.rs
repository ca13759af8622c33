use std::sync::Mutex;

use super::*;
use crate::clock::ManualClock;
use crate::health::{Checks, MemoryCheck, RedisCheck, status_of};

const MIN: Duration = Duration::from_secs(60);

fn health(redis: RedisCheck, memory: MemoryCheck) -> ServerHealth {
    let checks = Checks { redis, memory };
    ServerHealth {
        status: status_of(checks),
        checks,
    }
}

struct Fixture {
    current: Arc<Mutex<ServerHealth>>,
    rx: mpsc::Receiver<Notification>,
    alerts: Alerts,
}

fn start(timings: RuleTimings) -> Fixture {
    let current = Arc::new(Mutex::new(health(RedisCheck::Ok, MemoryCheck::Ok)));
    let source: HealthSource = {
        let current = Arc::clone(&current);
        Arc::new(move || *current.lock().expect("lock"))
    };
    let (outbox, rx) = Outbox::new("test", Arc::new(Metrics::new()));
    let options = AlertOptions {
        timings,
        interval: Duration::from_secs(1),
        webhooks: Vec::new(),
        instance: "web-1".to_owned(),
    };
    let alerts = Alerts::start_with_outboxes(
        options,
        source,
        Arc::new(ManualClock::new(1_800_000_000_000)),
        vec![outbox],
    );
    Fixture {
        current,
        rx,
        alerts,
    }
}

fn timings() -> RuleTimings {
    RuleTimings {
        redis_offline_for: 5 * MIN,
        memory_for: 5 * MIN,
        critical_for: MIN,
        repeat_interval: 30 * MIN,
    }
}

/// With tokio's clock paused, sleeping advances virtual time: minutes pass in microseconds.
#[tokio::test(start_paused = true)]
async fn redis_offline_for_five_minutes_fires_repeats_and_resolves() {
    let mut f = start(timings());
    *f.current.lock().expect("lock") = health(RedisCheck::Offline, MemoryCheck::Ok);
    tokio::time::sleep(4 * MIN + Duration::from_secs(50)).await;
    assert!(f.rx.try_recv().is_err(), "nothing before 5 minutes");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let fired = f.rx.try_recv().expect("fired after 5 minutes");
    assert_eq!(
        (fired.rule, fired.transition),
        (Rule::RedisOffline, Transition::Firing)
    );
    assert_eq!(fired.instance, "web-1");

    tokio::time::sleep(30 * MIN).await;
    let repeated = f.rx.try_recv().expect("repeated after the interval");
    assert_eq!(repeated.transition, Transition::Repeat);
    assert_eq!(repeated.starts_at, fired.starts_at, "the same alert");
    assert!(f.rx.try_recv().is_err(), "only one repeat per interval");

    *f.current.lock().expect("lock") = health(RedisCheck::Ok, MemoryCheck::Ok);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resolved = f.rx.try_recv().expect("resolved");
    assert_eq!(resolved.transition, Transition::Resolved);
    assert!(resolved.ends_at.is_some());
    f.alerts.stop().await;
}

#[tokio::test(start_paused = true)]
async fn blips_shorter_than_the_duration_send_nothing() {
    let mut f = start(timings());
    for _ in 0..10 {
        *f.current.lock().expect("lock") = health(RedisCheck::Offline, MemoryCheck::Warning);
        tokio::time::sleep(4 * MIN).await;
        *f.current.lock().expect("lock") = health(RedisCheck::Ok, MemoryCheck::Ok);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert!(
        f.rx.try_recv().is_err(),
        "flapping under the durations never notifies"
    );
    f.alerts.stop().await;
}

#[tokio::test(start_paused = true)]
async fn memory_and_critical_rules_have_their_own_durations() {
    let mut f = start(RuleTimings {
        memory_for: 2 * MIN,
        critical_for: 30 * Duration::from_secs(1),
        ..timings()
    });
    *f.current.lock().expect("lock") = health(RedisCheck::Disabled, MemoryCheck::Critical);
    tokio::time::sleep(35 * Duration::from_secs(1)).await;
    assert_eq!(f.rx.try_recv().expect("critical").rule, Rule::Critical);
    assert!(f.rx.try_recv().is_err());
    tokio::time::sleep(90 * Duration::from_secs(1)).await;
    assert_eq!(f.rx.try_recv().expect("memory").rule, Rule::MemoryHigh);
    f.alerts.stop().await;
}

#[test]
fn a_full_outbox_drops_and_counts_instead_of_growing() {
    let metrics = Arc::new(Metrics::new());
    let (outbox, mut rx) = Outbox::new("dead", Arc::clone(&metrics));
    let notice = Notification {
        rule: Rule::Critical,
        transition: Transition::Firing,
        starts_at: 0,
        ends_at: None,
        instance: "i".to_owned(),
    };
    for _ in 0..OUTBOX_CAPACITY + 10 {
        outbox.offer(notice.clone());
    }
    assert_eq!(
        metrics
            .alerts_dropped_total
            .with_label_values(&["dead"])
            .get(),
        10
    );
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, OUTBOX_CAPACITY);
}

#[test]
fn payloads_follow_alertmanager_and_slack_formats() {
    let notice = Notification {
        rule: Rule::RedisOffline,
        transition: Transition::Resolved,
        starts_at: 1_800_000_000_000,
        ends_at: Some(1_800_000_600_000),
        instance: "web-1".to_owned(),
    };
    let am = alertmanager_payload(&notice);
    assert_eq!(am["version"], "4");
    assert_eq!(am["status"], "resolved");
    let alert = &am["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "KeepaliveRedisOffline");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["instance"], "web-1");
    assert_eq!(alert["startsAt"], "2027-01-15T08:00:00.000Z");
    assert_eq!(alert["endsAt"], "2027-01-15T08:10:00.000Z");
    assert_eq!(alert["fingerprint"].as_str().map(str::len), Some(16));
    let slack = slack_payload(&notice);
    assert!(
        slack["text"]
            .as_str()
            .expect("text")
            .starts_with("[RESOLVED] KeepaliveRedisOffline on web-1")
    );
}

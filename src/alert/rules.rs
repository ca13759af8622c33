//! The alert rules and their state machines, free of I/O and of any clock but the instants
//! they are given, so tests can move minutes in microseconds.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RuleTimings;
use crate::health::{MemoryCheck, RedisCheck, ServerHealth, Status};

/// A built-in rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Redis has been offline (sessions served from the local store).
    RedisOffline,
    /// Memory has been at or above the warning threshold.
    MemoryHigh,
    /// The status has been critical.
    Critical,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 3] = [Rule::RedisOffline, Rule::MemoryHigh, Rule::Critical];

    /// The alert's name, the same as the Prometheus rule's.
    pub fn name(self) -> &'static str {
        match self {
            Self::RedisOffline => "KeepaliveRedisOffline",
            Self::MemoryHigh => "KeepaliveMemoryHigh",
            Self::Critical => "KeepaliveCritical",
        }
    }

    /// `warning` or `critical`.
    pub fn severity(self) -> &'static str {
        match self {
            Self::RedisOffline | Self::MemoryHigh => "warning",
            Self::Critical => "critical",
        }
    }

    /// Whether the condition holds for this health.
    pub fn holds(self, health: &ServerHealth) -> bool {
        match self {
            Self::RedisOffline => health.checks.redis == RedisCheck::Offline,
            Self::MemoryHigh => health.checks.memory != MemoryCheck::Ok,
            Self::Critical => health.status == Status::Critical,
        }
    }

    /// One sentence for people: what it means and what to do.
    pub fn summary(self) -> &'static str {
        match self {
            Self::RedisOffline => {
                "Redis is offline: sessions are served from each instance's local store and will be written back when Redis returns. Run `keepalive doctor` to find why."
            }
            Self::MemoryHigh => {
                "Memory use is above the warning threshold of the container's limit. Raise the limit or find what holds memory before it turns critical."
            }
            Self::Critical => {
                "keepalive reports critical health (memory at or above the critical threshold). The service still runs; act now."
            }
        }
    }
}

/// How long `rule`'s condition must hold before it fires.
fn hold(timings: &RuleTimings, rule: Rule) -> Duration {
    match rule {
        Rule::RedisOffline => timings.redis_offline_for,
        Rule::MemoryHigh => timings.memory_for,
        Rule::Critical => timings.critical_for,
    }
}

/// What a rule says at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition has held for its duration: the alert fires.
    Firing,
    /// Still firing after the repeat interval: tell again.
    Repeat,
    /// The condition cleared after the alert fired.
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inactive,
    Pending { since: Instant },
    Firing { since: Instant, last_sent: Instant },
}

/// The state of every rule.
#[derive(Debug, Clone)]
pub struct Evaluator {
    timings: RuleTimings,
    states: [State; 3],
}

/// One transition of one rule, with how long its condition has held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The rule.
    pub rule: Rule,
    /// What happened.
    pub transition: Transition,
    /// How long the condition had held (until now, or until it cleared).
    pub held_for: Duration,
}

impl Evaluator {
    /// Every rule inactive.
    pub fn new(timings: RuleTimings) -> Self {
        Self {
            timings,
            states: [State::Inactive; 3],
        }
    }

    /// Evaluates every rule against `health` at `now`. A condition that clears before its
    /// duration produces nothing: blips do not page anyone.
    pub fn observe(&mut self, now: Instant, health: &ServerHealth) -> Vec<Event> {
        let mut events = Vec::new();
        for (index, rule) in Rule::ALL.into_iter().enumerate() {
            let holds = rule.holds(health);
            let hold = hold(&self.timings, rule);
            let state = &mut self.states[index];
            match (*state, holds) {
                (State::Inactive, true) => {
                    *state = State::Pending { since: now };
                    if hold.is_zero() {
                        *state = State::Firing {
                            since: now,
                            last_sent: now,
                        };
                        events.push(Event {
                            rule,
                            transition: Transition::Firing,
                            held_for: Duration::ZERO,
                        });
                    }
                }
                (State::Pending { since }, true) if now.duration_since(since) >= hold => {
                    *state = State::Firing {
                        since,
                        last_sent: now,
                    };
                    events.push(Event {
                        rule,
                        transition: Transition::Firing,
                        held_for: now.duration_since(since),
                    });
                }
                (State::Pending { .. }, false) => *state = State::Inactive,
                (State::Firing { since, last_sent }, true)
                    if now.duration_since(last_sent) >= self.timings.repeat_interval =>
                {
                    *state = State::Firing {
                        since,
                        last_sent: now,
                    };
                    events.push(Event {
                        rule,
                        transition: Transition::Repeat,
                        held_for: now.duration_since(since),
                    });
                }
                (State::Firing { since, .. }, false) => {
                    *state = State::Inactive;
                    events.push(Event {
                        rule,
                        transition: Transition::Resolved,
                        held_for: now.duration_since(since),
                    });
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Checks;

    const MIN: Duration = Duration::from_secs(60);

    fn health(redis: RedisCheck, memory: MemoryCheck) -> ServerHealth {
        let checks = Checks { redis, memory };
        ServerHealth {
            status: crate::health::status_of(checks),
            checks,
        }
    }

    fn timings() -> RuleTimings {
        RuleTimings {
            redis_offline_for: 5 * MIN,
            memory_for: 5 * MIN,
            critical_for: MIN,
            repeat_interval: 60 * MIN,
        }
    }

    /// Feeds `health` every second from `from` for `duration`; returns the events with the
    /// second they happened at.
    fn run(
        e: &mut Evaluator,
        from: Instant,
        duration: Duration,
        h: ServerHealth,
    ) -> Vec<(u64, Event)> {
        let mut out = Vec::new();
        for s in 0..duration.as_secs() {
            let now = from + Duration::from_secs(s);
            out.extend(e.observe(now, &h).into_iter().map(|ev| (s, ev)));
        }
        out
    }

    #[test]
    fn redis_offline_fires_after_five_minutes_once_and_resolves() {
        let mut e = Evaluator::new(timings());
        let t0 = Instant::now();
        let offline = health(RedisCheck::Offline, MemoryCheck::Ok);
        let events = run(&mut e, t0, 10 * MIN, offline);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].0, 300,
            "fires when the condition has held 5 minutes"
        );
        assert_eq!(events[0].1.rule, Rule::RedisOffline);
        assert_eq!(events[0].1.transition, Transition::Firing);
        let back = e.observe(t0 + 10 * MIN, &health(RedisCheck::Ok, MemoryCheck::Ok));
        assert_eq!(
            back,
            vec![Event {
                rule: Rule::RedisOffline,
                transition: Transition::Resolved,
                held_for: 10 * MIN
            }]
        );
    }

    #[test]
    fn a_blip_shorter_than_the_duration_sends_nothing() {
        let mut e = Evaluator::new(timings());
        let t0 = Instant::now();
        let mut events = run(
            &mut e,
            t0,
            4 * MIN,
            health(RedisCheck::Offline, MemoryCheck::Ok),
        );
        events.extend(run(
            &mut e,
            t0 + 4 * MIN,
            MIN,
            health(RedisCheck::Ok, MemoryCheck::Ok),
        ));
        events.extend(run(
            &mut e,
            t0 + 5 * MIN,
            4 * MIN,
            health(RedisCheck::Offline, MemoryCheck::Ok),
        ));
        assert!(
            events.is_empty(),
            "flapping under 5 minutes never fires: {events:?}"
        );
    }

    #[test]
    fn a_firing_alert_repeats_at_the_interval() {
        let mut e = Evaluator::new(timings());
        let t0 = Instant::now();
        let events = run(
            &mut e,
            t0,
            3 * 60 * MIN,
            health(RedisCheck::Offline, MemoryCheck::Ok),
        );
        let seconds: Vec<(u64, Transition)> =
            events.iter().map(|(s, ev)| (*s, ev.transition)).collect();
        assert_eq!(
            seconds,
            vec![
                (300, Transition::Firing),
                (3900, Transition::Repeat),
                (7500, Transition::Repeat)
            ]
        );
    }

    #[test]
    fn memory_critical_fires_both_memory_and_critical_rules_on_their_own_clocks() {
        let mut e = Evaluator::new(timings());
        let t0 = Instant::now();
        let events = run(
            &mut e,
            t0,
            6 * MIN,
            health(RedisCheck::Ok, MemoryCheck::Critical),
        );
        let fired: Vec<(u64, Rule)> = events.iter().map(|(s, ev)| (*s, ev.rule)).collect();
        assert_eq!(fired, vec![(60, Rule::Critical), (300, Rule::MemoryHigh)]);
    }

    #[test]
    fn zero_duration_fires_at_once() {
        let mut e = Evaluator::new(RuleTimings {
            critical_for: Duration::ZERO,
            ..timings()
        });
        let events = e.observe(
            Instant::now(),
            &health(RedisCheck::Disabled, MemoryCheck::Critical),
        );
        assert_eq!(
            events.iter().filter(|ev| ev.rule == Rule::Critical).count(),
            1
        );
    }
}

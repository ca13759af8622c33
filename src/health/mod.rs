//! Server health: the checks (shared store, memory), the overall status, and the monitor that
//! recomputes them in the background.
//!
//! Status is `critical` if any check is critical, `degraded` if any is warning or offline,
//! `healthy` otherwise. Critical never stops the server: it is a signal for operators and
//! browsers. Requests read the monitor's cached [`Health`] and never wait on a check.

pub mod memory;
mod monitor;

use serde::Serialize;

pub use memory::{LimitSource, MemoryReading};
pub use monitor::{HealthMonitor, HealthOptions};

use crate::clock::Millis;
use crate::session::SharedStoreState;

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check passes.
    Healthy,
    /// A check warns or a dependency is offline; the service still works.
    Degraded,
    /// A check is critical; the service still works, but needs attention now.
    Critical,
}

impl Status {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
        }
    }
}

/// The Redis check as the keepalive answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisCheck {
    /// Redis answers.
    Ok,
    /// Redis does not answer; sessions are served from the local store.
    Offline,
    /// No Redis is configured.
    Disabled,
}

impl From<SharedStoreState> for RedisCheck {
    fn from(state: SharedStoreState) -> Self {
        match state {
            SharedStoreState::Ok => Self::Ok,
            SharedStoreState::Offline => Self::Offline,
            SharedStoreState::Disabled => Self::Disabled,
        }
    }
}

impl RedisCheck {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Offline => "offline",
            Self::Disabled => "disabled",
        }
    }
}

/// The memory check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryCheck {
    /// Below the warning threshold (or unreadable; the failure is logged).
    Ok,
    /// At or above the warning threshold.
    Warning,
    /// At or above the critical threshold.
    Critical,
}

impl MemoryCheck {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The checks as the keepalive answer shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// The shared store.
    pub redis: RedisCheck,
    /// Memory.
    pub memory: MemoryCheck,
}

/// The `serverHealth` object of the keepalive answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerHealth {
    /// Overall status.
    pub status: Status,
    /// Each check.
    pub checks: Checks,
}

impl ServerHealth {
    /// The same health with the Redis check replaced by a fresher reading (the store knows of
    /// an outage at once; the monitor only at its next run), and the status recomputed.
    pub fn with_redis(self, redis: RedisCheck) -> Self {
        let checks = Checks {
            redis,
            ..self.checks
        };
        Self {
            status: status_of(checks),
            checks,
        }
    }
}

/// One evaluation of every check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Status and checks, as browsers see them.
    pub summary: ServerHealth,
    /// The memory reading behind the memory check, when it could be read.
    pub memory: Option<MemoryReading>,
    /// When the checks ran.
    pub checked_at: Millis,
}

/// The overall status from the checks.
pub fn status_of(checks: Checks) -> Status {
    match (checks.redis, checks.memory) {
        (_, MemoryCheck::Critical) => Status::Critical,
        (RedisCheck::Offline, _) | (_, MemoryCheck::Warning) => Status::Degraded,
        _ => Status::Healthy,
    }
}

/// The memory check for a use in percent against the thresholds.
pub fn memory_check(percent: f64, warning: f64, critical: f64) -> MemoryCheck {
    if percent >= critical {
        MemoryCheck::Critical
    } else if percent >= warning {
        MemoryCheck::Warning
    } else {
        MemoryCheck::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_worst_check() {
        let checks = |redis, memory| Checks { redis, memory };
        assert_eq!(
            status_of(checks(RedisCheck::Ok, MemoryCheck::Ok)),
            Status::Healthy
        );
        assert_eq!(
            status_of(checks(RedisCheck::Disabled, MemoryCheck::Ok)),
            Status::Healthy
        );
        assert_eq!(
            status_of(checks(RedisCheck::Offline, MemoryCheck::Ok)),
            Status::Degraded
        );
        assert_eq!(
            status_of(checks(RedisCheck::Ok, MemoryCheck::Warning)),
            Status::Degraded
        );
        assert_eq!(
            status_of(checks(RedisCheck::Offline, MemoryCheck::Critical)),
            Status::Critical
        );
        assert_eq!(
            status_of(checks(RedisCheck::Ok, MemoryCheck::Critical)),
            Status::Critical
        );
    }

    #[test]
    fn memory_thresholds_are_inclusive() {
        assert_eq!(memory_check(79.9, 80.0, 90.0), MemoryCheck::Ok);
        assert_eq!(memory_check(80.0, 80.0, 90.0), MemoryCheck::Warning);
        assert_eq!(memory_check(92.5, 80.0, 90.0), MemoryCheck::Critical);
    }
}

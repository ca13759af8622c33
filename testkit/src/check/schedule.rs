//! The seeded fault schedule: which faults, in which order, how long each lasts and how long
//! the fleet runs undisturbed after it.
//!
//! Faults come one at a time: each starts only after the fleet recovered from the one before
//! (or the wait for that ran out), so every moment of a run belongs to one fault, and each
//! invariant's violations can be put down to a kind of fault. The same seed gives the same
//! schedule; the times at which the faults actually happen are recorded as they happen.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A kind of fault the checker injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// redis-server SIGKILLed, down for a while, then started again on the same port with the
    /// data of its append-only file (synced at every write): a crash of a Redis that persists.
    RedisKilled,
    /// redis-server SIGKILLed for longer than the idle timeout, then started again with its
    /// data, in which the idle expiry of every session passed meanwhile (their keys go up to
    /// half an idle timeout later: some are gone, some still there, expired), though the
    /// instances kept some alive offline and others expired on them.
    RedisKilledPastIdle,
    /// redis-server SIGKILLed for longer than the absolute lifetime, then started again with
    /// its data: every session that was live when it went reached its absolute lifetime
    /// offline, kept alive or not, and so did any created early in the outage. None may be
    /// answered 200 again, by an instance or by what the write-back puts in Redis.
    RedisKilledPastLifetime,
    /// redis-server stopped with SIGSTOP, then resumed with SIGCONT: a hung Redis.
    RedisFrozen,
    /// redis-server SIGKILLed and started again on the same port without its data.
    RedisRestartedEmpty,
    /// `FLUSHALL`: every key gone while Redis keeps running.
    RedisFlushed,
    /// `maxmemory` below the memory in use with an LRU eviction policy, for a while: Redis
    /// drops keys of its own accord.
    RedisEvicting,
    /// One instance SIGKILLed, then started again on the same data directory and port.
    InstanceKilled,
    /// One instance SIGTERMed (a clean stop), then started again: a rolling deploy.
    InstanceTerminated,
    /// Two faults that overlap: redis-server SIGKILLed (as [`Self::RedisKilled`]); a third
    /// of the way into the outage one instance is SIGKILLed, two thirds in it is started
    /// again, with Redis still down, on what its local store kept; then Redis comes back
    /// with its data. The outage's changes of the crashed instance go back from its file.
    InstanceKilledInOutage,
    /// The same with a SIGTERM: a rolling deploy while Redis is down, whose clean stop cannot
    /// note that Redis has every change.
    InstanceTerminatedInOutage,
}

impl FaultKind {
    /// Every kind, in the order the reports list them.
    pub const ALL: [Self; 11] = [
        Self::RedisKilled,
        Self::RedisKilledPastIdle,
        Self::RedisKilledPastLifetime,
        Self::RedisFrozen,
        Self::RedisRestartedEmpty,
        Self::RedisFlushed,
        Self::RedisEvicting,
        Self::InstanceKilled,
        Self::InstanceTerminated,
        Self::InstanceKilledInOutage,
        Self::InstanceTerminatedInOutage,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::RedisKilled => "redis-killed",
            Self::RedisKilledPastIdle => "redis-killed-past-idle",
            Self::RedisKilledPastLifetime => "redis-killed-past-lifetime",
            Self::RedisFrozen => "redis-frozen",
            Self::RedisRestartedEmpty => "redis-restarted-empty",
            Self::RedisFlushed => "redis-flushed",
            Self::RedisEvicting => "redis-evicting",
            Self::InstanceKilled => "instance-killed",
            Self::InstanceTerminated => "instance-terminated",
            Self::InstanceKilledInOutage => "instance-killed-in-outage",
            Self::InstanceTerminatedInOutage => "instance-terminated-in-outage",
        }
    }

    /// Whether the fault is done to Redis (alone or with an instance).
    pub fn on_redis(self) -> bool {
        !matches!(self, Self::InstanceKilled | Self::InstanceTerminated)
    }

    /// Whether the fault stops an instance (alone or with Redis).
    pub fn on_instance(self) -> bool {
        matches!(
            self,
            Self::InstanceKilled
                | Self::InstanceTerminated
                | Self::InstanceKilledInOutage
                | Self::InstanceTerminatedInOutage
        )
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The instance it is done to, for an instance fault.
    pub instance: Option<usize>,
    /// How long Redis or the instance stays down, frozen or evicting (zero for a flush).
    #[serde(with = "millis")]
    pub duration: Duration,
    /// How long the fleet runs undisturbed once it recovered, before the next fault.
    #[serde(with = "millis")]
    pub gap_after: Duration,
    /// For an eviction: `allkeys-lru` or `volatile-lru`.
    pub evict_policy: Option<&'static str>,
    /// For an eviction: the share of the data set's memory taken away by `maxmemory`.
    pub evict_share: Option<f64>,
}

/// How long the fleet's sessions live, which the long outages outlast.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// The idle timeout: a `redis-killed-past-idle` outage lasts 1 to 4 s more.
    pub idle: Duration,
    /// The absolute lifetime: a `redis-killed-past-lifetime` outage lasts 1 to 4 s more.
    pub absolute: Duration,
}

/// The faults of one run, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// `per_kind` faults of every kind in an order, durations and targets drawn from `seed`,
    /// for a fleet of `instances` whose sessions live as `lifetimes` says.
    pub fn generate(seed: u64, per_kind: usize, instances: usize, lifetimes: Lifetimes) -> Self {
        let Lifetimes { idle, absolute } = lifetimes;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut kinds: Vec<FaultKind> = FaultKind::ALL
            .iter()
            .flat_map(|&kind| std::iter::repeat_n(kind, per_kind))
            .collect();
        // Fisher-Yates, with the seeded generator.
        for i in (1..kinds.len()).rev() {
            let j = rng.random_range(0..=i);
            kinds.swap(i, j);
        }
        let ms = |rng: &mut StdRng, low: u64, high: u64| {
            Duration::from_millis(rng.random_range(low..=high))
        };
        let faults = kinds
            .into_iter()
            .map(|kind| {
                let duration = match kind {
                    FaultKind::RedisKilled => ms(&mut rng, 1_000, 4_000),
                    FaultKind::RedisKilledPastIdle => idle + ms(&mut rng, 1_000, 4_000),
                    FaultKind::RedisKilledPastLifetime => absolute + ms(&mut rng, 1_000, 4_000),
                    FaultKind::RedisFrozen => ms(&mut rng, 1_000, 5_000),
                    FaultKind::RedisRestartedEmpty => ms(&mut rng, 0, 1_500),
                    FaultKind::RedisFlushed => Duration::ZERO,
                    FaultKind::RedisEvicting => ms(&mut rng, 2_000, 5_000),
                    FaultKind::InstanceKilled => ms(&mut rng, 200, 3_000),
                    FaultKind::InstanceTerminated => ms(&mut rng, 200, 1_500),
                    // Long enough for the instance to start within the outage's middle third.
                    FaultKind::InstanceKilledInOutage | FaultKind::InstanceTerminatedInOutage => {
                        ms(&mut rng, 3_000, 6_000)
                    }
                };
                let instance = kind
                    .on_instance()
                    .then(|| rng.random_range(0..instances.max(1)));
                let (evict_policy, evict_share) = if kind == FaultKind::RedisEvicting {
                    let policy = if rng.random_bool(0.5) {
                        "allkeys-lru"
                    } else {
                        "volatile-lru"
                    };
                    (Some(policy), Some(rng.random_range(0.3..0.9)))
                } else {
                    (None, None)
                };
                Fault {
                    kind,
                    instance,
                    duration,
                    gap_after: ms(&mut rng, 2_000, 4_000),
                    evict_policy,
                    evict_share,
                }
            })
            .collect();
        Self { seed, faults }
    }

    /// How many faults of `kind` the schedule holds.
    pub fn count(&self, kind: FaultKind) -> usize {
        self.faults.iter().filter(|f| f.kind == kind).count()
    }
}

/// Durations as whole milliseconds in the JSON report.
pub(crate) mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIMES: Lifetimes = Lifetimes {
        idle: Duration::from_secs(20),
        absolute: Duration::from_secs(45),
    };

    #[test]
    fn every_kind_comes_as_often_as_asked() {
        let schedule = Schedule::generate(7, 3, 3, LIFETIMES);
        assert_eq!(schedule.faults.len(), 3 * FaultKind::ALL.len());
        for kind in FaultKind::ALL {
            assert_eq!(schedule.count(kind), 3, "{}", kind.name());
        }
        for fault in &schedule.faults {
            assert_eq!(fault.instance.is_some(), fault.kind.on_instance());
            assert!(fault.instance.is_none_or(|i| i < 3));
            assert_eq!(
                fault.evict_policy.is_some(),
                fault.kind == FaultKind::RedisEvicting
            );
            match fault.kind {
                FaultKind::RedisKilledPastIdle => assert!(
                    fault.duration > LIFETIMES.idle && fault.duration < LIFETIMES.absolute,
                    "past the idle timeout"
                ),
                FaultKind::RedisKilledPastLifetime => assert!(
                    fault.duration > LIFETIMES.absolute,
                    "past the absolute lifetime"
                ),
                _ => assert!(fault.duration < LIFETIMES.idle, "{}", fault.kind.name()),
            }
        }
    }

    #[test]
    fn the_seed_decides_the_schedule() {
        let order = |seed| {
            Schedule::generate(seed, 2, 3, LIFETIMES)
                .faults
                .iter()
                .map(|f| (f.kind, f.duration, f.instance))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(11), order(11));
        assert_ne!(order(11), order(12));
    }
}

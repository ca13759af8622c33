//! Injecting the scheduled faults into Redis and the instances, and watching the fleet recover
//! from each: when every instance reports healthy again, and whether Redis then holds every
//! session the users still hold.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::CheckError;
use super::fleet::{Fleet, Health};
use super::history::{Micros, now_us};
use super::invariants::{self, Params};
use super::schedule::{Fault, FaultKind};
use super::users::{Shared, micros};
use crate::redis::RedisServer;

/// How often the instances are polled while they recover.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long after a fault's end the fleet is polled again, for a fault the instances notice
/// only at their next probe: the checker's probe interval (100 ms) plus the Redis timeout
/// (100 ms), with room for a busy machine.
pub(super) const NOTICE_WITHIN: Duration = Duration::from_secs(1);

/// A late recovery's log excerpt begins this long before the fault did...
const LOG_BEFORE: Duration = Duration::from_secs(1);
/// ...and holds at most this many lines.
const LOG_LINES: usize = 40;

/// What happened to one fault (or, with no kind, the check at the end of the run).
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Its place in the schedule.
    pub index: usize,
    /// `None` for the final check, after the last fault.
    pub kind: Option<FaultKind>,
    pub instance: Option<usize>,
    /// What exactly was done (the eviction's policy and limit, how long the stop took).
    pub detail: String,
    /// When the fault began (the signal sent, the command given).
    pub started: Micros,
    /// When it ended: Redis answering again, or the instance's new process started.
    pub ended: Micros,
    /// When every instance had reported healthy (ready, Redis ok) after the end.
    pub healthy: Option<Micros>,
    /// The instance that took longest to report healthy.
    pub slowest: Option<usize>,
    /// When every instance had first reported healthy, if one of them was not at the poll
    /// a second after the end (`NOTICE_WITHIN`: it went offline again).
    pub relapsed: Option<Micros>,
    /// When recovery came late or never: what the slowest instance last answered while not
    /// healthy and its log from a second before the fault, to tell why without the run's
    /// directory.
    pub slow_log: String,
    /// Sessions the users held live when every instance was healthy, looked up in Redis.
    pub live_checked: usize,
    /// Those of them Redis did not hold: (session index, short token).
    pub missing: Vec<(usize, String)>,
}

impl FaultRecord {
    /// The kind's name, or `end of run` for the final check.
    pub fn name(&self) -> &'static str {
        self.kind.map_or("end-of-run", FaultKind::name)
    }

    /// Until when the fault's effects may last: every instance healthy again, or (if that
    /// never came) the end of the wait for it.
    pub fn settled(&self, healthy_wait: Micros) -> Micros {
        self.healthy.unwrap_or(self.ended + healthy_wait)
    }
}

/// Runs the faults against the fleet and Redis.
pub struct Injector {
    pub fleet: Fleet,
    pub redis: Arc<Mutex<RedisServer>>,
    pub shared: Arc<Shared>,
    pub params: Params,
    /// How long a SIGTERMed instance gets to stop before it is killed.
    pub stop_limit: Duration,
    /// How long the wait for every instance to be healthy lasts at most.
    pub healthy_wait: Duration,
    /// The session key prefix in Redis.
    pub prefix: String,
    /// Sessions already found missing from Redis after an earlier fault: each is reported
    /// once, after the fault that lost it.
    pub reported_missing: std::collections::HashSet<usize>,
}

impl Injector {
    /// Injects `fault`, ends it, then waits for the fleet to recover and checks Redis.
    pub async fn run(&mut self, index: usize, fault: &Fault) -> Result<FaultRecord, CheckError> {
        self.fleet.check_exits().await?;
        let started = now_us();
        let mut detail = String::new();
        let ended = match fault.kind {
            FaultKind::RedisKilled
            | FaultKind::RedisKilledPastIdle
            | FaultKind::RedisKilledPastLifetime => {
                self.on_redis(RedisServer::kill).await?;
                tokio::time::sleep(fault.duration).await;
                self.on_redis(|r| {
                    r.start_again_with_data();
                })
                .await?;
                now_us()
            }
            FaultKind::RedisRestartedEmpty => {
                self.on_redis(RedisServer::kill).await?;
                tokio::time::sleep(fault.duration).await;
                self.on_redis(|r| {
                    r.start_again();
                })
                .await?;
                now_us()
            }
            FaultKind::RedisFrozen => {
                self.on_redis(|r| r.freeze()).await?;
                tokio::time::sleep(fault.duration).await;
                self.on_redis(|r| r.thaw()).await?;
                now_us()
            }
            FaultKind::RedisFlushed => {
                self.on_redis(|r| r.flushall()).await?;
                now_us()
            }
            FaultKind::RedisEvicting => {
                let policy = fault.evict_policy.unwrap_or("allkeys-lru");
                let share = fault.evict_share.unwrap_or(0.5);
                let limit = self
                    .on_redis(move |r| {
                        let number = |field: &str| {
                            r.info_value("memory", field)
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(0)
                        };
                        let used = number("used_memory");
                        let dataset = number("used_memory_dataset");
                        // Below what is in use by a share of the data set: Redis evicts about
                        // that share, and keeps evicting as new writes come.
                        let limit = used.saturating_sub((dataset as f64 * share) as u64).max(1);
                        r.config_set("maxmemory-policy", policy);
                        r.config_set("maxmemory", &limit.to_string());
                        (used, dataset, limit)
                    })
                    .await?;
                detail = format!(
                    "{policy}, maxmemory {} (used {}, data set {})",
                    limit.2, limit.0, limit.1
                );
                tokio::time::sleep(fault.duration).await;
                self.on_redis(|r| {
                    r.config_set("maxmemory", "0");
                    r.config_set("maxmemory-policy", "noeviction");
                })
                .await?;
                now_us()
            }
            FaultKind::InstanceKilled => {
                let i = fault.instance.unwrap_or(0);
                self.fleet.kill(i);
                tokio::time::sleep(fault.duration).await;
                self.fleet.start(i).await?
            }
            FaultKind::InstanceKilledInOutage | FaultKind::InstanceTerminatedInOutage => {
                let i = fault.instance.unwrap_or(0);
                let third = fault.duration / 3;
                let outage = tokio::time::Instant::now();
                self.on_redis(RedisServer::kill).await?;
                tokio::time::sleep(third).await;
                let how = if fault.kind == FaultKind::InstanceKilledInOutage {
                    self.fleet.kill(i);
                    "killed".to_owned()
                } else {
                    let (status, in_time) = self.fleet.terminate(i, self.stop_limit).await;
                    format!(
                        "stopped ({}{})",
                        status.map_or_else(|| "no status".to_owned(), |s| s.to_string()),
                        if in_time {
                            ""
                        } else {
                            ", killed after the limit"
                        }
                    )
                };
                let stopped = outage.elapsed();
                tokio::time::sleep((2 * third).saturating_sub(stopped)).await;
                self.fleet.start(i).await?;
                let restarted = outage.elapsed();
                tokio::time::sleep(fault.duration.saturating_sub(restarted)).await;
                self.on_redis(|r| {
                    r.start_again_with_data();
                })
                .await?;
                detail = format!(
                    "instance {how} {} ms into the outage, answering again at {} ms, Redis back at {} ms",
                    stopped.as_millis(),
                    restarted.as_millis(),
                    outage.elapsed().as_millis()
                );
                now_us()
            }
            FaultKind::InstanceTerminated => {
                let i = fault.instance.unwrap_or(0);
                let stopping = tokio::time::Instant::now();
                let (status, in_time) = self.fleet.terminate(i, self.stop_limit).await;
                detail = format!(
                    "stopped in {} ms ({}){}",
                    stopping.elapsed().as_millis(),
                    status.map_or_else(|| "no status".to_owned(), |s| s.to_string()),
                    if in_time {
                        ""
                    } else {
                        ", killed after the limit"
                    }
                );
                tokio::time::sleep(fault.duration).await;
                self.fleet.start(i).await?
            }
        };
        let mut record = FaultRecord {
            index,
            kind: Some(fault.kind),
            instance: fault.instance,
            detail,
            started,
            ended,
            healthy: None,
            slowest: None,
            relapsed: None,
            slow_log: String::new(),
            live_checked: 0,
            missing: Vec::new(),
        };
        self.recover(&mut record).await?;
        Ok(record)
    }

    /// The check at the end of the run: the same as after a fault.
    pub async fn final_check(&mut self, index: usize) -> Result<FaultRecord, CheckError> {
        self.fleet.check_exits().await?;
        let now = now_us();
        let mut record = FaultRecord {
            index,
            kind: None,
            instance: None,
            detail: String::new(),
            started: now,
            ended: now,
            healthy: None,
            slowest: None,
            relapsed: None,
            slow_log: String::new(),
            live_checked: 0,
            missing: Vec::new(),
        };
        self.recover(&mut record).await?;
        Ok(record)
    }

    /// Waits until every instance reports healthy (or the wait runs out), then looks up the
    /// live sessions in Redis.
    ///
    /// A fault Redis does not announce (a flush, an eviction) leaves every instance healthy
    /// until it notices, within one probe interval plus the Redis timeout (docs/redis.md):
    /// so the fleet is polled again [`NOTICE_WITHIN`] after the fault's end, and if an
    /// instance has gone offline meanwhile, the wait goes on until it is back.
    async fn recover(&mut self, record: &mut FaultRecord) -> Result<(), CheckError> {
        let deadline = tokio::time::Instant::now() + self.healthy_wait;
        let mut said = vec![None; self.fleet.len()];
        let (mut healthy, mut slowest) = match self.wait_healthy(deadline, &mut said).await {
            Ok(done) => done,
            Err(late) => {
                self.late(record, late, &said);
                return Ok(());
            }
        };
        let noticed_by = record.ended + micros(NOTICE_WITHIN);
        let left = noticed_by - now_us();
        if left > 0 {
            tokio::time::sleep(Duration::from_micros(left.unsigned_abs())).await;
        }
        let polls = (0..self.fleet.len()).map(|i| self.fleet.health(i));
        let answers = futures_util::future::join_all(polls).await;
        let all_healthy = answers.iter().all(Health::healthy);
        for (i, health) in answers.into_iter().enumerate() {
            if !health.healthy() {
                said[i] = Some(health);
            }
        }
        if !all_healthy {
            record.relapsed = Some(healthy.max(record.ended));
            match self.wait_healthy(deadline, &mut said).await {
                Ok(done) => (healthy, slowest) = done,
                Err(late) => {
                    self.late(record, late, &said);
                    return Ok(());
                }
            }
        }
        record.healthy = Some(healthy.max(record.ended));
        record.slowest = Some(slowest);
        if healthy - record.ended > self.params.healthy_within {
            self.late(record, slowest, &said);
        }
        self.check_redis(record).await
    }

    /// Notes the instance that recovered late (or never): what it last answered while not
    /// healthy, and its log since the fault began.
    fn late(&self, record: &mut FaultRecord, instance: usize, said: &[Option<Health>]) {
        record.slowest = Some(instance);
        let answer = said[instance].as_ref().map_or_else(
            || "none".to_owned(),
            |h| {
                format!(
                    "/readyz {}, Redis {}",
                    if h.ready {
                        "ready"
                    } else {
                        "not ready or silent"
                    },
                    h.redis.as_deref().unwrap_or("not said (/health silent)")
                )
            },
        );
        let log = self
            .fleet
            .log_since(instance, record.started - micros(LOG_BEFORE), LOG_LINES);
        record.slow_log = format!(
            "its last answer while not healthy: {answer}; its log from {} s before the fault:\n{log}",
            LOG_BEFORE.as_secs()
        );
    }

    /// Polls until every instance has reported healthy: when the last one did and which it
    /// was, or (at the deadline) the first one that had not. `said` keeps each instance's
    /// last answer that was not healthy.
    async fn wait_healthy(
        &self,
        deadline: tokio::time::Instant,
        said: &mut [Option<Health>],
    ) -> Result<(Micros, usize), usize> {
        let count = self.fleet.len();
        let mut first_healthy: Vec<Option<Micros>> = vec![None; count];
        loop {
            let pending: Vec<usize> = (0..count).filter(|&i| first_healthy[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(pending[0]);
            }
            let polls = pending.iter().map(|&i| self.fleet.health(i));
            let answers = futures_util::future::join_all(polls).await;
            let at = now_us();
            for (&i, health) in pending.iter().zip(answers) {
                if health.healthy() {
                    first_healthy[i] = Some(at);
                } else {
                    said[i] = Some(health);
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(first_healthy
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|at| (at, i)))
            .max()
            .unwrap_or((now_us(), 0)))
    }

    /// Looks up in Redis every session the users hold live, and keeps those it lacks.
    async fn check_redis(&mut self, record: &mut FaultRecord) -> Result<(), CheckError> {
        let begin = now_us();
        // Candidates now; which of them were surely live is decided once the look-up is done,
        // from everything the users did until then.
        let candidates: Vec<(usize, String)> = {
            let history = self
                .shared
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            invariants::live_sessions(&history, begin, begin, &self.params)
                .into_iter()
                .map(|s| (s, history.sessions[s].token.clone()))
                .collect()
        };
        let keys: Vec<String> = candidates
            .iter()
            .map(|(_, token)| format!("{}{{{token}}}", self.prefix))
            .collect();
        let exists = self
            .on_redis(move |r| {
                let mut con = r.connection();
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("EXISTS").arg(key);
                }
                let found: Vec<i64> = if keys.is_empty() {
                    Vec::new()
                } else {
                    pipe.query(&mut con)
                        .unwrap_or_else(|e| panic!("EXISTS on redis-server: {e}"))
                };
                found
            })
            .await?;
        let end = now_us();
        let history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let live = invariants::live_sessions(&history, begin, end, &self.params);
        record.live_checked = live.len();
        for ((session, _), found) in candidates.iter().zip(exists) {
            if found == 0 && live.contains(session) && self.reported_missing.insert(*session) {
                record.missing.push((*session, history.short(*session)));
            }
        }
        Ok(())
    }

    /// Runs `work` on the Redis server on a blocking thread; a panic of the testkit (which
    /// reports its failures that way) becomes an error.
    async fn on_redis<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut RedisServer) -> T + Send + 'static,
    ) -> Result<T, CheckError> {
        let redis = Arc::clone(&self.redis);
        tokio::task::spawn_blocking(move || {
            let mut server = redis.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut server)
        })
        .await
        .map_err(|e| CheckError::Redis(panic_text(e)))
    }
}

/// The message of a panic, or what else ended a blocking task.
fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "redis-server helper panicked".to_owned()),
        Err(error) => error.to_string(),
    }
}

/// Microseconds of a duration, for the parameters.
pub fn us(d: Duration) -> Micros {
    micros(d)
}

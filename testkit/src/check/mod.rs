//! The checker: several keepalive instances over one Redis, optionally behind a real nginx,
//! simulated users driving real sessions through them while a seeded schedule injects faults,
//! and the history of everything the users saw judged against the session invariants.
//!
//! [`run`] is one run: it starts a persistent redis-server on a free port of 127.0.0.1 (never
//! 6379), N instances of the real binary (each with its own port and data directory, all with
//! the same `REDIS_URL`), nginx in front of them if asked, and the users; waits a warm-up, then
//! injects each fault of the [`schedule`] in turn, waits for every instance to report healthy
//! and looks up the users' live sessions in Redis after each; lets the users run a little
//! longer, checks once more, stops everything and judges the history ([`invariants`]). What it
//! found is a [`RunReport`]; [`Summary`] sums up several runs.
//!
//! Every process it starts dies with it: each is killed on `Drop`, and gets
//! `PR_SET_PDEATHSIG` in case `Drop` never runs. A run is bounded in time by its schedule and
//! the limits of its waits.
//!
//! - [`schedule`]: the faults and their order, from the seed;
//! - [`fleet`]: the instances, started and stopped;
//! - [`nginx`]: the load balancer in front of them;
//! - [`users`]: the simulated people and their devices;
//! - [`client`]: one HTTP request, and how it failed;
//! - [`history`]: what every request got;
//! - [`faults`]: doing the faults and watching the recovery;
//! - [`invariants`]: the judgement;
//! - [`report`]: the summaries.

pub mod client;
pub mod faults;
pub mod fleet;
pub mod history;
pub mod invariants;
pub mod nginx;
pub mod report;
pub mod schedule;
pub mod users;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

pub use self::invariants::{Invariant, Params};
pub use self::report::{RunReport, Summary};
pub use self::schedule::{FaultKind, Lifetimes, Schedule};

use self::faults::{Injector, us};
use self::fleet::Fleet;
use self::history::{History, now_us};
use self::users::{Device, Routes, Shared};
use crate::redis::RedisServer;

/// What can stop a run before it judged anything.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("redis-server: {0}")]
    Redis(String),
    #[error("{0}")]
    Instance(String),
    #[error("nginx: {0}")]
    Nginx(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl CheckError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// How the users reach the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Straight to the instances, in turn.
    Direct,
    /// Through nginx, which spreads them round-robin (the backend API still goes straight to
    /// the instances, as an application's servers call it).
    Nginx,
    /// Through nginx routing by the session cookie as deploy/nginx/keepalive.conf ships
    /// (`hash ... consistent`): each session's requests go to one instance, and to another
    /// while that one is down; signing in, without a cookie, round-robin.
    NginxSticky,
}

impl Entry {
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Nginx => "nginx",
            Self::NginxSticky => "nginx-sticky",
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The keepalive binary.
    pub server_bin: PathBuf,
    /// The redis-server binary.
    pub redis_server_bin: PathBuf,
    /// The nginx binary, for [`Entry::Nginx`] and [`Entry::NginxSticky`] (found on `PATH` or
    /// in `/usr/sbin` if `None`).
    pub nginx_bin: Option<PathBuf>,
    pub entry: Entry,
    pub instances: usize,
    /// Simulated people, two devices each.
    pub persons: usize,
    pub seed: u64,
    /// Faults of each kind in the schedule.
    pub faults_per_kind: usize,
    /// The instances' tick (`KEEPALIVE_TICK`), at which the devices keep their sessions alive.
    pub tick: Duration,
    /// The instances' idle timeout; also how long a `redis-killed-past-idle` fault keeps
    /// Redis down, 1 to 4 s more.
    pub idle_timeout: Duration,
    /// The instances' absolute lifetime; also how long a `redis-killed-past-lifetime` fault
    /// keeps Redis down, 1 to 4 s more.
    pub absolute_lifetime: Duration,
    /// Users run this long before the first fault.
    pub warmup: Duration,
    /// And this long after the last fault's recovery.
    pub tail: Duration,
    /// Every instance must report healthy within this of a fault's end.
    pub healthy_within: Duration,
    /// The checker waits that long for it at most.
    pub healthy_wait: Duration,
    /// Leeway for clock readings (see [`Params::slack`]).
    pub slack: Duration,
    /// See [`Params::propagation`].
    pub logout_propagation: Duration,
    /// See [`Params::outage_grace`].
    pub outage_grace: Duration,
    /// The limit for one user request.
    pub request_timeout: Duration,
    /// More environment for the instances (`KEY`, `VALUE`).
    pub server_env: Vec<(String, String)>,
    /// Keep the run's directory (instance logs and data, nginx's logs, the history as
    /// `history.json`) rather than removing it.
    pub keep_dir: bool,
    /// Report progress on stderr.
    pub progress: bool,
}

/// The longest absolute lifetime a run takes (see [`Config::validate`]).
const MAX_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl Config {
    /// The defaults of the benchmark's long form for one seed: 3 instances, 12 people, four
    /// faults of each kind.
    pub fn new(server_bin: PathBuf, seed: u64) -> Self {
        Self {
            server_bin,
            redis_server_bin: PathBuf::from("redis-server"),
            nginx_bin: None,
            entry: Entry::Direct,
            instances: 3,
            persons: 12,
            seed,
            faults_per_kind: 4,
            tick: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(20),
            absolute_lifetime: Duration::from_secs(60),
            warmup: Duration::from_secs(8),
            tail: Duration::from_secs(6),
            healthy_within: Duration::from_secs(2),
            healthy_wait: Duration::from_secs(10),
            slack: Duration::from_millis(250),
            logout_propagation: Duration::from_secs(1),
            outage_grace: Duration::ZERO,
            request_timeout: Duration::from_secs(8),
            server_env: Vec::new(),
            keep_dir: false,
            progress: false,
        }
    }

    /// The short form for the test command: one fault of each kind, a shorter absolute
    /// lifetime so that some sessions reach it and the outage past it stays under a minute,
    /// about two and a half minutes in all.
    pub fn short(server_bin: PathBuf, seed: u64) -> Self {
        Self {
            persons: 8,
            faults_per_kind: 1,
            absolute_lifetime: Duration::from_secs(45),
            warmup: Duration::from_secs(6),
            tail: Duration::from_secs(4),
            ..Self::new(server_bin, seed)
        }
    }

    /// The numbers the invariants are judged with.
    pub fn params(&self) -> Params {
        Params {
            idle: us(self.idle_timeout),
            slack: us(self.slack),
            propagation: us(self.logout_propagation),
            healthy_within: us(self.healthy_within),
            healthy_wait: us(self.healthy_wait),
            outage_grace: us(self.outage_grace),
        }
    }

    fn validate(&self) -> Result<(), CheckError> {
        let bad = |why: &str| Err(CheckError::Config(why.to_owned()));
        if self.instances < 1 {
            return bad("at least one instance");
        }
        if self.persons < 1 {
            return bad("at least one person");
        }
        if self.idle_timeout <= self.tick * 2 {
            return bad("the idle timeout must be longer than two ticks");
        }
        if self.absolute_lifetime < self.idle_timeout {
            return bad("the absolute lifetime must be at least the idle timeout");
        }
        // A run must end by itself in a time its user expects: each redis-killed-past-lifetime
        // fault keeps Redis down for the whole absolute lifetime.
        if self.absolute_lifetime > MAX_ABSOLUTE_LIFETIME {
            return bad(&format!(
                "the absolute lifetime is at most {} min: each redis-killed-past-lifetime fault \
                 keeps Redis down that long",
                MAX_ABSOLUTE_LIFETIME.as_secs() / 60
            ));
        }
        Ok(())
    }
}

/// A random hex string for the instances' tokens, from the OS (not the seed: a token is not
/// part of the scenario).
fn token() -> Result<String, CheckError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CheckError::io("read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `humantime`'s form of a duration the instances read (`2s`, `500ms`).
fn setting(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn say(config: &Config, text: impl AsRef<str>) {
    if config.progress {
        eprintln!("[check seed {}] {}", config.seed, text.as_ref());
    }
}

/// One run: see the module's documentation.
pub async fn run(config: &Config) -> Result<RunReport, CheckError> {
    config.validate()?;
    let schedule = Schedule::generate(
        config.seed,
        config.faults_per_kind,
        config.instances,
        Lifetimes {
            idle: config.idle_timeout,
            absolute: config.absolute_lifetime,
        },
    );
    let dir = tempfile::Builder::new()
        .prefix("keepalive-check-")
        .tempdir()
        .map_err(|e| CheckError::io("create the run's directory", e))?;
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();

    let redis_bin = config.redis_server_bin.clone();
    let redis = tokio::task::spawn_blocking(move || RedisServer::start_persistent_of(&redis_bin))
        .await
        .map_err(|e| CheckError::Redis(format!("did not start: {e}")))?;
    let redis_url = redis.url();
    say(config, format!("redis-server on port {}", redis.port()));
    let redis = Arc::new(Mutex::new(redis));

    let health_token = token()?;
    let backend_token = token()?;
    let mut env: Vec<(String, String)> = vec![
        ("KEEPALIVE_ENV".into(), "development".into()),
        ("REDIS_URL".into(), redis_url),
        ("KEEPALIVE_LOG_LEVEL".into(), "info".into()),
        ("KEEPALIVE_TICK".into(), setting(config.tick)),
        ("KEEPALIVE_TIMEOUT".into(), setting(config.tick / 2)),
        (
            "KEEPALIVE_IDLE_TIMEOUT".into(),
            setting(config.idle_timeout),
        ),
        (
            "KEEPALIVE_ABSOLUTE_LIFETIME".into(),
            setting(config.absolute_lifetime),
        ),
        ("KEEPALIVE_REDIS_PROBE_INTERVAL".into(), "100ms".into()),
        ("KEEPALIVE_HEALTH_INTERVAL".into(), "100ms".into()),
        ("KEEPALIVE_SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ("KEEPALIVE_RATE_LIMIT_SESSIONS".into(), "0".into()),
        ("KEEPALIVE_RATE_LIMIT_KEEPALIVE".into(), "0".into()),
        ("KEEPALIVE_HEALTH_TOKEN".into(), health_token.clone()),
        ("KEEPALIVE_BACKEND_TOKEN".into(), backend_token.clone()),
    ];
    env.extend(config.server_env.iter().cloned());
    let mut fleet = Fleet::new(
        &config.server_bin,
        env,
        health_token,
        config.instances,
        dir.path(),
    )?;
    fleet.start_all().await?;
    say(config, format!("{} instances ready", fleet.len()));

    let proxy = match config.entry {
        Entry::Direct => None,
        Entry::Nginx | Entry::NginxSticky => {
            let bin = config
                .nginx_bin
                .clone()
                .or_else(nginx::find_binary)
                .ok_or_else(|| {
                    CheckError::Nginx(
                        "not installed (not on PATH, no /usr/sbin/nginx): scripts/test.sh \
                         installs Debian's nginx"
                            .to_owned(),
                    )
                })?;
            let ports: Vec<u16> = fleet.addrs().iter().map(|a| a.port()).collect();
            let sticky = config.entry == Entry::NginxSticky;
            let nginx = nginx::Nginx::start(&bin, &ports, &dir.path().join("nginx"), sticky)?;
            say(config, format!("nginx on {}", nginx.addr()));
            Some(nginx)
        }
    };

    let shared = Arc::new(Shared {
        history: Mutex::new(History::default()),
        routes: Routes::new(
            fleet.addrs(),
            proxy.as_ref().map(nginx::Nginx::addr),
            config.request_timeout,
        ),
        cookie_name: "keepalive_sid".to_owned(),
        backend_token,
        tick: config.tick,
        idle: config.idle_timeout,
    });
    let start = now_us();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut devices = tokio::task::JoinSet::new();
    for person in 0..config.persons {
        for device in 0..2 {
            let calm = person % 3 == 0 && device == 0;
            let seed = config.seed.wrapping_mul(1_000_003) ^ ((person as u64) << 8 | device as u64);
            let d = Device::new(Arc::clone(&shared), person, device, calm, seed);
            devices.spawn(d.run(stop_rx.clone()));
        }
    }

    let mut injector = Injector {
        fleet,
        redis,
        shared: Arc::clone(&shared),
        params: config.params(),
        stop_limit: Duration::from_secs(10),
        healthy_wait: config.healthy_wait,
        prefix: "keepalive:".to_owned(),
        reported_missing: std::collections::HashSet::new(),
    };
    let outcome = drive(config, &schedule, &mut injector).await;
    let _ = stop_tx.send(true);
    // Each device finishes the request it is making; none takes longer than its limit.
    let _ = tokio::time::timeout(config.request_timeout * 3, async {
        while devices.join_next().await.is_some() {}
    })
    .await;
    devices.abort_all();
    let end = now_us();
    injector.fleet.stop_all(Duration::from_secs(10)).await;
    drop(proxy);
    let records = outcome?;
    let exits = std::mem::take(&mut injector.fleet.exits);
    drop(injector);

    let history = shared.history.lock().unwrap_or_else(|p| p.into_inner());
    let violations = invariants::check(&history, &records, &exits, &config.params(), start);
    let kept = if config.keep_dir {
        // Everything the users did, to follow a violation's session through the instances' logs.
        let text = serde_json::to_string(&*history)
            .map_err(|e| CheckError::Config(format!("history as JSON: {e}")))?;
        std::fs::write(dir.path().join("history.json"), text)
            .map_err(|e| CheckError::io("write history.json", e))?;
        Some(dir.keep().display().to_string())
    } else {
        None
    };
    Ok(RunReport::new(
        config.seed,
        config.entry.name(),
        config.instances,
        config.persons * 2,
        started_at,
        start,
        end,
        config.params(),
        &history,
        schedule,
        records,
        &violations,
        kept,
    ))
}

/// The warm-up, every fault and its recovery, the tail and the last check.
async fn drive(
    config: &Config,
    schedule: &Schedule,
    injector: &mut Injector,
) -> Result<Vec<faults::FaultRecord>, CheckError> {
    tokio::time::sleep(config.warmup).await;
    let mut records = Vec::with_capacity(schedule.faults.len() + 1);
    for (index, fault) in schedule.faults.iter().enumerate() {
        let record = injector.run(index, fault).await?;
        say(
            config,
            format!(
                "fault {}/{} {}{}: healthy after {}{}",
                index + 1,
                schedule.faults.len(),
                fault.kind.name(),
                fault
                    .instance
                    .map_or_else(String::new, |i| format!(" (instance {i})")),
                record.healthy.map_or_else(
                    || "never".to_owned(),
                    |h| format!("{} ms", (h - record.ended) / 1000)
                ),
                if record.missing.is_empty() {
                    String::new()
                } else {
                    format!(", {} live sessions missing in Redis", record.missing.len())
                }
            ),
        );
        records.push(record);
        tokio::time::sleep(fault.gap_after).await;
    }
    tokio::time::sleep(config.tail).await;
    records.push(injector.final_check(schedule.faults.len()).await?);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_refuses_settings_it_could_not_end_with_in_time() {
        let config = |absolute| Config {
            absolute_lifetime: absolute,
            ..Config::short(PathBuf::from("keepalive"), 1)
        };
        assert!(config(Duration::from_secs(45)).validate().is_ok());
        assert!(config(MAX_ABSOLUTE_LIFETIME).validate().is_ok());
        let refused = config(MAX_ABSOLUTE_LIFETIME + Duration::from_secs(1))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("at most 10 min"), "{refused}");
        assert!(config(Duration::from_secs(10)).validate().is_err());
    }
}

//! `fault`: constant keepalive load over thousands of sessions while Redis is
//! killed (SIGKILL) and started again, empty, on the same port.
//!
//! The bench owns every process: a throw-away redis-server on a free loopback
//! port, and the release server pointed at it with a health token so `/health`
//! shows `checks["redis:connection"][0].observedValue` (`ok` / `offline`).
//! Every scheduled keepalive is recorded (intended time, completion, status),
//! `/health` is polled every 50 ms, and at the end every session key
//! `keepalive:{ID}` is looked up in the restarted Redis.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Outcome as ExitOutcome;
use crate::client::Conn;
use crate::load::{self, Endpoint, Outcome, Timeouts};
use crate::openloop::{self, Sample, Schedule};
use crate::report::{self, Machine};
use crate::server::{self, Server, ServerConfig};
use crate::stats::{self, Latency};
use crate::target::Target;
use keepalive::store::redis::Keys;
use keepalive_testkit::metrics;
use keepalive_testkit::redis::RedisServer;

#[derive(Args, Debug)]
pub struct FaultArgs {
    /// Server binary to start on a free loopback port (e.g. target/release/keepalive).
    #[arg(long)]
    server_bin: PathBuf,

    /// Argument for the started server; repeatable, in order.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// Extra environment for the server, KEY=VALUE; repeatable (REDIS_URL and
    /// KEEPALIVE_HEALTH_TOKEN are set by the bench).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = server::parse_env_pair)]
    server_env: Vec<(String, String)>,

    /// redis-server binary; started on a free loopback port, never 6379.
    #[arg(long, default_value = "redis-server")]
    redis_server_bin: PathBuf,

    /// Key prefix the server uses in Redis (KEEPALIVE_REDIS_PREFIX).
    #[arg(long, default_value = "keepalive:")]
    redis_prefix: String,

    /// Distinct sessions kept alive.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sessions: u32,

    /// Keep-alive connections the load is spread over.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connections: u16,

    /// Total keepalive requests per second (fixed rate, open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,

    /// Load before Redis is killed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    steady: Duration,

    /// How long Redis stays down.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    outage: Duration,

    /// Load after redis-server is started again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    after: Duration,

    /// How often /health is polled.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,

    /// Limit for one request, response body included.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// Limit for opening one connection.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// How long the started server may take to be ready and report Redis `ok`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,

    /// Grace time between SIGTERM and SIGKILL when stopping the server.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,

    /// Session cookie name (default: the first cookie set).
    #[arg(long, default_value = "keepalive_sid")]
    cookie_name: String,

    /// Tokio worker threads for the load generator (default: all cores).
    #[arg(long)]
    pub client_threads: Option<usize>,

    /// Target: p99 latency during the outage below this many milliseconds.
    #[arg(long, default_value_t = 150.0)]
    max_outage_p99_ms: f64,

    /// Target: time from the kill to `/health` saying `offline`, in milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    max_degraded_ms: f64,

    /// Target: time from Redis answering again to `/health` saying `ok`, in milliseconds.
    #[arg(long, default_value_t = 2000.0)]
    max_healthy_ms: f64,

    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Exit with status 3 when a target is missed.
    #[arg(long)]
    check: bool,
}

/// Runs the fault benchmark and always stops the server and redis-server it
/// started, also on error and on SIGINT/SIGTERM.
pub async fn command(args: FaultArgs, threads: usize) -> anyhow::Result<ExitOutcome> {
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut server_slot: Option<Server> = None;
    let mut redis_slot: Option<RedisServer> = None;
    let result = tokio::select! {
        r = run(&args, threads, &mut server_slot, &mut redis_slot) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("interrupted (SIGTERM)")),
    };
    if let Some(server) = server_slot.take() {
        let impatient = async {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        };
        if let Err(e) = server.stop(impatient).await {
            eprintln!("warning: stopping the server: {e:#}");
        }
    }
    if let Some(mut redis) = redis_slot.take() {
        redis.kill();
    }
    let report = result?;
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serialise report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("write JSON report to {}", path.display()))?;
    }
    Ok(ExitOutcome {
        all_met: report.targets.all_met,
        check: args.check,
    })
}

/// What `/health` said about Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    Ok,
    Offline,
    /// Another value (e.g. `disabled`), or none.
    Other(String),
    /// The poll itself failed (no answer, bad JSON).
    PollFailed(String),
}

/// `checks["redis:connection"][0].observedValue` of a `/health` body.
pub fn redis_state_from_health(body: &[u8]) -> RedisState {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return RedisState::PollFailed("/health body is not JSON".to_owned());
    };
    match v["checks"]["redis:connection"][0]["observedValue"].as_str() {
        Some("ok") => RedisState::Ok,
        Some("offline") => RedisState::Offline,
        Some(other) => RedisState::Other(other.to_owned()),
        None => RedisState::Other("(no redis:connection check: is the token right?)".to_owned()),
    }
}

/// One `/health` poll.
#[derive(Debug, Clone)]
struct Observation {
    /// When the answer arrived.
    at: Instant,
    state: RedisState,
}

/// Polls `/health` every `interval` until `stop` turns true, publishing the
/// latest state; returns every observation.
async fn poll_health(
    target: Target,
    token: HeaderValue,
    interval: Duration,
    latest: watch::Sender<Option<(Instant, RedisState)>>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Observation> {
    let mut seen = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if conn.as_ref().is_none_or(Conn::is_closed) {
            conn = Conn::connect(&target, timeout).await.ok();
        }
        let state = match conn.as_mut() {
            None => RedisState::PollFailed("cannot connect".to_owned()),
            Some(c) => {
                let auth = [(header::AUTHORIZATION, &token)];
                match c.request_with(Method::GET, "/health", &auth, timeout).await {
                    Ok(resp) => redis_state_from_health(resp.body()),
                    Err(e) => {
                        conn = None;
                        RedisState::PollFailed(format!("{e:#}"))
                    }
                }
            }
        };
        let at = Instant::now();
        let _ = latest.send(Some((at, state.clone())));
        seen.push(Observation { at, state });
    }
    seen
}

/// Which part of the run a request belongs to, by its intended send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Before the kill.
    Before,
    /// From the kill until `/health` says `ok` again.
    During,
    /// From then on.
    After,
}

/// The window of a request intended at `at`; `back` is when `/health` said
/// `ok` again (`None`: it never did, so the outage lasts to the end).
pub fn window_of(at: Instant, kill: Instant, back: Option<Instant>) -> Window {
    if at < kill {
        Window::Before
    } else if back.is_none_or(|b| at < b) {
        Window::During
    } else {
        Window::After
    }
}

/// Figures of one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowStats {
    pub seconds: f64,
    pub requests: u64,
    pub ok: u64,
    /// Requests that did not answer 200: all are failed keepalives of valid sessions.
    pub failed: u64,
    /// Failures by kind: the status code, `transport` or `unsent`.
    pub failures: BTreeMap<String, u64>,
    /// Coordinated-omission corrected latency of every request that got an
    /// answer or failed (from its intended send time).
    pub latency: Option<Latency>,
}

pub fn window_stats(samples: &[&Sample], seconds: f64) -> anyhow::Result<WindowStats> {
    let mut w = WindowStats {
        seconds,
        ..WindowStats::default()
    };
    let mut hist = stats::new_histogram()?;
    for s in samples {
        w.requests += 1;
        hist.saturating_record(s.latency_us());
        let kind = match s.outcome {
            Outcome::Ok => {
                w.ok += 1;
                continue;
            }
            Outcome::Status(code) => code.to_string(),
            Outcome::Transport => "transport".to_owned(),
            Outcome::Unsent => "unsent".to_owned(),
        };
        w.failed += 1;
        *w.failures.entry(kind).or_default() += 1;
    }
    w.latency = Latency::from_histogram(&hist);
    Ok(w)
}

/// Event times, in seconds from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub redis_killed_s: f64,
    pub degraded_seen_s: Option<f64>,
    pub redis_restarted_s: f64,
    /// When the new redis-server answered PING (time to healthy counts from here).
    pub redis_answering_s: f64,
    pub healthy_seen_s: Option<f64>,
    pub load_end_s: f64,
    /// Every change of `/health`'s Redis state, as seen by the poller.
    pub health_changes: Vec<(f64, RedisState)>,
    pub health_polls: usize,
    pub health_poll_failures: usize,
}

/// Sessions found in the restarted Redis.
#[derive(Debug, Clone, Serialize)]
pub struct Resync {
    /// Sessions that should be in Redis: every session created (none expired
    /// or logged out; the run is far shorter than the idle timeout).
    pub valid_sessions: usize,
    /// Keys found when `/health` first said `ok` again (before later
    /// keepalives could write them back one by one).
    pub in_redis_when_healthy: Option<usize>,
    /// Keys found at the end of the run.
    pub in_redis_at_end: usize,
    pub percent_at_end: f64,
    /// From the server's /metrics: `keepalive_redis_resynced_sessions_total`.
    pub server_resynced_sessions_total: Option<f64>,
    pub server_outages_total: Option<f64>,
    pub server_fallbacks_total: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultConfig {
    pub server: String,
    pub server_args: Vec<String>,
    pub server_env_keys: Vec<String>,
    pub redis_port: u16,
    pub sessions: usize,
    pub connections: usize,
    pub rate: f64,
    pub steady_secs: f64,
    pub outage_secs: f64,
    pub after_secs: f64,
    pub poll_interval_ms: f64,
    pub client_threads: usize,
}

/// Targets of the Redis issue and the verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct FaultTargets {
    pub failed_keepalives: u64,
    pub no_failed_keepalives: bool,
    pub outage_p99_ms: Option<f64>,
    pub max_outage_p99_ms: f64,
    pub outage_p99_met: bool,
    pub time_to_degraded_ms: Option<f64>,
    pub max_degraded_ms: f64,
    pub degraded_met: bool,
    pub time_to_healthy_ms: Option<f64>,
    pub max_healthy_ms: f64,
    pub healthy_met: bool,
    pub resync_percent: f64,
    pub resync_met: bool,
    pub all_met: bool,
}

/// The thresholds of [`FaultTargets`].
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub max_outage_p99_ms: f64,
    pub max_degraded_ms: f64,
    pub max_healthy_ms: f64,
}

impl FaultTargets {
    pub fn judge(
        failed: u64,
        outage_p99_ms: Option<f64>,
        time_to_degraded_ms: Option<f64>,
        time_to_healthy_ms: Option<f64>,
        resynced: usize,
        valid: usize,
        t: Thresholds,
    ) -> Self {
        let resync_percent = if valid == 0 {
            100.0
        } else {
            resynced as f64 * 100.0 / valid as f64
        };
        let outage_p99_met = outage_p99_ms.is_some_and(|p| p < t.max_outage_p99_ms);
        let degraded_met = time_to_degraded_ms.is_some_and(|d| d < t.max_degraded_ms);
        let healthy_met = time_to_healthy_ms.is_some_and(|d| d < t.max_healthy_ms);
        let resync_met = resynced >= valid;
        let no_failed_keepalives = failed == 0;
        Self {
            failed_keepalives: failed,
            no_failed_keepalives,
            outage_p99_ms,
            max_outage_p99_ms: t.max_outage_p99_ms,
            outage_p99_met,
            time_to_degraded_ms,
            max_degraded_ms: t.max_degraded_ms,
            degraded_met,
            time_to_healthy_ms,
            max_healthy_ms: t.max_healthy_ms,
            healthy_met,
            resync_percent,
            resync_met,
            all_met: no_failed_keepalives
                && outage_p99_met
                && degraded_met
                && healthy_met
                && resync_met,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: &'static str,
    pub started_at: String,
    pub command: Vec<String>,
    pub machine: Machine,
    pub config: FaultConfig,
    pub sessions: load::SessionSetup,
    pub timeline: Timeline,
    pub before: WindowStats,
    pub during: WindowStats,
    pub after: WindowStats,
    /// Distinct sessions that saw at least one failed keepalive.
    pub sessions_with_failures: usize,
    pub first_error: Option<String>,
    pub cookie_updates: u64,
    pub resync: Resync,
    /// CPU time of the server and of redis-server (both runs), in seconds.
    pub server_cpu_secs: Option<f64>,
    pub redis_cpu_secs: Option<f64>,
    /// The server's `[redis]` log lines (warnings and errors; the log level is `warn`).
    pub server_redis_log: Vec<String>,
    pub targets: FaultTargets,
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom for the health token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// GET `path` on a fresh connection, with an optional bearer token.
async fn get(
    target: &Target,
    path: &'static str,
    token: &HeaderValue,
) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let timeout = Duration::from_secs(2);
    let mut c = Conn::connect(target, timeout).await?;
    let auth = [(header::AUTHORIZATION, token)];
    let resp = c.request_with(Method::GET, path, &auth, timeout).await?;
    Ok((resp.status(), resp.body().to_vec()))
}

/// The Redis keys of the sessions whose cookies are given.
fn session_keys<'a>(prefix: &str, cookies: impl Iterator<Item = &'a HeaderValue>) -> Vec<String> {
    let keys = Keys::new(prefix);
    cookies
        .filter_map(|c| {
            let text = c.to_str().ok()?;
            let (_, id) = text.split_once('=')?;
            Some(keys.session_named(id))
        })
        .collect()
}

/// Runs `work`, which blocks (a redis-server process starting, a count of keys), without
/// holding up the load tasks that share this runtime.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

async fn run(
    args: &FaultArgs,
    threads: usize,
    server_slot: &mut Option<Server>,
    redis_slot: &mut Option<RedisServer>,
) -> anyhow::Result<FaultReport> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut machine = Machine::detect();
    let connections = usize::from(args.connections);
    let sessions = usize::try_from(args.sessions).context("--sessions too large")?;
    if sessions < connections {
        bail!("--sessions ({sessions}) must be at least --connections ({connections})");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number");
    }
    if args
        .server_env
        .iter()
        .any(|(k, _)| k == "REDIS_URL" || k == "KEEPALIVE_HEALTH_TOKEN")
    {
        bail!("REDIS_URL and KEEPALIVE_HEALTH_TOKEN are set by the bench");
    }
    let timeouts = Timeouts {
        connect: args.connect_timeout,
        request: args.request_timeout,
    };

    eprintln!("starting {} ...", args.redis_server_bin.display());
    let redis = redis_slot.insert(blocking(|| RedisServer::start_of(&args.redis_server_bin)));
    eprintln!("redis-server ready on 127.0.0.1:{}", redis.port());
    let token = random_token()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).context("token header")?;
    let mut env = args.server_env.clone();
    env.push(("REDIS_URL".to_owned(), redis.url()));
    env.push(("KEEPALIVE_HEALTH_TOKEN".to_owned(), token));
    eprintln!("starting {} ...", args.server_bin.display());
    let cfg = ServerConfig {
        bin: args.server_bin.clone(),
        args: args.server_args.clone(),
        env,
        ready_timeout: args.ready_timeout,
        stop_timeout: args.stop_timeout,
    };
    let server = server_slot.insert(Server::start(&cfg).await?);
    let target = server.target.clone();
    eprintln!("server ready on {}", target.authority);

    // Redis must be `ok` before the scenario starts, or nothing is measured.
    let deadline = Instant::now() + args.ready_timeout;
    loop {
        let (_, body) = get(&target, "/health", &bearer).await?;
        match redis_state_from_health(&body) {
            RedisState::Ok => break,
            state if Instant::now() >= deadline => {
                bail!(
                    "/health does not report Redis ok within {:?}: {state:?}",
                    args.ready_timeout
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    eprintln!("creating {sessions} sessions over {connections} connections ...");
    let (pool, setup) = load::create_sessions(
        &target,
        &load::SessionSource::Keepalive,
        sessions,
        connections,
        Some(&args.cookie_name),
        timeouts,
    )
    .await?;
    let keys_before = session_keys(&args.redis_prefix, pool.all());
    let in_redis = blocking(|| redis.count_existing(&keys_before));
    if in_redis < keys_before.len() {
        eprintln!(
            "warning: only {in_redis} of {} sessions are in Redis before the fault (prefix {:?}?)",
            keys_before.len(),
            args.redis_prefix
        );
    }

    let mut tasks = JoinSet::new();
    let (latest_tx, mut latest_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = tokio::spawn(poll_health(
        target.clone(),
        bearer.clone(),
        args.poll_interval,
        latest_tx,
        stop_rx,
    ));
    let poller = AbortOnDrop(Some(poller));

    let t0 = Instant::now() + Duration::from_millis(50);
    let kill_at = t0 + args.steady;
    let stop = kill_at + args.outage + args.after;
    let schedule = Schedule {
        start: t0,
        rate: args.rate,
        connections,
    };
    let load_target = target.clone();
    let mut load_pool = pool.clone();
    tasks.spawn(async move {
        let run = openloop::run(
            &load_target,
            Endpoint::Keepalive,
            schedule,
            stop,
            timeouts,
            &mut load_pool,
        )
        .await;
        (run, load_pool)
    });
    eprintln!(
        "keepalive load: {} req/s over {connections} connections; Redis is killed after {:?}, down for {:?}, then {:?} more",
        args.rate, args.steady, args.outage, args.after
    );

    let sleep_until = |t: Instant| tokio::time::sleep_until(tokio::time::Instant::from_std(t));
    sleep_until(kill_at).await;
    let killed = Instant::now();
    redis.kill();
    eprintln!("redis-server killed (SIGKILL)");
    sleep_until(killed + args.outage).await;
    let restarted = Instant::now();
    let answering = blocking(|| redis.start_again());
    eprintln!("redis-server started again, empty, on the same port");

    // Wait for `ok` after Redis answers, then count the keys at once: that
    // is the re-sync itself, before keepalives rewrite sessions one by one.
    let mut in_redis_when_healthy = None;
    let wait_ok = async {
        loop {
            if let Some((at, RedisState::Ok)) = &*latest_rx.borrow_and_update() {
                if *at > answering {
                    return;
                }
            }
            if latest_rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    if tokio::time::timeout_at(tokio::time::Instant::from_std(stop), wait_ok)
        .await
        .is_ok()
    {
        in_redis_when_healthy = Some(blocking(|| redis.count_existing(&keys_before)));
    }

    let (run, final_pool) = match tasks.join_next().await {
        Some(joined) => joined.context("load task panicked")?,
        None => bail!("the load task vanished"),
    };
    let run = run?;
    let _ = stop_tx.send(true);
    let observations = match poller.take() {
        Some(handle) => handle.await.context("health poller panicked")?,
        None => Vec::new(),
    };
    machine.loadavg_at_end = report::loadavg();

    // The end state, read before anything else can change it.
    let keys_at_end = session_keys(&args.redis_prefix, final_pool.all());
    let in_redis_at_end = blocking(|| redis.count_existing(&keys_at_end));
    let metrics = get(&target, "/metrics", &bearer)
        .await
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .unwrap_or_default();
    let server_cpu_secs = server.cpu_time().map(|d| d.as_secs_f64());
    let redis_cpu_secs = redis
        .pid()
        .and_then(|pid| crate::server::process_cpu_time(&pid.to_string()))
        .map(|d| d.as_secs_f64());
    server.ensure_running()?;
    let server_redis_log = server
        .log_tail_bytes(64 * 1024)
        .lines()
        .filter(|l| l.contains("[redis]"))
        .map(str::to_owned)
        .collect();

    // When did /health change?
    let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let degraded_seen = observations
        .iter()
        .find(|o| o.at > killed && o.state == RedisState::Offline)
        .map(|o| o.at);
    let healthy_seen = observations
        .iter()
        .find(|o| o.at > answering && o.state == RedisState::Ok)
        .map(|o| o.at);
    let mut health_changes: Vec<(f64, RedisState)> = Vec::new();
    for o in &observations {
        if health_changes.last().is_none_or(|(_, s)| *s != o.state) {
            health_changes.push((secs(o.at), o.state.clone()));
        }
    }
    let health_poll_failures = observations
        .iter()
        .filter(|o| matches!(o.state, RedisState::PollFailed(_)))
        .count();

    // Requests by window.
    let back = healthy_seen;
    let mut parts: [Vec<&Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for s in &run.samples {
        let i = match window_of(s.intended, killed, back) {
            Window::Before => 0,
            Window::During => 1,
            Window::After => 2,
        };
        parts[i].push(s);
    }
    let during_end = back.unwrap_or(stop);
    let before = window_stats(
        &parts[0],
        killed.saturating_duration_since(t0).as_secs_f64(),
    )?;
    let during = window_stats(
        &parts[1],
        during_end.saturating_duration_since(killed).as_secs_f64(),
    )?;
    let after = window_stats(
        &parts[2],
        stop.saturating_duration_since(during_end).as_secs_f64(),
    )?;
    let failed = before.failed + during.failed + after.failed;
    let sessions_with_failures = run
        .samples
        .iter()
        .filter(|s| s.outcome != Outcome::Ok)
        .filter_map(|s| s.session)
        .collect::<std::collections::HashSet<_>>()
        .len();

    let valid = keys_at_end.len();
    let time_to_degraded_ms = degraded_seen.map(|t| (t - killed).as_secs_f64() * 1e3);
    let time_to_healthy_ms = healthy_seen.map(|t| (t - answering).as_secs_f64() * 1e3);
    let targets = FaultTargets::judge(
        failed,
        during.latency.map(|l| l.p99_ms),
        time_to_degraded_ms,
        time_to_healthy_ms,
        in_redis_at_end,
        valid,
        Thresholds {
            max_outage_p99_ms: args.max_outage_p99_ms,
            max_degraded_ms: args.max_degraded_ms,
            max_healthy_ms: args.max_healthy_ms,
        },
    );
    let redis_port = redis.port();
    Ok(FaultReport {
        tool: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        scenario: "redis killed (SIGKILL) under keepalive load, restarted empty",
        started_at,
        command: std::env::args().collect(),
        machine,
        config: FaultConfig {
            server: args.server_bin.display().to_string(),
            server_args: args.server_args.clone(),
            server_env_keys: args.server_env.iter().map(|(k, _)| k.clone()).collect(),
            redis_port,
            sessions,
            connections,
            rate: args.rate,
            steady_secs: args.steady.as_secs_f64(),
            outage_secs: args.outage.as_secs_f64(),
            after_secs: args.after.as_secs_f64(),
            poll_interval_ms: args.poll_interval.as_secs_f64() * 1e3,
            client_threads: threads,
        },
        sessions: setup,
        timeline: Timeline {
            redis_killed_s: secs(killed),
            degraded_seen_s: degraded_seen.map(secs),
            redis_restarted_s: secs(restarted),
            redis_answering_s: secs(answering),
            healthy_seen_s: healthy_seen.map(secs),
            load_end_s: secs(stop),
            health_changes,
            health_polls: observations.len(),
            health_poll_failures,
        },
        before,
        during,
        after,
        sessions_with_failures,
        first_error: run.counters.first_error.clone(),
        cookie_updates: run.counters.cookie_updates,
        resync: Resync {
            valid_sessions: valid,
            in_redis_when_healthy,
            in_redis_at_end,
            percent_at_end: targets.resync_percent,
            server_resynced_sessions_total: metrics::value(
                &metrics,
                "keepalive_redis_resynced_sessions_total",
            ),
            server_outages_total: metrics::value(&metrics, "keepalive_redis_outages_total"),
            server_fallbacks_total: metrics::value(&metrics, "keepalive_redis_fallbacks_total"),
        },
        server_cpu_secs,
        redis_cpu_secs,
        server_redis_log,
        targets,
    })
}

/// Aborts the task if the run is abandoned half-way (error, Ctrl-C).
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn take(mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.take()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl FaultReport {
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let c = &self.config;
        let t = &self.targets;
        let tl = &self.timeline;
        let verdict = |met: bool| if met { "MET" } else { "MISSED" };
        let ms = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.0} ms"));
        let _ = writeln!(
            s,
            "keepalive-bench fault ({}), started {}",
            self.scenario, self.started_at
        );
        let _ = writeln!(
            s,
            "machine: nproc {}, CPU {}, kernel {}, load average {} at start, {} at end",
            m.nproc, m.cpu_model, m.kernel, m.loadavg_at_start, m.loadavg_at_end
        );
        let _ = writeln!(
            s,
            "server:  {} with REDIS_URL=redis://127.0.0.1:{} (redis-server started by the bench)",
            c.server, c.redis_port
        );
        let _ = writeln!(
            s,
            "load:    {} req/s keepalive (fixed rate, open loop) over {} connections, {} sessions \
             ({} distinct); {} s steady, {} s outage, {} s after; /health every {} ms",
            c.rate,
            c.connections,
            self.sessions.created,
            self.sessions.distinct,
            c.steady_secs,
            c.outage_secs,
            c.after_secs,
            c.poll_interval_ms
        );
        let _ = writeln!(
            s,
            "timeline (s from load start): killed {:.3}, offline seen {}, restarted {:.3}, \
             answering {:.3}, ok seen {}, end {:.3}",
            tl.redis_killed_s,
            tl.degraded_seen_s
                .map_or("never".to_owned(), |v| format!("{v:.3}")),
            tl.redis_restarted_s,
            tl.redis_answering_s,
            tl.healthy_seen_s
                .map_or("never".to_owned(), |v| format!("{v:.3}")),
            tl.load_end_s
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<8} {:>7} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9}  failures",
            "window", "secs", "requests", "ok", "failed", "p50 ms", "p99 ms", "max ms", "mean ms"
        );
        for (name, w) in [
            ("before", &self.before),
            ("during", &self.during),
            ("after", &self.after),
        ] {
            let l = |f: fn(&Latency) -> f64| {
                w.latency
                    .as_ref()
                    .map_or("-".to_owned(), |l| format!("{:.3}", f(l)))
            };
            let _ = writeln!(
                s,
                "{:<8} {:>7.2} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9}  {:?}",
                name,
                w.seconds,
                w.requests,
                w.ok,
                w.failed,
                l(|l| l.p50_ms),
                l(|l| l.p99_ms),
                l(|l| l.max_ms),
                l(|l| l.mean_ms),
                w.failures
            );
        }
        let _ = writeln!(s);
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        let r = &self.resync;
        let _ = writeln!(
            s,
            "failed keepalives (valid sessions): {} ({} during the outage, {} sessions)  target 0: {}",
            t.failed_keepalives,
            self.during.failed,
            self.sessions_with_failures,
            verdict(t.no_failed_keepalives)
        );
        let _ = writeln!(
            s,
            "p99 during the outage (kill to ok again): {}  target < {:.0} ms: {}",
            t.outage_p99_ms
                .map_or("-".to_owned(), |v| format!("{v:.3} ms")),
            t.max_outage_p99_ms,
            verdict(t.outage_p99_met)
        );
        let _ = writeln!(
            s,
            "time to degraded (kill to /health offline): {}  target < {:.0} ms: {}",
            ms(t.time_to_degraded_ms),
            t.max_degraded_ms,
            verdict(t.degraded_met)
        );
        let _ = writeln!(
            s,
            "time to healthy (Redis answering to /health ok): {}  target < {:.0} ms: {}",
            ms(t.time_to_healthy_ms),
            t.max_healthy_ms,
            verdict(t.healthy_met)
        );
        let _ = writeln!(
            s,
            "sessions re-synced: {} / {} ({:.1} %) at the end; {} when /health said ok  target 100 %: {}",
            r.in_redis_at_end,
            r.valid_sessions,
            t.resync_percent,
            r.in_redis_when_healthy
                .map_or("-".to_owned(), |n| n.to_string()),
            verdict(t.resync_met)
        );
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "server metrics: resynced sessions {}, outages {}, fallbacks {}; CPU: server {} s, redis-server {} s; {} health polls ({} failed)",
            opt(r.server_resynced_sessions_total),
            opt(r.server_outages_total),
            opt(r.server_fallbacks_total),
            self.server_cpu_secs
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
            self.redis_cpu_secs
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
            tl.health_polls,
            tl.health_poll_failures
        );
        for line in &self.server_redis_log {
            let _ = writeln!(s, "server log: {line}");
        }
        let _ = writeln!(
            s,
            "result: {}",
            if t.all_met {
                "all targets met"
            } else {
                "targets MISSED"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_body_parsing() {
        let body = br#"{"status":"warn","checks":{"redis:connection":[{"status":"warn","observedValue":"offline"}]}}"#;
        assert_eq!(redis_state_from_health(body), RedisState::Offline);
        let body = br#"{"status":"pass","checks":{"redis:connection":[{"observedValue":"ok"}]}}"#;
        assert_eq!(redis_state_from_health(body), RedisState::Ok);
        assert!(matches!(
            redis_state_from_health(br#"{"status":"pass"}"#),
            RedisState::Other(_)
        ));
        assert!(matches!(
            redis_state_from_health(b"<html>"),
            RedisState::PollFailed(_)
        ));
    }

    #[test]
    fn windows_split_on_kill_and_recovery() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (kill, back) = (at(5000), Some(at(16_000)));
        assert_eq!(window_of(at(4999), kill, back), Window::Before);
        assert_eq!(window_of(at(5000), kill, back), Window::During);
        assert_eq!(window_of(at(15_999), kill, back), Window::During);
        assert_eq!(window_of(at(16_000), kill, back), Window::After);
        // Never healthy again: the outage lasts to the end.
        assert_eq!(window_of(at(25_000), kill, None), Window::During);
    }

    #[test]
    fn window_stats_count_failures_by_kind() {
        let t0 = Instant::now();
        let s = |lat: u64, outcome| Sample {
            intended: t0,
            sent: t0,
            done: t0 + Duration::from_millis(lat),
            session: Some(1),
            outcome,
        };
        let samples = [
            s(1, Outcome::Ok),
            s(2, Outcome::Ok),
            s(100, Outcome::Status(401)),
            s(5000, Outcome::Transport),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let w = window_stats(&refs, 1.0).expect("stats");
        assert_eq!((w.requests, w.ok, w.failed), (4, 2, 2));
        assert_eq!(w.failures.get("401"), Some(&1));
        assert_eq!(w.failures.get("transport"), Some(&1));
        // Failed requests are in the latency too: a timeout is a slow answer.
        assert!((w.latency.expect("latency").max_ms - 5000.0).abs() < 5.0);
    }

    const T: Thresholds = Thresholds {
        max_outage_p99_ms: 150.0,
        max_degraded_ms: 1000.0,
        max_healthy_ms: 2000.0,
    };

    #[test]
    fn verdicts() {
        let ok = FaultTargets::judge(0, Some(12.0), Some(60.0), Some(300.0), 5000, 5000, T);
        assert!(ok.all_met);
        assert_eq!(ok.resync_percent, 100.0);

        let failed = FaultTargets::judge(3, Some(12.0), Some(60.0), Some(300.0), 5000, 5000, T);
        assert!(!failed.no_failed_keepalives && !failed.all_met);

        let slow = FaultTargets::judge(0, Some(150.0), Some(60.0), Some(300.0), 5000, 5000, T);
        assert!(!slow.outage_p99_met && !slow.all_met);

        let never = FaultTargets::judge(0, Some(12.0), None, None, 5000, 5000, T);
        assert!(!never.degraded_met && !never.healthy_met && !never.all_met);

        let partial = FaultTargets::judge(0, Some(12.0), Some(60.0), Some(300.0), 4990, 5000, T);
        assert!(!partial.resync_met && !partial.all_met);
        assert!((partial.resync_percent - 99.8).abs() < 1e-9);
    }
}

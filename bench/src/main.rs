//! `keepalive-bench`: load benchmark for the keepalive server.
//!
//! `load` compares session keepalive (`GET /api/v1/keepalive/` with a real
//! session cookie) against the cheapest endpoint, `/livez`, on the same server
//! in the same run, so the ratio says what sessions cost regardless of how
//! fast or busy the machine is. It is a benchmark, not a test: it reports
//! figures and verdicts, and fails only when it cannot measure (or, with
//! `--check`, when a target is missed).
//!
//! `load` runs two phases: closed-loop saturation (the throughput ratio) and
//! a fixed, open-loop request rate (latency, corrected for coordinated
//! omission). `fault` keeps a fixed-rate keepalive load on a Redis-backed
//! server while the bench kills its redis-server and starts it again empty.
//! `check` runs the fault-injecting checker of the session invariants over
//! several instances, once per seed. `populate` and `keep` are the load of the fleet
//! benchmark (`bench/fleet.sh`): sessions through a load balancer, then a fixed-rate
//! keepalive load while the script restarts the instances behind it.

mod check;
mod client;
mod fault;
mod fleet;
mod load;
mod openloop;
mod report;
mod server;
mod stats;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use crate::load::{Endpoint, PhaseStats, PhaseTiming, SessionSource, Timeouts};
use crate::report::{FixedRate, Machine, Medians, Report, Round, RunConfig};
use crate::server::{Server, ServerConfig};
use crate::target::Target;
use keepalive_testkit::redis::RedisServer;

/// Exit code when `--check` is given and a target is missed, distinct from
/// a failure to measure (1).
const EXIT_TARGET_MISSED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "keepalive-bench",
    version,
    about = "Load benchmark for the keepalive server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Keepalive vs /livez: throughput at saturation, latency at a fixed rate, over several rounds.
    Load(LoadArgs),
    /// Fixed-rate keepalive load while the bench kills Redis and starts it again empty.
    Fault(fault::FaultArgs),
    /// Simulated users on several instances through seeded faults, judged against the session invariants.
    Check(check::CheckArgs),
    /// Creates sessions through a load balancer, keeps each alive a few times, saves their cookies.
    Populate(fleet::PopulateArgs),
    /// Fixed-rate keepalives over saved sessions for a set time, every failure recorded.
    Keep(fleet::KeepArgs),
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Server binary to start on a free loopback port (e.g. target/release/keepalive).
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    server_bin: Option<PathBuf>,

    /// Argument for the started server (e.g. a subcommand); repeatable, in order.
    #[arg(
        long = "server-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "server_bin"
    )]
    server_args: Vec<String>,

    /// Benchmark an already running server instead; loopback only
    /// (http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT).
    // The text is clap's help, printed as written: `[::1]` is an address, not a doc link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long)]
    url: Option<String>,

    /// Extra environment for the started server, KEY=VALUE; repeatable
    /// (e.g. --server-env REDIS_URL=redis://127.0.0.1:6379).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = server::parse_env_pair, requires = "server_bin")]
    server_env: Vec<(String, String)>,

    /// Concurrent keep-alive connections, one closed-loop worker each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connections: u16,

    /// Distinct sessions to create; each connection cycles through its own slice.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sessions: u32,

    /// Measured time per endpoint per round.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Unmeasured time before each measured window (connections open, caches warm).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Rounds; each runs both endpoints, alternating which goes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,

    /// Limit for one request, response body included.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// Limit for opening one connection.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// How long the started server may take to answer /readyz with 200.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,

    /// Grace time between SIGTERM and SIGKILL when stopping the started server.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,

    /// Session cookie name to take from Set-Cookie (default: the first cookie set).
    #[arg(long)]
    cookie_name: Option<String>,

    /// Create the sessions by `POST` to this page of an application (its login, answering 200
    /// with its session cookie) instead of keepalive's `POST /api/v1/session`: for keepalive
    /// serving an Express application's sessions (loopback only, like --url).
    #[arg(long, value_name = "URL")]
    login_url: Option<String>,

    /// Charge this process's CPU time (user + system) per response, as for a server the bench
    /// starts: for a server already running at --url (keepalive or another application).
    #[arg(long, value_name = "PID", requires = "url")]
    server_pid: Option<u32>,

    /// Charge this redis-server's CPU time per response, as with --redis: for a Redis the
    /// bench did not start.
    #[arg(long, value_name = "PID", conflicts_with = "redis")]
    redis_pid: Option<u32>,

    /// Tokio worker threads for the load generator (default: all cores, shared with the server).
    #[arg(long)]
    client_threads: Option<usize>,

    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Fixed-rate phase: total requests per second over all connections
    /// (default: --rate-fraction of this run's median /livez saturation throughput).
    #[arg(long, conflicts_with = "rate_fraction")]
    rate: Option<f64>,

    /// Fixed-rate phase: fraction of the measured /livez saturation throughput to offer.
    #[arg(long, default_value_t = 0.25)]
    rate_fraction: f64,

    /// Fixed-rate rounds (default: --rounds); 0 skips the phase (p99 is then judged at saturation).
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=100))]
    latency_rounds: Option<u16>,

    /// Measured time per endpoint per fixed-rate round (default: --duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_duration: Option<Duration>,

    /// Start a throw-away redis-server on a free loopback port and give the
    /// server its REDIS_URL (targets become ratio >= 0.5, p99 < 3 ms).
    #[arg(long, requires = "server_bin")]
    redis: bool,

    /// redis-server binary for --redis.
    #[arg(long, default_value = "redis-server")]
    redis_server_bin: PathBuf,

    /// Target: keepalive throughput at least this fraction of /livez
    /// (default 0.6; 0.5 with Redis).
    #[arg(long)]
    min_ratio: Option<f64>,

    /// Target: keepalive p99 latency below this many milliseconds at the
    /// fixed rate (default 2; 3 with Redis).
    #[arg(long)]
    max_p99_ms: Option<f64>,

    /// Exit with status 3 when a target is missed (default: report only).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client_threads = match &cli.command {
        Command::Load(a) => a.client_threads,
        Command::Fault(a) => a.client_threads,
        Command::Check(a) => a.client_threads,
        Command::Populate(a) => a.through.client_threads,
        Command::Keep(a) => a.through.client_threads,
    };
    let threads = client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Load(args) => runtime.block_on(load_command(args, threads)),
        Command::Fault(args) => runtime.block_on(fault::command(args, threads)),
        Command::Check(args) => runtime.block_on(check::command(args)),
        Command::Populate(args) => runtime.block_on(fleet::populate(args)),
        Command::Keep(args) => runtime.block_on(fleet::keep(args)),
    };
    match outcome {
        Ok(outcome) if outcome.check && !outcome.all_met => ExitCode::from(EXIT_TARGET_MISSED),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `main` needs back to choose the exit code.
pub struct Outcome {
    pub all_met: bool,
    pub check: bool,
}

/// Runs the load benchmark, always stopping a server (and redis-server) it
/// started, whether the run succeeds, fails or is interrupted by SIGINT/SIGTERM.
async fn load_command(args: LoadArgs, threads: usize) -> anyhow::Result<Outcome> {
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut server_slot: Option<Server> = None;
    let mut redis_slot: Option<RedisServer> = None;
    let result = tokio::select! {
        r = run_load(&args, threads, &mut server_slot, &mut redis_slot) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("interrupted (SIGTERM)")),
    };
    if let Some(server) = server_slot.take() {
        // A second Ctrl-C (or SIGTERM) skips the server's graceful shutdown.
        let impatient = async {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        };
        match server.stop(impatient).await {
            Ok(status) if !status.success() && result.is_ok() => {
                eprintln!("note: server exited with {status} after SIGTERM");
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: stopping the server: {e:#}"),
        }
    }
    // After the server, so its shutdown does not see Redis vanish first.
    if let Some(mut redis) = redis_slot.take() {
        redis.kill();
    }
    let report = result?;
    // The table first: the figures are on screen even if the file cannot be written.
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serialise report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("write JSON report to {}", path.display()))?;
    }
    Ok(Outcome {
        all_met: report.targets.all_met,
        check: args.check,
    })
}

/// Processes the bench did not start whose CPU time it charges per response
/// (`--server-pid`, `--redis-pid`).
#[derive(Debug, Clone, Copy, Default)]
struct Watched {
    server: Option<u32>,
    redis: Option<u32>,
}

/// CPU time used so far by the server, the generator and redis-server.
struct CpuMark {
    server: Option<Duration>,
    client: Option<Duration>,
    redis: Option<Duration>,
}

impl CpuMark {
    fn now(server: Option<&Server>, redis: Option<&RedisServer>, watched: Watched) -> Self {
        let of_pid = |pid: u32| server::process_cpu_time(&pid.to_string());
        Self {
            server: match server {
                Some(server) => server.cpu_time(),
                None => watched.server.and_then(of_pid),
            },
            client: server::process_cpu_time("self"),
            redis: match redis.and_then(RedisServer::pid) {
                Some(pid) => of_pid(pid),
                None => watched.redis.and_then(of_pid),
            },
        }
    }

    /// Fills in the CPU-per-response figures of `stats` from two marks.
    fn charge(&self, after: &CpuMark, stats: &mut PhaseStats) {
        let responses = stats.responses_total;
        let per_response = |before: Option<Duration>, after: Option<Duration>| {
            let used = after?.checked_sub(before?)?.as_secs_f64() * 1e6;
            (responses > 0).then(|| used / responses as f64)
        };
        stats.server_cpu_us_per_response = per_response(self.server, after.server);
        stats.client_cpu_us_per_response = per_response(self.client, after.client);
        stats.redis_cpu_us_per_response = per_response(self.redis, after.redis);
    }
}

/// The benchmark proper; a started server (and redis-server) is parked in
/// the slots so the caller can stop it even if this future is dropped half-way.
async fn run_load(
    args: &LoadArgs,
    threads: usize,
    server_slot: &mut Option<Server>,
    redis_slot: &mut Option<RedisServer>,
) -> anyhow::Result<Report> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut machine = Machine::detect();
    let connections = usize::from(args.connections);
    let sessions = usize::try_from(args.sessions).context("--sessions too large")?;
    if sessions < connections {
        bail!("--sessions ({sessions}) must be at least --connections ({connections})");
    }
    let with_redis = args.redis || args.server_env.iter().any(|(k, _)| k == "REDIS_URL");
    let min_ratio = args.min_ratio.unwrap_or(if with_redis { 0.5 } else { 0.6 });
    let max_p99_ms = args
        .max_p99_ms
        .unwrap_or(if with_redis { 3.0 } else { 2.0 });
    if !(min_ratio.is_finite() && max_p99_ms.is_finite()) {
        bail!("--min-ratio and --max-p99-ms must be finite numbers");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0))
        || !(args.rate_fraction.is_finite() && args.rate_fraction > 0.0)
    {
        bail!("--rate and --rate-fraction must be positive numbers");
    }
    let timeouts = Timeouts {
        connect: args.connect_timeout,
        request: args.request_timeout,
    };

    let (target, target_desc) = match (&args.server_bin, &args.url) {
        (Some(bin), _) => {
            let mut env = args.server_env.clone();
            if args.redis {
                if env.iter().any(|(k, _)| k == "REDIS_URL") {
                    bail!(
                        "--redis starts its own Redis: do not also give --server-env REDIS_URL=..."
                    );
                }
                eprintln!("starting {} ...", args.redis_server_bin.display());
                // Blocks while redis-server starts: nothing else runs yet.
                let redis = redis_slot.insert(RedisServer::start_of(&args.redis_server_bin));
                eprintln!("redis-server ready on 127.0.0.1:{}", redis.port());
                env.push(("REDIS_URL".to_owned(), redis.url()));
            }
            eprintln!("starting {} ...", bin.display());
            let cfg = ServerConfig {
                bin: bin.clone(),
                args: args.server_args.clone(),
                env,
                ready_timeout: args.ready_timeout,
                stop_timeout: args.stop_timeout,
            };
            let server = server_slot.insert(Server::start(&cfg).await?);
            eprintln!("server ready on {}", server.target.authority);
            (server.target.clone(), bin.display().to_string())
        }
        (None, Some(url)) => {
            let target = Target::parse_loopback_url(url)?;
            server::probe_ready(&target)
                .await
                .with_context(|| format!("server at {url} is not ready"))?;
            (target, url.clone())
        }
        (None, None) => bail!("give --server-bin or --url"),
    };

    let watched = Watched {
        server: args.server_pid,
        redis: args.redis_pid,
    };
    for (flag, pid) in [
        ("--server-pid", watched.server),
        ("--redis-pid", watched.redis),
    ] {
        if let Some(pid) = pid
            && server::process_cpu_time(&pid.to_string()).is_none()
        {
            bail!("{flag} {pid}: no such process whose CPU time can be read");
        }
    }

    let source = match &args.login_url {
        None => SessionSource::Keepalive,
        Some(url) => {
            let (login, path) =
                Target::parse_loopback_page(url).with_context(|| format!("--login-url {url:?}"))?;
            SessionSource::Login(login, path)
        }
    };
    eprintln!("creating {sessions} sessions over {connections} connections ...");
    let (mut pool, setup) = load::create_sessions(
        &target,
        &source,
        sessions,
        connections,
        args.cookie_name.as_deref(),
        timeouts,
    )
    .await?;
    if setup.distinct < setup.created {
        eprintln!(
            "warning: only {} of {} session cookies are distinct",
            setup.distinct, setup.created
        );
    }

    // Phase 1: closed-loop saturation, for the throughput ratio.
    let timing = PhaseTiming {
        connections,
        warmup: args.warmup,
        duration: args.duration,
    };
    let mut rounds = Vec::with_capacity(usize::from(args.rounds));
    for round in 1..=usize::from(args.rounds) {
        let label = format!("saturation round {round}/{}", args.rounds);
        let kind = PhaseKind::Saturation;
        let (order, livez, keepalive) = run_round(
            round,
            &label,
            kind,
            (&target, timing, timeouts),
            (server_slot, redis_slot, watched),
            &mut pool,
        )
        .await?;
        rounds.push(Round::new(round, order, livez, keepalive));
    }

    // Phase 2: a fixed rate well below saturation, for latency.
    let latency_rounds = args.latency_rounds.unwrap_or(args.rounds);
    let mut fixed_rate = None;
    if latency_rounds > 0 {
        let saturated_livez = Medians::of(&rounds).livez.requests_per_sec;
        let (rate, rate_source) = match (args.rate, saturated_livez) {
            (Some(rate), _) => (rate, "--rate".to_owned()),
            (None, Some(livez)) if livez > 0.0 => (
                (livez * args.rate_fraction).round().max(1.0),
                format!(
                    "{:.0} % of the median /livez saturation throughput, {livez:.0} req/s",
                    args.rate_fraction * 100.0
                ),
            ),
            _ => bail!("no /livez throughput measured to derive the fixed rate from; give --rate"),
        };
        let duration = args.latency_duration.unwrap_or(args.duration);
        let timing = PhaseTiming {
            connections,
            warmup: args.warmup,
            duration,
        };
        let mut fixed_rounds = Vec::with_capacity(usize::from(latency_rounds));
        for round in 1..=usize::from(latency_rounds) {
            let label = format!("fixed-rate round {round}/{latency_rounds} at {rate:.0} req/s");
            let kind = PhaseKind::FixedRate(rate);
            let (order, livez, keepalive) = run_round(
                round,
                &label,
                kind,
                (&target, timing, timeouts),
                (server_slot, redis_slot, watched),
                &mut pool,
            )
            .await?;
            fixed_rounds.push(Round::new(round, order, livez, keepalive));
        }
        fixed_rate = Some(FixedRate {
            rate,
            rate_source,
            warmup_secs: args.warmup.as_secs_f64(),
            duration_secs: duration.as_secs_f64(),
            median: Medians::of(&fixed_rounds),
            rounds: fixed_rounds,
        });
    }

    machine.loadavg_at_end = report::loadavg();
    let mut server_env_keys: Vec<String> = args.server_env.iter().map(|(k, _)| k.clone()).collect();
    if args.redis {
        server_env_keys.push("REDIS_URL (--redis)".to_owned());
    }
    let config = RunConfig {
        target: target_desc,
        started_server: args.server_bin.is_some(),
        server_args: args.server_args.clone(),
        server_env_keys,
        connections,
        sessions,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
        rounds: usize::from(args.rounds),
        client_threads: threads,
    };
    Ok(Report::build(
        started_at, machine, config, setup, rounds, fixed_rate, min_ratio, max_p99_ms,
    ))
}

/// The load model of a phase.
#[derive(Debug, Clone, Copy)]
enum PhaseKind {
    /// Closed loop: every connection sends as fast as answers come back.
    Saturation,
    /// Open loop at this many requests per second in total.
    FixedRate(f64),
}

/// One round: both endpoints, the order alternating by round so neither
/// endpoint always runs on a warmer server, with CPU accounting.
async fn run_round(
    round: usize,
    label: &str,
    kind: PhaseKind,
    (target, timing, timeouts): (&Target, PhaseTiming, Timeouts),
    (server_slot, redis_slot, watched): (&mut Option<Server>, &Option<RedisServer>, Watched),
    pool: &mut load::SessionPool,
) -> anyhow::Result<([Endpoint; 2], PhaseStats, PhaseStats)> {
    let order = if round % 2 == 1 {
        [Endpoint::Livez, Endpoint::Keepalive]
    } else {
        [Endpoint::Keepalive, Endpoint::Livez]
    };
    let mut livez = None;
    let mut keepalive = None;
    for endpoint in order {
        eprintln!(
            "{label}: {} for {:?} + {:?} warm-up ...",
            endpoint.name(),
            timing.duration,
            timing.warmup
        );
        let before = CpuMark::now(server_slot.as_ref(), redis_slot.as_ref(), watched);
        let mut stats = match kind {
            PhaseKind::Saturation => {
                load::run_phase(target, endpoint, timing, timeouts, pool).await?
            }
            PhaseKind::FixedRate(rate) => {
                openloop::phase(target, endpoint, rate, timing, timeouts, pool).await?
            }
        };
        if let Some(server) = server_slot.as_mut() {
            server.ensure_running()?;
        }
        let after = CpuMark::now(server_slot.as_ref(), redis_slot.as_ref(), watched);
        before.charge(&after, &mut stats);
        match endpoint {
            Endpoint::Livez => livez = Some(stats),
            Endpoint::Keepalive => keepalive = Some(stats),
        }
    }
    let (Some(livez), Some(keepalive)) = (livez, keepalive) else {
        bail!("round {round} did not run both endpoints");
    };
    Ok((order, livez, keepalive))
}

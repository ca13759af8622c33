//! `keepalive-bench`: load benchmark for the keepalive server.
//!
//! `load` compares session keepalive (`GET /api/v1/keepalive/` with a real
//! session cookie) against the cheapest endpoint, `/livez`, on the same server
//! in the same run, so the ratio says what sessions cost regardless of how
//! fast or busy the machine is. It is a benchmark, not a test: it reports
//! figures and verdicts, and fails only when it cannot measure (or, with
//! `--check`, when a target is missed).
//!
//! Other scenarios (e.g. a store fault mid-run) are meant to become further
//! subcommands reusing `server`, `load` and `report`.

mod client;
mod load;
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

use crate::load::{Endpoint, PhaseTiming, Timeouts};
use crate::report::{Machine, Report, Round, RunConfig};
use crate::server::{Server, ServerConfig};
use crate::target::Target;

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
    /// Keepalive vs /livez throughput and latency over several rounds.
    Load(LoadArgs),
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

    /// Tokio worker threads for the load generator (default: all cores, shared with the server).
    #[arg(long)]
    client_threads: Option<usize>,

    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Target: keepalive throughput at least this fraction of /livez.
    #[arg(long, default_value_t = 0.6)]
    min_ratio: f64,

    /// Target: keepalive p99 latency below this many milliseconds.
    #[arg(long, default_value_t = 2.0)]
    max_p99_ms: f64,

    /// Exit with status 3 when a target is missed (default: report only).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Load(args) = cli.command;
    let threads = args
        .client_threads
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
    match runtime.block_on(load_command(args, threads)) {
        Ok(outcome) if outcome.check && !outcome.all_met => ExitCode::from(EXIT_TARGET_MISSED),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `main` needs back to choose the exit code.
struct Outcome {
    all_met: bool,
    check: bool,
}

/// Runs the load benchmark, always stopping a server it started, whether the
/// run succeeds, fails or is interrupted by SIGINT/SIGTERM.
async fn load_command(args: LoadArgs, threads: usize) -> anyhow::Result<Outcome> {
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut server_slot: Option<Server> = None;
    let result = tokio::select! {
        r = run_load(&args, threads, &mut server_slot) => r,
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

/// The benchmark proper; a started server is parked in `server_slot` so the
/// caller can stop it even if this future is dropped half-way.
async fn run_load(
    args: &LoadArgs,
    threads: usize,
    server_slot: &mut Option<Server>,
) -> anyhow::Result<Report> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut machine = Machine::detect();
    let connections = usize::from(args.connections);
    let sessions = usize::try_from(args.sessions).context("--sessions too large")?;
    if sessions < connections {
        bail!("--sessions ({sessions}) must be at least --connections ({connections})");
    }
    if !(args.min_ratio.is_finite() && args.max_p99_ms.is_finite()) {
        bail!("--min-ratio and --max-p99-ms must be finite numbers");
    }
    let timeouts = Timeouts {
        connect: args.connect_timeout,
        request: args.request_timeout,
    };

    let (target, target_desc) = match (&args.server_bin, &args.url) {
        (Some(bin), _) => {
            eprintln!("starting {} ...", bin.display());
            let cfg = ServerConfig {
                bin: bin.clone(),
                args: args.server_args.clone(),
                env: args.server_env.clone(),
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

    eprintln!("creating {sessions} sessions over {connections} connections ...");
    let (mut pool, setup) = load::create_sessions(
        &target,
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

    let timing = PhaseTiming {
        connections,
        warmup: args.warmup,
        duration: args.duration,
    };
    let mut rounds = Vec::with_capacity(usize::from(args.rounds));
    for round in 1..=usize::from(args.rounds) {
        // Alternate the order so neither endpoint always runs on a warmer server.
        let order = if round % 2 == 1 {
            [Endpoint::Livez, Endpoint::Keepalive]
        } else {
            [Endpoint::Keepalive, Endpoint::Livez]
        };
        let mut livez = None;
        let mut keepalive = None;
        for endpoint in order {
            eprintln!(
                "round {round}/{}: {} for {:?} + {:?} warm-up ...",
                args.rounds,
                endpoint.name(),
                args.duration,
                args.warmup
            );
            let server_cpu_before = server_slot.as_ref().and_then(Server::cpu_time);
            let client_cpu_before = server::process_cpu_time("self");
            let mut stats = load::run_phase(&target, endpoint, timing, timeouts, &mut pool).await?;
            let client_cpu_after = server::process_cpu_time("self");
            let mut server_cpu_after = None;
            if let Some(server) = server_slot.as_mut() {
                server.ensure_running()?;
                server_cpu_after = server.cpu_time();
            }
            let responses = stats.responses_total;
            let per_response = |before: Option<Duration>, after: Option<Duration>| {
                let used = after?.checked_sub(before?)?.as_secs_f64() * 1e6;
                (responses > 0).then(|| used / responses as f64)
            };
            stats.server_cpu_us_per_response = per_response(server_cpu_before, server_cpu_after);
            stats.client_cpu_us_per_response = per_response(client_cpu_before, client_cpu_after);
            match endpoint {
                Endpoint::Livez => livez = Some(stats),
                Endpoint::Keepalive => keepalive = Some(stats),
            }
        }
        let (Some(livez), Some(keepalive)) = (livez, keepalive) else {
            bail!("round {round} did not run both endpoints");
        };
        rounds.push(Round::new(round, order, livez, keepalive));
    }

    machine.loadavg_at_end = report::loadavg();
    let config = RunConfig {
        target: target_desc,
        started_server: args.server_bin.is_some(),
        server_args: args.server_args.clone(),
        server_env_keys: args.server_env.iter().map(|(k, _)| k.clone()).collect(),
        connections,
        sessions,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
        rounds: usize::from(args.rounds),
        client_threads: threads,
    };
    Ok(Report::build(
        started_at,
        machine,
        config,
        setup,
        rounds,
        args.min_ratio,
        args.max_p99_ms,
    ))
}

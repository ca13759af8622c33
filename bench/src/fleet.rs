//! `populate` and `keep`: the two halves of the fleet benchmark's load (`bench/fleet.sh`),
//! split so that the script can measure the instances and restart them between and during.
//!
//! `populate` creates sessions through a load balancer, then sends each of them a number of
//! keepalives (closed loop), as browsers would: behind round-robin routing each keepalive may
//! land on another instance, which then keeps a copy; behind sticky routing all land on one.
//! It writes the session cookies (followed through rotations) to a file, one per line.
//!
//! `keep` reads that file and sends keepalives at a fixed rate over those sessions for a set
//! time, recording every request: the script restarts the instances one by one meanwhile, and
//! every keepalive that did not answer 200 is a failure a user would have seen (none is
//! retried by the bench; nginx may retry on another instance, as it would for a browser).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use hyper::header::HeaderValue;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Outcome as ExitOutcome;
use crate::fault::{self, WindowStats};
use crate::load::{
    self, Counters, Endpoint, Outcome, SessionPool, SessionSource, Timeouts, Worker,
};
use crate::openloop::{self, Schedule};
use crate::report::Machine;
use crate::target::Target;

/// Where both halves send their load, and how.
#[derive(Args, Debug)]
pub struct Through {
    /// The load balancer (or one instance) to go through; loopback only.
    #[arg(long)]
    url: String,

    /// Keep-alive connections the load is spread over, one worker each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connections: u16,

    /// Limit for one request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// Limit for opening one connection.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Tokio worker threads for the load generator (default: all cores).
    #[arg(long)]
    pub client_threads: Option<usize>,
}

impl Through {
    fn target(&self) -> anyhow::Result<Target> {
        Target::parse_loopback_url(&self.url)
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            request: self.request_timeout,
        }
    }
}

#[derive(Args, Debug)]
pub struct PopulateArgs {
    #[command(flatten)]
    pub through: Through,

    /// Sessions to create.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    sessions: u32,

    /// Keepalives sent to each session after it was created.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=100))]
    passes: u16,

    /// Where to write the session cookies, one `name=value` per line.
    #[arg(long, value_name = "FILE")]
    cookies: PathBuf,

    /// Session cookie name to take from Set-Cookie (default: the first cookie set).
    #[arg(long)]
    cookie_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct KeepArgs {
    #[command(flatten)]
    pub through: Through,

    /// The session cookies written by `populate`.
    #[arg(long, value_name = "FILE")]
    cookies: PathBuf,

    /// Total keepalives per second (fixed rate, open loop).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,

    /// How long the load runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Exit with status 3 when a keepalive failed.
    #[arg(long)]
    check: bool,
}

/// What `populate` did.
#[derive(Debug, Serialize)]
pub struct PopulateReport {
    pub tool: &'static str,
    pub scenario: &'static str,
    pub machine: Machine,
    pub sessions: load::SessionSetup,
    pub created_per_sec: f64,
    pub passes: u16,
    pub keepalives: u64,
    pub keepalive_secs: f64,
    pub keepalives_per_sec: f64,
    /// Keepalives that did not answer 200 (each is a failure), by kind.
    pub failed: u64,
    pub unexpected_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

/// What `keep` saw.
#[derive(Debug, Serialize)]
pub struct KeepReport {
    pub tool: &'static str,
    pub scenario: &'static str,
    pub machine: Machine,
    /// When the first keepalive was due, in seconds since the Unix epoch: the script's own
    /// event times (each restart) are on the same clock.
    pub started_unix_s: f64,
    pub sessions: usize,
    pub connections: usize,
    pub rate: f64,
    /// Every scheduled keepalive: counts, failures by kind, corrected latency.
    pub all: WindowStats,
    /// Failed keepalives per second of the run (only seconds with failures).
    pub failed_by_second: BTreeMap<u64, u64>,
    pub cookie_updates: u64,
    pub reconnects: u64,
    pub first_error: Option<String>,
}

/// Creates the sessions, sends each its keepalives, writes the cookies.
pub async fn populate(args: PopulateArgs) -> anyhow::Result<ExitOutcome> {
    let target = args.through.target()?;
    let timeouts = args.through.timeouts();
    let connections = usize::from(args.through.connections);
    let (mut pool, setup) = load::create_sessions(
        &target,
        &SessionSource::Keepalive,
        args.sessions as usize,
        connections,
        args.cookie_name.as_deref(),
        timeouts,
    )
    .await?;
    let created_per_sec = setup.created as f64 / setup.seconds.max(f64::EPSILON);

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..connections {
        let cookies = pool.take(index, Endpoint::Keepalive)?;
        let sends = cookies.len() * usize::from(args.passes);
        let w = Worker::new(target.clone(), Endpoint::Keepalive, timeouts, cookies);
        tasks.spawn(send_each(index, w, sends));
    }
    let mut counters = Counters::default();
    let mut sent = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, w, n) = joined.context("keepalive worker panicked")??;
        sent += n;
        counters.merge(w.counters);
        pool.put_back(index, Endpoint::Keepalive, w.cookies);
    }
    let keepalive_secs = started.elapsed().as_secs_f64();
    write_cookies(&args.cookies, &pool)?;

    let report = PopulateReport {
        tool: "keepalive-bench",
        scenario: "populate",
        machine: Machine::detect(),
        created_per_sec,
        sessions: setup,
        passes: args.passes,
        keepalives: sent,
        keepalive_secs,
        keepalives_per_sec: sent as f64 / keepalive_secs.max(f64::EPSILON),
        failed: counters.errors(),
        unexpected_status: counters.unexpected_status,
        transport_errors: counters.transport_errors,
        first_error: counters.first_error,
    };
    println!(
        "populate: {} sessions created in {:.1} s ({:.0}/s); {} keepalives in {:.1} s ({:.0}/s), {} failed",
        report.sessions.created,
        report.sessions.seconds,
        report.created_per_sec,
        report.keepalives,
        report.keepalive_secs,
        report.keepalives_per_sec,
        report.failed
    );
    write_json(args.through.json.as_ref(), &report)?;
    if report.failed > 0 {
        eprintln!(
            "warning: {} keepalives failed while populating (first: {}); the server logs say why",
            report.failed,
            report.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitOutcome {
        all_met: report.failed == 0,
        check: false,
    })
}

/// One connection sending `sends` keepalives over its sessions in turn. Bounded: each
/// request has its timeout, and a connection that cannot be opened fails the run.
async fn send_each(
    index: usize,
    mut w: Worker,
    sends: usize,
) -> anyhow::Result<(usize, Worker, u64)> {
    let mut sent = 0;
    for _ in 0..sends {
        // Opening a connection has its own timeout; a minute covers any retry within it.
        let deadline = Instant::now() + Duration::from_secs(60);
        if !w.ensure_conn(deadline).await {
            bail!(
                "cannot open a connection: {}",
                w.counters.first_error.as_deref().unwrap_or("-")
            );
        }
        w.exchange().await;
        sent += 1;
    }
    Ok((index, w, sent))
}

fn write_cookies(path: &PathBuf, pool: &SessionPool) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("create the cookie file {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for cookie in pool.all() {
        out.write_all(cookie.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("write the cookie file {}", path.display()))
}

fn read_cookies(path: &PathBuf) -> anyhow::Result<Vec<HeaderValue>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the cookie file {}", path.display()))?;
    text.lines()
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| {
            HeaderValue::from_str(line)
                .with_context(|| format!("{}: line {} is not a cookie", path.display(), i + 1))
        })
        .collect()
}

fn write_json(path: Option<&PathBuf>, report: &impl Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(report).context("serialise report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("write JSON report to {}", path.display()))?;
    }
    Ok(())
}

/// Sends keepalives at a fixed rate over the saved sessions and reports every failure.
pub async fn keep(args: KeepArgs) -> anyhow::Result<ExitOutcome> {
    let target = args.through.target()?;
    let timeouts = args.through.timeouts();
    let connections = usize::from(args.through.connections);
    let cookies = read_cookies(&args.cookies)?;
    let sessions = cookies.len();
    let mut pool = SessionPool::from_cookies(cookies, connections)?;
    let start = std::time::Instant::now() + Duration::from_millis(20);
    let started_unix_s = (SystemTime::now() + Duration::from_millis(20))
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let stop = start + args.duration;
    let schedule = Schedule {
        start,
        rate: args.rate,
        connections,
    };
    let run = openloop::run(
        &target,
        Endpoint::Keepalive,
        schedule,
        stop,
        timeouts,
        &mut pool,
    )
    .await?;
    let samples: Vec<_> = run.samples.iter().collect();
    let all = fault::window_stats(&samples, args.duration.as_secs_f64())?;
    let mut failed_by_second = BTreeMap::new();
    for s in run.samples.iter().filter(|s| s.outcome != Outcome::Ok) {
        let second = s.intended.saturating_duration_since(start).as_secs();
        *failed_by_second.entry(second).or_default() += 1;
    }
    let report = KeepReport {
        tool: "keepalive-bench",
        scenario: "keep",
        machine: Machine::detect(),
        started_unix_s,
        sessions,
        connections,
        rate: args.rate,
        all,
        failed_by_second,
        cookie_updates: run.counters.cookie_updates,
        reconnects: run.counters.reconnects,
        first_error: run.counters.first_error,
    };
    let p99 = report.all.latency.as_ref().map(|l| l.p99_ms);
    println!(
        "keep: {} keepalives over {} sessions at {}/s: {} ok, {} failed {:?}; p99 {} ms",
        report.all.requests,
        report.sessions,
        report.rate,
        report.all.ok,
        report.all.failed,
        report.all.failures,
        p99.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"))
    );
    write_json(args.through.json.as_ref(), &report)?;
    Ok(ExitOutcome {
        all_met: report.all.failed == 0,
        check: args.check,
    })
}

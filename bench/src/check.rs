//! `check`: the fault-injecting checker of the session invariants, at length.
//!
//! Runs the checker of `keepalive_testkit::check` once per seed (three instances over one
//! Redis, simulated users, a seeded schedule of every kind of fault, the history judged
//! against the invariants), prints each run's summary as it ends and, after several runs,
//! their sum per invariant and per kind of fault. The test command runs the same checker in
//! a short form (`tests/it/checker.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use keepalive_testkit::check::{self, Config, Entry, Summary};
use tokio::signal::unix::{SignalKind, signal};

use crate::Outcome;
use crate::server;

/// How the users reach the instances, per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EntryArg {
    /// Straight to the instances, in turn.
    Direct,
    /// Through a real nginx in front of them, round-robin (the backend API still goes
    /// straight).
    Nginx,
    /// Through a real nginx routing by the session cookie, as deploy/nginx/keepalive.conf
    /// ships.
    NginxSticky,
    /// Direct for the first seed, nginx for the second, nginx-sticky for the third, and so
    /// on.
    Alternate,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The keepalive binary to run the instances of (e.g. target/release/keepalive).
    #[arg(long)]
    server_bin: PathBuf,

    /// redis-server binary; started on a free loopback port, never 6379.
    #[arg(long, default_value = "redis-server")]
    redis_server_bin: PathBuf,

    /// nginx binary (default: nginx on PATH, else /usr/sbin/nginx).
    #[arg(long)]
    nginx_bin: Option<PathBuf>,

    /// How the users' browser requests reach the instances.
    #[arg(long, value_enum, default_value_t = EntryArg::Alternate)]
    entry: EntryArg,

    /// Seeds, one run each, in order: a list (1,2,3), a range (1-5) or both (1-3,7).
    #[arg(long, default_value = "1", value_parser = parse_seeds)]
    seeds: Seeds,

    /// Instances over the one Redis.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    instances: u16,

    /// Simulated people, two devices (browsers) each.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=500))]
    persons: u16,

    /// Faults of each kind per run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    faults_per_kind: u16,

    /// The instances' tick, at which the users keep their sessions alive.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    tick: Duration,

    /// The instances' idle timeout; the redis-killed-past-idle faults keep Redis down this
    /// long and 1 to 4 s more, each.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// The instances' absolute lifetime, at most 10 minutes; the redis-killed-past-lifetime
    /// faults keep Redis down this long and 1 to 4 s more, each.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    absolute_lifetime: Duration,

    /// Users run this long before the first fault.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// And this long after the last fault's recovery, before the last check.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    tail: Duration,

    /// Every instance must report healthy this soon after a fault ends.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    healthy_within: Duration,

    /// How long the checker waits for that at most before it goes on.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    healthy_wait: Duration,

    /// Leeway for clock readings when a request is judged against an expiry.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    slack: Duration,

    /// How long a logout may take to reach the other instances, counted only next to a
    /// Redis fault (docs/redis.md's outage limits).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    logout_propagation: Duration,

    /// How long after a Redis fault ends an instance may still accept a session past its
    /// idle expiry (0: never, as the failover judges copies by what Redis last said).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    outage_grace: Duration,

    /// Extra environment for the instances, KEY=VALUE; repeatable.
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = server::parse_env_pair)]
    server_env: Vec<(String, String)>,

    /// Keep each run's directory (instance logs and data, nginx's logs) and print where.
    #[arg(long)]
    keep_dir: bool,

    /// Write every run's report and the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Exit with status 3 when an invariant was violated (default: report only).
    #[arg(long)]
    check: bool,

    /// Tokio worker threads for the checker (default: all cores, shared with the instances).
    #[arg(long)]
    pub client_threads: Option<usize>,
}

/// The seeds to run.
#[derive(Debug, Clone)]
pub struct Seeds(Vec<u64>);

/// Parses `1,2,3`, `1-5` or a mix.
fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let low: u64 = low.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
                let high: u64 = high.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
                if high < low || high - low >= 1000 {
                    return Err(format!("{part:?}: a range of 1 to 1000 seeds, low to high"));
                }
                seeds.extend(low..=high);
            }
            None => seeds.push(part.parse().map_err(|e| format!("{part:?}: {e}"))?),
        }
    }
    if seeds.is_empty() {
        return Err("no seed given".to_owned());
    }
    Ok(Seeds(seeds))
}

impl CheckArgs {
    fn config(&self, seed: u64, nth: usize) -> Config {
        let entry = match self.entry {
            EntryArg::Direct => Entry::Direct,
            EntryArg::Nginx => Entry::Nginx,
            EntryArg::NginxSticky => Entry::NginxSticky,
            EntryArg::Alternate => [Entry::Direct, Entry::Nginx, Entry::NginxSticky][nth % 3],
        };
        Config {
            redis_server_bin: self.redis_server_bin.clone(),
            nginx_bin: self.nginx_bin.clone(),
            entry,
            instances: usize::from(self.instances),
            persons: usize::from(self.persons),
            faults_per_kind: usize::from(self.faults_per_kind),
            tick: self.tick,
            idle_timeout: self.idle_timeout,
            absolute_lifetime: self.absolute_lifetime,
            warmup: self.warmup,
            tail: self.tail,
            healthy_within: self.healthy_within,
            healthy_wait: self.healthy_wait,
            slack: self.slack,
            logout_propagation: self.logout_propagation,
            outage_grace: self.outage_grace,
            server_env: self.server_env.clone(),
            keep_dir: self.keep_dir,
            progress: true,
            ..Config::new(self.server_bin.clone(), seed)
        }
    }
}

/// Runs every seed, stopping everything it started on SIGINT or SIGTERM.
pub async fn command(args: CheckArgs) -> anyhow::Result<Outcome> {
    if !args.server_bin.is_file() {
        bail!("--server-bin {}: no such file", args.server_bin.display());
    }
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut runs = Vec::new();
    for (nth, &seed) in args.seeds.0.iter().enumerate() {
        let config = args.config(seed, nth);
        // Dropping the run on a signal kills every process it started.
        let report = tokio::select! {
            r = check::run(&config) => r.with_context(|| format!("run of seed {seed}"))?,
            _ = sigint.recv() => bail!("interrupted (SIGINT)"),
            _ = sigterm.recv() => bail!("interrupted (SIGTERM)"),
        };
        println!("{}", report.to_table());
        runs.push(report);
    }
    let summary = Summary::new(runs);
    if summary.runs.len() > 1 {
        println!("{}", summary.to_table());
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).context("serialise the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("write the JSON report to {}", path.display()))?;
    }
    Ok(Outcome {
        all_met: summary.total_violations() == 0,
        check: args.check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_lists_and_ranges() {
        assert_eq!(parse_seeds("1-3,7").expect("seeds").0, [1, 2, 3, 7]);
        assert_eq!(parse_seeds("42").expect("seeds").0, [42]);
        assert!(parse_seeds("").is_err());
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("x").is_err());
    }
}

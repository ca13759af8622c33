//! The report: machine facts, per-round and median figures, target verdicts,
//! printed as a table for people and serialised as JSON for tools.
//!
//! Machine facts are part of the report because figures from a shared 2-core
//! box mean little without knowing which box and how busy it was.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::{Endpoint, PhaseStats, SessionSetup};
use crate::stats::{Latency, median};

/// Facts about the machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// 1, 5 and 15 minute load averages when the run started.
    pub loadavg_at_start: String,
    /// The same when the rounds ended: a loaded machine shows up here.
    pub loadavg_at_end: String,
}

impl Machine {
    /// Reads what Linux exposes; unknown fields say so instead of failing the run.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = match read("/proc/sys/kernel/osrelease").trim() {
            "" => "unknown".to_owned(),
            k => k.to_owned(),
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel,
            loadavg_at_start: loadavg(),
            loadavg_at_end: String::new(),
        }
    }
}

/// The 1, 5 and 15 minute load averages, or an empty string if unknown.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the run was set up, echoed into the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Server binary started by the bench, or the URL of an existing server.
    pub target: String,
    pub started_server: bool,
    /// Arguments the started server was given.
    pub server_args: Vec<String>,
    /// Names only: values such as a Redis URL may carry credentials.
    pub server_env_keys: Vec<String>,
    pub connections: usize,
    pub sessions: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub rounds: usize,
    pub client_threads: usize,
}

/// Both endpoints of one round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    /// Which endpoint ran first; alternates so neither always gets a cold or hot start.
    pub order: [Endpoint; 2],
    pub livez: PhaseStats,
    pub keepalive: PhaseStats,
    /// keepalive req/s ÷ livez req/s within this round.
    pub ratio: Option<f64>,
}

impl Round {
    pub fn new(
        round: usize,
        order: [Endpoint; 2],
        livez: PhaseStats,
        keepalive: PhaseStats,
    ) -> Self {
        let ratio = (livez.requests_per_sec > 0.0)
            .then(|| keepalive.requests_per_sec / livez.requests_per_sec);
        Self {
            round,
            order,
            livez,
            keepalive,
            ratio,
        }
    }
}

/// Median of one endpoint over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests_per_sec: Option<f64>,
    pub latency: Option<Latency>,
    /// Median server CPU time per response, in microseconds.
    pub server_cpu_us_per_response: Option<f64>,
    /// Median load-generator CPU time per response, in microseconds.
    pub client_cpu_us_per_response: Option<f64>,
    /// Sum over rounds: any error in any round should be visible.
    pub errors: u64,
}

impl Summary {
    fn of<'a>(phases: impl Iterator<Item = &'a PhaseStats> + Clone) -> Self {
        let latencies: Vec<Latency> = phases.clone().filter_map(|p| p.latency).collect();
        Self {
            requests_per_sec: median(phases.clone().map(|p| p.requests_per_sec).collect()),
            latency: Latency::median_of(&latencies),
            server_cpu_us_per_response: median(
                phases
                    .clone()
                    .filter_map(|p| p.server_cpu_us_per_response)
                    .collect(),
            ),
            client_cpu_us_per_response: median(
                phases
                    .clone()
                    .filter_map(|p| p.client_cpu_us_per_response)
                    .collect(),
            ),
            errors: phases.map(|p| p.errors).sum(),
        }
    }
}

/// The medians that the targets are judged on.
#[derive(Debug, Clone, Serialize)]
pub struct Medians {
    pub livez: Summary,
    pub keepalive: Summary,
    /// Median of the per-round ratios (each taken within one round, so slow
    /// drift of the shared machine cancels out).
    pub ratio: Option<f64>,
}

/// Target thresholds and whether they were met.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    pub min_ratio: f64,
    pub max_keepalive_p99_ms: f64,
    pub ratio_met: bool,
    pub p99_met: bool,
    pub no_errors: bool,
    pub all_met: bool,
}

/// The whole machine-readable result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_at: String,
    pub command: Vec<String>,
    pub machine: Machine,
    pub config: RunConfig,
    pub sessions: SessionSetup,
    pub rounds: Vec<Round>,
    pub median: Medians,
    pub targets: Targets,
}

impl Report {
    /// Computes medians and verdicts from the rounds.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        started_at: String,
        machine: Machine,
        config: RunConfig,
        sessions: SessionSetup,
        rounds: Vec<Round>,
        min_ratio: f64,
        max_p99_ms: f64,
    ) -> Self {
        let median = Medians {
            livez: Summary::of(rounds.iter().map(|r| &r.livez)),
            keepalive: Summary::of(rounds.iter().map(|r| &r.keepalive)),
            ratio: median(rounds.iter().filter_map(|r| r.ratio).collect()),
        };
        let ratio_met = median.ratio.is_some_and(|r| r >= min_ratio);
        let p99_met = median
            .keepalive
            .latency
            .is_some_and(|l| l.p99_ms < max_p99_ms);
        let no_errors = median.keepalive.errors == 0 && median.livez.errors == 0;
        let targets = Targets {
            min_ratio,
            max_keepalive_p99_ms: max_p99_ms,
            ratio_met,
            p99_met,
            no_errors,
            all_met: ratio_met && p99_met && no_errors,
        };
        Self {
            tool: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            started_at,
            command: std::env::args().collect(),
            machine,
            config,
            sessions,
            rounds,
            median,
            targets,
        }
    }

    /// The human-readable form.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let c = &self.config;
        let _ = writeln!(s, "keepalive-bench load, started {}", self.started_at);
        let _ = writeln!(
            s,
            "machine: nproc {}, CPU {}, kernel {}, load average {} at start, {} at end",
            m.nproc, m.cpu_model, m.kernel, m.loadavg_at_start, m.loadavg_at_end
        );
        let env = if c.server_env_keys.is_empty() {
            String::new()
        } else {
            format!(", extra env: {}", c.server_env_keys.join(" "))
        };
        let origin = if c.started_server {
            "started by the bench"
        } else {
            "already running"
        };
        let args = if c.server_args.is_empty() {
            String::new()
        } else {
            format!(" {}", c.server_args.join(" "))
        };
        let _ = writeln!(s, "server:  {}{args} ({origin}{env})", c.target);
        let _ = writeln!(
            s,
            "load:    {} connections, {} client threads, {} sessions ({} distinct, cookie {:?}, created in {:.2} s)",
            c.connections,
            c.client_threads,
            self.sessions.created,
            self.sessions.distinct,
            self.sessions.cookie_name,
            self.sessions.seconds
        );
        let _ = writeln!(
            s,
            "method:  {} rounds of {} s warm-up + {} s measured per endpoint, order alternating",
            c.rounds, c.warmup_secs, c.duration_secs
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<7} {:<10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>10} {:>10}",
            "round",
            "endpoint",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
            "ratio",
            "srv CPU µs",
            "gen CPU µs"
        );
        for r in &self.rounds {
            for (i, endpoint) in r.order.iter().enumerate() {
                let p = match endpoint {
                    Endpoint::Livez => &r.livez,
                    Endpoint::Keepalive => &r.keepalive,
                };
                let ratio = if i == 1 {
                    fmt_opt(r.ratio, 3)
                } else {
                    String::new()
                };
                row(
                    &mut s,
                    &r.round.to_string(),
                    endpoint.name(),
                    &Summary::of(std::iter::once(p)),
                    &ratio,
                );
            }
        }
        let md = &self.median;
        row(&mut s, "median", "livez", &md.livez, "");
        row(
            &mut s,
            "median",
            "keepalive",
            &md.keepalive,
            &fmt_opt(md.ratio, 3),
        );
        let _ = writeln!(s);
        for r in &self.rounds {
            for p in [&r.livez, &r.keepalive] {
                if let Some(e) = &p.first_error {
                    let _ = writeln!(
                        s,
                        "round {} {}: {} errors ({} transport, statuses {:?}); first: {e}",
                        r.round,
                        p.endpoint.name(),
                        p.errors,
                        p.transport_errors,
                        p.unexpected_status
                    );
                }
            }
        }
        let t = &self.targets;
        let verdict = |met: bool| if met { "MET" } else { "MISSED" };
        let _ = writeln!(
            s,
            "keepalive/livez throughput ratio (median of rounds): {}  target >= {:.2}: {}",
            fmt_opt(md.ratio, 3),
            t.min_ratio,
            verdict(t.ratio_met)
        );
        let _ = writeln!(
            s,
            "keepalive p99 (median of rounds): {} ms  target < {:.2} ms: {}",
            fmt_opt(md.keepalive.latency.map(|l| l.p99_ms), 3),
            t.max_keepalive_p99_ms,
            verdict(t.p99_met)
        );
        let _ = writeln!(
            s,
            "errors: keepalive {}, livez {}  target 0: {}",
            md.keepalive.errors,
            md.livez.errors,
            verdict(t.no_errors)
        );
        if let (Some(ka), Some(lz)) = (
            md.keepalive.server_cpu_us_per_response,
            md.livez.server_cpu_us_per_response,
        ) {
            let _ = writeln!(
                s,
                "server CPU per response (median): keepalive {ka:.1} µs, livez {lz:.1} µs, \
                 cost ratio {:.2} (steadier than req/s on a shared machine)",
                ka / lz.max(f64::EPSILON)
            );
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

fn row(s: &mut String, round: &str, endpoint: &str, figures: &Summary, ratio: &str) {
    let ms = |f: fn(&Latency) -> f64| fmt_opt(figures.latency.as_ref().map(f), 3);
    let _ = writeln!(
        s,
        "{:<7} {:<10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>10} {:>10}",
        round,
        endpoint,
        fmt_opt(figures.requests_per_sec, 1),
        ms(|l| l.p50_ms),
        ms(|l| l.p90_ms),
        ms(|l| l.p99_ms),
        ms(|l| l.max_ms),
        figures.errors,
        ratio,
        fmt_opt(figures.server_cpu_us_per_response, 1),
        fmt_opt(figures.client_cpu_us_per_response, 1)
    );
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

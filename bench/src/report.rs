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
    /// Median redis-server CPU time per response (`--redis` only), in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_response: Option<f64>,
    /// Fixed-rate phases only: median p99 of how late requests left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_p99_ms: Option<f64>,
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
            redis_cpu_us_per_response: median(
                phases
                    .clone()
                    .filter_map(|p| p.redis_cpu_us_per_response)
                    .collect(),
            ),
            send_lag_p99_ms: median(
                phases
                    .clone()
                    .filter_map(|p| p.fixed_rate.as_ref()?.send_lag.map(|l| l.p99_ms))
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

impl Medians {
    pub fn of(rounds: &[Round]) -> Self {
        Self {
            livez: Summary::of(rounds.iter().map(|r| &r.livez)),
            keepalive: Summary::of(rounds.iter().map(|r| &r.keepalive)),
            ratio: median(rounds.iter().filter_map(|r| r.ratio).collect()),
        }
    }
}

/// The fixed-rate (open-loop) latency phase: both endpoints at one offered
/// rate, latency from each request's intended send time.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRate {
    /// Offered rate, requests per second over all connections.
    pub rate: f64,
    /// Where the rate came from (`--rate`, or a fraction of the measured /livez saturation).
    pub rate_source: String,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub rounds: Vec<Round>,
    pub median: Medians,
}

/// Which phase the p99 target is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum P99Phase {
    /// The fixed-rate phase: the server's latency below saturation.
    FixedRate,
    /// Closed-loop saturation (only when the fixed-rate phase was skipped).
    Saturation,
}

/// Target thresholds and whether they were met.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    pub min_ratio: f64,
    pub max_keepalive_p99_ms: f64,
    /// From the saturation phase.
    pub ratio_met: bool,
    /// Judged on `p99_phase`.
    pub p99_phase: P99Phase,
    pub keepalive_p99_ms: Option<f64>,
    pub p99_met: bool,
    /// For reference: whether /livez, the cheapest request, meets the same
    /// p99 target in that phase (if it does not, the machine cannot).
    pub livez_p99_met: bool,
    pub no_errors: bool,
    pub all_met: bool,
}

impl Targets {
    /// Verdicts: ratio from saturation, p99 from the fixed-rate phase when
    /// it ran (else from saturation), errors from every phase.
    pub fn judge(
        saturation: &Medians,
        fixed_rate: Option<&Medians>,
        min_ratio: f64,
        max_p99_ms: f64,
    ) -> Self {
        let ratio_met = saturation.ratio.is_some_and(|r| r >= min_ratio);
        let (p99_phase, p99_from) = match fixed_rate {
            Some(m) => (P99Phase::FixedRate, m),
            None => (P99Phase::Saturation, saturation),
        };
        let p99 = |s: &Summary| s.latency.map(|l| l.p99_ms);
        let keepalive_p99_ms = p99(&p99_from.keepalive);
        let p99_met = keepalive_p99_ms.is_some_and(|p| p < max_p99_ms);
        let livez_p99_met = p99(&p99_from.livez).is_some_and(|p| p < max_p99_ms);
        let no_errors = [Some(saturation), fixed_rate]
            .into_iter()
            .flatten()
            .all(|m| m.keepalive.errors == 0 && m.livez.errors == 0);
        Self {
            min_ratio,
            max_keepalive_p99_ms: max_p99_ms,
            ratio_met,
            p99_phase,
            keepalive_p99_ms,
            p99_met,
            livez_p99_met,
            no_errors,
            all_met: ratio_met && p99_met && no_errors,
        }
    }
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
    /// Closed-loop saturation rounds: the throughput ratio.
    pub rounds: Vec<Round>,
    pub median: Medians,
    /// The fixed-rate latency phase, unless skipped (`--latency-rounds 0`).
    pub fixed_rate: Option<FixedRate>,
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
        fixed_rate: Option<FixedRate>,
        min_ratio: f64,
        max_p99_ms: f64,
    ) -> Self {
        let median = Medians::of(&rounds);
        let targets = Targets::judge(
            &median,
            fixed_rate.as_ref().map(|f| &f.median),
            min_ratio,
            max_p99_ms,
        );
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
            fixed_rate,
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
        if let Some(f) = &self.fixed_rate {
            let _ = writeln!(
                s,
                "fixed rate (open loop): {:.0} req/s total over {} connections ({}), \
                 {} s warm-up + {} s measured, latency from the intended send time",
                f.rate, c.connections, f.rate_source, f.warmup_secs, f.duration_secs
            );
            let _ = writeln!(
                s,
                "{:<7} {:<10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>10} {:>10}",
                "round",
                "endpoint",
                "done req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "lag p99 ms",
                "errors",
                "srv CPU µs",
                "gen CPU µs"
            );
            for r in &f.rounds {
                for endpoint in &r.order {
                    let p = match endpoint {
                        Endpoint::Livez => &r.livez,
                        Endpoint::Keepalive => &r.keepalive,
                    };
                    fixed_row(
                        &mut s,
                        &r.round.to_string(),
                        endpoint.name(),
                        &Summary::of(std::iter::once(p)),
                    );
                }
            }
            fixed_row(&mut s, "median", "livez", &f.median.livez);
            fixed_row(&mut s, "median", "keepalive", &f.median.keepalive);
            let _ = writeln!(s);
            for r in &f.rounds {
                for p in [&r.livez, &r.keepalive] {
                    if let Some(e) = &p.first_error {
                        let _ = writeln!(
                            s,
                            "fixed-rate round {} {}: {} errors; first: {e}",
                            r.round,
                            p.endpoint.name(),
                            p.errors
                        );
                    }
                }
            }
        }
        let t = &self.targets;
        let verdict = |met: bool| if met { "MET" } else { "MISSED" };
        let _ = writeln!(
            s,
            "keepalive/livez throughput ratio (saturation, median of rounds): {}  target >= {:.2}: {}",
            fmt_opt(md.ratio, 3),
            t.min_ratio,
            verdict(t.ratio_met)
        );
        let (phase, livez_p99) = match (&self.fixed_rate, t.p99_phase) {
            (Some(f), P99Phase::FixedRate) => (
                format!("at {:.0} req/s fixed rate", f.rate),
                f.median.livez.latency.map(|l| l.p99_ms),
            ),
            _ => (
                "closed-loop saturation".to_owned(),
                md.livez.latency.map(|l| l.p99_ms),
            ),
        };
        let _ = writeln!(
            s,
            "keepalive p99 ({phase}, median of rounds): {} ms  target < {:.2} ms: {}  \
             (livez: {} ms, {})",
            fmt_opt(t.keepalive_p99_ms, 3),
            t.max_keepalive_p99_ms,
            verdict(t.p99_met),
            fmt_opt(livez_p99, 3),
            verdict(t.livez_p99_met)
        );
        let fixed_errors = self
            .fixed_rate
            .as_ref()
            .map_or(0, |f| f.median.keepalive.errors + f.median.livez.errors);
        let _ = writeln!(
            s,
            "errors: saturation keepalive {}, livez {}; fixed rate {}  target 0: {}",
            md.keepalive.errors,
            md.livez.errors,
            fixed_errors,
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
        if let (Some(ka), Some(lz)) = (
            md.keepalive.redis_cpu_us_per_response,
            md.livez.redis_cpu_us_per_response,
        ) {
            let _ = writeln!(
                s,
                "redis-server CPU per response (median, saturation): keepalive {ka:.1} µs, livez {lz:.1} µs"
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

fn fixed_row(s: &mut String, round: &str, endpoint: &str, figures: &Summary) {
    let ms = |f: fn(&Latency) -> f64| fmt_opt(figures.latency.as_ref().map(f), 3);
    let _ = writeln!(
        s,
        "{:<7} {:<10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>10} {:>10}",
        round,
        endpoint,
        fmt_opt(figures.requests_per_sec, 1),
        ms(|l| l.p50_ms),
        ms(|l| l.p90_ms),
        ms(|l| l.p99_ms),
        ms(|l| l.max_ms),
        fmt_opt(figures.send_lag_p99_ms, 3),
        figures.errors,
        fmt_opt(figures.server_cpu_us_per_response, 1),
        fmt_opt(figures.client_cpu_us_per_response, 1)
    );
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rps: f64, p99_ms: f64, errors: u64) -> Summary {
        Summary {
            requests_per_sec: Some(rps),
            latency: Some(Latency {
                p50_ms: p99_ms / 4.0,
                p90_ms: p99_ms / 2.0,
                p99_ms,
                max_ms: p99_ms * 2.0,
                mean_ms: p99_ms / 4.0,
            }),
            server_cpu_us_per_response: None,
            client_cpu_us_per_response: None,
            redis_cpu_us_per_response: None,
            send_lag_p99_ms: None,
            errors,
        }
    }

    fn medians(ratio: f64, livez_p99: f64, keepalive_p99: f64, errors: u64) -> Medians {
        Medians {
            livez: summary(10_000.0, livez_p99, 0),
            keepalive: summary(10_000.0 * ratio, keepalive_p99, errors),
            ratio: Some(ratio),
        }
    }

    #[test]
    fn p99_is_judged_on_the_fixed_rate_phase() {
        // Saturation p99 is hopeless (Little's law), the fixed-rate one is fine.
        let saturation = medians(0.65, 6.0, 9.0, 0);
        let fixed = medians(1.0, 0.8, 1.2, 0);
        let t = Targets::judge(&saturation, Some(&fixed), 0.6, 2.0);
        assert_eq!(t.p99_phase, P99Phase::FixedRate);
        assert_eq!(t.keepalive_p99_ms, Some(1.2));
        assert!(t.ratio_met && t.p99_met && t.livez_p99_met && t.no_errors && t.all_met);

        // Without a fixed-rate phase the saturation p99 is all there is.
        let t = Targets::judge(&saturation, None, 0.6, 2.0);
        assert_eq!(t.p99_phase, P99Phase::Saturation);
        assert!(!t.p99_met && !t.all_met);
    }

    #[test]
    fn each_target_can_fail_alone() {
        let fixed = medians(1.0, 0.8, 1.2, 0);
        let t = Targets::judge(&medians(0.55, 6.0, 9.0, 0), Some(&fixed), 0.6, 2.0);
        assert!(!t.ratio_met && t.p99_met && !t.all_met);
        // With Redis the thresholds are 0.5 and 3 ms.
        let t = Targets::judge(&medians(0.55, 6.0, 9.0, 0), Some(&fixed), 0.5, 3.0);
        assert!(t.all_met);
        let slow = medians(1.0, 0.8, 2.5, 0);
        let t = Targets::judge(&medians(0.7, 6.0, 9.0, 0), Some(&slow), 0.6, 2.0);
        assert!(t.ratio_met && !t.p99_met && t.livez_p99_met && !t.all_met);
        // An error in either phase fails the run.
        let t = Targets::judge(
            &medians(0.7, 6.0, 9.0, 0),
            Some(&medians(1.0, 0.8, 1.2, 1)),
            0.6,
            2.0,
        );
        assert!(!t.no_errors && !t.all_met);
        let t = Targets::judge(&medians(0.7, 6.0, 9.0, 2), Some(&fixed), 0.6, 2.0);
        assert!(!t.no_errors && !t.all_met);
        // The threshold itself is a miss for p99 (strictly below) and a hit for the ratio.
        let t = Targets::judge(
            &medians(0.6, 6.0, 9.0, 0),
            Some(&medians(1.0, 0.8, 2.0, 0)),
            0.6,
            2.0,
        );
        assert!(t.ratio_met && !t.p99_met);
    }
}

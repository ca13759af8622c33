//! What a run found, per invariant (its count of violations and the first example) and per
//! kind of fault; and the same summed over several runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::faults::FaultRecord;
use super::history::{History, Micros, Outcome};
use super::invariants::{Invariant, Params, Violation};
use super::schedule::{FaultKind, Schedule};

/// Examples kept in the JSON report, per invariant.
const EXAMPLES_KEPT: usize = 20;

/// One invariant's result.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    pub invariant: Invariant,
    pub title: &'static str,
    pub violations: usize,
    /// The violations by case of the invariant.
    pub cases: BTreeMap<&'static str, usize>,
    /// The first violation (in time) and a few more.
    pub examples: Vec<String>,
}

/// One kind of fault's figures.
#[derive(Debug, Clone, Serialize)]
pub struct KindResult {
    pub kind: FaultKind,
    pub faults: usize,
    /// From the end of each fault of the kind until every instance was healthy.
    pub healthy_ms: Vec<u64>,
    /// Faults of the kind after which not every instance became healthy.
    pub never_healthy: usize,
    /// Requests sent from the start of a fault of the kind until the next fault.
    pub requests: usize,
    /// Answers among them, by status (`401`, `503 store_unavailable`, `lost`...).
    pub outcomes: BTreeMap<String, usize>,
    /// Violations put down to the kind, per invariant.
    pub violations: BTreeMap<Invariant, usize>,
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    /// `direct` or `nginx`.
    pub entry: &'static str,
    pub instances: usize,
    pub devices: usize,
    pub started_at: String,
    pub seconds: f64,
    pub params: Params,
    pub requests: usize,
    pub sessions: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub invariants: Vec<InvariantResult>,
    pub kinds: Vec<KindResult>,
    pub schedule: Schedule,
    pub faults: Vec<FaultRecord>,
    /// The run's directory (instance logs, nginx's), when it was kept.
    pub dir: Option<String>,
}

/// The label of an outcome in the counts.
fn label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answer {
            status,
            error,
            proxy,
        } => match (error, proxy) {
            (_, true) => format!("{status} from nginx"),
            (Some(error), _) if *status >= 500 => format!("{status} {error}"),
            _ => status.to_string(),
        },
        Outcome::Refused(_) => "refused".to_owned(),
        Outcome::Lost(_) => "lost".to_owned(),
    }
}

impl RunReport {
    /// Sums up a judged run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seed: u64,
        entry: &'static str,
        instances: usize,
        devices: usize,
        started_at: String,
        start: Micros,
        end: Micros,
        params: Params,
        history: &History,
        schedule: Schedule,
        faults: Vec<FaultRecord>,
        violations: &[Violation],
        dir: Option<String>,
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        for record in &history.records {
            *outcomes.entry(label(&record.outcome)).or_insert(0) += 1;
        }
        let invariants = Invariant::ALL
            .iter()
            .map(|&invariant| {
                let mine: Vec<&Violation> = violations
                    .iter()
                    .filter(|v| v.invariant == invariant)
                    .collect();
                let mut cases = BTreeMap::new();
                for v in &mine {
                    *cases.entry(v.case).or_insert(0) += 1;
                }
                InvariantResult {
                    invariant,
                    title: invariant.title(),
                    violations: mine.len(),
                    cases,
                    examples: mine
                        .iter()
                        .take(EXAMPLES_KEPT)
                        .map(|v| v.text.clone())
                        .collect(),
                }
            })
            .collect();
        let kinds = FaultKind::ALL
            .iter()
            .map(|&kind| {
                let of_kind: Vec<&FaultRecord> =
                    faults.iter().filter(|f| f.kind == Some(kind)).collect();
                let mut healthy_ms: Vec<u64> = of_kind
                    .iter()
                    .filter_map(|f| f.healthy.map(|h| ((h - f.ended).max(0) / 1000) as u64))
                    .collect();
                healthy_ms.sort_unstable();
                let mut result = KindResult {
                    kind,
                    faults: of_kind.len(),
                    never_healthy: of_kind.iter().filter(|f| f.healthy.is_none()).count(),
                    healthy_ms,
                    requests: 0,
                    outcomes: BTreeMap::new(),
                    violations: BTreeMap::new(),
                };
                for record in &history.records {
                    if cycle_kind(&faults, record.sent) == Some(kind) {
                        result.requests += 1;
                        *result.outcomes.entry(label(&record.outcome)).or_insert(0) += 1;
                    }
                }
                for v in violations.iter().filter(|v| v.kind == Some(kind)) {
                    *result.violations.entry(v.invariant).or_insert(0) += 1;
                }
                result
            })
            .collect();
        Self {
            seed,
            entry,
            instances,
            devices,
            started_at,
            seconds: (end - start) as f64 / 1e6,
            params,
            requests: history.records.len(),
            sessions: history.sessions.len(),
            outcomes,
            invariants,
            kinds,
            schedule,
            faults,
            dir,
        }
    }

    /// Every violation of every invariant.
    pub fn total_violations(&self) -> usize {
        self.invariants.iter().map(|i| i.violations).sum()
    }

    /// The printed summary.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "keepalive check, seed {}: {} instances ({}), {} devices, started {}, {:.0} s",
            self.seed, self.instances, self.entry, self.devices, self.started_at, self.seconds
        );
        let _ = writeln!(
            s,
            "{} requests over {} sessions: {}",
            self.requests,
            self.sessions,
            outcome_list(&self.outcomes)
        );
        write_tables(&mut s, &self.invariants, &self.kinds);
        if let Some(dir) = &self.dir {
            let _ = writeln!(s, "logs kept in {dir}");
        }
        s
    }
}

/// The kind of the fault whose cycle (its start to the next fault's) holds `at`.
fn cycle_kind(faults: &[FaultRecord], at: Micros) -> Option<FaultKind> {
    faults
        .iter()
        .rfind(|f| f.kind.is_some() && f.started <= at)
        .and_then(|f| f.kind)
}

fn outcome_list(outcomes: &BTreeMap<String, usize>) -> String {
    outcomes
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The invariants' table, then the kinds'.
fn write_tables(s: &mut String, invariants: &[InvariantResult], kinds: &[KindResult]) {
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<3} {:<72} {:>10}", "#", "invariant", "violations");
    for (n, result) in invariants.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<3} {:<72} {:>10}",
            n + 1,
            result.title,
            result.violations
        );
        if !result.cases.is_empty() {
            let cases: Vec<String> = result
                .cases
                .iter()
                .map(|(case, count)| format!("{case}: {count}"))
                .collect();
            let _ = writeln!(s, "      {}", cases.join("; "));
        }
    }
    for (n, result) in invariants.iter().enumerate() {
        if let Some(first) = result.examples.first() {
            let _ = writeln!(s, "first violation of {}: {first}", n + 1);
        }
    }
    let _ = writeln!(s);
    // As wide as the longest kind's name.
    let name_width = FaultKind::ALL
        .iter()
        .map(|k| k.name().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "{:<name_width$} {:>6} {:>16} {:>9} {:>6} {:>6} {:>7}   violations by invariant 1-{}",
        "fault kind",
        "faults",
        "healthy ms p50/max",
        "requests",
        "401",
        "5xx",
        "no ans.",
        invariants.len()
    );
    for k in kinds {
        let healthy = match (
            k.healthy_ms.get(k.healthy_ms.len() / 2),
            k.healthy_ms.last(),
        ) {
            (Some(median), Some(max)) => format!("{median}/{max}"),
            _ => "-".to_owned(),
        };
        let healthy = if k.never_healthy > 0 {
            format!("{healthy} ({} never)", k.never_healthy)
        } else {
            healthy
        };
        let count = |pred: &dyn Fn(&str) -> bool| {
            k.outcomes
                .iter()
                .filter(|(label, _)| pred(label))
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        let by_invariant: Vec<String> = Invariant::ALL
            .iter()
            .map(|i| k.violations.get(i).copied().unwrap_or(0).to_string())
            .collect();
        let _ = writeln!(
            s,
            "{:<name_width$} {:>6} {:>16} {:>9} {:>6} {:>6} {:>7}   {}",
            k.kind.name(),
            k.faults,
            healthy,
            k.requests,
            count(&|l| l == "401"),
            count(&|l| l.starts_with('5')),
            count(&|l| l == "lost" || l == "refused"),
            by_invariant.join(" ")
        );
    }
}

/// Several runs summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: Vec<RunReport>,
    pub seconds: f64,
    pub requests: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub invariants: Vec<InvariantResult>,
    pub kinds: Vec<KindResult>,
}

impl Summary {
    pub fn new(runs: Vec<RunReport>) -> Self {
        let mut outcomes = BTreeMap::new();
        for run in &runs {
            for (k, n) in &run.outcomes {
                *outcomes.entry(k.clone()).or_insert(0) += n;
            }
        }
        let invariants = Invariant::ALL
            .iter()
            .enumerate()
            .map(|(n, &invariant)| InvariantResult {
                invariant,
                title: invariant.title(),
                violations: runs.iter().map(|r| r.invariants[n].violations).sum(),
                cases: runs.iter().fold(BTreeMap::new(), |mut all, r| {
                    for (case, count) in &r.invariants[n].cases {
                        *all.entry(*case).or_insert(0) += count;
                    }
                    all
                }),
                examples: runs
                    .iter()
                    .flat_map(|r| {
                        r.invariants[n]
                            .examples
                            .iter()
                            .map(move |e| format!("seed {}: {e}", r.seed))
                    })
                    .take(EXAMPLES_KEPT)
                    .collect(),
            })
            .collect();
        let kinds = FaultKind::ALL
            .iter()
            .enumerate()
            .map(|(n, &kind)| {
                let mut total = KindResult {
                    kind,
                    faults: 0,
                    healthy_ms: Vec::new(),
                    never_healthy: 0,
                    requests: 0,
                    outcomes: BTreeMap::new(),
                    violations: BTreeMap::new(),
                };
                for run in &runs {
                    let k = &run.kinds[n];
                    total.faults += k.faults;
                    total.healthy_ms.extend(&k.healthy_ms);
                    total.never_healthy += k.never_healthy;
                    total.requests += k.requests;
                    for (label, count) in &k.outcomes {
                        *total.outcomes.entry(label.clone()).or_insert(0) += count;
                    }
                    for (invariant, count) in &k.violations {
                        *total.violations.entry(*invariant).or_insert(0) += count;
                    }
                }
                total.healthy_ms.sort_unstable();
                total
            })
            .collect();
        Self {
            seconds: runs.iter().map(|r| r.seconds).sum(),
            requests: runs.iter().map(|r| r.requests).sum(),
            outcomes,
            invariants,
            kinds,
            runs,
        }
    }

    pub fn total_violations(&self) -> usize {
        self.invariants.iter().map(|i| i.violations).sum()
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let seeds: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("{} ({})", r.seed, r.entry))
            .collect();
        let _ = writeln!(
            s,
            "keepalive check, {} runs, seeds {}: {:.0} s in all",
            self.runs.len(),
            seeds.join(", "),
            self.seconds
        );
        let _ = writeln!(
            s,
            "{} requests: {}",
            self.requests,
            outcome_list(&self.outcomes)
        );
        write_tables(&mut s, &self.invariants, &self.kinds);
        s
    }
}

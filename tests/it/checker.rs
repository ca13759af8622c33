//! The checker of the session invariants in its short form (issue #18): three instances of the
//! binary over one Redis behind a real nginx, simulated users, one fault of every kind from a
//! fixed seed (Redis killed, for a moment, past the idle timeout and past the absolute
//! lifetime, frozen, restarted empty, flushed, evicting; an instance SIGKILLed and one
//! SIGTERMed, each started again; either of them while Redis is down), about two and a half
//! minutes in all. Every invariant must hold.
//! The long form, many seeds for ten minutes and more, is `bench/check.sh`
//! (docs/BENCHMARKS.md); the checker itself is `keepalive_testkit::check`.

use keepalive_testkit::check::{self, Config, Entry, Invariant};

use crate::harness;

/// The schedule's seed: the same faults in the same order on every run.
const SEED: u64 = 20_261_204;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invariant_holds_through_one_fault_of_each_kind() {
    let mut config = Config::short(harness::binary().into(), SEED);
    config.entry = Entry::Nginx;
    let report = check::run(&config).await.expect("the checker ran");
    let table = report.to_table();
    println!("{table}");
    for kind in check::FaultKind::ALL {
        let faults = report
            .kinds
            .iter()
            .find(|k| k.kind == kind)
            .map(|k| k.faults);
        assert_eq!(faults, Some(1), "one fault of kind {}", kind.name());
    }
    assert_eq!(report.invariants.len(), Invariant::ALL.len());
    let examples: Vec<String> = report
        .invariants
        .iter()
        .flat_map(|i| i.examples.iter().take(5).cloned())
        .collect();
    assert_eq!(
        report
            .invariants
            .iter()
            .map(|i| i.violations)
            .sum::<usize>(),
        0,
        "invariants violated:\n{table}\nexamples:\n{}",
        examples.join("\n")
    );
    assert!(
        report.seconds < 200.0,
        "the short form took {:.0} s",
        report.seconds
    );
}

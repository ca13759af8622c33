//! The checker of the session invariants in its short form (issue #18): three instances of the
//! binary over one Redis behind a real nginx, simulated users, one fault of every kind from a
//! fixed seed (Redis killed, frozen, restarted empty, flushed, evicting; an instance SIGKILLed
//! and one SIGTERMed, each started again), about a minute in all. The invariants the server
//! keeps today must hold; the three that issue #18 still has open are printed with their first
//! examples, not asserted (see below), so that the run shows them without failing the suite.
//! The long form, many seeds for ten minutes and more, is `bench/check.sh`
//! (docs/BENCHMARKS.md); the checker itself is `keepalive_testkit::check`.

use keepalive_testkit::check::{self, Config, Entry, Invariant};

use crate::harness;

/// The schedule's seed: the same faults in the same order on every run.
const SEED: u64 = 20_261_204;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_invariants_hold_through_one_fault_of_each_kind() {
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
    // Open in issue #18, measured by the long run in docs/BENCHMARKS.md: during a Redis outage
    // an instance that never served a session answers 401 for it (behind a round-robin proxy,
    // a false logout); a "log out everywhere" during an eviction can miss sessions, which are
    // then answered 200; and after an eviction Redis may miss a session an instance did not
    // hold live. Printed here; every other invariant is asserted.
    let open = [
        Invariant::NoFalse401,
        Invariant::NoRevivalAfterLogout,
        Invariant::Recovery,
    ];
    for result in report
        .invariants
        .iter()
        .filter(|i| open.contains(&i.invariant))
    {
        println!(
            "open in #18, not asserted: {} violations of {}; first: {}",
            result.violations,
            result.title,
            result.examples.first().map_or("none", String::as_str)
        );
    }
    let kept: Vec<_> = report
        .invariants
        .iter()
        .filter(|i| !open.contains(&i.invariant))
        .collect();
    assert_eq!(kept.len(), Invariant::ALL.len() - open.len());
    let examples: Vec<String> = kept
        .iter()
        .flat_map(|i| i.examples.iter().take(5).cloned())
        .collect();
    assert_eq!(
        kept.iter().map(|i| i.violations).sum::<usize>(),
        0,
        "invariants violated:\n{table}\nexamples:\n{}",
        examples.join("\n")
    );
    assert!(
        report.seconds < 120.0,
        "the short form took {:.0} s",
        report.seconds
    );
}

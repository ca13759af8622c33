//! The session invariants, checked against a run's history and its faults.
//!
//! Each request is judged on what its client knew, conservatively: a request may have been
//! handled at any moment between its send and its answer, and a request that got no answer
//! (or a 5xx) may have taken effect. So a 401 counts against the server only if the session
//! was surely live at the latest moment the request could have been handled, and a 200 only
//! if the session was surely over at the earliest one.
//!
//! The exceptions are the limits `docs/redis.md` states for an outage, as numbers of the run:
//! while an instance cannot reach Redis it serves from its local copies, so
//!
//! - a logout acknowledged from the start of a Redis fault less the logout propagation until
//!   the fleet recovered from it may be unknown to the other instances: they may answer 200
//!   for that session until the fleet recovered, plus the propagation;
//! - with an outage grace (`Params::outage_grace`, zero by default: the failover judges a copy
//!   by what Redis last said, with no grace), a session past its idle expiry may be accepted
//!   from the start of a Redis fault until the fleet recovered, and never later than the grace
//!   after the fault ended.
//!
//! Nothing excuses a 200 past the absolute lifetime, nor a 200 from the instance that
//! acknowledged the logout.

use std::collections::BTreeMap;

use serde::Serialize;

use super::faults::{FaultRecord, NOTICE_WITHIN};
use super::fleet::Exit;
use super::history::{History, Micros, Op, Outcome, Record, format_time};
use super::schedule::FaultKind;

/// The 503s the HTTP API documents: the store failed, "log out everywhere" while Redis is
/// offline, a request past `request_timeout`.
pub const DOCUMENTED_503: [&str; 3] = [
    "store_unavailable",
    "shared_store_offline",
    "request_timeout",
];

/// The numbers the invariants are judged with, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Params {
    /// The instances' idle timeout.
    pub idle: Micros,
    /// Leeway for the clock readings of client and server, both on this machine.
    pub slack: Micros,
    /// How long a logout may take to reach the other instances when Redis answers (its
    /// pub/sub message on the way): only counted next to a Redis fault.
    pub propagation: Micros,
    /// Every instance must report healthy this soon after a fault ends.
    pub healthy_within: Micros,
    /// How long the checker waits for that at most.
    pub healthy_wait: Micros,
    /// How long after a Redis fault ends an instance may still accept a session past its idle
    /// expiry (a grace for copies another instance may have kept alive); zero: never.
    pub outage_grace: Micros,
}

/// The invariants, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// No keepalive for a session kept alive within its idle timeout gets 401 before its
    /// absolute lifetime ends.
    NoFalse401,
    /// After a logout is acknowledged no instance answers 200 for the session, but within the
    /// outage limits.
    NoRevivalAfterLogout,
    /// No session outlives its absolute lifetime, none is answered 200 after its idle expiry
    /// (but within the outage grace).
    NoServiceAfterExpiry,
    /// No 5xx but the documented 503s, and every request answered.
    No5xx,
    /// After each fault every instance reports healthy within the limit, and Redis then holds
    /// every live session.
    Recovery,
    /// No instance exits unless the checker stopped it.
    NoCrash,
}

impl Invariant {
    pub const ALL: [Self; 6] = [
        Self::NoFalse401,
        Self::NoRevivalAfterLogout,
        Self::NoServiceAfterExpiry,
        Self::No5xx,
        Self::Recovery,
        Self::NoCrash,
    ];

    /// What it says, for reports.
    pub fn title(self) -> &'static str {
        match self {
            Self::NoFalse401 => "no 401 for a session kept alive (within idle and absolute)",
            Self::NoRevivalAfterLogout => "no 200 after an acknowledged logout (outage limits)",
            Self::NoServiceAfterExpiry => "no 200 past absolute lifetime or idle expiry",
            Self::No5xx => "no 5xx but the documented 503s; every request answered",
            Self::Recovery => {
                "healthy within the limit after each fault; Redis holds live sessions"
            }
            Self::NoCrash => "no instance exits unasked",
        }
    }
}

/// One violation.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    /// Which case of the invariant it is (`no copy`, `missing in Redis`...), for the counts.
    pub case: &'static str,
    /// When it happened.
    pub at: Micros,
    /// The kind of the fault whose cycle it fell in (`None` before the first fault).
    pub kind: Option<FaultKind>,
    /// What happened, with times relative to the start of the run.
    pub text: String,
}

/// A session's end, as its client knows it: a logout, a rotation of it, or "log out everywhere"
/// for its user.
#[derive(Debug, Clone, Copy)]
struct End {
    sent: Micros,
    /// When it was acknowledged, if it was.
    acked: Option<Micros>,
    instance: Option<usize>,
    record: usize,
}

/// The records about one session.
#[derive(Default)]
struct Timeline {
    /// Records that name the session (its creation included), in order of sending.
    records: Vec<usize>,
    ends: Vec<End>,
    absolute: Option<Micros>,
}

/// Seconds since `start`, for examples.
fn rel(at: Micros, start: Micros) -> String {
    format!("+{:.3} s", (at - start) as f64 / 1e6)
}

/// Whether the answer is a 2xx.
fn success(record: &Record) -> bool {
    record.status().is_some_and(|s| (200..300).contains(&s))
}

/// The expiry a record tells of `session`: the one its answer reported, if it succeeded and is
/// about that session (a rotation's answer is about the new session).
fn reported_expiry(record: &Record, session: usize) -> Option<Micros> {
    let about = if record.op == Op::Rotate {
        record.created
    } else {
        record.session
    };
    (about == Some(session) && success(record))
        .then_some(record.expires_at)
        .flatten()
}

/// Every session's timeline.
fn timelines(history: &History) -> Vec<Timeline> {
    let mut lines: Vec<Timeline> = (0..history.sessions.len())
        .map(|_| Timeline::default())
        .collect();
    for (index, record) in history.records.iter().enumerate() {
        for session in [record.session, record.created].into_iter().flatten() {
            if let Some(line) = lines.get_mut(session) {
                line.records.push(index);
            }
        }
    }
    let mut end_alls: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, record) in history.records.iter().enumerate() {
        if record.op == Op::EndAll
            && let Some(user) = &record.user
        {
            end_alls.entry(user).or_default().push(index);
        }
    }
    for (session, line) in lines.iter_mut().enumerate() {
        let info = &history.sessions[session];
        let creation = &history.records[info.created_by];
        line.absolute = creation.absolute_at;
        line.records.sort_by_key(|&i| history.records[i].sent);
        line.records.dedup();
        for &index in &line.records {
            let record = &history.records[index];
            if record.session != Some(session) {
                continue;
            }
            let ends = match record.op {
                Op::Logout | Op::Rotate => match &record.outcome {
                    Outcome::Answer { status, .. } if (200..300).contains(status) => true,
                    outcome => outcome.uncertain(),
                },
                _ => false,
            };
            if ends {
                line.ends.push(End {
                    sent: record.sent,
                    acked: success(record).then_some(record.answered),
                    instance: record.instance,
                    record: index,
                });
            }
        }
        let Some(user) = &info.user else {
            continue;
        };
        for &index in end_alls.get(user.as_str()).into_iter().flatten() {
            let end_all = &history.records[index];
            if matches!(end_all.outcome, Outcome::Refused(_)) {
                continue;
            }
            let acked = success(end_all).then_some(end_all.answered);
            if creation.answered < end_all.sent {
                // The session existed when "log out everywhere" began.
                line.ends.push(End {
                    sent: end_all.sent,
                    acked,
                    instance: end_all.instance,
                    record: index,
                });
            } else if creation.sent < end_all.answered {
                // Created while it ran: it may or may not have been reached.
                line.ends.push(End {
                    sent: end_all.sent,
                    acked: None,
                    instance: end_all.instance,
                    record: index,
                });
            }
        }
    }
    lines
}

/// The sessions the users surely held live over `[begin, end]`: created before `begin`, with
/// an expiry known before `begin` that is later than `end` (and their absolute expiry too), no
/// end of any kind sent before `end` and no 401 seen for them.
pub fn live_sessions(history: &History, begin: Micros, end: Micros, p: &Params) -> Vec<usize> {
    let lines = timelines(history);
    let mut live = Vec::new();
    for (session, line) in lines.iter().enumerate() {
        let creation = &history.records[history.sessions[session].created_by];
        if !success(creation) || creation.answered >= begin {
            continue;
        }
        if line.ends.iter().any(|e| e.sent < end) {
            continue;
        }
        let records = || line.records.iter().map(|&i| &history.records[i]);
        if records().any(|r| r.status() == Some(401) && r.sent < end) {
            continue;
        }
        let known = records()
            .filter(|r| r.answered < begin)
            .filter_map(|r| reported_expiry(r, session))
            .max();
        let surely = |at: Option<Micros>| at.is_some_and(|at| at > end + p.slack.max(1_000_000));
        if surely(known) && surely(line.absolute) {
            live.push(session);
        }
    }
    live
}

/// Judges a run: every violation of every invariant, in order of time.
pub fn check(
    history: &History,
    faults: &[FaultRecord],
    exits: &[Exit],
    p: &Params,
    start: Micros,
) -> Vec<Violation> {
    let judge = Judge {
        history,
        faults,
        p,
        start,
    };
    let mut found = Vec::new();
    let lines = timelines(history);
    for (session, line) in lines.iter().enumerate() {
        judge.false_401(session, line, &mut found);
        judge.revival(session, line, &mut found);
        judge.expiry(session, line, &mut found);
    }
    judge.errors(&mut found);
    judge.recovery(&mut found);
    for exit in exits {
        found.push(Violation {
            invariant: Invariant::NoCrash,
            case: "exit",
            at: exit.at,
            kind: judge.kind_at(exit.at),
            text: format!(
                "instance {} exited by itself ({}), found at {}; its log ends:\n{}",
                exit.instance,
                exit.status,
                rel(exit.at, start),
                exit.log_tail
            ),
        });
    }
    found.sort_by_key(|v| v.at);
    found
}

struct Judge<'a> {
    history: &'a History,
    faults: &'a [FaultRecord],
    p: &'a Params,
    start: Micros,
}

impl Judge<'_> {
    /// The kind of the last fault that began at or before `at`.
    fn kind_at(&self, at: Micros) -> Option<FaultKind> {
        self.faults
            .iter()
            .filter(|f| f.started <= at)
            .filter_map(|f| f.kind)
            .next_back()
    }

    /// The Redis faults, as (start, end, settled).
    fn redis_windows(&self) -> impl Iterator<Item = (&FaultRecord, Micros)> {
        self.faults
            .iter()
            .filter(|f| f.kind.is_some_and(FaultKind::on_redis))
            .map(|f| (f, f.settled(self.p.healthy_wait)))
    }

    fn describe(&self, index: usize) -> String {
        let r = &self.history.records[index];
        let what = match r.op {
            Op::Create => "creation",
            Op::CreateForUser => "creation for a user",
            Op::Keepalive if r.probe => "keepalive with an ended cookie",
            Op::Keepalive => "keepalive",
            Op::Logout => "logout",
            Op::Rotate => "rotation",
            Op::EndAll => "log out everywhere",
        };
        let session = r.session.map_or_else(String::new, |s| {
            format!(" of session {}…", self.history.short(s))
        });
        let instance = r.instance.map_or_else(
            || "an unknown instance".to_owned(),
            |i| format!("instance {i}"),
        );
        let redis = r
            .redis
            .as_deref()
            .map_or_else(String::new, |state| format!(", redis {state}"));
        format!(
            "{what}{session} (person {} device {}) sent {} to {instance}{}, answered {} at {}{redis}",
            r.person,
            r.device,
            rel(r.sent, self.start),
            if r.via_proxy { " through nginx" } else { "" },
            r.outcome.describe(),
            rel(r.answered, self.start),
        )
    }

    fn fault_note(&self, at: Micros) -> String {
        match self
            .faults
            .iter()
            .rfind(|f| f.kind.is_some() && f.started <= at)
        {
            Some(f) => format!(
                "; last fault: {} #{} from {} to {}, fleet healthy {}",
                f.name(),
                f.index,
                rel(f.started, self.start),
                rel(f.ended, self.start),
                f.healthy
                    .map_or_else(|| "never".to_owned(), |h| rel(h, self.start))
            ),
            None => "; before the first fault".to_owned(),
        }
    }

    fn push(
        &self,
        found: &mut Vec<Violation>,
        (invariant, case): (Invariant, &'static str),
        at: Micros,
        text: String,
    ) {
        let text = format!("{text}{}", self.fault_note(at));
        found.push(Violation {
            invariant,
            case,
            at,
            kind: self.kind_at(at),
            text,
        });
    }

    /// A 401 to a keepalive (or rotation) of a session surely live when it was handled.
    fn false_401(&self, session: usize, line: &Timeline, found: &mut Vec<Violation>) {
        let Some(absolute) = line.absolute else {
            return;
        };
        for &index in &line.records {
            let r = &self.history.records[index];
            if r.session != Some(session)
                || !matches!(r.op, Op::Keepalive | Op::Rotate)
                || r.status() != Some(401)
            {
                continue;
            }
            // Any end sent before the answer may explain it.
            if line.ends.iter().any(|e| e.sent < r.answered) {
                continue;
            }
            let known = line
                .records
                .iter()
                .map(|&i| &self.history.records[i])
                .filter(|q| q.answered < r.sent)
                .filter_map(|q| reported_expiry(q, session))
                .max();
            let Some(known) = known else {
                continue;
            };
            let latest = r.answered + self.p.slack;
            if latest < known && latest < absolute {
                // Whether the instance could hold a copy: it served the session before.
                let served_before = r.instance.is_some()
                    && line
                        .records
                        .iter()
                        .map(|&i| &self.history.records[i])
                        .any(|q| q.sent < r.sent && q.instance == r.instance && success(q));
                // An instance that never served a session holds no copy of it, the case
                // a fault makes hardest (docs/redis.md: it must answer 503, not 401); the
                // counts keep it apart.
                let in_outage = self
                    .redis_windows()
                    .any(|(f, settled)| r.answered >= f.started && r.sent <= settled);
                let case = match (in_outage, served_before) {
                    (true, false) => "in a Redis fault, from an instance that never served it",
                    (true, true) => "in a Redis fault, from an instance that had served it",
                    (false, _) => "outside Redis faults",
                };
                self.push(
                    found,
                    (Invariant::NoFalse401, case),
                    r.answered,
                    format!(
                        "{}; the session's expiry known to its client was {} ({:.1} s later), \
                         its absolute expiry {}; that instance had {}served the session before",
                        self.describe(index),
                        rel(known, self.start),
                        (known - r.answered) as f64 / 1e6,
                        rel(absolute, self.start),
                        if served_before { "" } else { "never " }
                    ),
                );
            }
        }
    }

    /// A 200 for a session after its logout was acknowledged.
    fn revival(&self, session: usize, line: &Timeline, found: &mut Vec<Violation>) {
        let Some(end) = line
            .ends
            .iter()
            .filter(|e| e.acked.is_some())
            .min_by_key(|e| e.acked)
        else {
            return;
        };
        let acked = end.acked.unwrap_or(end.sent);
        for &index in &line.records {
            let r = &self.history.records[index];
            if r.session != Some(session)
                || !matches!(r.op, Op::Keepalive | Op::Rotate)
                || r.status() != Some(200)
                || r.sent <= acked
            {
                continue;
            }
            let other_instance =
                r.instance.is_none() || end.instance.is_none() || r.instance != end.instance;
            let excused = other_instance
                && self.redis_windows().any(|(f, settled)| {
                    acked >= f.started - self.p.propagation
                        && acked <= settled
                        && r.sent <= settled + self.p.propagation
                });
            if !excused {
                let case = if other_instance {
                    "after the outage limits"
                } else {
                    "from the instance that acknowledged it"
                };
                self.push(
                    found,
                    (Invariant::NoRevivalAfterLogout, case),
                    r.answered,
                    format!(
                        "{}; its end ({}) was acknowledged at {}",
                        self.describe(index),
                        self.describe(end.record),
                        rel(acked, self.start)
                    ),
                );
            }
        }
    }

    /// A 200 past the absolute lifetime, an expiry reported past it, or a 200 past the idle
    /// expiry outside the outage grace.
    fn expiry(&self, session: usize, line: &Timeline, found: &mut Vec<Violation>) {
        let Some(absolute) = line.absolute else {
            return;
        };
        for (position, &index) in line.records.iter().enumerate() {
            let r = &self.history.records[index];
            let about_it = if r.op == Op::Rotate {
                r.created == Some(session) || r.session == Some(session)
            } else {
                r.session == Some(session)
            };
            if !about_it || !success(r) || !r.op.extends() {
                continue;
            }
            if r.session == Some(session) && r.sent > absolute + self.p.slack {
                self.push(
                    found,
                    (Invariant::NoServiceAfterExpiry, "past the absolute expiry"),
                    r.answered,
                    format!(
                        "{}, after the session's absolute expiry {}",
                        self.describe(index),
                        rel(absolute, self.start)
                    ),
                );
                continue;
            }
            let reported_past = [r.expires_at, r.absolute_at]
                .into_iter()
                .flatten()
                .any(|at| at > absolute + 1_000);
            if reported_past && reported_expiry(r, session).is_some() {
                self.push(
                    found,
                    (
                        Invariant::NoServiceAfterExpiry,
                        "expiry reported past the absolute",
                    ),
                    r.answered,
                    format!(
                        "{}: it reported expiry {} / absolute expiry {}, past the absolute \
                         expiry {} the session was created with",
                        self.describe(index),
                        r.expires_at
                            .map_or_else(|| "-".to_owned(), |at| rel(at, self.start)),
                        r.absolute_at
                            .map_or_else(|| "-".to_owned(), |at| rel(at, self.start)),
                        rel(absolute, self.start)
                    ),
                );
                continue;
            }
            if r.session != Some(session) || !matches!(r.op, Op::Keepalive | Op::Rotate) {
                continue;
            }
            // The latest the session could have lived to, from everything sent before.
            let possible = line.records[..position]
                .iter()
                .map(|&i| &self.history.records[i])
                .filter(|q| q.sent < r.sent)
                .filter_map(|q| {
                    reported_expiry(q, session).or_else(|| {
                        (q.outcome.uncertain() && q.op.extends())
                            .then(|| (q.answered + self.p.idle).min(absolute))
                    })
                })
                .max();
            let Some(possible) = possible else {
                continue;
            };
            if r.sent <= possible + self.p.slack {
                continue;
            }
            let grace = self.p.outage_grace > 0
                && self.redis_windows().any(|(f, settled)| {
                    r.sent >= f.started
                        && r.sent <= settled + self.p.slack
                        && r.sent < f.ended + self.p.outage_grace + self.p.slack
                });
            if !grace {
                self.push(
                    found,
                    (Invariant::NoServiceAfterExpiry, "past the idle expiry"),
                    r.answered,
                    format!(
                        "{}, {:.1} s after the latest idle expiry the session could have had \
                         ({})",
                        self.describe(index),
                        (r.sent - possible) as f64 / 1e6,
                        rel(possible, self.start)
                    ),
                );
            }
        }
    }

    /// 5xx answers other than the documented 503s, and requests left unanswered, but those
    /// an instance fault explains (nginx's 502 for an instance killed under it).
    fn errors(&self, found: &mut Vec<Violation>) {
        let instance_fault = |r: &Record| {
            self.faults
                .iter()
                .filter(|f| f.kind.is_some_and(FaultKind::on_instance))
                .any(|f| {
                    r.answered >= f.started
                        && r.sent <= f.settled(self.p.healthy_wait) + self.p.slack
                })
        };
        for (index, r) in self.history.records.iter().enumerate() {
            let wrong = match &r.outcome {
                Outcome::Answer {
                    status: 503,
                    error: Some(error),
                    ..
                } if DOCUMENTED_503.contains(&error.as_str()) => false,
                Outcome::Answer {
                    status,
                    proxy: true,
                    ..
                } if *status >= 500 => !instance_fault(r),
                Outcome::Answer { status, .. } => *status >= 500,
                Outcome::Lost(_) => !instance_fault(r),
                Outcome::Refused(_) => false,
            };
            if wrong {
                let case = match r.outcome {
                    Outcome::Lost(_) => "no answer",
                    _ => "5xx",
                };
                self.push(
                    found,
                    (Invariant::No5xx, case),
                    r.answered,
                    self.describe(index),
                );
            }
        }
    }

    /// Recovery after each fault, and the live sessions Redis lacked then.
    fn recovery(&self, found: &mut Vec<Violation>) {
        for f in self.faults {
            let what = format!(
                "{} #{} (from {} to {}{})",
                f.name(),
                f.index,
                rel(f.started, self.start),
                rel(f.ended, self.start),
                f.instance
                    .map_or_else(String::new, |i| format!(", instance {i}"))
            );
            let violation = |case: &'static str, text: String| Violation {
                invariant: Invariant::Recovery,
                case,
                at: f.ended,
                kind: f.kind,
                text,
            };
            // Whether the fleet had recovered and an instance went offline again, and what the
            // slowest instance logged: enough to tell why from the report alone.
            let why = || {
                let relapse = f.relapsed.map_or_else(String::new, |at| {
                    format!(
                        "; every instance was healthy at {}, one was not again at the poll {:.1} s \
                         after the end",
                        rel(at, self.start),
                        NOTICE_WITHIN.as_secs_f64()
                    )
                });
                let log = if f.slow_log.is_empty() {
                    String::new()
                } else {
                    format!(
                        "\n  the fault began at {} and ended at {}; {}",
                        format_time(f.started),
                        format_time(f.ended),
                        f.slow_log
                    )
                };
                format!("{relapse}{log}")
            };
            match f.healthy {
                None => found.push(violation(
                    "never healthy",
                    format!(
                        "{what}: instance {} not healthy within {:.1} s of the end{}",
                        f.slowest.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                        self.p.healthy_wait as f64 / 1e6,
                        why()
                    ),
                )),
                Some(healthy) if healthy - f.ended > self.p.healthy_within => {
                    found.push(violation(
                        "healthy late",
                        format!(
                            "{what}: every instance healthy only {:.3} s after the end (instance {} \
                             last){}",
                            (healthy - f.ended) as f64 / 1e6,
                            f.slowest.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                            why()
                        ),
                    ));
                }
                Some(_) => {}
            }
            for (session, short) in &f.missing {
                found.push(violation(
                    "live session missing in Redis",
                    format!(
                        "{what}: Redis lacks live session {short}… once every instance was healthy \
                     at {} ({} of {} live sessions missing); it was made by the {}",
                        f.healthy
                            .map_or_else(|| "-".to_owned(), |h| rel(h, self.start)),
                        f.missing.len(),
                        f.live_checked,
                        self.describe(self.history.sessions[*session].created_by)
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::Record;

    const S: Micros = 1_000_000;
    const START: Micros = 1_000 * S;

    fn params() -> Params {
        Params {
            idle: 20 * S,
            slack: S / 4,
            propagation: S,
            healthy_within: 2 * S,
            healthy_wait: 10 * S,
            outage_grace: 0,
        }
    }

    /// A history builder: times in seconds after `START`.
    struct Build {
        history: History,
    }

    impl Build {
        fn new() -> Self {
            Self {
                history: History::default(),
            }
        }

        fn at(seconds: f64) -> Micros {
            START + (seconds * 1e6) as Micros
        }

        /// A creation answered 201 at `t`, idle expiry `t + 20`, absolute `t + 120`.
        fn create(&mut self, t: f64, user: Option<&str>) -> usize {
            let mut r = Record::new(0, 0, Op::CreateForUser, Self::at(t));
            r.answered = Self::at(t + 0.01);
            r.outcome = ok(201);
            r.expires_at = Some(Self::at(t + 20.0));
            r.absolute_at = Some(Self::at(t + 120.0));
            r.user = user.map(str::to_owned);
            let index = self.history.push(r);
            let token = format!("token{index:017}");
            let s = self.history.session(&token, user, index);
            self.history.records[index].session = Some(s);
            s
        }

        fn request(&mut self, op: Op, session: usize, t: f64, outcome: Outcome) -> usize {
            let mut r = Record::new(0, 0, op, Self::at(t));
            r.session = Some(session);
            r.answered = Self::at(t + 0.01);
            r.instance = Some(0);
            if outcome.status() == Some(200) && op == Op::Keepalive {
                let absolute =
                    self.history.records[self.history.sessions[session].created_by].absolute_at;
                r.expires_at = absolute.map(|a| a.min(Self::at(t + 20.0)));
                r.absolute_at = absolute;
            }
            r.outcome = outcome;
            self.history.push(r)
        }

        fn on(&mut self, index: usize, instance: usize) {
            self.history.records[index].instance = Some(instance);
        }

        fn check(&self, faults: &[FaultRecord]) -> Vec<Violation> {
            check(&self.history, faults, &[], &params(), START)
        }
    }

    fn ok(status: u16) -> Outcome {
        Outcome::Answer {
            status,
            error: None,
            proxy: false,
        }
    }

    fn error(status: u16, code: &str) -> Outcome {
        Outcome::Answer {
            status,
            error: Some(code.to_owned()),
            proxy: false,
        }
    }

    fn redis_fault(kind: FaultKind, from: f64, to: f64, healthy: f64) -> FaultRecord {
        FaultRecord {
            index: 0,
            kind: Some(kind),
            instance: None,
            detail: String::new(),
            started: Build::at(from),
            ended: Build::at(to),
            healthy: Some(Build::at(healthy)),
            slowest: Some(0),
            relapsed: None,
            slow_log: String::new(),
            live_checked: 0,
            missing: Vec::new(),
        }
    }

    fn only(found: &[Violation]) -> Vec<Invariant> {
        found.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_quiet_life_has_no_violation() {
        let mut b = Build::new();
        let s = b.create(0.0, Some("ann"));
        for t in [2.0, 4.0, 15.0, 30.0] {
            b.request(Op::Keepalive, s, t, ok(200));
        }
        // Idle past the expiry (50 s): the 401 is right.
        b.request(Op::Keepalive, s, 60.0, error(401, "session_expired"));
        b.request(Op::Logout, s, 61.0, ok(204));
        b.request(Op::Keepalive, s, 62.0, error(401, "session_expired"));
        assert!(b.check(&[]).is_empty(), "{:#?}", b.check(&[]));
    }

    #[test]
    fn a_401_within_the_idle_timeout_is_a_violation() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        b.request(Op::Keepalive, s, 2.0, ok(200));
        b.request(Op::Keepalive, s, 10.0, error(401, "session_expired"));
        let found = b.check(&[redis_fault(FaultKind::RedisFlushed, 9.0, 9.0, 9.1)]);
        assert_eq!(only(&found), [Invariant::NoFalse401]);
        assert_eq!(found[0].kind, Some(FaultKind::RedisFlushed));
        assert!(found[0].text.contains("redis-flushed"), "{}", found[0].text);
    }

    #[test]
    fn a_401_after_an_end_was_sent_is_not() {
        let mut b = Build::new();
        let s = b.create(0.0, Some("bo"));
        let other = b.create(0.5, Some("bo"));
        b.request(Op::Keepalive, s, 2.0, ok(200));
        // "Log out everywhere" from the other device, unanswered (lost): it may have ended s.
        let mut end_all = Record::new(0, 1, Op::EndAll, Build::at(3.0));
        end_all.user = Some("bo".to_owned());
        end_all.answered = Build::at(8.0);
        end_all.outcome = Outcome::Lost("timeout".to_owned());
        b.history.push(end_all);
        b.request(Op::Keepalive, s, 4.0, error(401, "session_expired"));
        b.request(Op::Keepalive, other, 4.0, error(401, "session_expired"));
        let found = b.check(&[]);
        // The lost request is a 5xx-invariant matter, the 401s are not violations.
        assert_eq!(only(&found), [Invariant::No5xx]);
    }

    #[test]
    fn a_200_after_a_logout_is_a_violation_unless_an_outage_explains_it() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        let logout = b.request(Op::Logout, s, 5.0, ok(204));
        b.on(logout, 0);
        let late = b.request(Op::Keepalive, s, 6.0, ok(200));
        b.on(late, 1);
        assert_eq!(only(&b.check(&[])), [Invariant::NoRevivalAfterLogout]);

        // Redis frozen from 4.5 s to 8 s, every instance healthy at 9 s: another instance may
        // serve it until 10 s (healthy + 1 s of propagation).
        let outage = [redis_fault(FaultKind::RedisFrozen, 4.5, 8.0, 9.0)];
        assert!(b.check(&outage).is_empty());
        let after = b.request(Op::Keepalive, s, 10.5, ok(200));
        b.on(after, 1);
        assert_eq!(only(&b.check(&outage)), [Invariant::NoRevivalAfterLogout]);
        b.history.records.pop();

        // Never the instance that acknowledged it.
        b.on(late, 0);
        assert_eq!(only(&b.check(&outage)), [Invariant::NoRevivalAfterLogout]);
    }

    #[test]
    fn a_200_sent_before_the_logout_was_acknowledged_is_fine() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        let mut logout = Record::new(0, 0, Op::Logout, Build::at(5.0));
        logout.session = Some(s);
        logout.answered = Build::at(5.5);
        logout.outcome = ok(204);
        b.history.push(logout);
        b.request(Op::Keepalive, s, 5.2, ok(200));
        assert!(b.check(&[]).is_empty());
    }

    #[test]
    fn service_past_the_idle_expiry_needs_an_outage_and_past_the_absolute_never() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        b.request(Op::Keepalive, s, 30.0, ok(200));
        assert_eq!(only(&b.check(&[])), [Invariant::NoServiceAfterExpiry]);
        // Redis killed at 25 s: without a grace, still a violation.
        let outage = [redis_fault(FaultKind::RedisKilled, 25.0, 29.0, 30.5)];
        assert_eq!(only(&b.check(&outage)), [Invariant::NoServiceAfterExpiry]);
        // With a grace of one idle timeout, the instance may accept it while the outage lasts.
        let graced = Params {
            outage_grace: 20 * S,
            ..params()
        };
        assert!(check(&b.history, &outage, &[], &graced, START).is_empty());

        let mut b = Build::new();
        let s = b.create(0.0, None);
        for t in (1..=60).map(|i| f64::from(i) * 2.0) {
            b.request(Op::Keepalive, s, t, ok(200));
        }
        // 120 s is the absolute expiry: the last keepalive (sent at 120 s) is within the slack.
        assert!(b.check(&[]).is_empty(), "{:#?}", b.check(&[]));
        b.request(Op::Keepalive, s, 121.0, ok(200));
        let outage = [redis_fault(FaultKind::RedisKilled, 115.0, 118.0, 119.0)];
        assert_eq!(only(&b.check(&outage)), [Invariant::NoServiceAfterExpiry]);
    }

    #[test]
    fn an_unanswered_keepalive_may_have_extended_the_session() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        b.request(Op::Keepalive, s, 15.0, Outcome::Lost("reset".to_owned()));
        // Up to 15 s + 20 s: a 200 at 30 s is possible.
        b.request(Op::Keepalive, s, 30.0, ok(200));
        let killed = FaultRecord {
            kind: Some(FaultKind::InstanceKilled),
            instance: Some(0),
            ..redis_fault(FaultKind::InstanceKilled, 14.9, 16.0, 16.5)
        };
        assert!(b.check(&[killed]).is_empty());
    }

    #[test]
    fn only_documented_503s_pass() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        b.request(Op::Keepalive, s, 1.0, error(503, "store_unavailable"));
        b.request(Op::Keepalive, s, 2.0, error(503, "request_timeout"));
        assert!(b.check(&[]).is_empty());
        b.request(Op::Keepalive, s, 3.0, error(500, "internal"));
        b.request(Op::Keepalive, s, 4.0, error(503, "whatever"));
        assert_eq!(only(&b.check(&[])), [Invariant::No5xx, Invariant::No5xx]);
    }

    #[test]
    fn slow_recovery_and_missing_sessions_are_violations() {
        let mut b = Build::new();
        let s = b.create(0.0, None);
        let mut slow = redis_fault(FaultKind::RedisRestartedEmpty, 5.0, 6.0, 8.5);
        slow.missing.push((s, b.history.short(s)));
        slow.live_checked = 1;
        let found = b.check(&[slow]);
        assert_eq!(only(&found), [Invariant::Recovery, Invariant::Recovery]);
        assert!(found.iter().any(|v| v.text.contains("2.500 s after")));
        assert!(found.iter().any(|v| v.text.contains("Redis lacks")));

        // Healthy at first, offline again at the later poll: the report says so, with the log.
        let mut relapsed = redis_fault(FaultKind::RedisFrozen, 5.0, 6.0, 11.0);
        relapsed.relapsed = Some(Build::at(6.3));
        relapsed.slow_log = "2026-12-06T20:15:24.090Z INFO [redis] connected".to_owned();
        let found = b.check(&[relapsed]);
        assert_eq!(only(&found), [Invariant::Recovery]);
        let text = &found[0].text;
        assert!(text.contains("5.000 s after the end"), "{text}");
        assert!(text.contains("healthy at +6.300 s"), "{text}");
        assert!(text.contains("[redis] connected"), "{text}");
    }

    #[test]
    fn live_sessions_are_those_surely_live() {
        let mut b = Build::new();
        let kept = b.create(0.0, None);
        let ended = b.create(0.0, None);
        let _idle = b.create(0.0, None);
        b.request(Op::Keepalive, kept, 10.0, ok(200));
        b.request(Op::Logout, ended, 5.0, ok(204));
        let live = live_sessions(&b.history, Build::at(25.0), Build::at(25.1), &params());
        // `idle` expired at 20 s.
        assert_eq!(live, [kept]);
    }
}

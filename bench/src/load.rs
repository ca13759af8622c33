//! The load itself: creating sessions and hammering one endpoint per phase.
//!
//! A phase runs `connections` closed-loop workers, each on its own keep-alive
//! connection, for `warmup + duration`. Only responses that complete inside
//! the measured window count towards throughput and latency; errors count
//! during the whole phase, warm-up included, because a failure is a failure.
//! Every loop is bounded by the phase deadline and every request by a
//! timeout, so a phase always ends.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Conn};
use crate::stats::{self, Latency};
use crate::target::Target;

/// Timeouts shared by setup and phases.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// The endpoints compared by the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// Liveness probe: the server's cheapest request, the baseline.
    Livez,
    /// Session keepalive with a real session cookie.
    Keepalive,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Livez => "/livez",
            Endpoint::Keepalive => "/api/v1/keepalive/",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Keepalive => "keepalive",
        }
    }
}

/// Session cookies split into one disjoint slice per connection, so no two
/// connections ever touch the same session concurrently.
#[derive(Debug, Clone)]
pub struct SessionPool {
    slices: Vec<Vec<HeaderValue>>,
}

/// What setting up the sessions took, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSetup {
    pub created: usize,
    pub distinct: usize,
    pub cookie_name: String,
    pub seconds: f64,
}

/// Where sessions come from: keepalive's own `POST /api/v1/session` on the target, or an
/// application's login page (`POST` with no body, answering 200 with its cookie).
#[derive(Debug, Clone)]
pub enum SessionSource {
    /// `POST /api/v1/session` on the benchmarked server (201).
    Keepalive,
    /// `POST` to this page of an application (200), as its own login.
    Login(Target, String),
}

/// Creates `count` sessions from `source`, spread over `connections` connections, and splits
/// them into per-connection slices.
pub async fn create_sessions(
    target: &Target,
    source: &SessionSource,
    count: usize,
    connections: usize,
    cookie_name: Option<&str>,
    timeouts: Timeouts,
) -> anyhow::Result<(SessionPool, SessionSetup)> {
    let (target, path, expected) = match source {
        SessionSource::Keepalive => (
            target.clone(),
            "/api/v1/session".to_owned(),
            StatusCode::CREATED,
        ),
        SessionSource::Login(login, path) => (login.clone(), path.clone(), StatusCode::OK),
    };
    let path: Arc<str> = Arc::from(path);
    if count < connections {
        bail!("--sessions ({count}) must be at least --connections ({connections})");
    }
    let started = Instant::now();
    let wanted: Option<Arc<str>> = cookie_name.map(Arc::from);
    let mut tasks = JoinSet::new();
    for (i, n) in slice_sizes(count, connections).into_iter().enumerate() {
        let target = target.clone();
        let wanted = wanted.clone();
        let path = Arc::clone(&path);
        tasks.spawn(async move {
            let mut conn = Conn::connect(&target, timeouts.connect).await?;
            let mut cookies = Vec::with_capacity(n);
            for _ in 0..n {
                if conn.is_closed() {
                    conn = Conn::connect(&target, timeouts.connect).await?;
                }
                let resp = conn
                    .request(Method::POST, &path, None, timeouts.request)
                    .await?;
                if resp.status() != expected {
                    bail!(
                        "POST {path} answered {} (expected {expected}): {}",
                        resp.status(),
                        snippet(resp.body())
                    );
                }
                let cookie = client::session_cookie(resp.headers(), wanted.as_deref())
                    .with_context(|| format!("POST {path} answered without a usable Set-Cookie"))?;
                cookies.push(cookie);
            }
            Ok::<_, anyhow::Error>((i, cookies))
        });
    }
    let mut slices = vec![Vec::new(); connections];
    while let Some(joined) = tasks.join_next().await {
        let (i, cookies) = joined.context("session worker panicked")??;
        slices[i] = cookies;
    }
    let all: Vec<&HeaderValue> = slices.iter().flatten().collect();
    let distinct = all.iter().collect::<HashSet<_>>().len();
    let names: HashSet<&str> = all.iter().filter_map(|c| client::cookie_name(c)).collect();
    let cookie_name = match names.len() {
        1 => names.into_iter().next().unwrap_or_default().to_owned(),
        _ => format!("(mixed: {names:?})"),
    };
    let setup = SessionSetup {
        created: all.len(),
        distinct,
        cookie_name,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((SessionPool { slices }, setup))
}

/// Sizes of `parts` near-equal slices of `total` items (larger ones first).
pub fn slice_sizes(total: usize, parts: usize) -> Vec<usize> {
    if parts == 0 {
        return Vec::new();
    }
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Results of one endpoint for one round.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub endpoint: Endpoint,
    /// Responses with the expected status inside the measured window.
    pub ok: u64,
    pub requests_per_sec: f64,
    /// Latency of the successful responses; `None` if there were none.
    pub latency: Option<Latency>,
    /// Every complete response, whatever its status, warm-up included.
    pub responses_total: u64,
    /// Server CPU time (user + system) per response over the whole phase, in
    /// microseconds; only known for a server the bench started.
    pub server_cpu_us_per_response: Option<f64>,
    /// The load generator's own CPU time per response, in microseconds: when
    /// it nears the server's, the client may be what limits throughput.
    pub client_cpu_us_per_response: Option<f64>,
    /// CPU time of the redis-server the bench started (`load --redis`) per
    /// response, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_response: Option<f64>,
    /// Unexpected statuses plus transport failures (plus, at a fixed rate,
    /// requests never sent before the drain deadline), warm-up included.
    pub errors: u64,
    /// Unexpected statuses by code, e.g. `{"401": 3}`.
    pub unexpected_status: BTreeMap<u16, u64>,
    /// Connect, timeout, reset and body errors.
    pub transport_errors: u64,
    /// Times a worker had to reopen a connection the server closed.
    pub reconnects: u64,
    /// Keepalive responses that rotated the session cookie (the new value is used from then on).
    pub cookie_updates: u64,
    /// The first error seen, verbatim, to make failures diagnosable.
    pub first_error: Option<String>,
    pub measured_secs: f64,
    /// Set for a fixed-rate (open-loop) phase: the offered rate and how late requests went out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_rate: Option<crate::openloop::FixedRateInfo>,
}

/// Everything one closed-loop worker saw; merged into a [`PhaseStats`].
struct WorkerOutcome {
    index: usize,
    hist: Histogram<u64>,
    ok: u64,
    counters: Counters,
    cookies: Vec<HeaderValue>,
}

/// Counts every worker keeps, whatever the load model.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every complete response, whatever its status.
    pub responses_total: u64,
    pub unexpected_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub reconnects: u64,
    pub cookie_updates: u64,
    pub first_error: Option<String>,
}

impl Counters {
    fn transport_error(&mut self, e: anyhow::Error) {
        self.transport_errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    /// Adds `other` into `self` (the first error of `self` wins).
    pub fn merge(&mut self, other: Counters) {
        self.responses_total += other.responses_total;
        for (code, n) in other.unexpected_status {
            *self.unexpected_status.entry(code).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.reconnects += other.reconnects;
        self.cookie_updates += other.cookie_updates;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Unexpected statuses plus transport failures.
    pub fn errors(&self) -> u64 {
        self.transport_errors + self.unexpected_status.values().sum::<u64>()
    }
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200.
    Ok,
    /// Any other status.
    Status(u16),
    /// Connect, reset, timeout or body error.
    Transport,
    /// Scheduled (open loop) but never sent: the phase's drain deadline passed first.
    Unsent,
}

/// One connection to the target and the sessions it cycles through: the
/// request/response handling shared by the closed-loop and fixed-rate loads.
pub struct Worker {
    target: Target,
    endpoint: Endpoint,
    timeouts: Timeouts,
    conn: Option<Conn>,
    /// This connection's slice of sessions (rotated cookies replace old ones).
    pub cookies: Vec<HeaderValue>,
    next_session: usize,
    pub counters: Counters,
}

impl Worker {
    pub fn new(
        target: Target,
        endpoint: Endpoint,
        timeouts: Timeouts,
        cookies: Vec<HeaderValue>,
    ) -> Self {
        Self {
            target,
            endpoint,
            timeouts,
            conn: None,
            cookies,
            next_session: 0,
            counters: Counters::default(),
        }
    }

    /// Makes sure a connection is open, waiting at most until `deadline`.
    /// False when none could be opened (the failure is counted) or the
    /// deadline has passed.
    pub async fn ensure_conn(&mut self, deadline: Instant) -> bool {
        if self.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        if self.conn.is_some() {
            self.counters.reconnects += 1;
            self.conn = None;
        }
        // Never wait past the deadline for a connection.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match Conn::connect(&self.target, self.timeouts.connect.min(left)).await {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(e) => {
                self.counters.transport_error(e);
                false
            }
        }
    }

    /// Sends one request on the open connection (see [`Worker::ensure_conn`])
    /// and reads the whole answer. Returns the index of the session used in
    /// [`Worker::cookies`], if any, and the outcome.
    pub async fn exchange(&mut self) -> (Option<usize>, Outcome) {
        let Some(c) = self.conn.as_mut() else {
            self.counters
                .transport_error(anyhow!("no open connection to send on"));
            return (None, Outcome::Transport);
        };
        let session = (!self.cookies.is_empty()).then(|| {
            let i = self.next_session % self.cookies.len();
            self.next_session = i + 1;
            i
        });
        let cookie = session.and_then(|i| self.cookies.get(i));
        let result = c
            .request(
                Method::GET,
                self.endpoint.path(),
                cookie,
                self.timeouts.request,
            )
            .await;
        let out = &mut self.counters;
        match result {
            Ok(resp) if resp.status() == StatusCode::OK => {
                out.responses_total += 1;
                // Follow a rotated session cookie like a browser would.
                if let Some(i) = session {
                    if resp.headers().contains_key(header::SET_COOKIE) {
                        let name = self.cookies.get(i).and_then(client::cookie_name);
                        if let Some(new) = client::session_cookie(resp.headers(), name) {
                            if self.cookies.get(i) != Some(&new) {
                                out.cookie_updates += 1;
                                self.cookies[i] = new;
                            }
                        }
                    }
                }
                (session, Outcome::Ok)
            }
            Ok(resp) => {
                out.responses_total += 1;
                *out.unexpected_status
                    .entry(resp.status().as_u16())
                    .or_default() += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!(
                        "{} answered {}: {}",
                        self.endpoint.path(),
                        resp.status(),
                        snippet(resp.body())
                    ));
                }
                (session, Outcome::Status(resp.status().as_u16()))
            }
            Err(e) => {
                out.transport_error(e);
                // The connection state is unknown after a failure: start over.
                self.conn = None;
                (session, Outcome::Transport)
            }
        }
    }
}

impl SessionPool {
    /// Splits `cookies` into `connections` near-equal slices, in order.
    pub fn from_cookies(cookies: Vec<HeaderValue>, connections: usize) -> anyhow::Result<Self> {
        if cookies.len() < connections || connections == 0 {
            bail!(
                "{} sessions cannot be spread over {connections} connections",
                cookies.len()
            );
        }
        let mut rest = cookies.into_iter();
        let slices = slice_sizes(rest.len(), connections)
            .into_iter()
            .map(|n| rest.by_ref().take(n).collect())
            .collect();
        Ok(Self { slices })
    }

    /// Takes the cookies of connection `index` (empty for `/livez`), to be
    /// given back with [`SessionPool::put_back`].
    pub fn take(&mut self, index: usize, endpoint: Endpoint) -> anyhow::Result<Vec<HeaderValue>> {
        match endpoint {
            Endpoint::Livez => Ok(Vec::new()),
            Endpoint::Keepalive => {
                let slice = self
                    .slices
                    .get_mut(index)
                    .map(std::mem::take)
                    .unwrap_or_default();
                if slice.is_empty() {
                    bail!("connection {index} has no session to send");
                }
                Ok(slice)
            }
        }
    }

    /// Gives the (possibly rotated) cookies of connection `index` back.
    pub fn put_back(&mut self, index: usize, endpoint: Endpoint, cookies: Vec<HeaderValue>) {
        if endpoint == Endpoint::Keepalive {
            if let Some(slot) = self.slices.get_mut(index) {
                *slot = cookies;
            }
        }
    }

    /// Index of the first session of each connection's slice in [`SessionPool::all`].
    pub fn bases(&self) -> Vec<usize> {
        self.slices
            .iter()
            .scan(0, |acc, s| {
                let base = *acc;
                *acc += s.len();
                Some(base)
            })
            .collect()
    }

    /// Every session cookie, slice after slice.
    pub fn all(&self) -> impl Iterator<Item = &HeaderValue> {
        self.slices.iter().flatten()
    }
}

/// Phase timing, shared by all workers.
#[derive(Debug, Clone, Copy)]
pub struct PhaseTiming {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Runs one endpoint with `timing.connections` workers and merges their results.
pub async fn run_phase(
    target: &Target,
    endpoint: Endpoint,
    timing: PhaseTiming,
    timeouts: Timeouts,
    sessions: &mut SessionPool,
) -> anyhow::Result<PhaseStats> {
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let mut tasks = JoinSet::new();
    for index in 0..timing.connections {
        let cookies = sessions.take(index, endpoint)?;
        let w = Worker::new(target.clone(), endpoint, timeouts, cookies);
        tasks.spawn(worker(index, w, (measure_from, end)));
    }

    // Workers stop by themselves at `end` plus at most one request timeout;
    // this outer bound only guards against a bug in that logic.
    let hard_stop = end + timeouts.connect + timeouts.request + Duration::from_secs(5);
    let mut outcomes = Vec::with_capacity(timing.connections);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(joined)) => outcomes.push(joined.context("load worker panicked")??),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                bail!("{} phase did not finish by its deadline", endpoint.name());
            }
        }
    }

    let mut hist = stats::new_histogram()?;
    let mut counters = Counters::default();
    let mut ok = 0;
    outcomes.sort_by_key(|o| o.index);
    for o in outcomes {
        hist.add(&o.hist)
            .map_err(|e| anyhow!("merge histograms: {e}"))?;
        ok += o.ok;
        counters.merge(o.counters);
        sessions.put_back(o.index, endpoint, o.cookies);
    }
    let mut stats = PhaseStats::new(endpoint, ok, timing.duration, counters);
    stats.latency = Latency::from_histogram(&hist);
    Ok(stats)
}

impl PhaseStats {
    /// Figures from the merged counters; latency is filled in by the caller.
    pub fn new(endpoint: Endpoint, ok: u64, measured: Duration, counters: Counters) -> Self {
        let measured_secs = measured.as_secs_f64();
        Self {
            endpoint,
            ok,
            requests_per_sec: ok as f64 / measured_secs.max(f64::EPSILON),
            latency: None,
            responses_total: counters.responses_total,
            server_cpu_us_per_response: None,
            client_cpu_us_per_response: None,
            redis_cpu_us_per_response: None,
            errors: counters.errors(),
            unexpected_status: counters.unexpected_status,
            transport_errors: counters.transport_errors,
            reconnects: counters.reconnects,
            cookie_updates: counters.cookie_updates,
            first_error: counters.first_error,
            measured_secs,
            fixed_rate: None,
        }
    }
}

/// One closed-loop connection: send, wait for the full response, repeat.
async fn worker(
    index: usize,
    mut w: Worker,
    (measure_from, end): (Instant, Instant),
) -> anyhow::Result<WorkerOutcome> {
    let mut hist = stats::new_histogram()?;
    let mut ok = 0;
    while Instant::now() < end {
        if !w.ensure_conn(end).await {
            // Back off so a dead server does not turn into a busy loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let sent = Instant::now();
        let (_, outcome) = w.exchange().await;
        let done = Instant::now();
        if outcome == Outcome::Ok && done >= measure_from && done < end {
            ok += 1;
            let micros = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
            hist.saturating_record(micros.max(1));
        }
    }
    Ok(WorkerOutcome {
        index,
        hist,
        ok,
        counters: w.counters,
        cookies: w.cookies,
    })
}

/// A short, printable excerpt of a response body for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_everything_evenly() {
        assert_eq!(slice_sizes(10, 3), vec![4, 3, 3]);
        assert_eq!(slice_sizes(5000, 64).iter().sum::<usize>(), 5000);
        assert!(slice_sizes(5000, 64).iter().all(|&n| n == 78 || n == 79));
        assert_eq!(slice_sizes(3, 0), Vec::<usize>::new());
    }

    #[test]
    fn snippet_is_bounded() {
        assert_eq!(snippet(b"unauthorized"), "unauthorized");
        assert_eq!(snippet(&[b'x'; 500]).chars().count(), 201);
        assert_eq!(snippet(&[0xff, b'a']), "\u{fffd}a");
    }
}

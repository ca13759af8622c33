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

/// Creates `count` sessions with `POST /api/v1/session`, spread over
/// `connections` connections, and splits them into per-connection slices.
pub async fn create_sessions(
    target: &Target,
    count: usize,
    connections: usize,
    cookie_name: Option<&str>,
    timeouts: Timeouts,
) -> anyhow::Result<(SessionPool, SessionSetup)> {
    if count < connections {
        bail!("--sessions ({count}) must be at least --connections ({connections})");
    }
    let started = Instant::now();
    let wanted: Option<Arc<str>> = cookie_name.map(Arc::from);
    let mut tasks = JoinSet::new();
    for (i, n) in slice_sizes(count, connections).into_iter().enumerate() {
        let target = target.clone();
        let wanted = wanted.clone();
        tasks.spawn(async move {
            let mut conn = Conn::connect(&target, timeouts.connect).await?;
            let mut cookies = Vec::with_capacity(n);
            for _ in 0..n {
                if conn.is_closed() {
                    conn = Conn::connect(&target, timeouts.connect).await?;
                }
                let resp = conn
                    .request(Method::POST, "/api/v1/session", None, timeouts.request)
                    .await?;
                if resp.status() != StatusCode::CREATED {
                    bail!(
                        "POST /api/v1/session answered {} (expected 201): {}",
                        resp.status(),
                        snippet(resp.body())
                    );
                }
                let cookie = client::session_cookie(resp.headers(), wanted.as_deref())
                    .context("POST /api/v1/session answered 201 without a usable Set-Cookie")?;
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
    /// Unexpected statuses plus transport failures, warm-up included.
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
}

/// Everything one worker saw; merged into a [`PhaseStats`].
struct WorkerOutcome {
    index: usize,
    hist: Histogram<u64>,
    ok: u64,
    responses_total: u64,
    unexpected_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    reconnects: u64,
    cookie_updates: u64,
    first_error: Option<String>,
    cookies: Vec<HeaderValue>,
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
        let cookies = match endpoint {
            Endpoint::Livez => Vec::new(),
            Endpoint::Keepalive => {
                let slice = sessions
                    .slices
                    .get_mut(index)
                    .map(std::mem::take)
                    .unwrap_or_default();
                if slice.is_empty() {
                    bail!("connection {index} has no session to send");
                }
                slice
            }
        };
        let target = target.clone();
        let window = (measure_from, end);
        tasks.spawn(worker(index, target, endpoint, window, timeouts, cookies));
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

    let mut stats = PhaseStats {
        endpoint,
        ok: 0,
        requests_per_sec: 0.0,
        latency: None,
        responses_total: 0,
        server_cpu_us_per_response: None,
        client_cpu_us_per_response: None,
        errors: 0,
        unexpected_status: BTreeMap::new(),
        transport_errors: 0,
        reconnects: 0,
        cookie_updates: 0,
        first_error: None,
        measured_secs: timing.duration.as_secs_f64(),
    };
    let mut hist = stats::new_histogram()?;
    outcomes.sort_by_key(|o| o.index);
    for o in outcomes {
        hist.add(&o.hist)
            .map_err(|e| anyhow!("merge histograms: {e}"))?;
        stats.ok += o.ok;
        stats.responses_total += o.responses_total;
        for (code, n) in o.unexpected_status {
            *stats.unexpected_status.entry(code).or_default() += n;
        }
        stats.transport_errors += o.transport_errors;
        stats.reconnects += o.reconnects;
        stats.cookie_updates += o.cookie_updates;
        if stats.first_error.is_none() {
            stats.first_error = o.first_error;
        }
        if endpoint == Endpoint::Keepalive {
            // Give the (possibly rotated) cookies back for the next round.
            if let Some(slot) = sessions.slices.get_mut(o.index) {
                *slot = o.cookies;
            }
        }
    }
    stats.errors = stats.transport_errors + stats.unexpected_status.values().sum::<u64>();
    stats.requests_per_sec = stats.ok as f64 / stats.measured_secs.max(f64::EPSILON);
    stats.latency = Latency::from_histogram(&hist);
    Ok(stats)
}

/// One closed-loop connection: send, wait for the full response, repeat.
async fn worker(
    index: usize,
    target: Target,
    endpoint: Endpoint,
    (measure_from, end): (Instant, Instant),
    timeouts: Timeouts,
    mut cookies: Vec<HeaderValue>,
) -> anyhow::Result<WorkerOutcome> {
    let mut out = WorkerOutcome {
        index,
        hist: stats::new_histogram()?,
        ok: 0,
        responses_total: 0,
        unexpected_status: BTreeMap::new(),
        transport_errors: 0,
        reconnects: 0,
        cookie_updates: 0,
        first_error: None,
        cookies: Vec::new(),
    };
    let mut conn: Option<Conn> = None;
    let mut next_session = 0usize;
    while Instant::now() < end {
        if conn.as_ref().is_none_or(Conn::is_closed) {
            if conn.is_some() {
                out.reconnects += 1;
            }
            // Never wait past the phase end for a connection.
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match Conn::connect(&target, timeouts.connect.min(left)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    out.transport_error(e);
                    conn = None;
                    // Back off so a dead server does not turn into a busy loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let session = (!cookies.is_empty()).then(|| {
            let i = next_session % cookies.len();
            next_session = i + 1;
            i
        });
        let cookie = session.and_then(|i| cookies.get(i));
        let sent = Instant::now();
        let result = c
            .request(Method::GET, endpoint.path(), cookie, timeouts.request)
            .await;
        let done = Instant::now();
        let counted = done >= measure_from && done < end;
        if result.is_ok() {
            out.responses_total += 1;
        }
        match result {
            Ok(resp) if resp.status() == StatusCode::OK => {
                if counted {
                    out.ok += 1;
                    let micros =
                        u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                    out.hist.saturating_record(micros.max(1));
                }
                // Follow a rotated session cookie like a browser would.
                if let Some(i) = session {
                    if resp.headers().contains_key(header::SET_COOKIE) {
                        let name = cookies.get(i).and_then(client::cookie_name);
                        if let Some(new) = client::session_cookie(resp.headers(), name) {
                            if cookies.get(i) != Some(&new) {
                                out.cookie_updates += 1;
                                cookies[i] = new;
                            }
                        }
                    }
                }
            }
            Ok(resp) => {
                *out.unexpected_status
                    .entry(resp.status().as_u16())
                    .or_default() += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!(
                        "{} answered {}: {}",
                        endpoint.path(),
                        resp.status(),
                        snippet(resp.body())
                    ));
                }
            }
            Err(e) => {
                out.transport_error(e);
                // The connection state is unknown after a failure: start over.
                conn = None;
            }
        }
    }
    out.cookies = cookies;
    Ok(out)
}

impl WorkerOutcome {
    fn transport_error(&mut self, e: anyhow::Error) {
        self.transport_errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
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

//! Per-client rate limits on the state-changing routes (session creation and rotation, logout,
//! keepalive), and the client's address behind trusted proxies.
//!
//! A client is its IP address; IPv6 clients are grouped by /64, the block one subscriber gets,
//! so rotating addresses inside it buys nothing. Behind a load balancer every request comes
//! from the balancer: when the peer is a trusted proxy, the client is the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy (the left-most ones are whatever the
//! client chose to send). By default loopback and the private ranges are trusted proxies (load
//! balancers and ingress controllers live there); loopback clients are not limited. The
//! limiter's memory is swept periodically of clients that went
//! quiet, so a crowd of addresses costs memory only while it is active.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use super::{ApiError, AppState};
use crate::config::RateLimitSettings;

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `POST /api/v1/session` and `POST /api/v1/session/rotate`.
    Sessions,
    /// `DELETE /api/v1/session`: the budget of session creation, counted apart, so that a
    /// client that spent one can still use the other.
    Logouts,
    /// `GET /api/v1/keepalive`.
    Keepalive,
}

impl Bucket {
    fn route(self) -> &'static str {
        match self {
            Self::Sessions | Self::Logouts => "/api/v1/session",
            Self::Keepalive => "/api/v1/keepalive",
        }
    }
}

/// The limiters of one server.
pub struct RateLimits {
    sessions: Option<DefaultKeyedRateLimiter<IpAddr>>,
    logouts: Option<DefaultKeyedRateLimiter<IpAddr>>,
    keepalive: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted: Vec<IpNet>,
}

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_minute).map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    /// Limiters for these settings.
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            sessions: limiter(settings.sessions_per_minute),
            logouts: limiter(settings.sessions_per_minute),
            keepalive: limiter(settings.keepalives_per_minute),
            trusted: settings.trusted_proxies.clone(),
        }
    }

    /// Whether `client` may make one more request; if not, how long until it may. Loopback
    /// clients (health checks, sidecars, a proxy on the same host that adds no
    /// `X-Forwarded-For`) are never limited: limiting them would throttle everyone behind them
    /// as one client.
    pub fn check(&self, bucket: Bucket, client: IpAddr) -> Result<(), Duration> {
        if canonical(client).is_loopback() {
            return Ok(());
        }
        let limiter = match bucket {
            Bucket::Sessions => &self.sessions,
            Bucket::Logouts => &self.logouts,
            Bucket::Keepalive => &self.keepalive,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&client_key(client))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets clients whose limits are back to full, and gives the memory back.
    pub fn sweep(&self) {
        for limiter in [&self.sessions, &self.logouts, &self.keepalive]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The client's address: the peer, or behind trusted proxies the first untrusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        hops.iter()
            .rev()
            .copied()
            .find(|hop| !self.is_trusted(*hop))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 clients.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The limiter key: the address, or its /64 for IPv6.
fn client_key(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Middleware refusing a request over its client's limit with 429 and `Retry-After`.
pub async fn enforce(
    State((state, bucket)): State<(AppState, Bucket)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    if let Some(refused) = refusal(&state, bucket, peer, request.headers()) {
        return refused;
    }
    next.run(request).await
}

/// The 429 for a client over its budget in `bucket`, or `None` to go on. `peer` is the
/// connection's address (`None` when served without one, as in in-memory tests: no limit).
/// The keepalive handler calls it itself rather than through a layer: a layer is one more
/// boxed service and allocation on the one request every open tab makes each tick.
pub fn refusal(
    state: &AppState,
    bucket: Bucket,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Option<Response> {
    let client = state.limits.client(peer?, headers);
    let wait = state.limits.check(bucket, client).err()?;
    state
        .metrics
        .rate_limited_total
        .with_label_values(&[bucket.route()])
        .inc();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this address; retry in {seconds} s"),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> RateLimits {
        RateLimits::new(&RateLimitSettings {
            sessions_per_minute: 2,
            keepalives_per_minute: 0,
            trusted_proxies: trusted.iter().map(|t| t.parse().expect("cidr")).collect(),
        })
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let l = limits(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(l.client(peer, &xff("198.51.100.1")), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let l = limits(&["10.0.0.0/8", "192.0.2.1/32"]);
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        // The client forged the first entry; the trusted proxy appended the real address.
        let headers = xff("1.2.3.4, 198.51.100.7, 192.0.2.1");
        assert_eq!(
            l.client(proxy, &headers),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(l.client(proxy, &HeaderMap::new()), proxy);
        assert_eq!(l.client(proxy, &xff("garbage, 10.0.0.5")), proxy);
    }

    #[test]
    fn limits_apply_per_client_and_ipv6_per_64() {
        let l = limits(&[]);
        assert!(
            (0..10).all(|_| l
                .check(Bucket::Sessions, "127.0.0.1".parse().expect("ip"))
                .is_ok()),
            "loopback is never limited"
        );
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(l.check(Bucket::Sessions, a).is_ok());
        assert!(l.check(Bucket::Sessions, b).is_ok());
        let wait = l
            .check(Bucket::Sessions, a)
            .expect_err("third in the same /64 is refused");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            l.check(Bucket::Sessions, other).is_ok(),
            "another /64 has its own budget"
        );
        assert!(l.check(Bucket::Keepalive, a).is_ok(), "0 means no limit");
        let mapped: IpAddr = "::ffff:192.0.2.8".parse().expect("ip");
        assert_eq!(
            canonical(mapped),
            "192.0.2.8".parse::<IpAddr>().expect("ip")
        );
        l.sweep();
    }
}

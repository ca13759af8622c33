//! Per-client rate limits on the state-changing routes (session creation and rotation, logout,
//! keepalive), and the client's address behind trusted proxies.
//!
//! A client is its IP address; IPv6 clients are grouped by /64, the block one subscriber gets,
//! so rotating addresses inside it buys nothing. Behind a load balancer every request comes
//! from the balancer. When the peer is a trusted proxy, `X-Forwarded-For` is walked from the
//! right, since each entry was written by the hop to its right and only the trusted ones are
//! believed (the left-most entries are whatever the client chose to send):
//! - an entry that is a trusted proxy is skipped;
//! - the first entry that is not is the client (`ip:port` and `[ipv6]:port`, which some
//!   proxies write, count as their address);
//! - an entry that is no address (`unknown`, an obfuscated name, garbage, bytes outside ASCII,
//!   an empty entry) ends the walk: the client cannot be told, so the request counts under the
//!   trusted hop that wrote that entry, in a budget of its own ([`Client::RelayedBy`]). It is
//!   never exempt, and the client cannot make it another client's budget;
//! - if every entry is a trusted proxy, the left-most one is the client (no header: the peer).
//!
//! By default loopback and the private ranges are trusted proxies (load balancers and ingress
//! controllers live there); loopback clients are not limited. The limiter's memory is swept
//! periodically of clients that went quiet, so a crowd of addresses costs memory only while it
//! is active.

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

/// Whom a request counts as, for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A client address: the peer, or the one trusted proxies forwarded the request for.
    Address(IpAddr),
    /// A client that the trusted proxy at this address relayed without writing its address
    /// readably in `X-Forwarded-For`: limited under that proxy, apart from every address.
    RelayedBy(IpAddr),
}

/// The limiters of one server.
pub struct RateLimits {
    sessions: Option<DefaultKeyedRateLimiter<Client>>,
    logouts: Option<DefaultKeyedRateLimiter<Client>>,
    keepalive: Option<DefaultKeyedRateLimiter<Client>>,
    trusted: Vec<IpNet>,
}

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<Client>> {
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
    /// client addresses (health checks, sidecars, a proxy on the same host that adds no
    /// `X-Forwarded-For`) are never limited: limiting them would throttle everyone behind them
    /// as one client. A client relayed without a readable address is limited whatever relayed
    /// it.
    pub fn check(&self, bucket: Bucket, client: Client) -> Result<(), Duration> {
        let key = match client {
            Client::Address(addr) if canonical(addr).is_loopback() => return Ok(()),
            Client::Address(addr) => Client::Address(client_key(addr)),
            Client::RelayedBy(proxy) => Client::RelayedBy(canonical(proxy)),
        };
        let limiter = match bucket {
            Bucket::Sessions => &self.sessions,
            Bucket::Logouts => &self.logouts,
            Bucket::Keepalive => &self.keepalive,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&key)
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

    /// Whom the request counts as: the peer, or behind trusted proxies what their
    /// `X-Forwarded-For` says, by the rule of this module's documentation. The header is read
    /// as bytes, so one entry outside ASCII spoils that entry only, not the ones the proxies
    /// appended after it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return Client::Address(peer);
        }
        // The trusted hop nearest to the client so far: the writer of the next entry.
        let mut nearest = peer;
        // Several header lines are one list, in order.
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            for entry in value.as_bytes().rsplit(|byte| *byte == b',') {
                match entry_address(entry) {
                    Some(hop) if self.is_trusted(hop) => nearest = hop,
                    Some(hop) => return Client::Address(hop),
                    None => return Client::RelayedBy(nearest),
                }
            }
        }
        Client::Address(nearest)
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }
}

/// The address one `X-Forwarded-For` entry names: an IP address, or `ip:port`, `[ipv6]:port`
/// or `[ipv6]` as some proxies write it; `None` for anything else.
fn entry_address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let addr = match text.parse::<IpAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.parse::<SocketAddr>() {
            Ok(socket) => socket.ip(),
            Err(_) => IpAddr::V6(text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?),
        },
    };
    Some(canonical(addr))
}

/// IPv4-mapped IPv6 addresses are IPv4 clients.
pub(super) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The limiter key: the address, or its /64 for IPv6.
pub(super) fn client_key(addr: IpAddr) -> IpAddr {
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

    /// A header of one or more `X-Forwarded-For` lines, given as bytes.
    fn xff_lines(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_bytes(line).expect("header"),
            );
        }
        headers
    }

    fn xff(value: &str) -> HeaderMap {
        xff_lines(&[value.as_bytes()])
    }

    fn address(text: &str) -> Client {
        Client::Address(text.parse().expect("ip"))
    }

    fn relayed_by(text: &str) -> Client {
        Client::RelayedBy(text.parse().expect("ip"))
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let l = limits(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(l.client(peer, &xff("198.51.100.1")), Client::Address(peer));
        assert_eq!(l.client(peer, &xff("unknown")), Client::Address(peer));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let l = limits(&["10.0.0.0/8", "192.0.2.1/32"]);
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        // The client forged the first entry; the trusted proxy appended the real address.
        let headers = xff("1.2.3.4, 198.51.100.7, 192.0.2.1");
        assert_eq!(l.client(proxy, &headers), address("198.51.100.7"));
        assert_eq!(l.client(proxy, &HeaderMap::new()), Client::Address(proxy));
        // Every hop trusted: the left-most is where the request came from.
        assert_eq!(
            l.client(proxy, &xff("10.0.0.7, 10.0.0.5")),
            address("10.0.0.7")
        );
        // Several header lines are one list.
        let lines = xff_lines(&[b"1.2.3.4, 198.51.100.8", b"192.0.2.1"]);
        assert_eq!(l.client(proxy, &lines), address("198.51.100.8"));
        // IPv4-mapped addresses are IPv4 ones.
        assert_eq!(
            l.client(proxy, &xff("::ffff:198.51.100.9")),
            address("198.51.100.9")
        );
    }

    #[test]
    fn an_entry_with_a_port_counts_as_its_address() {
        let l = limits(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        let cases = [
            ("6.6.6.6, 198.51.100.7:4711", "198.51.100.7"),
            ("6.6.6.6, [2001:db8::7]:4711", "2001:db8::7"),
            ("6.6.6.6, [2001:db8::8]", "2001:db8::8"),
            ("6.6.6.6,\t198.51.100.7 ", "198.51.100.7"),
            ("6.6.6.6, 198.51.100.7, 10.0.0.5:80", "198.51.100.7"),
        ];
        for (header, client) in cases {
            assert_eq!(l.client(proxy, &xff(header)), address(client), "{header}");
        }
    }

    #[test]
    fn an_entry_that_is_no_address_ends_the_walk_at_the_proxy_that_wrote_it() {
        let l = limits(&["10.0.0.0/8", "127.0.0.0/8"]);
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let cases: [(&[u8], Client); 8] = [
            (b"198.51.100.7, unknown", relayed_by("127.0.0.1")),
            (b"198.51.100.7, unknown, 10.0.0.5", relayed_by("10.0.0.5")),
            (b"198.51.100.7, _hidden, 10.0.0.5", relayed_by("10.0.0.5")),
            (b"198.51.100.7\xff", relayed_by("127.0.0.1")),
            (b"198.51.100.7, \xff, 10.0.0.5", relayed_by("10.0.0.5")),
            (b"198.51.100.7,, 10.0.0.5", relayed_by("10.0.0.5")),
            (b"", relayed_by("127.0.0.1")),
            // What the client wrote left of a readable untrusted address does not matter.
            (b"\xff, garbage, 203.0.113.9", address("203.0.113.9")),
        ];
        for (header, client) in cases {
            assert_eq!(
                l.client(loopback, &xff_lines(&[header])),
                client,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn a_client_relayed_without_an_address_is_limited_even_behind_loopback() {
        let l = limits(&["127.0.0.0/8"]);
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let client = l.client(loopback, &xff("unknown"));
        assert_eq!(client, relayed_by("127.0.0.1"));
        assert!(l.check(Bucket::Sessions, client).is_ok());
        assert!(l.check(Bucket::Sessions, client).is_ok());
        assert!(l.check(Bucket::Sessions, client).is_err(), "never exempt");
        assert!(
            l.check(Bucket::Sessions, address("127.0.0.1")).is_ok(),
            "loopback itself keeps its exemption"
        );
        assert!(
            l.check(Bucket::Sessions, relayed_by("127.0.0.2")).is_ok(),
            "another proxy's unreadable clients have their own budget"
        );
    }

    #[test]
    fn limits_apply_per_client_and_ipv6_per_64() {
        let l = limits(&[]);
        assert!(
            (0..10).all(|_| l.check(Bucket::Sessions, address("127.0.0.1")).is_ok()),
            "loopback is never limited"
        );
        let a = address("2001:db8:1:2:aaaa::1");
        let b = address("2001:db8:1:2:bbbb::2");
        let other = address("2001:db8:1:3::1");
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

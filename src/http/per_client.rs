//! The per-client bound on open connections: one client address (IPv6: one /64, as for the
//! rate limits) may hold at most `max_connections_per_client` of the server's
//! `max_connections`, so that a client opening idle sockets (each may wait up to
//! `header_read_timeout` for its headers) cannot take every slot from the others. A connection
//! over the bound is closed as soon as it is accepted.
//!
//! Trusted proxies are not bound: behind one, every client's connections come from it, and
//! the clients behind it can only be told apart per request (the rate limits' reading of
//! `X-Forwarded-For`), not per connection. Bounding them is the proxy's job.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::limit::{canonical, client_key};

/// The open connections of each bound client address.
pub(super) struct PerClient {
    /// Most connections of one address; 0: no bound.
    bound: usize,
    trusted: Vec<IpNet>,
    /// Addresses with at least one connection open, and how many: its size follows the open
    /// connections, not every address ever seen.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in its client's count, given back when it is dropped (the connection
/// closed).
pub(super) struct Slot {
    held: Option<(Arc<PerClient>, IpAddr)>,
}

impl PerClient {
    /// At most `bound` connections per address outside `trusted` (0: no bound).
    pub(super) fn new(bound: usize, trusted: &[IpNet]) -> Arc<Self> {
        Arc::new(Self {
            bound,
            trusted: trusted.to_vec(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `peer`; `None` when its address holds the most it may.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let peer = canonical(peer);
        if self.bound == 0 || self.trusted.iter().any(|net| net.contains(&peer)) {
            return Some(Slot { held: None });
        }
        let key = client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.bound {
            return None;
        }
        *count += 1;
        Some(Slot {
            held: Some((Arc::clone(self), key)),
        })
    }

    /// How many connections `peer`'s address holds under the bound.
    #[cfg(test)]
    fn held_by(&self, peer: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&client_key(canonical(peer))).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((bound, key)) = self.held.take() else {
            return;
        };
        let mut open = bound.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Entry::Occupied(mut entry) = open.entry(key) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_address_holds_at_most_the_bound_and_gets_its_slots_back() {
        let bound = PerClient::new(2, &["10.0.0.0/8".parse().expect("cidr")]);
        let client = ip("203.0.113.5");
        let first = bound.admit(client).expect("first");
        let second = bound.admit(client).expect("second");
        assert!(bound.admit(client).is_none(), "a third is refused");
        assert!(
            bound.admit(ip("203.0.113.6")).is_some(),
            "another address has its own"
        );
        drop(first);
        assert_eq!(bound.held_by(client), 1);
        let third = bound.admit(client).expect("a slot came back");
        drop((second, third));
        assert_eq!(bound.held_by(client), 0);
        assert!(
            bound.open.lock().expect("lock").is_empty(),
            "no entry is kept for an address without connections"
        );
    }

    #[test]
    fn trusted_proxies_are_not_bound_and_ipv6_counts_per_64() {
        let bound = PerClient::new(1, &["10.0.0.0/8".parse().expect("cidr")]);
        let proxy: Vec<Slot> = (0..5)
            .map(|_| bound.admit(ip("10.1.2.3")).expect("a proxy is not bound"))
            .collect();
        assert_eq!(proxy.len(), 5);
        let _one = bound
            .admit(ip("2001:db8:1:2::1"))
            .expect("first of the /64");
        assert!(
            bound.admit(ip("2001:db8:1:2:ffff::9")).is_none(),
            "same /64"
        );
        assert!(bound.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        let _mapped = bound.admit(ip("::ffff:198.51.100.1")).expect("mapped");
        assert!(
            bound.admit(ip("198.51.100.1")).is_none(),
            "an IPv4-mapped address is IPv4"
        );
        let unbounded = PerClient::new(0, &[]);
        let all: Vec<Slot> = (0..10)
            .map(|_| unbounded.admit(ip("203.0.113.5")).expect("0: no bound"))
            .collect();
        assert_eq!(all.len(), 10);
    }
}

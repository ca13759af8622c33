//! Free ports of 127.0.0.1 for the servers a test or benchmark starts: never 6379, the
//! machine's shared Redis, and never one already handed out in this process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// The machine's shared Redis: never ours, never touched.
pub const SHARED_REDIS_PORT: u16 = 6379;
/// Redis Cluster listens for its bus on the client port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Ports handed out by this process. Tests of one binary run in parallel threads; remembering
/// the ports keeps two of them from getting the same port between "bind 0, drop" and the server
/// binding it. Other processes are handled by retrying when the server reports the port in use.
fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port of 127.0.0.1 that is free right now (bind port 0, read it, drop the listener) and
/// that no other caller in this process got. Never 6379.
pub fn free_port() -> u16 {
    reserve_port(false)
}

/// A free port `p` for a cluster node: `p + 10000` (its cluster bus) must be free as well, so
/// `p <= 55535`.
pub(crate) fn free_cluster_port() -> u16 {
    reserve_port(true)
}

fn reserve_port(with_bus: bool) -> u16 {
    let mut reserved = reserved_ports().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..500 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if port == SHARED_REDIS_PORT || reserved.contains(&port) {
            continue;
        }
        if with_bus {
            let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
                continue;
            };
            if bus == SHARED_REDIS_PORT + CLUSTER_BUS_OFFSET
                || reserved.contains(&bus)
                || TcpListener::bind(("127.0.0.1", bus)).is_err()
            {
                continue;
            }
            reserved.insert(bus);
        }
        reserved.insert(port);
        return port;
    }
    panic!("no free port on 127.0.0.1 after 500 tries (with cluster bus: {with_bus})");
}

//! Ports on 127.0.0.1 for the servers a test starts (the gateway, backends, redis-server),
//! each handed out at most once per process.
//!
//! Ports are taken at random below the kernel's ephemeral range (a port from port 0 was
//! sometimes handed to an outgoing connection before the gateway bound it), and this process
//! remembers each one it handed out. A port handed out twice can fail a test in two ways: a
//! gateway could get the port a redis-server of a cluster test was about to bind (whichever
//! bound second lost it, and a request meant for the gateway could reach Redis), and a backend
//! that a test had stopped, its gateway still sending to it, could come back as another test's
//! backend and count requests that were not its own.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// The lowest port handed out (below it: well-known and registered services' ports).
const FLOOR: u16 = 10_000;

/// A port that was free a moment ago on 127.0.0.1 and that this process has not handed out
/// before.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports that were free a moment ago and that this process has not handed out
/// before (for servers that bind later, such as a gateway or a redis-server).
pub fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| loopback_listener().local_addr().expect("bound port").port())
}

/// A listener on 127.0.0.1, bound now on a port this process has not handed out before: for
/// a server the test starts itself (no window in which another socket could take the port).
pub fn loopback_listener() -> TcpListener {
    let ceiling = ephemeral_range_start().unwrap_or(32_768);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1_000 {
        if ceiling <= FLOOR {
            break;
        }
        // At random, so that test processes running at once rarely meet on a port.
        let port = fastrand::u16(FLOOR..ceiling);
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return listener;
        }
    }
    for _ in 0..1_000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        if handed_out.insert(listener.local_addr().expect("bound port").port()) {
            return listener;
        }
    }
    panic!("no port left on 127.0.0.1 that this process has not handed out");
}

/// Every port this process has handed out.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The first port of the kernel's ephemeral range (Linux), if readable.
fn ephemeral_range_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let [a, b] = free_ports::<2>();
            assert!(seen.insert(a), "port {a} handed out twice");
            assert!(seen.insert(b), "port {b} handed out twice");
        }
        let listener = loopback_listener();
        let port = listener.local_addr().unwrap().port();
        assert!(seen.insert(port), "port {port} handed out twice");
        assert!(port >= FLOOR);
    }
}

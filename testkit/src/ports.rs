//! Free ports on 127.0.0.1 for servers a test starts (the gateway, redis-server).

use std::net::TcpListener;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports that were free a moment ago, all held open together while picked (so
/// they are distinct). They are taken below the kernel's ephemeral range, at random: a port
/// picked from that range (port 0) was sometimes handed to another socket, an outgoing
/// connection's or another test's listener, before the gateway could bind it.
pub fn free_ports<const N: usize>() -> [u16; N] {
    const FLOOR: u16 = 10_000;
    let ceiling = ephemeral_range_start().unwrap_or(32_768);
    let mut held: Vec<(u16, TcpListener)> = Vec::new();
    for _ in 0..1_000 {
        if held.len() == N || ceiling <= FLOOR {
            break;
        }
        let port = fastrand::u16(FLOOR..ceiling);
        if held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    while held.len() < N {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = listener.local_addr().expect("bound port").port();
        held.push((port, listener));
    }
    std::array::from_fn(|i| held[i].0)
}

/// The first port of the kernel's ephemeral range (Linux), if readable.
fn ephemeral_range_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

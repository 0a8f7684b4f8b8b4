//! Whether this process is listening on its configured addresses yet: its own TCP sockets in
//! the LISTEN state, read from `/proc` (Linux).
//!
//! Pingora reaching `Running` does not mean its listeners are bound: each service binds in its
//! own runtime, and an address that another process took after `check_bindable` is retried for
//! 30 s. Readiness waits for the sockets themselves, so a load balancer never sends traffic to
//! an instance whose port belongs to someone else.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How often the sockets are looked at while waiting.
const POLL: Duration = Duration::from_millis(20);
/// After this long without every listener, the wait says which addresses it is waiting for.
const WARN_AFTER: Duration = Duration::from_secs(2);
/// Past Pingora's 30 one-second tries to bind, after which it gives up and the process ends: a
/// process still alive then has bound its listeners, so if `/proc` still does not show them it
/// does not show them at all (a sandbox), and the wait stops rather than keep the instance
/// unready for ever.
const TRUST_AFTER: Duration = Duration::from_secs(35);

/// The local addresses of this process's listening TCP sockets. `None` where `/proc` cannot
/// tell (not Linux, or hidden): callers then take the listeners as bound.
pub fn own_listeners() -> Option<HashSet<SocketAddr>> {
    let inodes = own_socket_inodes()?;
    let mut found = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        // tcp6 is absent when IPv6 is disabled; tcp alone still answers.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        found.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_listen_line)
                .filter(|(_, inode)| inodes.contains(inode))
                .map(|(addr, _)| addr),
        );
    }
    Some(found)
}

/// The inodes of the sockets among this process's file descriptors (`socket:[12345]`).
fn own_socket_inodes() -> Option<HashSet<u64>> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        fds.flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// One line of `/proc/net/tcp{,6}`: `(local address, inode)` if the socket is listening.
/// Fields: `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
/// inode ...`; the state `0A` is LISTEN.
fn parse_listen_line(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let addr = parse_proc_addr(fields.get(1)?)?;
    let inode = fields.get(9)?.parse().ok()?;
    Some((addr, inode))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits then `:PORT` (IPv6): the address in the kernel's
/// byte order, 32 bits at a time in host order, the port in hex.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<_>>()?;
    let ip = match (ip.len(), words.as_slice()) {
        (8, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
        (32, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (chunk, w) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The addresses of `listen` values to wait for: a value naming a host is resolved as the
/// listener resolves it (first address); one that does not resolve, or asks for any free
/// port (`:0`), cannot be recognised and is not waited for.
pub fn expected<'a>(listen: impl IntoIterator<Item = &'a str>) -> Vec<SocketAddr> {
    listen
        .into_iter()
        .filter_map(|a| a.to_socket_addrs().ok()?.next())
        .filter(|a| a.port() != 0)
        .collect()
}

/// Blocks until this process listens on every address in `expected` (or `/proc` cannot tell, or
/// [`TRUST_AFTER`] passed), or `give_up` says to stop waiting (shutdown began). True when every
/// listener is taken as up.
pub fn wait_for(expected: &[SocketAddr], give_up: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    let mut warned = false;
    loop {
        let missing: Vec<SocketAddr> = match own_listeners() {
            None => return true,
            Some(own) => expected
                .iter()
                .filter(|a| !own.contains(a))
                .copied()
                .collect(),
        };
        if missing.is_empty() {
            return true;
        }
        if give_up() {
            return false;
        }
        if started.elapsed() >= TRUST_AFTER {
            tracing::warn!("the listeners do not show in /proc; taking them as bound");
            return true;
        }
        if !warned && started.elapsed() >= WARN_AFTER {
            warned = true;
            let missing: Vec<String> = missing.iter().map(|a| a.to_string()).collect();
            tracing::warn!(
                addresses = %missing.join(", "),
                "not ready: still waiting to listen (is another process holding the address?)"
            );
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn proc_addresses_read_as_socket_addresses() {
        let v4 = parse_proc_addr("0100007F:1F90").unwrap();
        assert_eq!(v4, "127.0.0.1:8080".parse().unwrap());
        let any6 = parse_proc_addr("00000000000000000000000000000000:0050").unwrap();
        assert_eq!(any6, "[::]:80".parse().unwrap());
        let loop6 = parse_proc_addr("00000000000000000000000001000000:01BB").unwrap();
        assert_eq!(loop6, "[::1]:443".parse().unwrap());
        assert_eq!(parse_proc_addr("zz:1F90"), None);
        assert_eq!(parse_proc_addr("0100007F"), None);
        assert_eq!(parse_proc_addr("0100007F:"), None);
    }

    #[test]
    fn only_listening_sockets_are_read() {
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let established = "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_listen_line(listen),
            Some(("127.0.0.1:8080".parse().unwrap(), 4242))
        );
        assert_eq!(parse_listen_line(established), None);
        assert_eq!(parse_listen_line("garbage"), None);
    }

    #[test]
    fn a_listener_of_this_process_is_found_and_a_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let own = own_listeners().expect("/proc is readable here");
        assert!(own.contains(&addr), "{addr} not in {own:?}");
        drop(listener);
        assert!(!own_listeners().unwrap().contains(&addr));
    }

    #[test]
    fn the_wait_ends_when_the_address_is_listened_on_or_when_told_to_stop() {
        // A free port nobody listens on: the wait goes on until told to stop.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let polls = std::sync::atomic::AtomicU32::new(0);
        let stopped = !wait_for(&[addr], || {
            polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 3
        });
        assert!(stopped);

        // Listened on while waiting: the wait ends by itself.
        let bind_later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            TcpListener::bind(addr)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(wait_for(&[addr], || Instant::now() > deadline));
        let _listener = bind_later.join().unwrap().unwrap();
    }

    #[test]
    fn values_to_wait_for() {
        let expected = expected(["127.0.0.1:8080", "[::1]:8443", "127.0.0.1:0", "bad value"]);
        assert_eq!(
            expected,
            vec![
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:8443".parse().unwrap()
            ]
        );
    }
}

//! What a request's bucket is: the value of a limit's `key` for this request, and the client
//! address behind trusted proxies.

use crate::auth::Identity;
use crate::config::RateKey;
use http::HeaderMap;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::IpAddr;

/// The request facts keys are taken from.
pub struct KeyFacts<'a> {
    /// The client address, already resolved through trusted proxies ([`client_ip`]).
    pub client: Option<IpAddr>,
    pub headers: &'a HeaderMap,
    pub identity: Option<&'a Identity>,
    pub route: &'a str,
}

/// The client address: the socket peer, unless the peer is a trusted proxy. Then the
/// `X-Forwarded-For` list (every such header, in order, as one list) is read from the right,
/// each proxy having appended the address it saw: trusted addresses are skipped and the first
/// untrusted one is the client. A client can write anything at the left of the list, but never
/// to the right of what the trusted proxies appended, so a spoofed entry is never chosen over the
/// address a trusted proxy saw. An entry that is not an address stops the walk at the last
/// trusted hop (that proxy is then the client); a list of trusted addresses only yields its
/// left-most one.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut hop = peer?;
    if !is_trusted(&hop) {
        return Some(hop);
    }
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in line.as_bytes().rsplit(|b| *b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return Some(hop);
            };
            hop = ip;
            if !is_trusted(&ip) {
                return Some(ip);
            }
        }
    }
    Some(hop)
}

/// One `X-Forwarded-For` entry: an address, optionally bracketed or with a port.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The bucket key of one limit for this request; `None` when the request lacks it (no such
/// header or claim, no consumer, no peer address).
pub fn key_of<'a>(key: &RateKey, facts: &KeyFacts<'a>) -> Option<Cow<'a, [u8]>> {
    match key {
        RateKey::Ip => facts.client.map(|ip| {
            Cow::Owned(match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                // An IPv4 client over an IPv4-mapped IPv6 socket is the same client.
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => v4.octets().to_vec(),
                    None => v6.octets().to_vec(),
                },
            })
        }),
        RateKey::Route => Some(Cow::Borrowed(facts.route.as_bytes())),
        RateKey::Consumer => facts
            .identity
            .and_then(|id| id.consumer.as_deref())
            .map(|c| Cow::Owned(c.as_bytes().to_vec())),
        RateKey::Header(name) => {
            // Several lines of the header count as one value, in order.
            let mut values = facts.headers.get_all(name).iter();
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(first.as_bytes())),
                Some(second) => {
                    let mut joined = first.as_bytes().to_vec();
                    for v in std::iter::once(second).chain(values) {
                        joined.push(b',');
                        joined.extend_from_slice(v.as_bytes());
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
        RateKey::Claim(name) => facts
            .identity
            .and_then(|id| id.claim(name))
            .map(|v| Cow::Owned(v.into_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&["1.2.3.4"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn right_most_untrusted_entry_behind_trusted_proxies() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // The client claimed 6.6.6.6; the edge proxy appended what it saw, 198.51.100.7.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers(&[]), &trusted),
            ip("10.0.0.2")
        );
        // Only proxies: the left-most is the best there is.
        let all = headers(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &all, &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let junk = headers(&["1.1.1.1, nonsense, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &junk, &trusted), ip("10.1.1.1"));
        let ports = headers(&["[2001:db8::1]:443, 192.0.2.1:80"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &ports, &trusted), ip("192.0.2.1"));
    }
}

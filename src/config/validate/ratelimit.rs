//! Checks of `[rate_limits.NAME]`, `[cluster]`, `server.trusted_proxies` and of the routes that
//! list rate limits: a limit must be able to find its key on every route that uses it.

use super::Validator;
use crate::config::types::{
    AuthKind, ClusterConfig, Config, RateKey, RateLimitConfig, RouteConfig,
};

/// The forms of `[cluster] redis_url`: one Redis (TCP, TLS, Unix socket), or a Redis Cluster by
/// its seed nodes (TCP, TLS).
const REDIS_SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "redis+unix://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
];

/// Most rate limits one route may list: each is checked on every request.
const MAX_LIMITS_PER_ROUTE: usize = 8;

/// A `trusted_proxies` entry: a CIDR block, or one address (a /32 or /128).
pub fn parse_proxy_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("\"{s}\" is not an address or CIDR block, like \"10.0.0.0/8\""))
}

impl Validator {
    pub(super) fn trusted_proxies(&mut self, proxies: &[String]) {
        for (i, p) in proxies.iter().enumerate() {
            if let Err(msg) = parse_proxy_net(p) {
                self.err(format!("server.trusted_proxies[{i}]"), msg);
            }
        }
    }

    pub(super) fn cluster(&mut self, c: &ClusterConfig) {
        let url = &c.redis_url;
        let scheme = REDIS_SCHEMES
            .iter()
            .find(|s| url.starts_with(*s) && url.len() > s.len());
        match scheme {
            // The URL may carry a password: never echo it.
            None => self.err(
                "cluster.redis_url",
                "is not a Redis URL, like \"redis://127.0.0.1:6379/0\" (rediss:// for TLS, redis+cluster://host:port,host:port for a Redis Cluster)",
            ),
            Some(s) if s.ends_with("+cluster://") => {
                let rest = &url[s.len()..];
                let hosts = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let hosts = hosts.split(['/', '?', '#']).next().unwrap_or_default();
                if hosts.split(',').any(str::is_empty) {
                    self.err(
                        "cluster.redis_url",
                        "a Redis Cluster URL lists seed nodes as host:port separated by commas, like \"redis+cluster://10.0.0.1:6379,10.0.0.2:6379\"",
                    );
                }
            }
            Some(_) => {}
        }
        if let Some(t) = c.timeout {
            self.positive("cluster.timeout", t);
        }
        let tls = url.starts_with("rediss://") || url.starts_with("rediss+cluster://");
        for (key, set) in [
            ("ca_file", c.ca_file.is_some()),
            ("cert_file", c.cert_file.is_some()),
            ("key_file", c.key_file.is_some()),
        ] {
            if set && !tls {
                self.err(
                    format!("cluster.{key}"),
                    "is only used with a rediss:// (TLS) redis_url, or rediss+cluster://",
                );
            }
        }
        if tls && c.cert_file.is_some() != c.key_file.is_some() {
            let missing = if c.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            };
            self.err(
                format!("cluster.{missing}"),
                "cert_file and key_file go together: give both or neither",
            );
        }
    }

    pub(super) fn rate_limit(&mut self, config: &Config, name: &str, l: &RateLimitConfig) {
        let base = format!("rate_limits.{name}");
        self.name(&base, name);
        if l.requests == 0 {
            self.err(format!("{base}.requests"), "must be at least 1");
        }
        self.positive(&format!("{base}.per"), l.per);
        if l.per.get() > std::time::Duration::from_secs(366 * 86_400) {
            self.err(format!("{base}.per"), "must be at most a year");
        }
        if l.requests > 0 && l.per.get().as_nanos() < u128::from(l.requests) {
            self.err(
                format!("{base}.requests"),
                "more requests than nanoseconds in `per`: use a longer `per`",
            );
        }
        if l.burst == Some(0) {
            self.err(format!("{base}.burst"), "must be at least 1");
        }
        if let Err(msg) = RateKey::parse(&l.key) {
            self.err(format!("{base}.key"), msg);
        }
        if l.cluster && config.cluster.is_none() && !config.failed_entries.contains("cluster") {
            self.err(
                format!("{base}.cluster"),
                "needs a [cluster] section with the Redis URL",
            );
        }
    }

    /// A route's `rate_limits`: defined names, listed once, keys the route can provide.
    pub(super) fn route_rate_limits(&mut self, config: &Config, base: &str, r: &RouteConfig) {
        let Some(names) = &r.rate_limits else { return };
        let path = format!("{base}.rate_limits");
        if names.len() > MAX_LIMITS_PER_ROUTE {
            self.err(
                &path,
                format!(
                    "lists {} limits; at most {MAX_LIMITS_PER_ROUTE}",
                    names.len()
                ),
            );
        }
        let policy = r.auth.as_ref().and_then(|a| config.auth.get(a));
        let auth_dangling = r.auth.is_some() && policy.is_none();
        for (i, name) in names.iter().enumerate() {
            let item = format!("{path}[{i}]");
            if names[..i].contains(name) {
                self.err(item, format!("\"{name}\" is listed twice"));
                continue;
            }
            self.reference(
                config,
                &item,
                "rate_limits",
                name,
                config.rate_limits.keys(),
            );
            let Some(Ok(key)) = config.rate_limits.get(name).map(|l| RateKey::parse(&l.key)) else {
                continue;
            };
            if auth_dangling {
                continue; // reported at `auth`
            }
            match (key, policy) {
                (RateKey::Consumer, None) => self.err(
                    item,
                    format!("\"{name}\" counts per consumer, but this route has no auth policy to identify one"),
                ),
                (RateKey::Claim(c), None) => self.err(
                    item,
                    format!("\"{name}\" counts per JWT claim \"{c}\", but this route has no auth policy of type \"jwt\""),
                ),
                (RateKey::Claim(c), Some(p)) if p.kind != AuthKind::Jwt => self.err(
                    item,
                    format!("\"{name}\" counts per JWT claim \"{c}\", but this route's auth policy is an api_key policy (no claims)"),
                ),
                _ => {}
            }
        }
    }
}

//! Semantic checks on a parsed [`Config`]: addresses, names, references between sections, value
//! ranges. Every problem is collected, none stops the others. Checks that need compiled runtime types (route ambiguity, rewrite templates, DNS) live
//! in `snapshot::compile`, which `check` and reload run right after this.

mod aggregate;
mod auth;
mod cache;
mod ratelimit;

pub use cache::{cache_capacity, DEFAULT_CACHE_CAPACITY, DEFAULT_MAX_ENTRY};

pub use ratelimit::parse_proxy_net;

use super::error::ConfigError;
use super::types::*;
use super::units::{DurationStr, SizeStr};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The smallest and largest `server.max_header_bytes` accepted. Pingora's parser refuses heads
/// over 1 MiB on its own, so a larger limit could never be reached.
const HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024;

/// Runs every check and returns all problems found.
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut v = Validator::default();
    v.server(&config.server);
    v.log(&config.log);
    for (name, up) in &config.upstreams {
        v.upstream(name, up);
    }
    for (name, policy) in &config.auth {
        v.auth(name, policy);
    }
    for (name, limit) in &config.rate_limits {
        v.rate_limit(config, name, limit);
    }
    for (name, cache) in &config.caches {
        v.cache(config, name, cache);
    }
    if let Some(c) = &config.cluster {
        v.cluster(c);
    }
    if let Some(t) = &config.tracing {
        v.tracing(t);
    }
    for (name, route) in &config.routes {
        v.route(config, name, route);
    }
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    fn positive(&mut self, path: &str, d: DurationStr) {
        if d.get().is_zero() {
            self.err(path, "must be greater than zero");
        }
    }

    fn server(&mut self, s: &ServerConfig) {
        if s.listen.is_empty() {
            self.err("server.listen", "at least one listen address is required");
        }
        let mut seen = BTreeSet::new();
        for (i, addr) in s.listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            match addr.parse::<SocketAddr>() {
                Ok(a) if !seen.insert(a) => self.err(path, format!("\"{addr}\" is listed twice")),
                Ok(_) => {}
                Err(_) => self.err(path, bad_socket_addr(addr)),
            }
        }
        if let Some(admin) = &s.admin_listen {
            match admin.parse::<SocketAddr>() {
                Ok(a) if seen.contains(&a) => self.err(
                    "server.admin_listen",
                    format!("\"{admin}\" is also a traffic listener; use another port"),
                ),
                Ok(a) => {
                    seen.insert(a);
                }
                Err(_) => self.err("server.admin_listen", bad_socket_addr(admin)),
            }
        }
        if let Some(tls) = &s.tls {
            self.tls_listen(tls, &mut seen);
        }
        self.overlapping_listeners(s);
        if let Some(t) = s.threads {
            if !(1..=1024).contains(&t) {
                self.err("server.threads", format!("{t} is out of range 1..=1024"));
            }
        }
        self.positive("server.idle_timeout", s.idle_timeout);
        self.limits(s);
        if let Some(proxies) = &s.trusted_proxies {
            self.trusted_proxies(proxies);
        }
        self.strip_request_headers(&s.strip_request_headers);
        if s.cache_capacity.is_some_and(|c| c.bytes() == 0) {
            self.err("server.cache_capacity", "must be greater than zero");
        }
    }

    fn tracing(&mut self, t: &TracingConfig) {
        match http::Uri::try_from(t.otlp_endpoint.as_str()) {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => self.err(
                "tracing.otlp_endpoint",
                format!(
                    "\"{}\" is not an http(s) URL like \"http://otel-collector:4318\"",
                    t.otlp_endpoint
                ),
            ),
        }
        if let Some(ratio) = t.sample_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                self.err(
                    "tracing.sample_ratio",
                    format!("{ratio} is out of range: use a share from 0.0 to 1.0, like 0.01"),
                );
            }
        }
        if t.service_name.as_deref() == Some("") {
            self.err("tracing.service_name", "must not be empty");
        }
        for (name, value) in &t.headers {
            let path = format!("tracing.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.err(path, format!("\"{name}\" is not a header name"));
            } else if http::HeaderValue::from_str(value).is_err() {
                self.err(path, "is not a valid header value");
            }
        }
    }

    fn log(&mut self, l: &LogConfig) {
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&l.level) {
            self.err(
                "log.level",
                format!(
                    "invalid level \"{}\": {e} (use error, warn, info, debug or trace)",
                    l.level
                ),
            );
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            self.err(
                path,
                format!("name \"{name}\" must be 1-64 characters of letters, digits, '_' or '-'"),
            );
        }
    }

    fn upstream(&mut self, name: &str, u: &UpstreamConfig) {
        let base = format!("upstreams.{name}");
        self.name(&base, name);
        if u.targets.is_empty() {
            self.err(format!("{base}.targets"), "at least one target is required");
        }
        let mut seen = BTreeSet::new();
        self.targets(&format!("{base}.targets"), &u.targets, &mut seen);
        self.targets(
            &format!("{base}.backup_targets"),
            &u.backup_targets,
            &mut seen,
        );
        self.positive(&format!("{base}.connect_timeout"), u.connect_timeout);
        self.positive(&format!("{base}.read_timeout"), u.read_timeout);
        let hash_key = format!("{base}.hash_key");
        match (u.balance, u.hash_key.as_deref()) {
            (Balance::Hash, None | Some("ip")) => {}
            (Balance::Hash, Some(k)) if k.starts_with("header:") => {
                let name = &k["header:".len()..];
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    self.err(hash_key, format!("\"{name}\" is not a valid header name"));
                }
            }
            (Balance::Hash, Some("claim:")) => {
                self.err(hash_key, "names no claim; write \"claim:sub\"")
            }
            (Balance::Hash, Some(k)) if k.starts_with("claim:") => {}
            (Balance::Hash, Some(k)) => self.err(
                hash_key,
                format!("\"{k}\" is not one of \"ip\", \"header:NAME\", \"claim:NAME\""),
            ),
            (_, Some(_)) => self.err(hash_key, "only used with balance = \"hash\""),
            _ => {}
        }
        if let Some(h) = &u.health_check {
            self.health_check(&format!("{base}.health_check"), h);
        }
        if let Some(b) = &u.retry_budget {
            self.retry_budget(&format!("{base}.retry_budget"), b);
        }
        if let Some(c) = &u.circuit_breaker {
            self.circuit_breaker(&format!("{base}.circuit_breaker"), c);
        }
        self.upstream_tls(&base, u);
    }

    /// Two listeners on one port where one is the unspecified address of the other's family
    /// (`0.0.0.0:8080` and `127.0.0.1:8080`): each binds alone, but not both, and the second
    /// would only fail once the gateway runs. The same address twice is reported above.
    fn overlapping_listeners(&mut self, s: &ServerConfig) {
        let admin = s
            .admin_listen
            .iter()
            .map(|a| ("server.admin_listen".to_owned(), a));
        let tls = s.tls.iter().flat_map(|t| t.listen.iter().enumerate());
        let all: Vec<(String, SocketAddr)> = s
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("server.listen[{i}]"), a))
            .chain(admin)
            .chain(tls.map(|(i, a)| (format!("server.tls.listen[{i}]"), a)))
            .filter_map(|(path, a)| a.parse().ok().map(|a| (path, a)))
            .collect();
        for (j, (path, b)) in all.iter().enumerate() {
            let earlier = all[..j].iter().find(|(_, a)| a != b && overlaps(*a, *b));
            if let Some((first, a)) = earlier {
                self.err(
                    path.clone(),
                    format!(
                        "\"{b}\" overlaps {first} (\"{a}\"): an unspecified address listens on \
                         every address of its family; use another port, or list only one of them"
                    ),
                );
            }
        }
    }

    /// `server.tls.listen`: addresses that parse, at least one, none shared with `server.listen`,
    /// `server.admin_listen` or each other (`seen` holds those already taken). The certificate
    /// files are read and checked when the config is compiled (`tls::TlsIdentity::load`).
    fn tls_listen(&mut self, tls: &ServerTlsConfig, seen: &mut BTreeSet<SocketAddr>) {
        if tls.listen.is_empty() {
            self.err(
                "server.tls.listen",
                "at least one listen address is required",
            );
        }
        for (i, addr) in tls.listen.iter().enumerate() {
            let path = format!("server.tls.listen[{i}]");
            match addr.parse::<SocketAddr>() {
                Ok(a) if !seen.insert(a) => self.err(
                    path,
                    format!("\"{addr}\" is already used by another listener; use another port"),
                ),
                Ok(_) => {}
                Err(_) => self.err(path, bad_socket_addr(addr)),
            }
        }
        for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if file.is_empty() {
                self.err(format!("server.tls.{key}"), "must name a PEM file");
            }
        }
    }

    /// `tls`, `sni`, `ca_file`. The CA file itself is read when the config is compiled. With
    /// `tls = false` the other two are ignored (the contract's own example sets them next to
    /// `tls = false`, ready to be switched on), though a malformed `sni` is still reported.
    fn upstream_tls(&mut self, base: &str, u: &UpstreamConfig) {
        if let Some(sni) = &u.sni {
            if let Err(msg) = check_sni(sni) {
                self.err(format!("{base}.sni"), msg);
            }
        }
        if !u.tls {
            return;
        }
        // The certificate is checked against the SNI name, and Pingora's OpenSSL connector
        // matches it as a DNS name only: an IP address target would never verify (and an empty
        // name would switch verification off), so such targets need an explicit name.
        let ip_target = u
            .targets
            .iter()
            .chain(&u.backup_targets)
            .find(|t| t.addr.parse::<SocketAddr>().is_ok());
        if let (None, Some(t)) = (&u.sni, ip_target) {
            self.err(
                format!("{base}.sni"),
                format!(
                    "required with tls = true when a target is an IP address (\"{}\"): \
                     the target's certificate is verified against this name",
                    t.addr
                ),
            );
        }
        if u.ca_file.as_deref() == Some("") {
            self.err(format!("{base}.ca_file"), "must name a PEM file");
        }
    }

    /// Checks a target list; `seen` spans primaries and backups so an address is listed once.
    fn targets(&mut self, base: &str, targets: &[TargetConfig], seen: &mut BTreeSet<String>) {
        for (i, t) in targets.iter().enumerate() {
            let path = format!("{base}[{i}]");
            if let Err(msg) = check_target_addr(&t.addr) {
                self.err(path.clone(), msg);
            } else if !seen.insert(t.addr.to_ascii_lowercase()) {
                self.err(path.clone(), format!("\"{}\" is listed twice", t.addr));
            }
            if !(1..=1000).contains(&t.weight) {
                self.err(
                    path,
                    format!("weight {} is out of range 1..=1000", t.weight),
                );
            }
        }
    }

    fn health_check(&mut self, base: &str, h: &HealthCheckConfig) {
        let path_ok = h.path.starts_with('/') && h.path.bytes().all(|b| b.is_ascii_graphic());
        if !path_ok {
            self.err(
                format!("{base}.path"),
                format!("\"{}\" must start with '/' and contain no spaces", h.path),
            );
        }
        self.positive(&format!("{base}.interval"), h.interval);
        self.positive(&format!("{base}.timeout"), h.timeout);
        if h.timeout > h.interval {
            self.err(
                format!("{base}.timeout"),
                "must not be longer than interval",
            );
        }
        for (key, n) in [
            ("healthy_after", h.healthy_after),
            ("unhealthy_after", h.unhealthy_after),
        ] {
            if !(1..=100).contains(&n) {
                self.err(
                    format!("{base}.{key}"),
                    format!("{n} is out of range 1..=100"),
                );
            }
        }
    }

    fn circuit_breaker(&mut self, base: &str, c: &CircuitBreakerConfig) {
        if !(c.failure_ratio > 0.0 && c.failure_ratio <= 1.0) {
            self.err(
                format!("{base}.failure_ratio"),
                format!(
                    "{} is out of range: use a share above 0 and at most 1, like 0.5",
                    c.failure_ratio
                ),
            );
        }
        if c.min_requests == 0 {
            self.err(format!("{base}.min_requests"), "must be at least 1");
        }
        if c.half_open_probes == 0 {
            self.err(format!("{base}.half_open_probes"), "must be at least 1");
        }
        self.positive(&format!("{base}.window"), c.window);
        self.positive(&format!("{base}.open_for"), c.open_for);
    }

    fn route(&mut self, config: &Config, name: &str, r: &RouteConfig) {
        let base = format!("routes.{name}");
        self.name(&base, name);
        self.route_backend(config, &base, r);
        self.route_auth(config, &base, r);
        self.route_rate_limits(config, &base, r);
        if let Some(methods) = &r.methods {
            self.methods(&format!("{base}.methods"), methods);
        }
        if let Some(t) = r.timeout {
            self.positive(&format!("{base}.timeout"), t);
        }
        if let Some(retry) = &r.retry {
            self.retry(&format!("{base}.retry"), retry);
        }
        if let Some(f) = &r.fallback {
            self.fallback(&format!("{base}.fallback"), f);
        }
        if let Some(size) = r.max_body_bytes {
            self.body_limit(&format!("{base}.max_body_bytes"), size);
        }
        self.response_bounds(&base, r.max_response_bytes, r.response_timeout);
        if let Some(t) = r.client_body_timeout {
            self.positive(&format!("{base}.client_body_timeout"), t);
        }
        self.route_cache(config, &base, r);
    }
}

impl Validator {
    /// A reference to a named entry of another section (`upstreams`, `auth`, ...). Names whose
    /// entry failed to parse were already reported there.
    fn reference<'a>(
        &mut self,
        config: &Config,
        path: &str,
        section: &str,
        name: &str,
        defined: impl Iterator<Item = &'a String>,
    ) {
        let known: Vec<&str> = defined.map(String::as_str).collect();
        if known.contains(&name) || config.failed_entries.contains(&format!("{section}.{name}")) {
            return;
        }
        let what = match section {
            "upstreams" => "upstream",
            "rate_limits" => "rate limit",
            "caches" => "cache",
            _ => "auth policy",
        };
        self.err(
            path,
            format!(
                "no {what} named \"{name}\" (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }

    /// Header names to strip from client requests: valid names, and none the request cannot go
    /// without (its host and its framing).
    fn strip_request_headers(&mut self, names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            let path = format!("server.strip_request_headers[{i}]");
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => self.err(path, format!("\"{name}\" is not a valid header name")),
                Ok(h)
                    if [
                        http::header::HOST,
                        http::header::CONTENT_LENGTH,
                        http::header::TRANSFER_ENCODING,
                    ]
                    .contains(&h) =>
                {
                    self.err(
                        path,
                        format!("\"{name}\" cannot be stripped: requests need it to be forwarded"),
                    )
                }
                Ok(_) => {}
            }
        }
    }

    /// Request size and time limits: zero would refuse every request (or every body), which
    /// is never what a limit means, so it is an error rather than "unlimited".
    fn limits(&mut self, s: &ServerConfig) {
        if let Some(size) = s.max_header_bytes {
            if !HEADER_BYTES_RANGE.contains(&size.bytes()) {
                self.err(
                    "server.max_header_bytes",
                    format!(
                        "{} bytes is out of range: use \"1KiB\" to \"1MiB\" (default \"32KiB\")",
                        size.bytes()
                    ),
                );
            }
        }
        if let Some(size) = s.max_body_bytes {
            self.body_limit("server.max_body_bytes", size);
        }
        for (key, timeout) in [
            ("server.client_header_timeout", s.client_header_timeout),
            ("server.client_body_timeout", s.client_body_timeout),
        ] {
            if let Some(t) = timeout {
                self.positive(key, t);
            }
        }
        for (key, value) in [
            ("server.max_in_flight", s.max_in_flight),
            (
                "server.max_in_flight_per_client",
                s.max_in_flight_per_client,
            ),
            (
                "server.max_connections_per_client",
                s.max_connections_per_client,
            ),
        ] {
            if value == Some(0) {
                self.err(key, "must be at least 1 (0 would refuse everything)");
            }
        }
        if let Some(rate) = s.connection_rate_per_client {
            let base = "server.connection_rate_per_client";
            if rate.connections == 0 {
                self.err(format!("{base}.connections"), "must be at least 1");
            }
            self.positive(&format!("{base}.per"), rate.per);
            if rate.burst == Some(0) {
                self.err(format!("{base}.burst"), "must be at least 1");
            }
        }
        self.response_bounds("server", s.max_response_bytes, s.response_timeout);
    }

    /// `max_response_bytes` and `response_timeout` of `[server]` or a route: zero would cut
    /// every response.
    fn response_bounds(
        &mut self,
        base: &str,
        bytes: Option<SizeStr>,
        timeout: Option<DurationStr>,
    ) {
        if bytes.is_some_and(|b| b.bytes() == 0) {
            self.err(
                format!("{base}.max_response_bytes"),
                "must be at least \"1B\"",
            );
        }
        if let Some(t) = timeout {
            self.positive(&format!("{base}.response_timeout"), t);
        }
    }

    fn body_limit(&mut self, path: &str, size: SizeStr) {
        if size.bytes() == 0 {
            self.err(
                path,
                "must be at least \"1B\"; to refuse bodies, list only methods without one",
            );
        }
    }

    fn methods(&mut self, base: &str, methods: &[String]) {
        for (i, m) in methods.iter().enumerate() {
            self.method(&format!("{base}[{i}]"), m);
        }
    }

    fn method(&mut self, path: &str, m: &str) {
        let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
        if !valid {
            self.err(
                path,
                format!("\"{m}\" is not an HTTP method; write it in upper case, like \"GET\""),
            );
        }
    }

    fn retry(&mut self, base: &str, r: &RetryConfig) {
        if !(1..=10).contains(&r.attempts) {
            self.err(
                format!("{base}.attempts"),
                format!(
                    "{} is out of range 1..=10 (attempts include the first one)",
                    r.attempts
                ),
            );
        }
        self.positive(&format!("{base}.backoff"), r.backoff);
        if r.max_backoff < r.backoff {
            self.err(
                format!("{base}.max_backoff"),
                "must not be shorter than backoff",
            );
        }
        if let Some(methods) = &r.methods {
            self.methods(&format!("{base}.methods"), methods);
        }
    }

    fn fallback(&mut self, base: &str, f: &FallbackConfig) {
        if !(200..=599).contains(&f.status) {
            self.err(
                format!("{base}.status"),
                format!("{} is out of range 200..=599", f.status),
            );
        }
        if f.body.len() > 64 * 1024 {
            self.err(
                format!("{base}.body"),
                "is larger than 64 KiB; serve big documents from a service",
            );
        }
        if http::HeaderValue::from_str(&f.content_type).is_err() || f.content_type.is_empty() {
            self.err(
                format!("{base}.content_type"),
                format!("\"{}\" is not a valid header value", f.content_type),
            );
        }
    }

    fn retry_budget(&mut self, base: &str, b: &RetryBudgetConfig) {
        if !(0.0..=1.0).contains(&b.ratio) {
            self.err(
                format!("{base}.ratio"),
                format!("{} is out of range 0..=1", b.ratio),
            );
        }
        self.positive(&format!("{base}.window"), b.window);
    }
}

/// Whether two listen addresses cannot both be bound: one port (not 0, which the system
/// picks), one family, and the same address or an unspecified one. (An IPv6 `[::]` also takes
/// IPv4 where the system binds it dual-stack; that depends on the machine and is left to the
/// bind check at start.)
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn bad_socket_addr(addr: &str) -> String {
    format!("\"{addr}\" is not an IP:port address (examples: \"0.0.0.0:8080\", \"[::]:8080\")")
}

/// An SNI name: a DNS host name (the upstream's certificate is verified against it).
fn check_sni(sni: &str) -> Result<(), String> {
    let ok = !sni.is_empty()
        && sni.len() <= 253
        && sni.parse::<std::net::IpAddr>().is_err()
        && sni.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{sni}\" is not a host name, like \"users.internal\" (IP addresses cannot be verified)"
        ))
    }
}

/// A target is `IP:port` or `hostname:port`; hostnames are resolved when the config is compiled,
/// never on the request path.
pub fn check_target_addr(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let hint = "expected \"host:port\", like \"10.0.0.5:8080\" or \"users.internal:80\"";
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("\"{addr}\" has no port; {hint}"));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("\"{addr}\" has an invalid port; {hint}"));
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok {
        return Err(format!("\"{addr}\" has an invalid host; {hint}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_addresses() {
        assert!(check_target_addr("127.0.0.1:80").is_ok());
        assert!(check_target_addr("[::1]:80").is_ok());
        assert!(check_target_addr("users.internal:8080").is_ok());
        assert!(check_target_addr("users.internal").is_err());
        assert!(check_target_addr("users.internal:0").is_err());
        assert!(check_target_addr("users internal:80").is_err());
        assert!(check_target_addr(":80").is_err());
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::config::parse(text) {
            Ok(_) => vec![],
            Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn upstream_tls_keys() {
        // As in the configuration contract: ready to be switched on, ignored while tls = false.
        let off = "[upstreams.u]\ntargets = [\"10.0.0.5:443\"]\ntls = false\nsni = \"users.internal\"\nca_file = \"certs/internal-ca.pem\"\n";
        assert_eq!(errors(off), Vec::<String>::new());
        let ip_without_sni = "[upstreams.u]\ntargets = [\"10.0.0.5:443\"]\ntls = true\n";
        let errs = errors(ip_without_sni);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("upstreams.u.sni: required"), "{errs:?}");
        let by_name = "[upstreams.u]\ntargets = [\"users.internal:443\"]\ntls = true\n";
        assert_eq!(errors(by_name), Vec::<String>::new());
        let ip_sni =
            "[upstreams.u]\ntargets = [\"users.internal:443\"]\ntls = true\nsni = \"10.0.0.5\"\n";
        assert!(errors(ip_sni)[0].starts_with("upstreams.u.sni: "));
    }

    #[test]
    fn tls_listen_addresses() {
        let clash = "[server]\nlisten = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:9901\"\n[server.tls]\nlisten = [\"127.0.0.1:9901\", \"nope\", \"127.0.0.1:8443\", \"127.0.0.1:8443\"]\ncert_file = \"a\"\nkey_file = \"b\"\n";
        let errs = errors(clash);
        let paths: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "server.tls.listen[0]",
                "server.tls.listen[1]",
                "server.tls.listen[3]"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn listen_addresses_that_overlap() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:8080"), a("127.0.0.1:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("0.0.0.0:8080")));
        assert!(overlaps(a("[::]:8080"), a("[::1]:8080")));
        assert!(overlaps(a("10.0.0.1:8080"), a("10.0.0.1:8080")));
        assert!(!overlaps(a("10.0.0.1:8080"), a("10.0.0.2:8080")));
        assert!(!overlaps(a("0.0.0.0:8080"), a("0.0.0.0:8081")));
        assert!(!overlaps(a("0.0.0.0:0"), a("127.0.0.1:0")));
        // Across families it depends on the system (dual-stack): left to the bind at start.
        assert!(!overlaps(a("[::]:8080"), a("0.0.0.0:8080")));
    }

    #[test]
    fn sni_names() {
        assert!(check_sni("users.internal").is_ok());
        assert!(check_sni("users_v2.internal").is_ok());
        assert!(check_sni("10.0.0.5").is_err());
        assert!(check_sni("").is_err());
        assert!(check_sni("users..internal").is_err());
        assert!(check_sni("users internal").is_err());
    }
}

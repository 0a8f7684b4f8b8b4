//! The file format: serde types that mirror `CONFIG.md` one to one. They carry no runtime
//! behaviour; `snapshot` compiles them into runtime types. Unknown keys are errors everywhere.

use super::units::{DurationStr, SizeStr};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Top-level sections, each deserialized on its own so one bad section does not hide the others.
pub const SECTIONS: &[&str] = &[
    "server",
    "log",
    "tracing",
    "cluster",
    "upstreams",
    "auth",
    "rate_limits",
    "caches",
    "routes",
];

/// The whole file after parsing. Named tables are kept sorted by name (BTreeMap) so that every
/// listing, error report and hash is deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub auth: BTreeMap<String, AuthConfig>,
    pub routes: BTreeMap<String, RouteConfig>,
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    pub caches: BTreeMap<String, CacheConfig>,
    pub cluster: Option<ClusterConfig>,
    pub tracing: Option<TracingConfig>,
    /// Named entries (`upstreams.NAME`) that failed to parse: references to them are not
    /// reported again as dangling.
    pub failed_entries: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain HTTP listeners (HTTP/1.1 and h2c). Restart needed to change.
    pub listen: Vec<String>,
    /// Admin listener: /metrics, /healthz, /readyz, /config. Restart needed to change.
    pub admin_listen: Option<String>,
    /// Worker threads; default: number of CPUs. Restart needed to change.
    pub threads: Option<usize>,
    pub shutdown_grace: DurationStr,
    /// How long an idle client keep-alive connection is kept open.
    pub idle_timeout: DurationStr,
    pub max_header_bytes: Option<SizeStr>,
    pub max_body_bytes: Option<SizeStr>,
    pub client_header_timeout: Option<DurationStr>,
    pub cache_capacity: Option<SizeStr>,
    /// Environment variable holding the token POST admin endpoints require (`Bearer`).
    pub admin_token_env: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    /// `//` in a request path is read as `/` before matching and forwarding (as nginx).
    pub merge_slashes: bool,
    /// `%2F` in a request path: refused, or kept as data; a route may override.
    pub escaped_slashes: EscapedSlashes,
    /// Client headers removed before forwarding, on top of the fixed list of headers only a
    /// trusted proxy may send (`Forwarded`, `X-Real-IP`, ...).
    pub strip_request_headers: Vec<String>,
    /// Optional HTTPS listener (HTTP/2 by ALPN).
    pub tls: Option<ServerTlsConfig>,
    /// Extension: requests in flight in the whole gateway; past it, 503.
    pub max_in_flight: Option<u64>,
    /// Extension: requests in flight per client address (behind `trusted_proxies`: the
    /// forwarded one); past it, 503.
    pub max_in_flight_per_client: Option<u64>,
    /// Extension: open connections per socket peer (trusted proxies exempt); past it, closed.
    pub max_connections_per_client: Option<u64>,
    /// Extension: new connections per socket peer over time (GCRA; trusted proxies exempt).
    pub connection_rate_per_client: Option<ConnectionRateConfig>,
    /// Extension: largest response body sent to a client (a route may set its own).
    pub max_response_bytes: Option<SizeStr>,
    /// Extension: time for a whole response, body included (a route may set its own).
    pub response_timeout: Option<DurationStr>,
    /// Extension: time for a whole request body to arrive, from the request's start; a body
    /// still arriving then gets 408 (a route may set its own).
    pub client_body_timeout: Option<DurationStr>,
}

/// `server.connection_rate_per_client`: `connections` per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRateConfig {
    /// New connections allowed per `per`.
    pub connections: u64,
    /// The period `connections` is counted over (`"1s"`, `"1m"`).
    pub per: DurationStr,
    /// Default: `connections`.
    pub burst: Option<u64>,
}

/// What `%2F` (an encoded `/`) in a request path does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// 400: many backends decode it into a separator the gateway never matched.
    #[default]
    Reject,
    /// Forwarded as `%2F`, for APIs that put encoded ids in paths and backends that keep them.
    Keep,
}

/// `[server.tls]`: HTTPS listeners. `listen` needs a restart to change; the certificate and key
/// (paths and contents) are reloaded with the rest of the config. Relative paths are relative to
/// the config file's directory.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub listen: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key of the leaf certificate.
    pub key_file: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["0.0.0.0:8080".into()],
            admin_listen: Some("127.0.0.1:9901".into()),
            threads: None,
            shutdown_grace: DurationStr::from_secs(10),
            idle_timeout: DurationStr::from_secs(60),
            max_header_bytes: None,
            max_body_bytes: None,
            client_header_timeout: None,
            cache_capacity: None,
            admin_token_env: None,
            trusted_proxies: None,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            strip_request_headers: Vec::new(),
            tls: None,
            max_in_flight: None,
            max_in_flight_per_client: None,
            max_connections_per_client: None,
            connection_rate_per_client: None,
            max_response_bytes: None,
            response_timeout: None,
            client_body_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// tracing filter for the gateway's own log (stderr): "info", "warn", "tollgate=debug".
    pub level: String,
    /// One access-log line per request on stdout.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
            access: true,
        }
    }
}

/// `[tracing]`: W3C trace context and spans exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`); spans go to
    /// `/v1/traces` under it.
    pub otlp_endpoint: String,
    /// Share of traces started here that are recorded, 0.0 to 1.0 (default 1.0). Parent-based:
    /// a request whose incoming `traceparent` says sampled (or not) keeps that decision.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the spans (default `tollgate`).
    pub service_name: Option<String>,
    /// Extra headers sent to the collector (an API key, a tenant).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    LeastRequests,
    Hash,
}

#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub backup_targets: Vec<TargetConfig>,
    #[serde(default)]
    pub balance: Balance,
    pub hash_key: Option<String>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationStr,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: DurationStr,
    pub retry_budget: Option<RetryBudgetConfig>,
    pub health_check: Option<HealthCheckConfig>,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
}

/// `[upstreams.NAME.health_check]`: active HTTP checks of every target, in the background.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path requested with GET; a 2xx or 3xx answer is a success.
    pub path: String,
    pub interval: DurationStr,
    pub timeout: DurationStr,
    /// Consecutive successes that make an unhealthy target healthy again.
    pub healthy_after: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    pub unhealthy_after: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: DurationStr::from_secs(2),
            timeout: DurationStr::from_millis(500),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }
}

/// `[upstreams.NAME.circuit_breaker]`: passive failure detection per target.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Share of failed requests over `window` that opens the circuit.
    pub failure_ratio: f64,
    /// Fewer requests than this in the window never open the circuit.
    pub min_requests: u32,
    pub window: DurationStr,
    /// How long an open circuit rejects requests before letting probes through.
    pub open_for: DurationStr,
    /// Requests let through while half-open; that many successes close the circuit.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_ratio: 0.5,
            min_requests: 20,
            window: DurationStr::from_secs(10),
            open_for: DurationStr::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// `retry_budget = { ratio, window, min_per_second }`: retries at most `ratio` of requests.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub window: DurationStr,
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            window: DurationStr::from_secs(10),
            min_per_second: 3,
        }
    }
}

fn default_connect_timeout() -> DurationStr {
    DurationStr::from_secs(1)
}

fn default_read_timeout() -> DurationStr {
    DurationStr::from_secs(30)
}

/// A target is `"host:port"` or `{ addr = "host:port", weight = 3 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub addr: String,
    pub weight: u32,
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"host:port\" or { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig {
                    addr: s.to_string(),
                    weight: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Weighted {
                    addr: String,
                    #[serde(default = "one")]
                    weight: u32,
                }
                fn one() -> u32 {
                    1
                }
                let w = Weighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetConfig {
                    addr: w.addr,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The kinds of `[auth.NAME]` policy.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Bearer JWTs from an identity provider.
    Jwt,
    /// Partner API keys in a header, checked against a file of SHA-256 digests.
    ApiKey,
}

/// `[auth.NAME]`: one flat table for both kinds, so every key is reported with its own path and
/// line (a serde-tagged enum would lose both); validation refuses keys of the other kind.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Both types: whether the credential header (the API-key header, or `Authorization`) goes
    /// upstream. Default: false for api_key, true for jwt.
    pub forward_credentials: Option<bool>,
    // type = "jwt"
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    /// Extension: PEM CA certificates to trust for an https `jwks_url` (instead of system roots).
    pub jwks_ca_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    /// Extension, with a secret only: the `kid` a token may name (a token naming none is
    /// accepted too). Absent: a token's `kid` is ignored, as one secret has nothing to match.
    pub kid: Option<String>,
    pub jwks_refresh: Option<DurationStr>,
    pub leeway: Option<DurationStr>,
    /// Claim name -> upstream request header.
    pub forward_claims: Option<BTreeMap<String, String>>,
    /// Extension: verified tokens kept in the cache (default 100000).
    pub token_cache_entries: Option<u64>,
    // type = "api_key"
    /// Request header carrying the key (default `x-api-key`).
    pub header: Option<String>,
    /// TOML file of `consumer = "<sha256 hex of the key>"` lines.
    pub keys_file: Option<String>,
    /// Extension: upstream header carrying the consumer name (default `x-consumer`).
    pub forward_consumer: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host or `*.example.com`; absent: any host.
    pub host: Option<String>,
    pub path: String,
    /// Absent: any method.
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    /// Upstream path template with `{param}` placeholders from `path`.
    pub rewrite: Option<String>,
    /// Total deadline for the request, retries included.
    pub timeout: Option<DurationStr>,
    pub auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limits: Option<Vec<String>>,
    pub cache: Option<String>,
    pub retry: Option<RetryConfig>,
    pub fallback: Option<FallbackConfig>,
    /// Request aggregation: the route answers from several upstream calls (no `upstream`).
    pub aggregate: Option<AggregateConfig>,
    pub max_body_bytes: Option<SizeStr>,
    /// Extension: overrides `server.max_response_bytes` for this route.
    pub max_response_bytes: Option<SizeStr>,
    /// Extension: overrides `server.response_timeout` for this route.
    pub response_timeout: Option<DurationStr>,
    /// Extension: overrides `server.client_body_timeout` for this route (uploads).
    pub client_body_timeout: Option<DurationStr>,
    /// Overrides `server.escaped_slashes` for this route.
    pub escaped_slashes: Option<EscapedSlashes>,
}

/// A route's `aggregate`: the parts it calls and how their answers are merged.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The body member listing each part's outcome (default `"_parts"`; `false`: none).
    #[serde(default)]
    pub meta: MetaMember,
    /// Largest body read from one part (default 1 MiB).
    pub max_part_bytes: Option<SizeStr>,
    /// The parts, by name (the member each one fills in the answer).
    #[serde(default)]
    pub parts: BTreeMap<String, PartConfig>,
}

/// `aggregate.meta`: a member name, `true` (the default name) or `false` (no member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaMember {
    Named(String),
    Off,
}

/// The default `aggregate.meta` member.
pub const DEFAULT_META_MEMBER: &str = "_parts";

impl Default for MetaMember {
    fn default() -> Self {
        MetaMember::Named(DEFAULT_META_MEMBER.to_string())
    }
}

impl<'de> Deserialize<'de> for MetaMember {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Flag(bool),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a member name or false"))?
        {
            Raw::Name(name) => Ok(MetaMember::Named(name)),
            Raw::Flag(true) => Ok(MetaMember::default()),
            Raw::Flag(false) => Ok(MetaMember::Off),
        }
    }
}

/// `aggregate.parts.NAME`: one upstream call of an aggregate route.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartConfig {
    pub upstream: String,
    /// Path and query template: `{param}`, `{claim.NAME}`, `{consumer}`, `{query.NAME}`,
    /// `{header.NAME}`, `{parts.PART.dot.path}`.
    pub path: String,
    /// Default GET.
    pub method: Option<String>,
    /// A failed required part fails the whole answer (502/504); an optional one is `null`.
    #[serde(default)]
    pub required: bool,
    /// The part's own deadline, capped by the route's `timeout`.
    pub timeout: Option<DurationStr>,
    /// A cache (`[caches.NAME]`) for this part's answers.
    pub cache: Option<String>,
    /// Members of the part's answer to keep (dot paths); absent: all of it.
    pub fields: Option<Vec<String>>,
    /// `"."`: the kept members go at the root of the answer, not under the part's name.
    pub into: Option<String>,
    /// Client request headers passed on to the part besides the defaults.
    #[serde(default)]
    pub forward_headers: Vec<String>,
}

/// Route `retry = { attempts, backoff, max_backoff, methods }`.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, the first one included.
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff: DurationStr,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: DurationStr,
    /// Methods that may be retried; default: the idempotent ones.
    pub methods: Option<Vec<String>>,
}

fn default_backoff() -> DurationStr {
    DurationStr::from_millis(25)
}

fn default_max_backoff() -> DurationStr {
    DurationStr::from_millis(250)
}

/// Route `fallback = { status, body, content_type }`: served when the upstream cannot answer.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "default_fallback_type")]
    pub content_type: String,
}

fn default_fallback_type() -> String {
    "application/json".into()
}

/// `[rate_limits.NAME]`: a GCRA token bucket, `requests` per `per`, bursts up to `burst`, one
/// bucket per value of `key`.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: u64,
    pub per: DurationStr,
    /// Default: `requests`.
    pub burst: Option<u64>,
    /// `ip` | `route` | `consumer` | `header:NAME` | `claim:NAME`.
    pub key: String,
    /// One budget across every instance, kept in Redis (`[cluster]`).
    #[serde(default)]
    pub cluster: bool,
}

/// What a cluster limit does while Redis is unreachable or slow.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// This instance's own bucket stands in.
    #[default]
    Local,
    Allow,
    Deny,
}

/// `[caches.NAME]`: a shared HTTP cache (RFC 9111) in memory, used by routes with `cache = NAME`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness when the upstream gives none; absent: such responses are not stored.
    pub ttl: Option<DurationStr>,
    /// Cap on any freshness, the upstream's included (default 1h).
    pub max_ttl: Option<DurationStr>,
    /// Serve a stale entry at once while one background request refreshes it (default 0).
    pub stale_while_revalidate: Option<DurationStr>,
    /// Serve a stale entry when the upstream fails (default 0).
    pub stale_if_error: Option<DurationStr>,
    /// Cacheable statuses (default 200, 203, 204, 301, 404, 410).
    pub statuses: Option<Vec<u16>>,
    /// Request headers that are part of the key (besides the response's own `Vary`).
    #[serde(default)]
    pub vary: Vec<String>,
    /// Query parameters in the key: `"all"` (sorted), `"none"`, or an allow-list.
    #[serde(default)]
    pub query: CacheQuery,
    #[serde(default)]
    pub scope: CacheScope,
    /// Bigger responses stream through uncached (default 1MiB).
    pub max_entry: Option<SizeStr>,
}

/// Which query parameters a cache key keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum CacheQuery {
    /// Every parameter, sorted (so `?a=1&b=2` and `?b=2&a=1` share an entry).
    #[default]
    All,
    /// None: the query is ignored for the key (and still forwarded).
    None,
    /// Only these parameters, sorted.
    Only(Vec<String>),
}

impl<'de> Deserialize<'de> for CacheQuery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected \"all\", \"none\" or a list of parameter names")
        })? {
            Raw::Word(w) if w == "all" => Ok(CacheQuery::All),
            Raw::Word(w) if w == "none" => Ok(CacheQuery::None),
            Raw::Word(w) => Err(de::Error::custom(format!(
                "\"{w}\" is not \"all\", \"none\" or a list of parameter names"
            ))),
            Raw::List(names) => Ok(CacheQuery::Only(names)),
        }
    }
}

/// Who may be served an entry.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Everyone; with credentials only responses marked `public` or with `s-maxage` are stored.
    #[default]
    Shared,
    /// Each caller (JWT `sub` / API-key consumer) has its own entries.
    Consumer,
}

/// `[cluster]`: state shared by every instance through Redis.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub redis_url: String,
    #[serde(default)]
    pub on_error: OnError,
    /// Extension: deadline of one Redis call (default 50ms); past it `on_error` applies.
    pub timeout: Option<DurationStr>,
    /// Extension: with `rediss://`, the PEM CA certificates that alone are trusted (a private
    /// CA); without it, the system's roots.
    pub ca_file: Option<String>,
    /// Extension: with `rediss://`, a PEM client certificate (chain) and its key, for a Redis
    /// that requires client certificates.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// A rate limit's `key`, parsed: what one bucket is per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client address (the socket peer, or X-Forwarded-For behind `trusted_proxies`).
    Ip,
    /// One bucket for the whole route.
    Route,
    /// The API-key consumer or the JWT `sub`.
    Consumer,
    /// A request header's value.
    Header(http::HeaderName),
    /// A verified JWT claim.
    Claim(String),
}

impl RateKey {
    pub fn parse(key: &str) -> Result<RateKey, String> {
        let expected =
            "is not one of \"ip\", \"route\", \"consumer\", \"header:NAME\", \"claim:NAME\"";
        match key {
            "ip" => Ok(RateKey::Ip),
            "route" => Ok(RateKey::Route),
            "consumer" => Ok(RateKey::Consumer),
            _ => {
                if let Some(name) = key.strip_prefix("header:") {
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map(RateKey::Header)
                        .map_err(|_| format!("\"{name}\" is not a valid header name"))
                } else if let Some(claim) = key.strip_prefix("claim:") {
                    let ok = !claim.is_empty()
                        && claim.len() <= 128
                        && claim.bytes().all(|b| b.is_ascii_graphic());
                    match ok {
                        true => Ok(RateKey::Claim(claim.to_string())),
                        false => Err(format!("\"{key}\" names no claim; write \"claim:sub\"")),
                    }
                } else {
                    Err(format!("\"{key}\" {expected}"))
                }
            }
        }
    }
}

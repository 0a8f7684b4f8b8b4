//! Compiled configuration: a [`Snapshot`] is the immutable runtime form of one config file
//! (route table, upstreams, log settings, and the warnings about it). The proxy loads one
//! snapshot per request, so a reload never mixes old and new config inside a request. [`store`]
//! swaps snapshots; [`watch`] triggers reloads on file changes and SIGHUP.

mod files;
mod limits;
mod rewrite;
mod server;
pub mod store;
mod warnings;
pub mod watch;

pub use files::ReferencedFiles;
pub use limits::Limits;
pub use rewrite::{path_params, Rewrite};
pub use server::ServerSettings;
pub use store::{ReloadOutcome, ReloadRecord, Store};

use crate::auth::{self, AuthPolicy};
use crate::config::{
    self, Config, ConfigError, ConfigErrors, ConfigWarning, EscapedSlashes, LogFormat, Source,
};
use crate::route::{RouteDef, RouteTable};
pub use crate::upstream::RetryPolicy;
use crate::upstream::{StateRegistry, Upstream};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A compiled `[routes.NAME]`.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// `host`, `path` and `methods` as configured (empty: any method), for the status page.
    pub host: Option<String>,
    pub path: String,
    pub methods: Vec<String>,
    /// Where the route's answers come from.
    pub backend: Backend,
    pub rewrite: Option<Rewrite>,
    /// Total deadline of a request on this route.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub fallback: Option<Fallback>,
    /// Largest request body: the route's `max_body_bytes`, else the server's.
    pub max_body_bytes: u64,
    /// Largest response body: the route's `max_response_bytes`, else the server's.
    pub max_response_bytes: u64,
    /// Time for the whole response: the route's `response_timeout`, else the server's.
    pub response_timeout: Duration,
    /// Time for the whole request body: the route's `client_body_timeout`, else the server's.
    pub client_body_timeout: Duration,
    /// Who may call the route; `None`: a public route.
    pub auth: Option<RouteAuth>,
    /// The route's `rate_limits`; `None`: unlimited.
    pub rate_limits: Option<Arc<crate::ratelimit::RouteLimits>>,
    /// `%2F` in a path is data for this route's backend (`escaped_slashes = "keep"`).
    pub keep_escaped_slashes: bool,
    /// The route's request metrics, looked up once.
    pub metrics: crate::observe::RouteMetrics,
    /// The route's response cache (`cache = NAME`).
    pub cache: Option<Arc<crate::cache::CachePolicy>>,
}

/// What answers a route's requests.
#[derive(Debug)]
pub enum Backend {
    /// The request is proxied to this upstream.
    Proxy(Arc<Upstream>),
    /// The gateway answers from the parts of an aggregate.
    Aggregate(Arc<crate::aggregate::Aggregate>),
}

impl Route {
    /// The upstream of a proxied route.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match &self.backend {
            Backend::Proxy(upstream) => Some(upstream),
            Backend::Aggregate(_) => None,
        }
    }

    /// The aggregate of an aggregate route.
    pub fn aggregate(&self) -> Option<&Arc<crate::aggregate::Aggregate>> {
        match &self.backend {
            Backend::Aggregate(aggregate) => Some(aggregate),
            Backend::Proxy(_) => None,
        }
    }
}

/// A route's `auth` and `scopes`.
#[derive(Debug)]
pub struct RouteAuth {
    /// The policy's name, for metrics and logs.
    pub name: Arc<str>,
    pub policy: Arc<AuthPolicy>,
    /// JWT scopes the caller must all hold.
    pub scopes: Vec<String>,
}

/// Runtime state that outlives snapshots, so a reload keeps it for unchanged settings:
/// upstream health, circuits and budgets; JWT key sets; rate limit buckets; caches and the
/// store their entries share.
pub struct Registries {
    pub upstreams: StateRegistry,
    pub keys: Arc<auth::jwt::KeyRegistry>,
    pub limits: crate::ratelimit::LimitRegistry,
    pub caches: crate::cache::CacheRegistry,
    pub cache_store: &'static crate::cache::MemoryStore,
    pub purge_channels: crate::registry::Registry<
        crate::ratelimit::cluster::Settings,
        crate::cache::bus::PurgeChannel,
    >,
    /// Trace exporters, one per `[tracing]` settings in use.
    pub tracers: crate::registry::Registry<crate::trace::TraceSettings, crate::trace::Tracing>,
    metrics: Arc<crate::observe::Metrics>,
}

impl Registries {
    pub fn new(metrics: Arc<crate::observe::Metrics>) -> Registries {
        Registries {
            upstreams: StateRegistry::new(metrics.clone()),
            keys: Arc::new(auth::jwt::KeyRegistry::new(metrics.clone())),
            caches: crate::cache::CacheRegistry::new(),
            purge_channels: crate::registry::Registry::new(),
            tracers: crate::registry::Registry::new(),
            cache_store: crate::cache::MemoryStore::leak(
                crate::config::DEFAULT_CACHE_CAPACITY,
                metrics.cache.clone(),
            ),
            limits: crate::ratelimit::LimitRegistry::new(metrics.clone()),
            metrics,
        }
    }
}

/// A route's `fallback` response, served when its upstream cannot answer.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub status: u16,
    pub body: bytes::Bytes,
    pub content_type: String,
}

/// Log settings that apply per request and so can change on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub access: bool,
}

/// What identifies a loaded config on the admin `/config` endpoint.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// SHA-256 of the file text, hex.
    pub hash: String,
    pub source: PathBuf,
    pub loaded_at: SystemTime,
    pub routes: usize,
    pub upstreams: usize,
}

/// One compiled config.
pub struct Snapshot {
    pub routes: RouteTable<Arc<Route>>,
    /// The routes as a lenient backend reads their patterns (percent-encodings decoded,
    /// literal segments trimmed, case folded), when that changes any pattern; else the lenient
    /// reading of a path is matched against `routes`.
    pub lenient_routes: Option<RouteTable<Arc<Route>>>,
    /// A pattern has a capital or a segment ending in `.`: every request path is read
    /// leniently too, not only one holding something a backend reads differently.
    pub lenient_every_path: bool,
    /// `server.merge_slashes`.
    pub merge_slashes: bool,
    /// Client headers removed before forwarding.
    pub strip: StripLists,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub log: LogSettings,
    /// `log.level`, applied at start-up.
    pub log_level: String,
    /// `[server]` listeners, threads and timing; restart-only keys are compared on reload.
    pub server: ServerSettings,
    /// Headers set from verified identities, removed from every client request.
    pub identity_headers: Vec<http::HeaderName>,
    /// `server.trusted_proxies`: peers whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The HTTPS listener's certificate and key (`[server.tls]`), read at compile time: every
    /// new handshake takes the one of the live snapshot, so a reload swaps it.
    pub tls: Option<Arc<crate::tls::TlsIdentity>>,
    /// Files the config names (certificates, keys, CAs), fingerprinted as they were compiled.
    pub files: ReferencedFiles,
    /// Request size and time limits (`[server]` values or their defaults).
    pub limits: Limits,
    /// Rate limit checks (trusted proxies, cluster backend); the limits hang off the routes.
    pub limiter: Arc<crate::ratelimit::Limiter>,
    /// Where every cache's entries live, and the bytes they may take (`cache_capacity`).
    pub cache_store: &'static crate::cache::MemoryStore,
    pub cache_capacity: u64,
    /// The `[caches.*]` names, for purges that name one.
    pub cache_names: Vec<String>,
    /// With `[cluster]` and caches: where purges are shared with the other instances.
    pub purge_channel: Option<Arc<crate::cache::bus::PurgeChannel>>,
    /// `[tracing]`: spans for every request, exported over OTLP; `None`: no tracing.
    pub tracing: Option<Arc<crate::trace::Tracing>>,
    /// `server.admin_token_env`'s token: POST admin endpoints need it as a bearer token.
    pub admin_token: Option<String>,
    pub info: SnapshotInfo,
    /// What the config says that is valid but probably not meant, located in the file, in file
    /// order. Printed by `check`, logged when the snapshot goes live.
    pub warnings: Vec<ConfigWarning>,
}

impl Snapshot {
    /// The table a lenient reading of a path is matched against.
    pub fn lenient_routes(&self) -> &RouteTable<Arc<Route>> {
        self.lenient_routes.as_ref().unwrap_or(&self.routes)
    }

    /// Reads, parses, validates and compiles a config file: what `check`, start-up and every
    /// reload run. All errors come back at once, located in the file.
    /// Runtime state comes from a private registry: right for `check`, not for a running gateway
    /// (which uses [`Snapshot::from_source`] with the registry that outlives its snapshots).
    pub fn load(path: &std::path::Path) -> Result<Snapshot, ConfigErrors> {
        let registries = Registries::new(Arc::new(crate::observe::Metrics::new()));
        Snapshot::from_source(&Source::read(path)?, &registries)
    }

    /// The warnings as `check` prints them and the gateway logs them, one line each:
    /// `FILE:LINE:COL: warning: KEY: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        let source = self.info.source.display().to_string();
        self.warnings.iter().map(|w| w.in_file(&source)).collect()
    }

    /// Logs each warning at WARN: call it once, when the snapshot goes live.
    pub fn log_warnings(&self, trigger: &str) {
        log_warning_lines(&self.warning_lines(), trigger);
    }

    /// Sets the upstream health and circuit gauges from this snapshot's state and applies its
    /// cache capacity: call it when the snapshot goes live (a snapshot compiled and then
    /// rejected must not touch them).
    pub fn go_live(&self) {
        for upstream in self.upstreams.values() {
            upstream.state.publish_metrics();
        }
        self.cache_store.set_capacity(self.cache_capacity);
    }

    /// Parses, validates and compiles config text already read from its file, taking upstream
    /// state (health, circuits) from `registry` so unchanged upstreams keep theirs.
    pub fn from_source(source: &Source, registry: &Registries) -> Result<Snapshot, ConfigErrors> {
        let (config, mut errors) =
            config::parse_partial(&source.text).map_err(|errors| source.errors(errors))?;
        // Entries that already failed are left out of compilation, so each problem is reported
        // once; the others are compiled to find route conflicts and rewrite errors too.
        let failed: BTreeSet<String> = errors.iter().filter_map(|e| entry_of(&e.path)).collect();
        match compile(source, &config, &failed, registry) {
            Ok(mut snapshot) if errors.is_empty() => {
                snapshot.warnings = source.warnings(std::mem::take(&mut snapshot.warnings));
                Ok(snapshot)
            }
            Ok(_) => Err(source.errors(errors)),
            Err(more) => {
                errors.extend(more);
                Err(source.errors(errors))
            }
        }
    }
}

/// Logs config warnings (see [`Snapshot::warning_lines`]) at WARN, with what loaded the config.
pub(crate) fn log_warning_lines(lines: &[String], trigger: &str) {
    for line in lines {
        tracing::warn!(trigger, "{line}");
    }
}

/// `upstreams.NAME` or `routes.NAME` for an error path inside a named entry.
fn entry_of(path: &str) -> Option<String> {
    if path == "cluster" || path.starts_with("cluster.") {
        return Some("cluster".into());
    }
    let mut parts = path.splitn(3, '.');
    let section = parts.next()?;
    let name = parts.next()?.split('[').next()?;
    matches!(
        section,
        "upstreams" | "routes" | "auth" | "rate_limits" | "caches"
    )
    .then(|| format!("{section}.{name}"))
}

/// Compiles a config, leaving out the entries named in `skip` (`routes.NAME`, `upstreams.NAME`)
/// because they already failed validation. Resolves target host names (blocking DNS, so never
/// call this on the request path) and builds the route table, reporting ambiguous routes and bad
/// rewrites.
pub fn compile(
    source: &Source,
    config: &Config,
    skip: &BTreeSet<String>,
    registries: &Registries,
) -> Result<Snapshot, Vec<ConfigError>> {
    let registry = &registries.upstreams;
    let (policies, mut errors) = auth::compile(config, &source.base_dir(), skip, &registries.keys);
    let files = ReferencedFiles::of(&source.base_dir(), config);
    let mut upstreams = BTreeMap::new();
    for (name, cfg) in &config.upstreams {
        if skip.contains(&format!("upstreams.{name}")) {
            continue;
        }
        match Upstream::compile(name, cfg, registry, &source.base_dir()) {
            Ok(u) => {
                upstreams.insert(name.clone(), Arc::new(u));
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|(key, msg)| ConfigError::new(format!("upstreams.{name}.{key}"), msg)),
            ),
        }
    }

    let tls = match &config.server.tls {
        Some(cfg) => match crate::tls::TlsIdentity::load(&source.base_dir(), cfg) {
            Ok(identity) => Some(Arc::new(identity)),
            Err(errs) => {
                errors.extend(errs);
                None
            }
        },
        None => None,
    };

    let limits = Limits::compile(&config.server);
    let rate_limits =
        match crate::ratelimit::compile(config, &source.base_dir(), skip, &registries.limits) {
            Ok(c) => Some(c),
            Err(errs) => {
                errors.extend(errs);
                None
            }
        };
    let caches: BTreeMap<&str, Arc<crate::cache::CachePolicy>> = config
        .caches
        .iter()
        .map(|(name, cfg)| {
            let settings = crate::cache::CacheSettings::compile(name, cfg);
            let policy =
                crate::cache::policy::policy(&registries.caches, settings, registries.cache_store);
            registries.cache_store.metrics().declare(name);
            (name.as_str(), policy)
        })
        .collect();
    let purge_channel = match &config.cluster {
        Some(cfg) if !config.caches.is_empty() && !skip.contains("cluster") => {
            let channel =
                crate::ratelimit::shared::settings(cfg, &source.base_dir()).and_then(|s| {
                    registries
                        .purge_channels
                        .try_get_or_insert_with(s.clone(), || {
                            crate::cache::bus::PurgeChannel::new(&s).map(Arc::new)
                        })
                });
            match channel {
                Ok(c) => Some(c),
                Err(e) => {
                    let path = format!("cluster.{}", e.setting);
                    // The rate limiter may have said the same about [cluster].
                    if !errors.iter().any(|x| x.path == path) {
                        errors.push(ConfigError::new(path, e.message));
                    }
                    None
                }
            }
        }
        _ => None,
    };
    let tracing = match &config.tracing {
        Some(cfg) if !skip.contains("tracing") => {
            let settings = crate::trace::TraceSettings::compile(cfg);
            let started = registries
                .tracers
                .try_get_or_insert_with(settings.clone(), || {
                    crate::trace::Tracing::start(&settings, registries.metrics.clone())
                        .map(Arc::new)
                });
            match started {
                Ok(tracing) => Some(tracing),
                Err(e) => {
                    let message = format!("cannot start the trace exporter: {e}");
                    errors.push(ConfigError::new("tracing", message));
                    None
                }
            }
        }
        _ => None,
    };
    let admin_token = match &config.server.admin_token_env {
        Some(var) => match std::env::var(var) {
            Ok(token) if !token.is_empty() => Some(token),
            _ => {
                errors.push(ConfigError::new(
                    "server.admin_token_env",
                    format!("names the environment variable {var}, which is not set (or empty)"),
                ));
                None
            }
        },
        None => None,
    };
    let mut defs = Vec::with_capacity(config.routes.len());
    for (name, r) in &config.routes {
        let base = format!("routes.{name}");
        if skip.contains(&base) {
            continue;
        }
        let backend = match (&r.upstream, &r.aggregate) {
            (Some(name), None) => match upstreams.get(name) {
                Some(upstream) => Backend::Proxy(upstream.clone()),
                None => continue, // validation already reported it
            },
            (None, Some(aggregate)) => {
                let context = crate::aggregate::Context {
                    base: &base,
                    upstreams: &upstreams,
                    caches: &caches,
                    params: &path_params(&r.path),
                    personal: r.auth.is_some(),
                };
                match crate::aggregate::compile(aggregate, &context) {
                    Ok(aggregate) => Backend::Aggregate(Arc::new(aggregate)),
                    Err(more) => {
                        errors.extend(more);
                        continue;
                    }
                }
            }
            _ => continue, // validation already reported it
        };
        let auth = match &r.auth {
            Some(name) => match policies.by_name.get(name) {
                Some(policy) => Some(RouteAuth {
                    name: Arc::from(name.as_str()),
                    policy: policy.clone(),
                    scopes: r.scopes.clone().unwrap_or_default(),
                }),
                None => continue, // reported by validation or by the policy's own compilation
            },
            None => None,
        };
        let rewrite = match &r.rewrite {
            Some(t) => match Rewrite::parse(t, &path_params(&r.path)) {
                Ok(rw) => Some(rw),
                Err(msg) => {
                    errors.push(ConfigError::new(format!("{base}.rewrite"), msg));
                    continue;
                }
            },
            None => None,
        };
        let keep_escaped_slashes =
            r.escaped_slashes.unwrap_or(config.server.escaped_slashes) == EscapedSlashes::Keep;
        if let Some(problem) =
            pattern_problem(&r.path, config.server.merge_slashes, keep_escaped_slashes)
        {
            errors.push(ConfigError::new(format!("{base}.path"), problem));
            continue;
        }
        let methods = r.methods.as_ref().map(|ms| {
            ms.iter()
                .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .collect()
        });
        defs.push(RouteDef {
            name: name.clone(),
            host: r.host.clone(),
            path: r.path.clone(),
            methods,
            value: Arc::new(Route {
                name: Arc::from(name.as_str()),
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone().unwrap_or_default(),
                backend,
                rewrite,
                timeout: r.timeout.map(|t| t.get()),
                retry: r.retry.as_ref().map(RetryPolicy::compile),
                fallback: r.fallback.as_ref().map(|f| Fallback {
                    status: f.status,
                    body: bytes::Bytes::from(f.body.clone()),
                    content_type: f.content_type.clone(),
                }),
                auth,
                rate_limits: match (&r.rate_limits, &rate_limits) {
                    (Some(names), Some(c)) => c.route(names),
                    _ => None,
                },
                max_body_bytes: r
                    .max_body_bytes
                    .map_or(limits.max_body_bytes, |s| s.bytes()),
                max_response_bytes: r
                    .max_response_bytes
                    .map_or(limits.max_response_bytes, |s| s.bytes()),
                response_timeout: r
                    .response_timeout
                    .map_or(limits.response_timeout, |d| d.get()),
                client_body_timeout: r
                    .client_body_timeout
                    .map_or(limits.client_body_timeout, |d| d.get()),
                keep_escaped_slashes,
                metrics: Default::default(),
                cache: r.cache.as_deref().and_then(|c| caches.get(c).cloned()),
            }),
        });
    }
    let lenient_every_path = defs
        .iter()
        .any(|d| crate::request_target::pattern_folds(&d.path));
    let lenient_routes = match build_lenient_table(&defs) {
        Ok(table) => table,
        Err(more) => {
            errors.extend(more);
            None
        }
    };
    let routes = match RouteTable::build(defs) {
        Ok(t) => Some(t),
        Err(route_errors) => {
            errors.extend(route_errors.into_iter().map(route_error));
            None
        }
    };
    match routes {
        Some(routes) if errors.is_empty() => Ok(Snapshot {
            limiter: match rate_limits {
                Some(c) => c.limiter,
                None => return Err(errors),
            },
            warnings: warnings::of(&config.server, &routes),
            info: SnapshotInfo {
                hash: source.hash(),
                source: source.path.clone(),
                loaded_at: SystemTime::now(),
                routes: routes.len(),
                upstreams: upstreams.len(),
            },
            routes,
            lenient_routes,
            lenient_every_path,
            merge_slashes: config.server.merge_slashes,
            strip: StripLists::compile(&config.server.strip_request_headers),
            upstreams,
            log: LogSettings {
                format: config.log.format,
                access: config.log.access,
            },
            log_level: config.log.level.clone(),
            server: ServerSettings::compile(&config.server),
            identity_headers: with_dashed_spellings(policies.identity_headers),
            trusted_proxies: config
                .server
                .trusted_proxies
                .iter()
                .flatten()
                .filter_map(|p| config::parse_proxy_net(p).ok())
                .collect(),
            tls,
            files,
            limits,
            cache_store: registries.cache_store,
            cache_capacity: config::cache_capacity(config),
            cache_names: config.caches.keys().cloned().collect(),
            purge_channel,
            admin_token,
            tracing,
        }),
        _ => Err(errors),
    }
}

fn route_error(e: crate::route::RouteError) -> ConfigError {
    ConfigError::new(format!("routes.{}.{}", e.route, e.field), e.message)
}

/// Why a route's path pattern could never match a request in normal form (or could only be
/// read differently by a backend), if it could not. Patterns are written the way requests are
/// matched: no `%XX` of a plain character, upper-case hex, no dot segments, no `//` while
/// slashes are merged, no `;` (path parameters, which backends read differently), no `%2F`
/// unless the route keeps escaped slashes.
fn pattern_problem(
    pattern: &str,
    merge_slashes: bool,
    keep_escaped_slashes: bool,
) -> Option<String> {
    // Syntax (a leading '/', no query, no whitespace) is the route table's to report.
    let syntax_error = !pattern.starts_with('/')
        || pattern
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#');
    if syntax_error {
        return None;
    }
    if pattern.contains(';') {
        return Some(format!(
            "{pattern:?} contains ';': backends read path parameters differently, so such a route \
             cannot be matched safely"
        ));
    }
    match crate::request_target::normalize(pattern.as_bytes(), merge_slashes) {
        Err(e) => Some(format!(
            "{pattern:?} can never match a request: {}",
            e.detail().trim_start_matches("the path ")
        )),
        Ok(normal) if normal.path != pattern => Some(format!(
            "{pattern:?} is not how requests are matched; write {:?}",
            normal.path
        )),
        Ok(normal) if normal.escaped_slash && !keep_escaped_slashes => Some(format!(
            "{pattern:?} contains %2F, which requests to this route are refused for; set \
             escaped_slashes = \"keep\" on the route"
        )),
        Ok(_) => None,
    }
}

/// The route table as a lenient backend reads the patterns, if that differs for any pattern
/// (a `%`, a capital, a segment ending in `.`). Two routes whose patterns read the same once
/// decoded, trimmed and case-folded are ambiguous: a lenient backend cannot tell them apart.
fn build_lenient_table(
    defs: &[RouteDef<Arc<Route>>],
) -> Result<Option<RouteTable<Arc<Route>>>, Vec<ConfigError>> {
    use crate::request_target::lenient_pattern;
    use std::borrow::Cow;
    let patterns: Vec<Cow<'_, str>> = defs.iter().map(|d| lenient_pattern(&d.path)).collect();
    if patterns.iter().all(|p| matches!(p, Cow::Borrowed(_))) {
        return Ok(None);
    }
    let lenient = defs
        .iter()
        .zip(patterns)
        .map(|(d, path)| RouteDef {
            path: path.into_owned(),
            ..d.clone()
        })
        .collect();
    RouteTable::build(lenient).map(Some).map_err(|errors| {
        errors
            .into_iter()
            .map(|mut e| {
                e.message = format!(
                    "once read as lenient backends read paths (decoded, case-folded, trailing dots \
                     trimmed), {}",
                    e.message
                );
                route_error(e)
            })
            .collect()
    })
}

/// `names` without repeats and, for each name with a `_`, its spelling with `-` too. CGI, WSGI,
/// Rack and nginx with `underscores_in_headers` read the two as one header, so a client's
/// `x-user-id` would pass for the gateway's `x_user_id`. (The other way round, a client's name
/// with `_` for a configured one with `-`, is checked per request: the spellings are many.)
fn with_dashed_spellings(names: Vec<http::HeaderName>) -> Vec<http::HeaderName> {
    let mut out: Vec<http::HeaderName> = Vec::with_capacity(names.len());
    for name in names {
        let dashed = name
            .as_str()
            .contains('_')
            .then(|| http::HeaderName::from_bytes(name.as_str().replace('_', "-").as_bytes()));
        for name in std::iter::once(name).chain(dashed.and_then(Result::ok)) {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Client headers removed before forwarding, by who sent the request.
#[derive(Debug, Clone, Default)]
pub struct StripLists {
    /// From a peer that is not a trusted proxy: the fixed proxy headers and
    /// `server.strip_request_headers`.
    pub untrusted: Vec<http::HeaderName>,
    /// From a trusted proxy: `server.strip_request_headers` only.
    pub trusted: Vec<http::HeaderName>,
}

impl StripLists {
    /// From `server.strip_request_headers` (validated), without repeats.
    fn compile(extra: &[String]) -> StripLists {
        let names = |list: &mut dyn Iterator<Item = &str>| {
            with_dashed_spellings(
                list.filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect(),
            )
        };
        StripLists {
            untrusted: names(
                &mut crate::config::reserved::PROXY_HEADERS
                    .iter()
                    .copied()
                    .chain(extra.iter().map(String::as_str)),
            ),
            trusted: names(&mut extra.iter().map(String::as_str)),
        }
    }
}

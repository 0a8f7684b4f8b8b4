//! Upstreams at run time: resolved targets (primaries and backups), the balancing policy that
//! picks one for a request among the usable ones, and the state that outlives reloads
//! (health, circuit breakers, requests in flight).

mod attempt;
pub mod backoff;
mod balance;
pub mod budget;
pub mod circuit;
pub mod health;
pub mod retry;
pub mod state;
mod window;

pub use attempt::{failure_outcome, is_connect_error, is_timeout, Attempt, NoUsableTarget};
pub use balance::Balancer;
pub use retry::{RetryFacts, RetryPolicy, RetryReason};
pub use state::{AttemptGuard, StateRegistry, TargetState, UpstreamState};

use crate::config::{Balance, TargetConfig, UpstreamConfig};
use crate::tls::UpstreamTls;
use http::HeaderName;
use pingora::prelude::HttpPeer;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pooled upstream connections idle longer than this are closed rather than reused: upstream
/// servers commonly close idle keep-alive connections after 60 s or more, so reuse stays safe.
pub const POOL_IDLE: Duration = Duration::from_secs(55);

/// One backend address of an upstream.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The address as written in the config (`users.internal:80`), used in logs and metrics.
    pub label: Arc<str>,
    pub weight: u32,
    /// True for `backup_targets`.
    pub backup: bool,
}

/// What the hash policy hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    ClientIp,
    Header(HeaderName),
    /// A claim of the caller's verified JWT (a route without JWT auth hashes the client address).
    Claim(String),
}

/// `hash_key` as validated: `ip` (default), `header:NAME` or `claim:NAME`.
fn hash_key(key: Option<&str>) -> HashKey {
    let Some(key) = key else {
        return HashKey::ClientIp;
    };
    if let Some(claim) = key.strip_prefix("claim:") {
        return HashKey::Claim(claim.to_string());
    }
    key.strip_prefix("header:")
        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .map_or(HashKey::ClientIp, HashKey::Header)
}

/// A compiled `[upstreams.NAME]`.
pub struct Upstream {
    pub name: Arc<str>,
    /// Primaries first, then backups; indexes are shared with `state.targets`.
    pub targets: Vec<Target>,
    primaries: usize,
    balancer: Balancer,
    backup_balancer: Balancer,
    pub hash_key: HashKey,
    pub state: Arc<UpstreamState>,
    pub health_check: Option<health::HealthCheck>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `tls = true`: HTTPS to the targets, certificates verified.
    pub tls: Option<UpstreamTls>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Resolves target names (blocking DNS: call this off the request path, at load or reload),
    /// builds the balancers and takes the targets' state from `registry` (kept across reloads
    /// while the settings are unchanged). Errors are (key suffix, message) pairs.
    /// `base_dir`: the config file's directory, for a relative `ca_file`.
    pub fn compile(
        name: &str,
        cfg: &UpstreamConfig,
        registry: &StateRegistry,
        base_dir: &Path,
    ) -> Result<Upstream, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let tls = if cfg.tls {
            UpstreamTls::compile(base_dir, cfg.sni.as_deref(), cfg.ca_file.as_deref())
                .map_err(|e| errors.push(e))
                .ok()
        } else {
            None
        };
        let mut targets = resolve_all(&cfg.targets, "targets", false, &mut errors);
        let primaries = targets.len();
        targets.extend(resolve_all(
            &cfg.backup_targets,
            "backup_targets",
            true,
            &mut errors,
        ));
        if !errors.is_empty() {
            return Err(errors);
        }
        let name: Arc<str> = Arc::from(name);
        let health_check = cfg.health_check.as_ref().map(health::HealthCheck::compile);
        let state = registry.state_for(state::StateKey {
            name: name.clone(),
            targets: targets
                .iter()
                .map(|t| (t.label.clone(), t.weight, t.backup))
                .collect(),
            balance: cfg.balance,
            hash_key: hash_key(cfg.hash_key.as_deref()),
            connect_timeout: cfg.connect_timeout.get(),
            read_timeout: cfg.read_timeout.get(),
            circuit: cfg.circuit_breaker.as_ref().map(state::circuit_settings),
            budget: state::budget_settings(cfg.retry_budget.as_ref()),
            health: health_check.clone(),
            tls: tls.as_ref().map(UpstreamTls::fingerprint),
        });
        let (primary, backup) = targets.split_at(primaries);
        Ok(Upstream {
            balancer: balancer_for(cfg.balance, primary),
            backup_balancer: balancer_for(cfg.balance, backup),
            hash_key: hash_key(cfg.hash_key.as_deref()),
            name,
            targets,
            primaries,
            state,
            health_check,
            connect_timeout: cfg.connect_timeout.get(),
            read_timeout: cfg.read_timeout.get(),
            tls,
        })
    }

    /// Picks a target for an attempt, in this order: a usable primary not tried yet by this
    /// request; a usable backup not tried yet; a usable primary again; a usable backup again.
    /// Usable means healthy by active checks and not cut off by an open circuit. So backups get
    /// first attempts only while no primary is usable, and a retry goes to a fresh target,
    /// even in the backup zone, before hitting one that just failed. `None`: nothing is usable.
    fn select(&self, key: &[u8], tried: &[usize], now: Instant) -> Option<usize> {
        let usable = |i: usize| self.state.targets[i].is_usable(now);
        let load = |i: usize| self.state.targets[i].in_flight();
        // Only first attempts move the round-robin position: retries must not skew the
        // rotation (with one failing target of two, every first attempt would land on it).
        let advance = tried.is_empty();
        let pick = |balancer: &Balancer, offset: usize, fresh_only: bool| {
            let accept =
                |i: usize| usable(offset + i) && (!fresh_only || !tried.contains(&(offset + i)));
            let load = |i: usize| load(offset + i);
            balancer
                .select(key, &accept, &load, advance)
                .map(|i| offset + i)
        };
        let p = self.primaries;
        pick(&self.balancer, 0, true)
            .or_else(|| pick(&self.backup_balancer, p, true))
            .or_else(|| pick(&self.balancer, 0, false))
            .or_else(|| pick(&self.backup_balancer, p, false))
    }

    /// A connection to target `idx` (plain, or HTTPS with verification for `tls = true`).
    /// Timeouts are left to the caller.
    pub fn peer(&self, idx: usize) -> HttpPeer {
        let target = &self.targets[idx];
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        if let Some(tls) = &self.tls {
            tls.apply(&mut peer, &target.label);
        }
        peer
    }

    /// A connection to target `idx` for one attempt: the upstream's timeouts, each cut to what
    /// is left of the deadline (`remaining`). `sends_body`: the request has a body to upload.
    pub fn timed_peer(
        &self,
        idx: usize,
        remaining: Option<Duration>,
        sends_body: bool,
    ) -> HttpPeer {
        let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
        let mut peer = self.peer(idx);
        peer.options.connection_timeout = Some(cap(self.connect_timeout));
        // With TLS, connect_timeout bounds the TCP connect and the handshake together.
        peer.options.total_connection_timeout = Some(cap(self.connect_timeout));
        peer.options.read_timeout = Some(cap(self.read_timeout));
        // A request without a body is one small write that the socket buffer absorbs; only a
        // body upload can stall on a slow upstream, so only then pay for a timer on every write.
        if sends_body {
            peer.options.write_timeout = Some(cap(self.read_timeout));
        }
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer
    }

    /// Whether the balancer hashes a key (only then is one computed per request).
    pub fn is_hashed(&self) -> bool {
        matches!(self.balancer, Balancer::Hash { .. })
    }

    /// The bytes the hash balancer hashes for a request (empty when it does not hash): the
    /// configured header's value or the caller's claim, else the client address (a request
    /// without that header or claim still gets a stable target).
    pub fn hash_input(
        &self,
        headers: &http::HeaderMap,
        identity: Option<&crate::auth::Identity>,
        client: Option<std::net::IpAddr>,
    ) -> Vec<u8> {
        if !self.is_hashed() {
            return Vec::new();
        }
        match &self.hash_key {
            HashKey::Header(name) => {
                if let Some(v) = headers.get(name) {
                    return v.as_bytes().to_vec();
                }
            }
            HashKey::Claim(name) => {
                if let Some(v) = identity.and_then(|id| id.claim(name)) {
                    return v.into_bytes();
                }
            }
            HashKey::ClientIp => {}
        }
        match client {
            Some(std::net::IpAddr::V4(ip)) => ip.octets().to_vec(),
            Some(std::net::IpAddr::V6(ip)) => ip.octets().to_vec(),
            None => Vec::new(),
        }
    }
}

fn balancer_for(balance: Balance, targets: &[Target]) -> Balancer {
    let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
    match balance {
        Balance::RoundRobin => Balancer::round_robin(&weights),
        Balance::Random => Balancer::random(&weights),
        Balance::LeastRequests => Balancer::least_requests(&weights),
        Balance::Hash => Balancer::hash(
            &targets.iter().map(|t| t.addr).collect::<Vec<_>>(),
            &weights,
        ),
    }
}

fn resolve_all(
    list: &[TargetConfig],
    key: &str,
    backup: bool,
    errors: &mut Vec<(String, String)>,
) -> Vec<Target> {
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match resolve(&t.addr) {
            Ok(addr) => out.push(Target {
                addr,
                label: Arc::from(t.addr.as_str()),
                weight: t.weight,
                backup,
            }),
            Err(msg) => errors.push((format!("{key}[{i}]"), msg)),
        }
    }
    out
}

/// Resolves `host:port` to one socket address. IP literals need no DNS.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    match addr.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("\"{addr}\" resolved to no address")),
        Err(e) => Err(format!("cannot resolve \"{addr}\": {e}")),
    }
}

/// Makes a request on `peer` take a new connection, not a pooled one, and not leave it in the
/// pool: a pool key of its own (pooled connections are found by a hash that includes
/// `group_key`), and no idle time once the request is done. For the one replay of a request a
/// pooled connection failed: the next pooled one may be as dead.
pub fn bypass_pool(peer: &mut HttpPeer) {
    static FRESH: AtomicU64 = AtomicU64::new(1);
    let n = FRESH.fetch_add(1, Ordering::Relaxed);
    peer.group_key ^= n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    peer.options.idle_timeout = Some(Duration::ZERO);
}

//! Upstreams at run time: resolved targets, the balancing policy that picks one for a request,
//! and the per-request peer settings (timeouts, pooling) handed to Pingora.

mod balance;

pub use balance::Balancer;

use crate::config::{Balance, UpstreamConfig};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// One backend address of an upstream.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The address as written in the config (`users.internal:80`), used in logs and metrics.
    pub label: Arc<str>,
    pub weight: u32,
}

/// A compiled `[upstreams.NAME]`.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    balancer: Balancer,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Upstream {
    /// Resolves target names (blocking DNS: call this off the request path, at load or reload)
    /// and builds the balancer. Errors are (key suffix, message) pairs for the config report.
    pub fn compile(name: &str, cfg: &UpstreamConfig) -> Result<Upstream, Vec<(String, String)>> {
        let mut targets = Vec::with_capacity(cfg.targets.len());
        let mut errors = Vec::new();
        for (i, t) in cfg.targets.iter().enumerate() {
            match resolve(&t.addr) {
                Ok(addr) => targets.push(Target {
                    addr,
                    label: Arc::from(t.addr.as_str()),
                    weight: t.weight,
                }),
                Err(msg) => errors.push((format!("targets[{i}]"), msg)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let balancer = match cfg.balance {
            Balance::Hash => Balancer::hash(
                &targets.iter().map(|t| t.addr).collect::<Vec<_>>(),
                &weights,
            ),
            Balance::Random => Balancer::random(&weights),
            // least_requests is refused by validation until it is built; round robin is the
            // documented default.
            Balance::RoundRobin | Balance::LeastRequests => Balancer::round_robin(&weights),
        };
        Ok(Upstream {
            name: Arc::from(name),
            targets,
            balancer,
            connect_timeout: cfg.connect_timeout.get(),
            read_timeout: cfg.read_timeout.get(),
        })
    }

    /// Picks a target index for a request, skipping the ones in `tried` (earlier attempts of the
    /// same request). Returns `None` when every target was tried.
    pub fn select(&self, client: Option<IpAddr>, tried: &[usize]) -> Option<usize> {
        self.balancer.select(client, tried)
    }
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

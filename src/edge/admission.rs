//! Connection limits per client, checked when a connection is accepted, before a byte of it
//! is read: at most `server.max_connections_per_client` open at once, and new ones at the rate
//! of `server.connection_rate_per_client` (GCRA, the rate limits' own engine). A connection
//! over either is closed at once and counted in `tollgate_rejected_connections_total`.
//!
//! The client here is the socket peer: nothing of the request is known yet. Peers in
//! `server.trusted_proxies` (a load balancer in front) are not limited here: every client
//! behind them would share their count; their clients are limited per request instead
//! (`server.max_in_flight_per_client`, which reads the forwarded address).

use crate::counts::{Counts, Ticket};
use crate::observe::Metrics;
use crate::ratelimit::gcra::Quota;
use crate::ratelimit::local::{now_nanos, LocalBuckets};
use crate::snapshot::Limits;
use ipnet::IpNet;
use prometheus::IntGauge;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The per-client connection counts and rate buckets of one proxy service.
#[derive(Default)]
pub struct ConnectionAdmission {
    open: Arc<Counts<IpAddr>>,
    /// The buckets and the quota they were made for (a reload may change it).
    rate: Mutex<Option<(Quota, Arc<LocalBuckets>)>>,
}

/// What an admitted connection holds until it closes.
pub struct AdmittedConnection {
    _ticket: Ticket<IpAddr>,
    gauge: IntGauge,
}

impl Drop for AdmittedConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Why a connection was refused (the `reason` label).
pub type Refused = &'static str;

impl ConnectionAdmission {
    fn buckets(&self, quota: Quota) -> Arc<LocalBuckets> {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        match &*rate {
            Some((q, b)) if *q == quota => b.clone(),
            _ => {
                let b = Arc::new(LocalBuckets::new(quota));
                *rate = Some((quota, b.clone()));
                b
            }
        }
    }

    /// Admits a connection from `peer` under the live limits: `Ok(None)` for a peer that is
    /// not limited (a trusted proxy, or no inet address), `Err(reason)` to close it.
    pub fn admit(
        &self,
        peer: Option<IpAddr>,
        limits: &Limits,
        trusted_proxies: &[IpNet],
        metrics: &Metrics,
    ) -> Result<Option<AdmittedConnection>, Refused> {
        let Some(ip) = peer else {
            return Ok(None);
        };
        if trusted_proxies.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        // Open connections first: a connection refused for the count costs no rate token.
        let ticket = self
            .open
            .try_take(ip, limits.max_connections_per_client)
            .ok_or("client_connections")?;
        let key = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        if !self
            .buckets(limits.connection_rate)
            .check(Some(&key), now_nanos())
            .allowed
        {
            return Err("connection_rate");
        }
        let gauge = metrics.abuse.client_connections.clone();
        gauge.inc();
        Ok(Some(AdmittedConnection {
            _ticket: ticket,
            gauge,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectionRateConfig, DurationStr, ServerConfig};

    fn limits(server: ServerConfig) -> Limits {
        Limits::compile(&server)
    }

    #[test]
    fn connections_are_limited_by_count_and_by_rate() {
        let metrics = Metrics::new();
        let a = ConnectionAdmission::default();
        let ip = Some(IpAddr::from([198, 51, 100, 7]));
        let s = limits(ServerConfig {
            max_connections_per_client: Some(2),
            connection_rate_per_client: Some(ConnectionRateConfig {
                connections: 3,
                per: DurationStr::from_secs(3600),
                burst: None,
            }),
            ..ServerConfig::default()
        });
        let first = a.admit(ip, &s, &[], &metrics).unwrap();
        let _second = a.admit(ip, &s, &[], &metrics).unwrap();
        assert_eq!(
            a.admit(ip, &s, &[], &metrics).err(),
            Some("client_connections")
        );
        drop(first);
        let _third = a.admit(ip, &s, &[], &metrics).unwrap();
        drop(_third);
        // Three connections made this hour: the fourth is over the rate.
        assert_eq!(
            a.admit(ip, &s, &[], &metrics).err(),
            Some("connection_rate")
        );
    }

    #[test]
    fn trusted_proxies_are_not_limited_per_connection() {
        let metrics = Metrics::new();
        let a = ConnectionAdmission::default();
        let s = limits(ServerConfig {
            max_connections_per_client: Some(1),
            ..ServerConfig::default()
        });
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let lb = Some(IpAddr::from([10, 1, 2, 3]));
        let held: Vec<_> = (0..5)
            .map(|_| a.admit(lb, &s, &trusted, &metrics).unwrap())
            .collect();
        assert!(held.iter().all(Option::is_none));
    }
}

//! Tollgate: an API gateway for mobile backends, built on Pingora.
//!
//! Module map (dependencies point one way: config → snapshot → policies → proxy):
//! - [`config`]: the TOML file format, parsing and validation with key paths and lines;
//! - [`request_target`]: the request target resolved once: form, host, path in normal form;
//! - [`route`]: the route table (host, path, method) by specificity;
//! - [`upstream`]: targets and balancing;
//! - [`auth`]: who is calling: JWT and API-key policies;
//! - [`snapshot`]: a config compiled into runtime form, the live store and reload triggers;
//! - [`problem`]: the gateway's own answers (problem+json) and the typed errors behind them;
//! - [`proxy`]: the Pingora `ProxyHttp` gateway: the request pipeline and Pingora's hooks;
//! - [`edge`]: the connection guard in front of the proxy (request head size and time limits);
//! - [`ratelimit`]: token-bucket rate limits (GCRA), local and cluster-wide through Redis;
//! - [`observe`]: metrics, access log, the gateway's own log;
//! - [`admin`]: the admin listener (metrics, health, readiness, loaded config);
//! - [`tls`]: the HTTPS listener's live certificate and HTTPS to upstreams;
//! - [`registry`]: state kept across reloads while its settings are unchanged;
//! - [`counts`]: counts held per key with a limit (requests per client, connections);
//! - [`server`]: assembling and running the Pingora server, signals, draining, upgrades;
//! - [`listening`]: whether this process listens on its configured addresses yet (readiness);
//! - [`sd_notify`]: telling systemd the gateway is ready, and which process it is;
//! - [`demo`]: demo backends for the quick start.
#![forbid(unsafe_code)]

pub mod admin;
pub mod aggregate;
pub mod auth;
pub mod cache;
pub mod config;
pub mod counts;
pub mod demo;
pub mod edge;
pub mod listening;
pub mod observe;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
pub mod registry;
pub mod request_target;
pub mod route;
pub mod sd_notify;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod trace;
pub mod upstream;

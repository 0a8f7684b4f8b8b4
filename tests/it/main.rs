//! Tollgate's integration tests, one binary: a module per area, every test against real sockets
//! (a real gateway in this process or the built binary, real backends, a real redis-server).
//! `support` holds what the areas share. Run one area with `cargo test --test it AREA::`
//! (`cargo test --test it routing::`), one test with its full name.
//!
//! The areas share this process: no test sets environment variables or a global tracing
//! subscriber (log capture is per thread, `support::logs`), and every server gets a port of its
//! own (`tollgate_testkit::ports`: none is handed out twice in this process).

mod support;

mod abuse;
mod aggregate;
mod aggregate_faults;
mod auth_api_key;
mod auth_jwt;
mod cache;
mod cache_purge;
mod check;
mod deploy;
mod deploy_k8s;
mod edge_security;
mod errors;
mod faulty_proxy;
mod forwarding;
mod jwt_verifier;
mod k8s_volume;
mod lifecycle;
mod limits;
mod observability;
mod ratelimit;
mod ratelimit_cluster;
mod ratelimit_cluster_connections;
mod ratelimit_cluster_gateway;
mod ratelimit_redis_client;
mod ratelimit_redis_cluster;
mod reload;
mod resilience_balancing;
mod resilience_circuit;
mod resilience_fallback;
mod resilience_health;
mod resilience_retries;
mod routing;
mod schema;
mod status;
mod status_page;
mod tls;
mod traces;
mod upgrade;
mod websocket;

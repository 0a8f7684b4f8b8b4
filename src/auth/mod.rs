//! Authentication policies the proxy runs on a route before it forwards: JWT verification.
pub mod jwt;

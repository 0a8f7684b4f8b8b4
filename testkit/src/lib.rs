//! Test material that needs nothing of Tollgate, shared by the unit tests in `src/`, the
//! integration tests (through their `support` module) and the benches: JWT keys made at test time
//! ([`jwt`]), a real `redis-server` ([`redis`]) and free ports on 127.0.0.1 ([`ports`]).
//! A dev-dependency of `tollgate`; it does not depend on it.

pub mod jwt;
pub mod ports;
pub mod redis;

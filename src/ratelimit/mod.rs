//! Token-bucket rate limiting: the GCRA arithmetic and the Redis backend for cluster-wide limits.

pub mod cluster;
pub mod gcra;

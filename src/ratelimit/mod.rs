//! Rate limiting: GCRA token buckets per route and per caller, kept locally or in Redis.

pub mod gcra;

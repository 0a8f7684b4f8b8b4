//! Request size and time limits compiled from `[server]` (and a route's `max_body_bytes`), with
//! the defaults that apply when a key is absent. Reloadable: a new connection or request uses
//! the limits of the snapshot that is live when it starts.

use crate::config::ServerConfig;
use std::time::Duration;

/// Request head (request line + headers) allowed by default: 32 KiB, like `CONFIG.md`'s example
/// and within what mobile clients with a few cookies and a bearer token need (nginx's
/// `large_client_header_buffers` defaults to 4 x 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;
/// Request body allowed by default: 8 MiB (JSON APIs and photo uploads; bigger uploads belong
/// on a route with its own `max_body_bytes`).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Time for a whole request head to arrive by default: 10 s (nginx: 60 s, which lets a
/// slowloris client hold a connection six times longer).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes; bigger heads are answered 431.
    pub max_header_bytes: u64,
    /// Largest request body in bytes for routes without their own limit; bigger bodies: 413.
    pub max_body_bytes: u64,
    /// Time for a whole request head to arrive; slower heads are answered 408.
    pub client_header_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn compile(server: &ServerConfig) -> Limits {
        Limits {
            max_header_bytes: server
                .max_header_bytes
                .map_or(DEFAULT_MAX_HEADER_BYTES, |s| s.bytes()),
            max_body_bytes: server
                .max_body_bytes
                .map_or(DEFAULT_MAX_BODY_BYTES, |s| s.bytes()),
            client_header_timeout: server
                .client_header_timeout
                .map_or(DEFAULT_CLIENT_HEADER_TIMEOUT, |d| d.get()),
            idle_timeout: server.idle_timeout.get(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::compile(&ServerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DurationStr, SizeStr};

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let l = Limits::compile(&ServerConfig::default());
        assert_eq!(l.max_header_bytes, 32 * 1024);
        assert_eq!(l.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(l.client_header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn configured_values_win() {
        let server = ServerConfig {
            max_header_bytes: Some(SizeStr(4096)),
            max_body_bytes: Some(SizeStr(100)),
            client_header_timeout: Some(DurationStr::from_millis(1500)),
            ..ServerConfig::default()
        };
        let l = Limits::compile(&server);
        assert_eq!(l.max_header_bytes, 4096);
        assert_eq!(l.max_body_bytes, 100);
        assert_eq!(l.client_header_timeout, Duration::from_millis(1500));
    }
}

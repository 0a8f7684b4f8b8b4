//! The `[server]` settings a running process is built with (listeners, threads, timing), in
//! runtime form. Most are read once at start-up: a reload that changes them is reported, and
//! the running values are kept (see `store::restart_only_changes`).

use crate::config::ServerConfig;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Plain listeners (restart to change).
    pub listen: Vec<String>,
    /// HTTPS listeners (restart to change); empty without `[server.tls]`.
    pub tls_listen: Vec<String>,
    /// The admin listener (restart to change).
    pub admin_listen: Option<String>,
    /// Proxy worker threads; `None`: one per CPU (restart to change).
    pub threads: Option<usize>,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How long an idle client keep-alive connection is kept open.
    pub idle_timeout: Duration,
}

impl ServerSettings {
    pub fn compile(cfg: &ServerConfig) -> ServerSettings {
        ServerSettings {
            listen: cfg.listen.clone(),
            tls_listen: cfg
                .tls
                .as_ref()
                .map(|t| t.listen.clone())
                .unwrap_or_default(),
            admin_listen: cfg.admin_listen.clone(),
            threads: cfg.threads,
            shutdown_grace: cfg.shutdown_grace.get(),
            idle_timeout: cfg.idle_timeout.get(),
        }
    }

    /// Every address to bind, with the key that names it: plain, admin, then HTTPS.
    pub fn addresses(&self) -> Vec<(String, &str)> {
        let plain = self.listen.iter().enumerate();
        let tls = self.tls_listen.iter().enumerate();
        plain
            .map(|(i, a)| (format!("server.listen[{i}]"), a.as_str()))
            .chain(
                self.admin_listen
                    .as_deref()
                    .map(|a| ("server.admin_listen".to_string(), a)),
            )
            .chain(tls.map(|(i, a)| (format!("server.tls.listen[{i}]"), a.as_str())))
            .collect()
    }
}

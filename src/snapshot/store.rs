//! The live config: an `ArcSwap` holding the current [`Snapshot`], and the reload step that
//! builds a new one from the file and swaps it in, or keeps the old one and reports why not.

use super::{ReferencedFiles, Snapshot};
use crate::config::{ConfigErrors, Source};
use crate::observe::Metrics;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The result of the last reload that changed something (applied or rejected), for the admin
/// status page. Kept in an `ArcSwap` beside the snapshot: the page reads it without a lock.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    /// False: the file was rejected and the previous config keeps serving.
    pub ok: bool,
    /// Hash of the text that was loaded or rejected.
    pub hash: String,
    /// A rejected file's errors, one line each, exactly as `tollgate check` prints them
    /// (`FILE:LINE:COL: KEY: message`); for an applied one, its warnings.
    pub lines: Vec<String>,
}

/// What one reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new snapshot is live. `needs_restart` lists keys that changed but only take effect after
    /// a restart (they keep their running values); `warnings` are the new config's warnings, as
    /// `check` prints them.
    Applied {
        hash: String,
        needs_restart: Vec<&'static str>,
        warnings: Vec<String>,
    },
    /// The file is byte-for-byte the config already running.
    Unchanged,
    /// The file is invalid; the running config keeps serving.
    Rejected(ConfigErrors),
}

/// Holds the running config and reloads it.
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Runtime state shared by successive snapshots.
    registry: Arc<super::Registries>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    /// The last config that was rejected (text hash, fingerprint of the files it names), so the
    /// same broken config is reported once. Its lock also serialises reloads.
    last_rejected: Mutex<Option<(String, u64)>>,
    /// The last reload that was applied or rejected (`None` until one happens after start-up).
    last_reload: ArcSwap<Option<ReloadRecord>>,
}

impl Store {
    /// `initial` must have been compiled with `registry`.
    pub fn new(
        path: &Path,
        initial: Snapshot,
        metrics: Arc<Metrics>,
        registry: Arc<super::Registries>,
    ) -> Store {
        metrics.config_loaded(true);
        initial.go_live();
        Store {
            current: ArcSwap::from_pointee(initial),
            registry,
            path: path.to_path_buf(),
            metrics,
            last_rejected: Mutex::new(None),
            last_reload: ArcSwap::from_pointee(None),
        }
    }

    /// The snapshot a new request should use for its whole life.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the last reload that changed something did (`None`: none since start-up).
    pub fn last_reload(&self) -> Arc<Option<ReloadRecord>> {
        self.last_reload.load_full()
    }

    /// Re-reads the file and swaps in the new config if it is valid. Blocking (file I/O, DNS):
    /// call it from a blocking context, never from a request.
    ///
    /// A file identical to the running config, naming certificate and CA files whose contents
    /// are unchanged too, is `Unchanged`. So is a file identical to the last rejected one (with
    /// the same file contents) unless `retry_rejected` (an explicit SIGHUP: a host name that did
    /// not resolve may resolve now); file-watch events never re-report the same broken file.
    pub fn reload(&self, retry_rejected: bool) -> ReloadOutcome {
        // Held for the whole reload: file watch and SIGHUP may fire together.
        let mut last_rejected = self.last_rejected.lock().unwrap_or_else(|p| p.into_inner());
        let source = match Source::read(&self.path) {
            Ok(s) => s,
            Err(errors) => {
                self.metrics.config_loaded(false);
                self.record(false, String::new(), error_lines(&errors));
                return ReloadOutcome::Rejected(errors);
            }
        };
        let hash = source.hash();
        // Certificates and CA files count as part of the config: same text with a renewed
        // certificate is a change.
        let files = crate::config::parse_partial(&source.text)
            .map(|(config, _)| ReferencedFiles::of(&source.base_dir(), &config).fingerprint)
            .unwrap_or_default();
        let version = (hash.clone(), files);
        let running = {
            let current = self.current.load();
            (current.info.hash.clone(), current.files.fingerprint)
        };
        if version == running || (!retry_rejected && last_rejected.as_ref() == Some(&version)) {
            return ReloadOutcome::Unchanged;
        }
        let outcome = match Snapshot::from_source(&source, &self.registry) {
            Err(errors) => {
                *last_rejected = Some(version.clone());
                ReloadOutcome::Rejected(errors)
            }
            Ok(mut next) => {
                *last_rejected = None;
                let current = self.current.load();
                let needs_restart = restart_only_changes(&current, &next);
                keep_restart_only_values(&current, &mut next);
                next.go_live();
                let warnings = next.warning_lines();
                self.current.store(Arc::new(next));
                ReloadOutcome::Applied {
                    hash,
                    needs_restart,
                    warnings,
                }
            }
        };
        match &outcome {
            ReloadOutcome::Applied { hash, warnings, .. } => {
                self.metrics.config_loaded(true);
                self.record(true, hash.clone(), warnings.clone());
            }
            ReloadOutcome::Rejected(errors) => {
                self.metrics.config_loaded(false);
                self.record(false, version.0, error_lines(errors));
            }
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    fn record(&self, ok: bool, hash: String, lines: Vec<String>) {
        self.last_reload.store(Arc::new(Some(ReloadRecord {
            at: SystemTime::now(),
            ok,
            hash,
            lines,
        })));
    }
}

/// A rejected config's errors as `tollgate check` prints them, one line each.
fn error_lines(errors: &ConfigErrors) -> Vec<String> {
    errors.to_string().lines().map(str::to_string).collect()
}

/// Keys read once at start-up (listeners, thread pools, the log filter). A change to them is
/// reported, not half-applied.
pub fn restart_only_changes(old: &Snapshot, new: &Snapshot) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let mut changed = Vec::new();
    if o.listen != n.listen {
        changed.push("server.listen");
    }
    if o.tls_listen != n.tls_listen {
        changed.push("server.tls.listen");
    }
    if o.admin_listen != n.admin_listen {
        changed.push("server.admin_listen");
    }
    if o.threads != n.threads {
        changed.push("server.threads");
    }
    if old.log_level != new.log_level {
        changed.push("log.level");
    }
    // HTTP/1 reads these from the live snapshot; Pingora's HTTP/2 server is given them once,
    // when it starts.
    if o.idle_timeout != n.idle_timeout {
        changed.push("server.idle_timeout");
    }
    if old.limits.max_header_bytes != new.limits.max_header_bytes {
        changed.push("server.max_header_bytes");
    }
    changed
}

/// Keys among [`restart_only_changes`] that HTTP/1 applies at once: only HTTP/2 connections
/// wait for a restart.
pub const LIVE_FOR_HTTP1: [&str; 2] = ["server.idle_timeout", "server.max_header_bytes"];

/// The new snapshot describes what actually runs: restart-only keys keep their running values.
fn keep_restart_only_values(running: &Snapshot, next: &mut Snapshot) {
    let keep = &running.server;
    next.server.listen = keep.listen.clone();
    next.server.admin_listen = keep.admin_listen.clone();
    next.server.threads = keep.threads;
    // The certificate (`next.tls`) is live; the HTTPS listeners are the ones started with.
    next.server.tls_listen = keep.tls_listen.clone();
    next.log_level = running.log_level.clone();
}

impl crate::upstream::health::LiveUpstreams for Store {
    fn upstreams(&self) -> Vec<Arc<crate::upstream::Upstream>> {
        self.snapshot().upstreams.values().cloned().collect()
    }
}

impl crate::tls::LiveIdentity for Store {
    fn identity(&self) -> Option<Arc<crate::tls::TlsIdentity>> {
        self.snapshot().tls.clone()
    }
}

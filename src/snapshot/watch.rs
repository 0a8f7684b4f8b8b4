//! Reload triggers: a debounced watch on the config file's directory (editors and Kubernetes
//! replace files by rename, so the directory is what changes) and SIGHUP. Runs as a Pingora
//! background service, off the request path; each reload is logged with the same messages
//! `tollgate check` prints.

use super::{ReloadOutcome, Store};
use async_trait::async_trait;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long file events are gathered before one reload: editors write a file in several steps.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Watches for reload triggers for as long as the server runs.
pub struct ReloadService {
    store: Arc<Store>,
}

impl ReloadService {
    pub fn new(store: Arc<Store>) -> ReloadService {
        ReloadService { store }
    }
}

/// Reloads once (blocking work moved off the async workers) and logs the outcome.
pub async fn reload_and_log(store: Arc<Store>, trigger: &'static str) {
    // Only an explicit request retries a file that was already rejected as it is.
    let retry_rejected = trigger == "SIGHUP";
    let outcome = match tokio::task::spawn_blocking(move || store.reload(retry_rejected)).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(trigger, "config reload task failed: {e}");
            return;
        }
    };
    match outcome {
        ReloadOutcome::Applied {
            hash,
            needs_restart,
        } => {
            tracing::info!(trigger, config_hash = %hash, "config reloaded");
            for key in needs_restart {
                tracing::warn!(
                    trigger,
                    key,
                    "{key} changed: needs restart (the running value is kept until then)"
                );
            }
        }
        ReloadOutcome::Unchanged => tracing::debug!(trigger, "config unchanged"),
        ReloadOutcome::Rejected(errors) => {
            tracing::error!(
                trigger,
                errors = errors.errors.len(),
                "config rejected, previous config keeps serving"
            );
            for line in errors.to_string().lines() {
                tracing::error!(trigger, "{line}");
            }
        }
    }
}

/// Identifies one version of the config file without opening it (opening it is an event the
/// watch sees). Follows symlinks, so a Kubernetes `..data` swap or an editor's rename gives a
/// new stamp, as does an in-place write.
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Whether a change at `path` can change the config: the file itself, or a Kubernetes-style
/// `..data` symlink swap (ConfigMap volumes replace `..data`, which the file links through).
/// Other files in the directory, such as logs written next to the config, are ignored.
fn concerns_config(path: &Path, config_name: Option<&std::ffi::OsStr>) -> bool {
    match path.file_name() {
        Some(name) => Some(name) == config_name || name.as_encoded_bytes().starts_with(b".."),
        None => true,
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let dir = self.store.path().parent().map(|p| p.to_path_buf());
        let dir = match dir {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::PathBuf::from("."),
        };
        // Keep the debouncer alive for the life of the service: dropping it stops the watch.
        let file_name = self.store.path().file_name().map(|n| n.to_os_string());
        let _debouncer = match new_debouncer(DEBOUNCE, move |res: DebounceEventResult| {
            let Ok(events) = res else { return };
            if events
                .iter()
                .any(|e| concerns_config(&e.path, file_name.as_deref()))
            {
                // A full channel already has a reload pending; one is enough.
                let _ = tx.try_send(());
            }
        }) {
            Ok(mut d) => match d.watcher().watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(d),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot watch config directory, reload with SIGHUP: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!("cannot start file watcher, reload with SIGHUP: {e}");
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let path = self.store.path().to_path_buf();
        let mut seen = FileStamp::of(&path);
        // The file may have changed between the initial load and the start of the watch, which
        // saw nothing of it: catch up once (usually "unchanged").
        reload_and_log(self.store.clone(), "start").await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = rx.recv() => {
                    // The watch reports every event in the directory, including other files and
                    // our own reads of the config (inotify IN_OPEN): without this check, each
                    // reload would trigger the next one, forever.
                    let now = FileStamp::of(&path);
                    if now.is_none() || now != seen {
                        seen = now;
                        reload_and_log(self.store.clone(), "file").await
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    seen = FileStamp::of(&path);
                    reload_and_log(self.store.clone(), "SIGHUP").await
                }
            }
        }
    }
}

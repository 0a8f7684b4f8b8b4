//! Reload triggers: a debounced watch on the config file's directory (editors and Kubernetes
//! replace files by rename, so the directory is what changes), on the directories of the files
//! the config names (API-key files, JWKS files, secrets, certificates), and SIGHUP. Runs as a Pingora
//! background service, off the request path; each reload is logged with the same messages
//! `tollgate check` prints, its errors or, for a config that goes live, its warnings.

use super::{ReloadOutcome, Store};
use async_trait::async_trait;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
            warnings,
        } => {
            tracing::info!(trigger, config_hash = %hash, "config reloaded");
            super::log_warning_lines(&warnings, trigger);
            for key in needs_restart {
                if super::store::LIVE_FOR_HTTP1.contains(&key) {
                    tracing::warn!(
                        trigger,
                        key,
                        "{key} changed: applied to HTTP/1; HTTP/2 needs restart (its connections keep the running value until then)"
                    );
                } else {
                    tracing::warn!(
                        trigger,
                        key,
                        "{key} changed: needs restart (the running value is kept until then)"
                    );
                }
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

/// Whether a change at `path` can change the config: the file itself, a file it names, or a
/// Kubernetes-style `..data` symlink swap (ConfigMap and Secret volumes replace `..data`, which
/// the files link through). Other files, such as logs written next to the config, are ignored.
fn concerns_config(path: &Path, watched: &[PathBuf]) -> bool {
    match path.file_name() {
        Some(name) => {
            name.as_encoded_bytes().starts_with(b"..")
                || watched
                    .iter()
                    .any(|w| w.file_name() == Some(name) && w.parent() == path.parent())
        }
        None => true,
    }
}

/// The config file and every file it names, as the watch sees them: absolute. The watch
/// reports an event as the watched directory joined with the file's name, so for `run -c
/// gw.toml` (directory `.`) it says `./keys.toml`, whose parent `.` is not the bare
/// `keys.toml`'s empty one: no change of a bare name was ever noticed. Made absolute once, the
/// files, their directories and the events all read alike (the process never changes its
/// working directory, so the absolute path names the same file).
fn watched_files(store: &Store) -> Vec<PathBuf> {
    std::iter::once(store.path())
        .chain(store.snapshot().files.paths.iter().map(PathBuf::as_path))
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()))
        .collect()
}

/// Stamps of every watched file: a change in any of them is a reason to reload.
fn stamps(files: &[PathBuf]) -> Vec<Option<FileStamp>> {
    files.iter().map(|f| FileStamp::of(f)).collect()
}

/// The directory to watch for `file` (its parent; "." for a bare name).
fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // The files whose changes matter; updated after every reload (the config may name new
        // ones), read by the watcher's callback.
        let files = Arc::new(Mutex::new(watched_files(&self.store)));
        let filter = files.clone();
        // Keep the debouncer alive for the life of the service: dropping it stops the watch.
        let mut debouncer = match new_debouncer(DEBOUNCE, move |res: DebounceEventResult| {
            let Ok(events) = res else { return };
            let watched = filter.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if events.iter().any(|e| concerns_config(&e.path, &watched)) {
                // A full channel already has a reload pending; one is enough.
                let _ = tx.try_send(());
            }
        }) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("cannot start file watcher, reload with SIGHUP: {e}");
                None
            }
        };
        let mut watched_dirs: Vec<PathBuf> = Vec::new();
        let mut watch_dirs = |files: &[PathBuf]| {
            let Some(d) = debouncer.as_mut() else { return };
            for dir in files.iter().map(|f| dir_of(f)) {
                if watched_dirs.contains(&dir) {
                    continue;
                }
                match d.watcher().watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => watched_dirs.push(dir),
                    Err(e) => tracing::warn!(
                        dir = %dir.display(),
                        "cannot watch this directory, reload with SIGHUP after changing its files: {e}"
                    ),
                }
            }
        };
        watch_dirs(&files.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let mut seen = stamps(&files.lock().unwrap_or_else(|p| p.into_inner()));
        // The file may have changed between the initial load and the start of the watch, which
        // saw nothing of it: catch up once (usually "unchanged").
        reload_and_log(self.store.clone(), "start").await;
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = rx.recv() => {
                    // The watch reports every event in the directories, including our own reads
                    // of the files (inotify IN_OPEN): without this check, each reload would
                    // trigger the next one, forever.
                    let now = stamps(&files.lock().unwrap_or_else(|p| p.into_inner()));
                    if now == seen && now.iter().all(Option::is_some) {
                        continue;
                    }
                    seen = now;
                    "file"
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    seen = stamps(&files.lock().unwrap_or_else(|p| p.into_inner()));
                    "SIGHUP"
                }
            };
            reload_and_log(self.store.clone(), trigger).await;
            // A reload may name other files: watch them too, and stamp them as loaded.
            let now_watched = watched_files(&self.store);
            watch_dirs(&now_watched);
            let mut current = files.lock().unwrap_or_else(|p| p.into_inner());
            if *current != now_watched {
                seen = stamps(&now_watched);
                *current = now_watched;
            }
        }
    }
}

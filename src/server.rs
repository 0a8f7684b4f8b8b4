//! Assembles a running Tollgate: the Pingora server with the proxy service on `server.listen`,
//! the admin service, the reload watcher, readiness tracking and shutdown handling (SIGTERM
//! drains in-flight requests for up to `server.shutdown_grace`, SIGINT exits at once, SIGQUIT
//! hands the listening sockets to a new process started with `--upgrade`, then drains; SIGUSR2
//! starts that new process itself first).

use crate::admin::{AdminApp, Readiness};
use crate::auth::jwt::{JwksService, KeyRegistry};
use crate::config::{ConfigErrors, Source};
use crate::edge::EdgeApp;
use crate::observe::{AccessLog, Metrics};
use crate::proxy::Gateway;
use crate::snapshot::{watch::ReloadService, Registries, ServerSettings, Snapshot, Store};
use crate::upstream::health::HealthService;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// Where a new process waits for the listening sockets of the running one, unless
/// `--upgrade-sock` says otherwise.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/tollgate-upgrade.sock";

/// How a process gets its listening sockets: by binding them, or from the Tollgate serving now
/// (Pingora's graceful upgrade).
#[derive(Debug, Clone)]
pub struct Launch {
    /// Take the listening sockets over from the running process (which then gets SIGQUIT)
    /// instead of binding them.
    pub upgrade: bool,
    /// The Unix socket of the handover: where this process waits for the sockets when
    /// `upgrade` is set, and where it sends its own when it gets SIGQUIT. The old and the new
    /// process must be given the same path.
    pub upgrade_sock: PathBuf,
}

impl Default for Launch {
    fn default() -> Launch {
        Launch {
            upgrade: false,
            upgrade_sock: PathBuf::from(DEFAULT_UPGRADE_SOCK),
        }
    }
}

/// A gateway ready to run.
pub struct Instance {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Readiness>,
    access_log: Arc<AccessLog>,
    server: Server,
    upgrade_sock: PathBuf,
    /// Set when SIGQUIT started a handover: the shutdown that follows drains and exits.
    handing_over: Arc<AtomicBool>,
}

impl Instance {
    /// Loads the config and builds every service. Fails with all config errors, or with a single
    /// error if a listen address cannot be bound.
    pub fn build(config_path: &Path, access_log: AccessLog) -> Result<Instance, ConfigErrors> {
        Instance::build_with(config_path, access_log, &Launch::default())
    }

    /// Like [`build`](Self::build); with `launch.upgrade`, waits (a few seconds at most) for the
    /// running process to send its listening sockets, and exits with status 1 if none came.
    pub fn build_with(
        config_path: &Path,
        access_log: AccessLog,
        launch: &Launch,
    ) -> Result<Instance, ConfigErrors> {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registries::new(metrics.clone()));
        let snapshot = Snapshot::from_source(&Source::read(config_path)?, &registry)?;
        let server_cfg = snapshot.server.clone();
        let snapshot_limits = snapshot.limits;
        // A process taking over finds every address in use (by the process handing over).
        if !launch.upgrade {
            check_bindable(config_path, &server_cfg)?;
        }

        load_jwt_keys(&registry.keys);
        let keys = registry.keys.clone();
        // Logged here, once: the reload service logs the warnings of each config it applies.
        snapshot.log_warnings("startup");
        let store = Arc::new(Store::new(config_path, snapshot, metrics.clone(), registry));
        let ready = Arc::new(Readiness::default());
        let access_log = Arc::new(access_log);

        let grace = server_cfg.shutdown_grace;
        let mut conf = ServerConf {
            threads: server_cfg.threads.unwrap_or_else(default_threads),
            // Pingora sleeps this long after SIGTERM; our drain watcher usually exits sooner.
            grace_period_seconds: Some(grace.as_secs() + 1),
            graceful_shutdown_timeout_seconds: Some(1),
            // The upstream pool's idle timeout, armed each time a connection goes back to the
            // pool, on Tokio's timer wheel: cheaper to arm and cancel than Pingora's fast
            // timeout (fewer instructions, nothing for its timer thread to sweep). Shorter
            // timeouts (upstream reads) stay fast: on Tokio's wheel, a timer due before every
            // other one wakes the parked worker through its eventfd, a system call per request
            // at low load.
            fast_timeout_to_tokio_threshold_seconds: Some(crate::upstream::POOL_IDLE.as_secs() - 1),
            ..ServerConf::default()
        };
        conf.upgrade_sock = launch.upgrade_sock.to_string_lossy().into_owned();
        let opt = pingora::server::configuration::Opt {
            upgrade: launch.upgrade,
            ..Default::default()
        };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        // With `upgrade`, this is where the listening sockets of the running process arrive.
        server.bootstrap();

        let gateway = Gateway::new(store.clone(), metrics.clone(), access_log.clone());
        let mut app = pingora::proxy::http_proxy(&server.configuration, gateway);
        // Plain listeners speak HTTP/1.1 and, by prior knowledge, HTTP/2 (h2c).
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        options.h2_idle_timeout = Some(server_cfg.idle_timeout);
        app.server_options = Some(options);
        // HTTP/2 heads are framed by the protocol: h2 caps the decoded header list (and answers
        // 431) with the same limit, read at start-up.
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.max_header_list_size(
            u32::try_from(snapshot_limits.max_header_bytes).unwrap_or(u32::MAX),
        );
        // The stream limit the proxy's per-connection in-flight count enforces too (a stream
        // the client reset is free for h2 but its request may still run).
        h2.max_concurrent_streams(crate::proxy::H2_MAX_STREAMS);
        app.h2_options = Some(h2);
        // Every connection of every listener of this service passes the edge guard first
        // (request head size and time limits).
        let mut proxy = Service::new(
            "tollgate".to_string(),
            EdgeApp::new(app, store.clone(), metrics.clone(), access_log.clone()),
        );
        for addr in &server_cfg.listen {
            proxy.add_listener(
                ListenerConfig::tcp(addr.as_str()).l4_buffer(crate::edge::client_buffers()),
            );
        }
        // HTTPS listeners on the same service: same gateway, same routes.
        if !server_cfg.tls_listen.is_empty() {
            crate::tls::add_https_listeners(
                &mut proxy,
                &(store.clone() as Arc<dyn crate::tls::LiveIdentity>),
                &server_cfg.tls_listen,
            )
            .map_err(|e| ConfigErrors {
                source: config_path.display().to_string(),
                errors: vec![crate::config::ConfigError::new("server.tls", e.to_string())],
            })?;
        }
        server.add_service(proxy);

        if let Some(addr) = &server_cfg.admin_listen {
            let app = AdminApp::new(store.clone(), metrics.clone(), ready.clone());
            server.add_service(background_service("tollgate status history", app.sampler()));
            let mut admin = Service::new("tollgate admin".to_string(), HttpServer::new_app(app));
            admin.add_tcp(addr);
            admin.threads = Some(1);
            server.add_service(admin);
        }
        server.add_service(background_service(
            "tollgate config reload",
            ReloadService::new(store.clone()),
        ));
        server.add_service(background_service(
            "tollgate health checks",
            HealthService::new(store.clone()),
        ));
        server.add_service(background_service(
            "tollgate jwks refresh",
            JwksService::new(keys),
        ));
        server.add_service(background_service(
            "tollgate cache purges",
            crate::cache::bus::PurgeService::new(store.clone()),
        ));

        Ok(Instance {
            store,
            metrics,
            ready,
            access_log,
            server,
            upgrade_sock: launch.upgrade_sock.clone(),
            handing_over: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Adds an extra Pingora service (the demo backends use this).
    pub fn add_service(&mut self, service: impl pingora::services::Service + 'static) {
        self.server.add_service(service);
    }

    /// Runs until the shutdown signal says so. Blocks the calling thread; must not be called
    /// from inside a tokio runtime.
    pub fn run(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        let after_handover = DrainExit {
            handing_over: self.handing_over.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            access_log: self.access_log.clone(),
        };
        // The snapshot is dropped at the end of this block: `run` lasts as long as the process, and a
        // reload must be able to free the config it replaces.
        let expected = {
            let snapshot = self.store.snapshot();
            crate::listening::expected(snapshot.server.addresses().iter().map(|a| a.1))
        };
        track_readiness(&self.server, self.ready.clone(), expected, after_handover);
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
        drop(self.access_log);
    }

    /// Signals of a real process: SIGTERM drains, SIGINT exits, SIGQUIT hands sockets over to a
    /// new process (Pingora's graceful upgrade), SIGUSR2 starts that process first.
    pub fn process_signals(&self) -> Box<dyn ShutdownSignalWatch> {
        Box::new(ProcessSignals {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            access_log: self.access_log.clone(),
            upgrade_sock: self.upgrade_sock.clone(),
            handing_over: self.handing_over.clone(),
        })
    }
}

/// How long start-up waits for identity providers' key sets before serving anyway.
const JWKS_START_WAIT: Duration = Duration::from_secs(5);

/// Fetches every JWT policy's key set before the listeners open, so the first requests do not
/// wait for it. A provider that is down delays start-up by at most [`JWKS_START_WAIT`]; its
/// policy then refuses tokens (401) until the background refresh gets the keys.
fn load_jwt_keys(keys: &KeyRegistry) {
    let stores = keys.live();
    if stores.is_empty() {
        return;
    }
    // A thread of its own: the caller may itself run inside a tokio runtime (tests, embedding),
    // where blocking on another runtime is refused.
    let loader = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let loads = stores
                .iter()
                .map(|s| async move { (s, s.ensure_loaded(JWKS_START_WAIT).await) });
            for (store, result) in futures::future::join_all(loads).await {
                if let Err(why) = result {
                    tracing::warn!(
                        policy = store.policy(),
                        "no JWT keys yet ({why}); tokens are refused until a refresh succeeds"
                    );
                }
            }
        });
        Ok::<(), std::io::Error>(())
    });
    match loader.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("cannot load JWT keys at start-up ({e}); the background refresh will")
        }
        Err(_) => {
            tracing::warn!("loading JWT keys at start-up failed; the background refresh will retry")
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Binds every address to fail early with a readable message: Pingora would retry an address
/// in use for 30 s (the instance looking ready, the service's listeners not serving), then
/// panic. All are held until the last is bound, so two addresses of this config that cannot
/// both be bound (`[::]:8080` next to `0.0.0.0:8080` on a dual-stack system) are caught too.
fn check_bindable(path: &Path, server: &ServerSettings) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut held = Vec::new();
    for (key, addr) in server.addresses() {
        match TcpListener::bind(addr) {
            Ok(listener) => held.push(listener),
            Err(e) => errors.push(crate::config::ConfigError::new(
                key,
                format!("cannot listen on {addr}: {e}"),
            )),
        }
    }
    drop(held);
    if errors.is_empty() {
        Ok(())
    } else {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        crate::config::Locator::new(&text).locate_all(&mut errors);
        Err(ConfigErrors {
            source: path.display().to_string(),
            errors,
        })
    }
}

/// What ends a process that handed its listeners over: once Pingora has stopped its listeners,
/// exit as soon as the requests in flight are done (Pingora alone would sleep the whole
/// grace period).
struct DrainExit {
    handing_over: Arc<AtomicBool>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

impl DrainExit {
    fn start_if_handing_over(&self) {
        if !self.handing_over.load(Ordering::SeqCst) {
            return;
        }
        let grace = self.store.snapshot().server.shutdown_grace;
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "listeners handed over; draining in-flight requests"
        );
        // Wait out the edge's last call first: keep-alive clients get `Connection: close` on
        // their next request and reconnect to the new process instead of seeing a close.
        exit_when_drained(
            self.store.clone(),
            self.metrics.clone(),
            self.access_log.clone(),
            grace.max(crate::edge::LAST_CALL),
            crate::edge::LAST_CALL + Duration::from_millis(100),
        );
    }
}

/// Marks the instance ready once Pingora runs its services and this process listens on every
/// configured address (`listening::wait_for`), not ready once shutdown begins; after a handover,
/// starts the drain that ends the process.
fn track_readiness(
    server: &Server,
    ready: Arc<Readiness>,
    expected: Vec<std::net::SocketAddr>,
    after_handover: DrainExit,
) {
    let mut phases = server.watch_execution_phase();
    // Whether Pingora is running; held while readiness changes, so that a wait for the
    // listeners that ends as shutdown begins cannot mark a stopping instance ready.
    let running = Arc::new(std::sync::Mutex::new(false));
    let stop = |running: &std::sync::Mutex<bool>, ready: &Readiness| {
        *running.lock().unwrap_or_else(|p| p.into_inner()) = false;
        ready.set(false);
    };
    std::thread::Builder::new()
        .name("tollgate-readiness".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::Running) => {
                    *running.lock().unwrap_or_else(|p| p.into_inner()) = true;
                    announce_when_listening(expected.clone(), running.clone(), ready.clone());
                }
                Ok(ExecutionPhase::Terminated)
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    stop(&running, &ready);
                    break;
                }
                Ok(ExecutionPhase::GracefulTerminate) => stop(&running, &ready),
                Ok(ExecutionPhase::ShutdownStarted) => {
                    stop(&running, &ready);
                    after_handover.start_if_handing_over();
                }
                _ => {}
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!("cannot track readiness: {e}"));
}

/// Waits (on its own thread) until every expected address is listened on, then marks the
/// instance ready and tells systemd, unless shutdown began meanwhile.
fn announce_when_listening(
    expected: Vec<std::net::SocketAddr>,
    running: Arc<std::sync::Mutex<bool>>,
    ready: Arc<Readiness>,
) {
    std::thread::Builder::new()
        .name("tollgate-listening".into())
        .spawn(move || {
            let is_running = || *running.lock().unwrap_or_else(|p| p.into_inner());
            if !crate::listening::wait_for(&expected, || !is_running()) {
                return;
            }
            // Held while readiness is set, so shutdown cannot begin in between.
            let running = running.lock().unwrap_or_else(|p| p.into_inner());
            if *running {
                ready.set(true);
                crate::sd_notify::ready();
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!("cannot wait for the listeners: {e}"));
}

struct ProcessSignals {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    access_log: Arc<AccessLog>,
    upgrade_sock: PathBuf,
    handing_over: Arc<AtomicBool>,
}

/// How long SIGQUIT waits for a new process to be listening on the upgrade socket (it may
/// still be loading its config, or waiting for JWKS).
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// Whether a process waits for the listening sockets at `sock`: the socket file exists (the new
/// process creates it, Pingora removes it after a handover). Not connected to: the new process
/// accepts exactly one connection there, the handover itself.
async fn new_process_waiting(sock: &Path, limit: Duration) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let end = Instant::now() + limit;
    loop {
        if std::fs::symlink_metadata(sock).is_ok_and(|m| m.file_type().is_socket()) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[async_trait]
impl ShutdownSignalWatch for ProcessSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    let grace = self.store.snapshot().server.shutdown_grace;
                    tracing::info!(grace_seconds = grace.as_secs_f64(), "SIGTERM: draining in-flight requests");
                    self.ready.set(false);
                    crate::sd_notify::notify("STOPPING=1\n");
                    exit_when_drained(
                        self.store.clone(),
                        self.metrics.clone(),
                        self.access_log.clone(),
                        grace,
                        Duration::from_millis(250),
                    );
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = quit.recv() => {
                    if self.new_process_ready("SIGQUIT").await {
                        return self.hand_over("SIGQUIT");
                    }
                }
                _ = usr2.recv() => {
                    // The new binary as a child of this process: under systemd it stays in the
                    // unit, which follows it once it says MAINPID (see sd_notify).
                    match spawn_successor() {
                        Ok(pid) => tracing::info!(pid, "SIGUSR2: started the new binary with --upgrade"),
                        Err(e) => {
                            tracing::error!("SIGUSR2: cannot start the new binary ({e}); still serving");
                            continue;
                        }
                    }
                    if self.new_process_ready("SIGUSR2").await {
                        return self.hand_over("SIGUSR2");
                    }
                }
            }
        }
    }
}

impl ProcessSignals {
    /// Whether a new process waits for the listeners. Pingora would stop serving even with
    /// nobody to take the sockets: refuse to, rather than drop every listener.
    async fn new_process_ready(&self, trigger: &str) -> bool {
        if new_process_waiting(&self.upgrade_sock, HANDOVER_WAIT).await {
            return true;
        }
        tracing::error!(
            upgrade_sock = %self.upgrade_sock.display(),
            "{trigger}: no new process is waiting for the listeners (start one with `tollgate run --upgrade`); still serving"
        );
        false
    }

    fn hand_over(&self, trigger: &str) -> ShutdownSignal {
        tracing::info!(
            upgrade_sock = %self.upgrade_sock.display(),
            "{trigger}: handing listeners to the new process"
        );
        self.ready.set(false);
        self.handing_over.store(true, Ordering::SeqCst);
        ShutdownSignal::GracefulUpgrade
    }
}

/// Starts the binary at the path this process was started with (a new version, once it was
/// replaced on disk) with this process's arguments plus `--upgrade`. Not `current_exe`: that
/// is the old, replaced file.
fn spawn_successor() -> std::io::Result<u32> {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .ok_or_else(|| std::io::Error::other("no program name in argv"))?;
    let mut rest: Vec<std::ffi::OsString> = args.collect();
    if !rest.iter().any(|a| a == "--upgrade") {
        rest.push("--upgrade".into());
    }
    // Its output goes where ours goes (the journal, under systemd). Not waited for: it
    // outlives this process.
    let child = std::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .spawn()?;
    Ok(child.id())
}

/// How long an exit waits for the last spans to reach the collector (one export's time on a
/// healthy collector is milliseconds).
const TRACE_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Pingora waits the whole grace period after SIGTERM even when nothing is in flight; this exits
/// as soon as the last in-flight request finished (or the grace period ran out). Nothing is
/// checked during `settle`: listeners close and requests already accepted reach the gateway.
fn exit_when_drained(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    grace: Duration,
    settle: Duration,
) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-drain".into())
        .spawn(move || {
            let deadline = Instant::now() + grace;
            std::thread::sleep(settle);
            while metrics.in_flight().get() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = metrics.in_flight().get();
            if left > 0 {
                tracing::warn!(
                    in_flight = left,
                    "grace period over; exiting with requests in flight"
                );
            } else {
                tracing::info!("drained; exiting");
            }
            // `exit` runs no destructors: write the buffered access-log lines and export the
            // queued spans first.
            access_log.flush();
            if let Some(tracing) = &store.snapshot().tracing {
                tracing.flush(TRACE_FLUSH_LIMIT);
            }
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start drain watcher, waiting the full grace period: {e}");
    }
}

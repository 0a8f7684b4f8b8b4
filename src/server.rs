//! Assembles a running Tollgate: the Pingora server with the proxy service on `server.listen`,
//! the admin service, the reload watcher, readiness tracking and shutdown handling (SIGTERM
//! drains in-flight requests for up to `server.shutdown_grace`, SIGINT exits at once).

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
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// A gateway ready to run.
pub struct Instance {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Readiness>,
    access_log: Arc<AccessLog>,
    server: Server,
}

impl Instance {
    /// Loads the config and builds every service. Fails with all config errors, or with a single
    /// error if a listen address cannot be bound.
    pub fn build(config_path: &Path, access_log: AccessLog) -> Result<Instance, ConfigErrors> {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registries::new(metrics.clone()));
        let snapshot = Snapshot::from_source(&Source::read(config_path)?, &registry)?;
        let server_cfg = snapshot.server.clone();
        let snapshot_limits = snapshot.limits;
        check_bindable(config_path, &server_cfg)?;

        load_jwt_keys(&registry.keys);
        let keys = registry.keys.clone();
        // Logged here, once: the reload service logs the warnings of each config it applies.
        snapshot.log_warnings("startup");
        let store = Arc::new(Store::new(config_path, snapshot, metrics.clone(), registry));
        let ready = Arc::new(Readiness::default());
        let access_log = Arc::new(access_log);

        let grace = server_cfg.shutdown_grace;
        let conf = ServerConf {
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
        let mut server = Server::new_with_opt_and_conf(None, conf);
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
        app.h2_options = Some(h2);
        // Every connection of every listener of this service passes the edge guard first
        // (request head size and time limits).
        let mut proxy = Service::new(
            "tollgate".to_string(),
            EdgeApp::new(app, store.clone(), metrics.clone(), access_log.clone()),
        );
        for addr in &server_cfg.listen {
            proxy.add_tcp(addr);
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
        })
    }

    /// Adds an extra Pingora service (the demo backends use this).
    pub fn add_service(&mut self, service: impl pingora::services::Service + 'static) {
        self.server.add_service(service);
    }

    /// Runs until the shutdown signal says so. Blocks the calling thread; must not be called
    /// from inside a tokio runtime.
    pub fn run(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        track_readiness(&self.server, self.ready.clone());
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
        drop(self.access_log);
    }

    /// Signals of a real process: SIGTERM drains, SIGINT exits, SIGQUIT hands sockets over to a
    /// new process (Pingora's graceful upgrade).
    pub fn process_signals(&self) -> Box<dyn ShutdownSignalWatch> {
        Box::new(ProcessSignals {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            access_log: self.access_log.clone(),
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

/// Binds each address once to fail early with a readable message (Pingora would only log it).
fn check_bindable(path: &Path, server: &ServerSettings) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let all = server.addresses();
    for (key, addr) in all {
        if let Err(e) = TcpListener::bind(addr) {
            errors.push(crate::config::ConfigError::new(
                key,
                format!("cannot listen on {addr}: {e}"),
            ));
        }
    }
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

/// Marks the instance ready once Pingora runs its services, not ready once shutdown begins.
fn track_readiness(server: &Server, ready: Arc<Readiness>) {
    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("tollgate-readiness".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::Running) => ready.set(true),
                Ok(ExecutionPhase::Terminated)
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    ready.set(false);
                    break;
                }
                Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted) => {
                    ready.set(false)
                }
                _ => {}
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!("cannot track readiness: {e}"));
}

struct ProcessSignals {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    access_log: Arc<AccessLog>,
}

#[async_trait]
impl ShutdownSignalWatch for ProcessSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                let grace = self.store.snapshot().server.shutdown_grace;
                tracing::info!(grace_seconds = grace.as_secs_f64(), "SIGTERM: draining in-flight requests");
                self.ready.set(false);
                exit_when_drained(self.metrics.clone(), self.access_log.clone(), grace);
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                ShutdownSignal::FastShutdown
            }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing listeners to the new process");
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}

/// Pingora waits the whole grace period after SIGTERM even when nothing is in flight; this exits
/// as soon as the last in-flight request finished (or the grace period ran out).
fn exit_when_drained(metrics: Arc<Metrics>, access_log: Arc<AccessLog>, grace: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-drain".into())
        .spawn(move || {
            let deadline = Instant::now() + grace;
            // Let listeners close and requests already accepted reach the gateway first.
            std::thread::sleep(Duration::from_millis(250));
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
            // `exit` runs no destructors: write the buffered access-log lines first.
            access_log.flush();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start drain watcher, waiting the full grace period: {e}");
    }
}

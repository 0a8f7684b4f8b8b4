//! A real Tollgate on free ports: in-process (the library's `Instance` on its own thread, stopped
//! through our own shutdown signal) or the built binary as a child process.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tollgate::observe::AccessLog;
use tollgate::server::Instance;

pub use tollgate_testkit::ports::{free_port, free_ports};

/// An in-memory sink for the access log.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct TestSignal(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for TestSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

enum Runner {
    InProcess {
        stop: Arc<Notify>,
        thread: Option<std::thread::JoinHandle<()>>,
        access_log: SharedBuf,
    },
    Binary {
        child: Child,
    },
}

/// A running gateway and the config file it reads.
pub struct GatewayHandle {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    header: String,
    runner: Runner,
}

/// The `[server]` and `[log]` part every test config shares: free ports, 2 threads. Every
/// test client is 127.0.0.1 and most open a connection per call, hundreds a second: far over
/// the default connection rate per client, which a test of its own sets in `extra`.
fn server_header(addr: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    let rate = if extra.contains("connection_rate_per_client") {
        ""
    } else {
        "connection_rate_per_client = { connections = 100000, per = \"1s\" }\n"
    };
    format!(
        "[server]\nlisten = [\"{addr}\"]\nadmin_listen = \"{admin}\"\nthreads = 2\n{rate}{extra}\n[log]\nformat = \"json\"\nlevel = \"warn\"\naccess = true\n\n"
    )
}

/// Upstream `app` with one target and a catch-all route `app` to it, then `routes` (more routes).
pub fn catch_all(target: &str, routes: &str) -> String {
    format!(
        r#"
[upstreams.app]
targets = ["{target}"]

[routes.app]
path = "/{{*rest}}"
upstream = "app"
{routes}
"#
    )
}

impl GatewayHandle {
    /// Starts Tollgate in this process with `body` (upstreams, routes) below a generated
    /// `[server]` section. `server_extra` adds lines to `[server]` (e.g. `shutdown_grace`).
    pub async fn start(body: &str) -> GatewayHandle {
        GatewayHandle::start_with(body, "").await
    }

    pub async fn start_with(body: &str, server_extra: &str) -> GatewayHandle {
        GatewayHandle::start_in_process(body, server_extra, |_, _| {}).await
    }

    /// Like [`start`](Self::start), but once the config is loaded and before the server runs,
    /// the file is replaced (by rename) with `next_body` under the same header: a change made
    /// before any file watch can be running.
    pub async fn start_then_edit_before_run(body: &str, next_body: &str) -> GatewayHandle {
        GatewayHandle::start_in_process(body, "", |path, header| {
            let tmp = path.with_extension("toml.before-run");
            std::fs::write(&tmp, format!("{header}{next_body}")).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        })
        .await
    }

    async fn start_in_process(
        body: &str,
        server_extra: &str,
        before_run: impl FnOnce(&std::path::Path, &str),
    ) -> GatewayHandle {
        // Another test may still take a picked port first: then pick again, a few times.
        let mut attempts = 0;
        let (file, access_log, instance) = loop {
            let file = ConfigFile::write(body, server_extra);
            let access_log = SharedBuf::default();
            match Instance::build(&file.path, AccessLog::to_writer(access_log.clone())) {
                Ok(instance) => break (file, access_log, instance),
                Err(e) if attempts < 3 && e.to_string().contains("Address already in use") => {
                    attempts += 1;
                }
                Err(e) => panic!("gateway config rejected:\n{e}"),
            }
        };
        before_run(&file.path, &file.header);
        GatewayHandle::run_in_process(file, access_log, instance).await
    }

    /// Runs a built instance on its own thread until the handle stops it.
    async fn run_in_process(
        file: ConfigFile,
        access_log: SharedBuf,
        instance: Instance,
    ) -> GatewayHandle {
        let stop = Arc::new(Notify::new());
        let signal = Box::new(TestSignal(stop.clone()));
        let thread = std::thread::spawn(move || instance.run(signal));
        let runner = Runner::InProcess {
            stop,
            thread: Some(thread),
            access_log,
        };
        GatewayHandle::when_ready(file, runner).await
    }

    /// Starts Tollgate in this process on a config file that `place` lays out: it gets the
    /// gateway's temp dir and the whole config text, writes it where it wants (a Kubernetes
    /// volume's symlinks, say) and returns the path the gateway is to run with.
    pub async fn start_placed(
        body: &str,
        server_extra: &str,
        place: impl FnOnce(&std::path::Path, &str) -> PathBuf,
    ) -> GatewayHandle {
        let mut file = ConfigFile::write(body, server_extra);
        std::fs::remove_file(&file.path).unwrap();
        file.path = place(file.dir.path(), &format!("{}{body}", file.header));
        let access_log = SharedBuf::default();
        let instance = Instance::build(&file.path, AccessLog::to_writer(access_log.clone()))
            .unwrap_or_else(|e| panic!("gateway config rejected:\n{e}"));
        GatewayHandle::run_in_process(file, access_log, instance).await
    }

    /// Starts the built `tollgate` binary with `tollgate run -c FILE`; stdout (the access log)
    /// and stderr go to files in the gateway's temp dir.
    pub async fn start_binary(body: &str, server_extra: &str) -> GatewayHandle {
        GatewayHandle::start_binary_with_env(body, server_extra, &[]).await
    }

    /// Like [`start_binary`](Self::start_binary), with these environment variables set for the
    /// gateway process only.
    pub async fn start_binary_with_env(
        body: &str,
        server_extra: &str,
        env: &[(&str, &str)],
    ) -> GatewayHandle {
        GatewayHandle::start_binary_full(body, server_extra, env, &[]).await
    }

    /// Like [`start_binary`](Self::start_binary), with more arguments after `run -c FILE`.
    pub async fn start_binary_with_args(
        body: &str,
        server_extra: &str,
        args: &[&str],
    ) -> GatewayHandle {
        GatewayHandle::start_binary_full(body, server_extra, &[], args).await
    }

    /// The built binary with these environment variables and more arguments after
    /// `run -c FILE`.
    pub async fn start_binary_full(
        body: &str,
        server_extra: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> GatewayHandle {
        let file = ConfigFile::write(body, server_extra);
        let mut command = file.binary(file.path.as_os_str());
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn tollgate");
        GatewayHandle::when_ready(file, Runner::Binary { child }).await
    }

    /// Starts the built binary the way a user in the gateway's temp dir would: that dir is the
    /// working directory and the config is named relative to it (`tollgate run -c NAME`, NAME
    /// `gw.toml`, `./gw.toml` or `conf/gw.toml`). Before the start, `prepare` gets the
    /// config's directory to write the files the config names.
    pub async fn start_binary_relative(
        body: &str,
        name: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> GatewayHandle {
        let mut file = ConfigFile::write(body, "");
        let placed = file.dir.path().join(name);
        std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
        std::fs::rename(&file.path, &placed).unwrap();
        file.path = placed;
        prepare(file.path.parent().unwrap());
        let child = file
            .binary(name.as_ref())
            .current_dir(file.dir.path())
            .spawn()
            .expect("spawn tollgate");
        GatewayHandle::when_ready(file, Runner::Binary { child }).await
    }

    /// The handle of a gateway started on `file`, once it is ready and its proxy listener
    /// accepts connections.
    async fn when_ready(file: ConfigFile, runner: Runner) -> GatewayHandle {
        let gw = GatewayHandle {
            addr: file.addr,
            admin: file.admin,
            dir: file.dir,
            config_path: file.path,
            header: file.header,
            runner,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        let client = super::client();
        let ready = super::eventually(Duration::from_secs(15), || {
            let req = client.get(&url).send();
            async move { matches!(req.await, Ok(r) if r.status() == 200) }
        })
        .await;
        assert!(ready, "gateway did not become ready: {}", self.stderr());
        // The proxy listener is started by its own service; wait until it accepts too. The
        // probe hangs up and waits for the gateway to close its side, so that it is no longer
        // counted against the per-client connection limits when the test starts.
        let addr = self.addr;
        let listening = super::eventually(Duration::from_secs(5), || async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut probe) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            let _ = probe.shutdown().await;
            let mut rest = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(2), probe.read(&mut rest)).await;
            true
        })
        .await;
        assert!(listening, "proxy listener not up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Replaces the routes/upstreams part of the config file, keeping `[server]` as started.
    pub fn write_body(&self, body: &str) {
        self.write_raw(&format!("{}{}", self.header, body));
    }

    /// Replaces the whole config file; written to a temp file and renamed in, as editors do.
    pub fn write_raw(&self, text: &str) {
        let tmp = self.dir.path().join(".tollgate.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// The first access-log line `matches` accepts, once it is written (lines are written
    /// after the response, in batches); panics if none comes within 3 s.
    pub async fn log_line(
        &self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let found = || async { self.access_log().iter().any(&matches) };
        super::eventually(Duration::from_secs(3), found).await;
        let lines = self.access_log();
        match lines.iter().find(|l| matches(l)) {
            Some(line) => line.clone(),
            None => panic!("no such line in the access log: {lines:?}"),
        }
    }

    /// The `[server]`/`[log]` header this gateway was started with.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// What the admin `/config` endpoint says about the config being served.
    pub async fn config_json(&self) -> serde_json::Value {
        super::client()
            .get(self.admin_url("/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The hash of the config the gateway is serving, from the admin `/config` endpoint.
    pub async fn config_hash(&self) -> String {
        let v = self.config_json().await;
        v["hash"].as_str().unwrap_or_default().to_string()
    }

    /// The metrics page.
    pub async fn metrics(&self) -> String {
        super::client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one sample, e.g. `tollgate_requests_total{route="r",method="GET",status="200"}`
    /// (labels in the order the page prints them); `None` if absent.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let page = self.metrics().await;
        page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }

    /// Access-log lines so far, parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let text = match &self.runner {
            Runner::InProcess { access_log, .. } => {
                String::from_utf8_lossy(&access_log.0.lock().unwrap()).into_owned()
            }
            Runner::Binary { .. } => {
                std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
            }
        };
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Starts another `tollgate run -c FILE ARGS` on this gateway's config file (a second
    /// process, as for an upgrade); its stdout and stderr go to `NAME.stdout.log` and
    /// `NAME.stderr.log` in the gateway's dir. The caller owns (and must end) the child.
    pub fn spawn_another(&self, name: &str, args: &[&str]) -> Child {
        let out = |kind: &str| {
            std::fs::File::create(self.dir.path().join(format!("{name}.{kind}.log"))).unwrap()
        };
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "-c"])
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out("stdout"))
            .stderr(out("stderr"))
            .spawn()
            .expect("spawn tollgate")
    }

    /// A file in the gateway's temp dir, as text (empty when absent).
    pub fn file_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The gateway's own log (binary only).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The child process, for sending signals (binary only).
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Binary { child } => Some(child.id()),
            Runner::InProcess { .. } => None,
        }
    }

    /// Waits for the binary to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let Runner::Binary { child } = &mut self.runner else {
            return None;
        };
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a Unix signal to the binary.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("binary gateway");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::InProcess { stop, thread, .. } => {
                stop.notify_one();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Runner::Binary { child } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A config file for a gateway about to start: in its own temp dir, on free ports.
struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
    /// The generated `[server]`/`[log]` part, above `body`.
    header: String,
}

impl ConfigFile {
    /// `tollgate run -c CONFIG` (the built binary), its stdout (the access log) and stderr to
    /// files in the temp dir.
    fn binary(&self, config: &std::ffi::OsStr) -> Command {
        let log = |name: &str| std::fs::File::create(self.dir.path().join(name)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .args(["run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        command
    }

    fn write(body: &str, server_extra: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let [port, admin_port] = free_ports::<2>();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let header = server_header(addr, admin, server_extra);
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, format!("{header}{body}")).unwrap();
        ConfigFile {
            dir,
            path,
            addr,
            admin,
            header,
        }
    }
}

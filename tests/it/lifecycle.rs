//! The `tollgate run` process from the outside: signals (SIGTERM drains, SIGINT exits at once),
//! exit codes and timing, and the admin endpoints an orchestrator probes.

use crate::support::{backend, client, eventually, sha256_hex, GatewayHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn slow_body(target: &str) -> String {
    format!("[upstreams.slow]\ntargets = [\"{target}\"]\nread_timeout = \"30s\"\n\n[routes.slow]\npath = \"/slow\"\nupstream = \"slow\"\n")
}

/// Starts a GET in the background; resolves to (status, body) or the error text.
fn start_request(url: String) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    tokio::spawn(async move {
        let r = client().get(url).send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    })
}

/// Waits for the child to exit without blocking the async workers.
async fn wait_exit(gw: GatewayHandle, limit: Duration) -> (Option<i32>, GatewayHandle) {
    tokio::task::spawn_blocking(move || {
        let mut gw = gw;
        let code = gw.wait_exit(limit);
        (code, gw)
    })
    .await
    .unwrap()
}

/// A new TCP connection 300 ms after the signal, with a bounded wait: `true` if it was refused
/// (or otherwise failed to connect).
async fn refused_after_signal(addr: std::net::SocketAddr) -> bool {
    tokio::time::sleep(Duration::from_millis(300)).await;
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => false,
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_then_exits_0() {
    let slow = backend("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let grace = Duration::from_secs(5);
    let gw =
        GatewayHandle::start_binary(&slow_body(&slow.target()), "shutdown_grace = \"5s\"").await;
    let request = start_request(gw.url("/slow"));
    let arrived = eventually(Duration::from_secs(5), || async { slow.count() == 1 }).await;
    assert!(arrived, "request never reached the backend");

    let signalled = Instant::now();
    gw.signal("TERM");
    let refused = refused_after_signal(gw.addr).await;
    let readyz = client().get(gw.admin_url("/readyz")).send().await;
    assert!(
        !matches!(&readyz, Ok(r) if r.status() == 200),
        "still ready while draining: {readyz:?}"
    );

    let outcome = request.await.unwrap();
    assert_eq!(
        outcome,
        Ok((200, r#"{"backend":"slow"}"#.to_string())),
        "in-flight request cut off"
    );
    let (code, gw) = wait_exit(gw, grace + Duration::from_secs(3)).await;
    let took = signalled.elapsed();
    assert_eq!(
        code,
        Some(0),
        "exit after SIGTERM; stderr:\n{}",
        gw.stderr()
    );
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
    assert!(refused, "a new connection was accepted after SIGTERM");
    // The drained request was logged before the process went away.
    let logged = gw
        .access_log()
        .iter()
        .any(|l| l["route"] == "slow" && l["status"] == 200);
    assert!(logged, "access log: {:?}", gw.access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_after_shutdown_grace() {
    let stuck = backend("stuck")
        .delay(Duration::from_secs(20))
        .start()
        .await;
    let gw =
        GatewayHandle::start_binary(&slow_body(&stuck.target()), "shutdown_grace = \"1s\"").await;
    let request = start_request(gw.url("/slow"));
    let arrived = eventually(Duration::from_secs(5), || async { stuck.count() == 1 }).await;
    assert!(arrived, "request never reached the backend");

    let signalled = Instant::now();
    gw.signal("TERM");
    let (code, gw) = wait_exit(gw, Duration::from_secs(6)).await;
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "stderr:\n{}", gw.stderr());
    assert!(
        took >= Duration::from_millis(900),
        "did not wait for the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "waited past the grace period: {took:?}"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("client still waiting after the gateway exited")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        gw.stderr().contains("grace period over"),
        "no warning about the cut-off request:\n{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_exits_quickly() {
    let b = backend("b").start().await;
    let gw = GatewayHandle::start_binary(&slow_body(&b.target()), "shutdown_grace = \"10s\"").await;
    let r = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    let (code, gw) = wait_exit(gw, Duration::from_secs(12)).await;
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "stderr:\n{}", gw.stderr());
    assert!(
        took < Duration::from_secs(3),
        "idle drain took {took:?} of a 10 s grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_promptly_even_with_a_request_in_flight() {
    let stuck = backend("stuck")
        .delay(Duration::from_secs(20))
        .start()
        .await;
    let gw =
        GatewayHandle::start_binary(&slow_body(&stuck.target()), "shutdown_grace = \"10s\"").await;
    let request = start_request(gw.url("/slow"));
    let arrived = eventually(Duration::from_secs(5), || async { stuck.count() == 1 }).await;
    assert!(arrived, "request never reached the backend");
    let signalled = Instant::now();
    gw.signal("INT");
    let (code, gw) = wait_exit(gw, Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(code.is_some(), "did not exit within 10 s of SIGINT");
    assert_eq!(code, Some(0), "stderr:\n{}", gw.stderr());
    assert!(took < Duration::from_secs(2), "SIGINT took {took:?}");
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("client still waiting after the gateway exited")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle_exits_promptly() {
    let b = backend("b").start().await;
    let gw = GatewayHandle::start_binary(&slow_body(&b.target()), "shutdown_grace = \"10s\"").await;
    let signalled = Instant::now();
    gw.signal("INT");
    let (code, gw) = wait_exit(gw, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "stderr:\n{}", gw.stderr());
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_probes() {
    let b = backend("b").start().await;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Something secret-looking in the file: /config must describe the config, never echo it.
    let body = format!(
        "# deploy token: tg_secret_5f1c9a (must never be served)\n{}\n[upstreams.other]\ntargets = [\"{}\"]\n\n[routes.other]\npath = \"/other/{{*rest}}\"\nupstream = \"other\"\n",
        slow_body(&b.target()),
        b.target()
    );
    let gw = GatewayHandle::start_binary(&body, "").await;
    let http = client();

    let r = http.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "alive");

    let r = http.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready");

    let r = http.get(gw.admin_url("/config")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = std::fs::read_to_string(&gw.config_path).unwrap();
    let hash = v["hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(
        hash.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{hash}"
    );
    assert_eq!(hash, sha256_hex(&file));
    assert_eq!(v["source"], gw.config_path.display().to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let loaded_at = v["loaded_at"].as_u64().expect("loaded_at in unix seconds");
    assert!(
        (started..=now).contains(&loaded_at),
        "{loaded_at} not in {started}..={now}"
    );
    assert_eq!(v["routes"], 2);
    assert_eq!(v["upstreams"], 2);
    // Only these fields: no config text, no addresses, nothing that could carry a secret.
    let allowed = [
        "hash",
        "source",
        "loaded_at",
        "loaded_at_rfc3339",
        "routes",
        "upstreams",
        "version",
    ];
    for key in v.as_object().unwrap().keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "unexpected /config field {key}: {text}"
        );
    }
    for leak in [
        "tg_secret_5f1c9a",
        "deploy token",
        &b.target(),
        "[upstreams",
        "targets",
    ] {
        assert!(!text.contains(leak), "/config leaks {leak:?}: {text}");
    }

    let r = http.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let build = format!(
        "tollgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(page.lines().any(|l| l == build), "{page}");

    let r = http.get(gw.admin_url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 404);
    // The admin listener only serves the admin API, never routes.
    let r = http.get(gw.admin_url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(b.count(), 0);

    let r = http.post(gw.admin_url("/config")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// Runs `tollgate run -c FILE` for a config that must not start: waits (bounded) for the exit,
/// killing the process if it is still running after 10 s.
fn run_must_fail(config: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn run_refuses_an_invalid_config_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let ports = crate::support::gateway::free_ports::<2>();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\nshutdown_grace = \"5\"\n\n[upstreams.u]\ntargets = []\n\n[routes.r]\npath = \"/\"\nupstream = \"nope\"\n",
            ports[0],
            ports[1]
        ),
    )
    .unwrap();
    let (code, stderr) = run_must_fail(&path);
    assert_eq!(code, Some(1), "{stderr}");
    let shown = path.display().to_string();
    for expected in [
        format!("{shown}:4:1: server.shutdown_grace: "),
        format!("{shown}:7:1: upstreams.u.targets: "),
        format!("{shown}:11:1: routes.r.upstream: "),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "{expected}\n{stderr}"
        );
    }
    assert!(stderr.contains(&format!("{shown}: 3 errors")), "{stderr}");
}

#[test]
fn run_refuses_a_listen_address_in_use() {
    let busy = tollgate_testkit::ports::loopback_listener();
    let addr = busy.local_addr().unwrap();
    assert_run_refuses_listen(
        &format!("\"{addr}\""),
        &format!("server.listen[0]: cannot listen on {addr}"),
    );
}

/// `[::]:P` and `0.0.0.0:P` each bind alone, but not both on a dual-stack system (IPv6 sockets
/// take IPv4 too): the start refuses the second instead of running without it.
#[test]
fn run_refuses_two_listen_addresses_that_cannot_both_be_bound() {
    let port = crate::support::free_port();
    let v6 = std::net::TcpListener::bind(("::", port)).expect("IPv6 [::] (this test needs it)");
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", port)).is_err(),
        "this test needs a dual-stack system (net.ipv6.bindv6only = 0)"
    );
    drop(v6);
    assert_run_refuses_listen(
        &format!("\"[::]:{port}\", \"0.0.0.0:{port}\""),
        &format!("server.listen[1]: cannot listen on 0.0.0.0:{port}"),
    );
}

/// `tollgate run` on a config whose `listen` list is `listen` exits 1 with `error` reported at
/// line 2 (the `listen` line).
fn assert_run_refuses_listen(listen: &str, error: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [{listen}]\nadmin_listen = \"127.0.0.1:{}\"\n\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n\n[routes.r]\npath = \"/\"\nupstream = \"u\"\n",
            crate::support::free_port()
        ),
    )
    .unwrap();
    let (code, stderr) = run_must_fail(&path);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!("{}:2:1: {error}", path.display());
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
}

/// A `tollgate demo-backends` child, killed (SIGKILL) if the test ends with it still running:
/// a leftover would hold the demo ports.
struct DemoBackends(std::process::Child);

impl Drop for DemoBackends {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tollgate demo-backends` and waits (bounded) until its first backend answers.
async fn start_demo_backends(stderr: &std::path::Path) -> DemoBackends {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("demo-backends")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("spawn tollgate demo-backends");
    let mut demo = DemoBackends(child);
    let (name, addr) = tollgate::demo::DEMO_BACKENDS[0];
    let url = format!("http://{addr}/ping");
    let up = eventually(Duration::from_secs(10), || async {
        match client().get(&url).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["service"] == format!("{name}@{addr}")),
            Err(_) => false,
        }
    })
    .await;
    let exited = demo.0.try_wait().unwrap();
    assert!(
        up,
        "demo backends did not answer on {addr} (exited: {exited:?}): {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    demo
}

/// Sends `sig` to the demo backends and waits (at most 3 s) for them to exit.
async fn signal_demo_backends(mut demo: DemoBackends, sig: &str) -> Option<i32> {
    let pid = demo.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{sig} {pid}");
    tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Some(status) = demo.0.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backends_exit_0_promptly_on_sigterm_and_on_sigint() {
    // One test for both signals: the demo backends listen on fixed ports, so two runs at once
    // would collide. SIGTERM used to close the listeners, then sleep through Pingora's 300 s
    // grace period deaf to every further SIGTERM and SIGINT.
    let dir = tempfile::tempdir().unwrap();
    for sig in ["TERM", "INT"] {
        let stderr = dir.path().join(format!("demo-{sig}.stderr"));
        let demo = start_demo_backends(&stderr).await;
        let code = signal_demo_backends(demo, sig).await;
        assert_eq!(
            code,
            Some(0),
            "demo-backends did not exit 0 within 3 s of SIG{sig}: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
    }
}

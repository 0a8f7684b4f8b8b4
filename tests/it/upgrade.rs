//! Zero-downtime binary upgrade (`tollgate run --upgrade`): while clients keep sending requests,
//! on kept-alive and on new connections, a second process takes the listening sockets over and
//! the first one, sent SIGQUIT, drains and exits 0. No client sees an error.

use crate::support::gateway::catch_all;
use crate::support::{backend, client, eventually, GatewayHandle};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every client loop stops after this many requests or this long, whichever comes first.
const MAX_REQUESTS: usize = 20_000;
const MAX_LOOP_TIME: Duration = Duration::from_secs(60);

/// A child process ended when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one client loop saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// Every request that did not get the backend's 200 answer: transport error or status.
    failures: Vec<String>,
}

/// Sends GETs through `client` until `stop` is set (or the bounds run out).
fn client_loop(
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let end = Instant::now() + MAX_LOOP_TIME;
        for i in 0..MAX_REQUESTS {
            if stop.load(Ordering::SeqCst) || Instant::now() >= end {
                break;
            }
            match client.get(format!("{url}{i}")).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.text().await {
                        Ok(body) if status == 200 && body == r#"{"backend":"b"}"# => tally.ok += 1,
                        Ok(body) => tally.failures.push(format!("#{i}: {status} {body}")),
                        Err(e) => tally.failures.push(format!("#{i}: body: {e:?}")),
                    }
                }
                Err(e) => tally.failures.push(format!("#{i}: {e:?}")),
            }
            // A short pause: requests keep coming without saturating the two shared cores.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tally
    })
}

/// Waits (bounded) for the new process's handover socket to exist.
async fn wait_for_socket(sock: &Path) -> bool {
    let sock = sock.to_path_buf();
    eventually(Duration::from_secs(20), || {
        let exists = sock.exists();
        async move { exists }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_the_sockets_over_without_a_failed_request() {
    let b = backend("b").start().await;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut old = GatewayHandle::start_binary_with_args(
        &catch_all(&b.target(), ""),
        "shutdown_grace = \"5s\"",
        &["--upgrade-sock", &sock_arg],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let url = old.url("/r/");
    // Two clients on kept-alive connections, and one opening a connection per request.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let loops = vec![
        client_loop(client(), url.clone(), stop.clone()),
        client_loop(client(), url.clone(), stop.clone()),
        client_loop(fresh, url.clone(), stop.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = Reaped(old.spawn_another("new", &["--upgrade", "--upgrade-sock", &sock_arg]));
    assert!(
        wait_for_socket(&sock).await,
        "the new process never waited for the sockets: {}",
        old.file_text("new.stderr.log")
    );
    old.signal("QUIT");
    let old_exit = tokio::task::spawn_blocking(move || {
        let code = old.wait_exit(Duration::from_secs(30));
        (code, old)
    });
    let (code, old) = old_exit.await.unwrap();
    assert_eq!(code, Some(0), "old process: {}", old.stderr());
    let served_before_exit = b.count();

    // Only the new process is left to answer these.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = Tally::default();
    for l in loops {
        let t = l.await.unwrap();
        total.ok += t.ok;
        total.failures.extend(t.failures);
    }
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed: {:?}\nold: {}\nnew: {}",
        total.failures.len(),
        total.ok + total.failures.len(),
        &total.failures[..total.failures.len().min(10)],
        old.stderr(),
        old.file_text("new.stderr.log")
    );
    assert!(
        b.count() > served_before_exit,
        "no request was served after the old process exited"
    );

    // The new process serves, ready, on the same ports, and logged the requests it answered.
    let mut new = new;
    assert!(matches!(new.0.try_wait(), Ok(None)), "new process exited");
    let ready = client().get(old.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let r = client().get(old.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let logged = eventually(Duration::from_secs(2), || async {
        old.file_text("new.stdout.log").contains("/after")
    })
    .await;
    assert!(logged, "the new process did not log /after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_without_a_new_process_keeps_serving() {
    // Pingora alone would drop its listeners with nobody to take them.
    let b = backend("b").start().await;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let mut gw = GatewayHandle::start_binary_with_args(
        &catch_all(&b.target(), ""),
        "",
        &["--upgrade-sock", sock.to_str().unwrap()],
    )
    .await;
    gw.signal("QUIT");
    let refused = eventually(Duration::from_secs(25), || async {
        gw.stderr().contains("no new process is waiting")
    })
    .await;
    assert!(refused, "{}", gw.stderr());
    let r = client().get(gw.url("/still")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gw.wait_exit(Duration::from_millis(100)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_nobody_to_hand_over_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let [port, admin] = crate::support::gateway::free_ports::<2>();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\n\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n\n[routes.app]\npath = \"/\"\nupstream = \"app\"\n"
        ),
    )
    .unwrap();
    let sock = dir.path().join("upgrade.sock");
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--upgrade", "-c"])
            .arg(&config)
            .arg("--upgrade-sock")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break status.code();
        }
        assert!(Instant::now() < end, "still waiting for sockets after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(1));
}

/// Reads the next systemd notification (bounded), as systemd's notify socket would.
async fn next_notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
        .await
        .expect("no notification within 30 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn main_pid(notification: &str) -> u32 {
    notification
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {notification:?}"))
        .parse()
        .unwrap()
}

/// The new process, which the old one started: ended by its id when the test ends.
struct ByPid(u32);

impl Drop for ByPid {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_starts_the_new_binary_and_systemd_is_told_its_pid() {
    // What a `Type=notify`, `NotifyAccess=all` unit sees: READY=1 with the first process's
    // pid, then, after SIGUSR2, READY=1 with the pid of the process it started.
    let b = backend("b").start().await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let sock = dir.path().join("upgrade.sock");
    let mut old = GatewayHandle::start_binary_full(
        &catch_all(&b.target(), ""),
        "shutdown_grace = \"5s\"",
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
        &["--upgrade-sock", sock.to_str().unwrap()],
    )
    .await;
    let first = next_notification(&notify).await;
    assert!(first.contains("READY=1"), "{first:?}");
    assert_eq!(main_pid(&first), old.pid().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let requests = client_loop(client(), old.url("/r/"), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    old.signal("USR2");
    let second = next_notification(&notify).await;
    let new = ByPid(main_pid(&second));
    assert!(second.contains("READY=1"), "{second:?}");
    assert_ne!(new.0, old.pid().unwrap());

    let old_exit = tokio::task::spawn_blocking(move || {
        let code = old.wait_exit(Duration::from_secs(30));
        (code, old)
    });
    let (code, old) = old_exit.await.unwrap();
    assert_eq!(code, Some(0), "old process: {}", old.stderr());
    let served = b.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let tally = requests.await.unwrap();
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(
        b.count() > served,
        "nothing served after the old process exited"
    );
    let r = client().get(old.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

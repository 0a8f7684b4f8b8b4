//! Hot reload as a user sees it: edit the TOML file (written like an editor does, by rename) or
//! send SIGHUP, then observe the routes served, the admin `/config` hash, the reload metrics and
//! the gateway's own log.

use crate::support::{backend, client, eventually, prom, sha256_hex, Backend, GatewayHandle};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUCCESS: &str = r#"tollgate_config_reloads_total{result="success"}"#;
const FAILURE: &str = r#"tollgate_config_reloads_total{result="failure"}"#;

/// "Live within about a second": the watch debounces for 250 ms; the rest is slack for a busy
/// 2-core CI machine running other tests at the same time.
const LIVE_WITHIN: Duration = Duration::from_secs(3);

fn file_hash(gw: &GatewayHandle) -> String {
    sha256_hex(std::fs::read_to_string(&gw.config_path).unwrap())
}

/// GET `path` on the gateway: status and body, or `None` if the request failed.
async fn get(gw: &GatewayHandle, path: &str) -> Option<(u16, String)> {
    let r = client().get(gw.url(path)).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Waits (bounded) until `path` answers 200 with `body`; returns how long that took.
async fn wait_serving(
    gw: &GatewayHandle,
    path: &str,
    body: &str,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let want = Some((200, body.to_string()));
    let ok = eventually(limit, || async { get(gw, path).await == want }).await;
    ok.then(|| start.elapsed())
}

async fn metric(gw: &GatewayHandle, sample: &str) -> f64 {
    gw.metric(sample)
        .await
        .unwrap_or_else(|| panic!("metric {sample} missing"))
}

/// Waits (bounded) until the metric reaches at least `at_least`.
async fn wait_metric(gw: &GatewayHandle, sample: &str, at_least: f64, limit: Duration) -> bool {
    eventually(limit, || async {
        gw.metric(sample).await.unwrap_or(0.0) >= at_least
    })
    .await
}

fn one_route(name: &str, path: &str, upstream: &str, target: &str) -> String {
    format!("[upstreams.{upstream}]\ntargets = [\"{target}\"]\n\n[routes.{name}]\npath = \"{path}\"\nupstream = \"{upstream}\"\n")
}

fn two_routes(a: &Backend, b: &Backend) -> String {
    format!(
        "{}\n[upstreams.b]\ntargets = [\"{}\"]\n\n[routes.new]\npath = \"/new\"\nupstream = \"b\"\n",
        one_route("old", "/old", "a", &a.target()),
        b.target()
    )
}

/// `tollgate check` run on the gateway's config file.
fn check_config(gw: &GatewayHandle) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("check")
        .arg("-c")
        .arg(&gw.config_path)
        .output()
        .unwrap()
}

/// The gateway's own log (JSON lines on stderr) as parsed objects.
fn log_lines(gw: &GatewayHandle) -> Vec<serde_json::Value> {
    gw.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_change_goes_live_through_the_file_watch() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&one_route("old", "/old", "a", &a.target())).await;
    let before = gw.config_json().await;
    assert_eq!(before["hash"], file_hash(&gw));
    assert_eq!(before["routes"], 1);
    assert_eq!(before["upstreams"], 1);
    assert_eq!(get(&gw, "/new").await.map(|r| r.0), Some(404));
    assert_eq!(
        metric(&gw, SUCCESS).await,
        1.0,
        "the initial load counts as one success"
    );

    gw.write_body(&two_routes(&a, &b));
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(took.is_some(), "new route not live within {LIVE_WITHIN:?}");

    let after = gw.config_json().await;
    assert_eq!(
        after["hash"],
        file_hash(&gw),
        "/config reports the file now served"
    );
    assert_ne!(after["hash"], before["hash"]);
    assert_eq!(after["routes"], 2);
    assert_eq!(after["upstreams"], 2);
    assert!(after["loaded_at"].as_u64() >= before["loaded_at"].as_u64());
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
    assert_eq!(metric(&gw, SUCCESS).await, 2.0);
    assert_eq!(metric(&gw, FAILURE).await, 0.0);
    let last = metric(&gw, "tollgate_config_last_reload_success_timestamp_seconds").await;
    assert!(last >= before["loaded_at"].as_f64().unwrap(), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_route_stops_serving_after_reload() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&two_routes(&a, &b)).await;
    assert_eq!(
        get(&gw, "/new").await,
        Some((200, r#"{"backend":"b"}"#.into()))
    );
    gw.write_body(&one_route("old", "/old", "a", &a.target()));
    let gone = eventually(LIVE_WITHIN, || async {
        get(&gw, "/new").await.map(|r| r.0) == Some(404)
    })
    .await;
    assert!(gone, "removed route still served");
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
    assert_eq!(gw.config_json().await["hash"], file_hash(&gw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_change_is_rejected_and_the_old_config_keeps_serving() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let good = one_route("old", "/old", "a", &a.target());
    let gw = GatewayHandle::start(&good).await;
    let hash = gw.config_hash().await;
    assert_eq!(metric(&gw, FAILURE).await, 0.0);

    // A new route pointing at an upstream that does not exist, plus a bad duration.
    let broken = format!(
        "{good}\n[upstreams.b]\ntargets = [\"{}\"]\nread_timeout = \"5\"\n\n[routes.new]\npath = \"/new\"\nupstream = \"bb\"\n",
        b.target()
    );
    gw.write_body(&broken);
    assert!(
        wait_metric(&gw, FAILURE, 1.0, Duration::from_secs(5)).await,
        "rejected reload not counted"
    );
    assert_eq!(
        gw.config_hash().await,
        hash,
        "the rejected file must not be reported as loaded"
    );
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
    assert_eq!(get(&gw, "/new").await.map(|r| r.0), Some(404));
    assert_eq!(metric(&gw, SUCCESS).await, 1.0);
    assert_eq!(gw.config_json().await["routes"], 1);

    // Fixing the file is picked up by the same watch.
    gw.write_body(&two_routes(&a, &b));
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(took.is_some(), "fixed config not applied");
    assert_eq!(gw.config_hash().await, file_hash(&gw));
    assert_eq!(metric(&gw, SUCCESS).await, 2.0);
    assert!(metric(&gw, FAILURE).await >= 1.0);
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_reload_is_logged_with_the_same_messages_as_check() {
    let a = backend("a").start().await;
    let good = one_route("old", "/old", "a", &a.target());
    let gw = GatewayHandle::start_binary(&good, "").await;
    let hash = gw.config_hash().await;
    gw.write_body(&format!(
        "{good}\n[routes.new]\npath = \"/new\"\nupstream = \"nope\"\ntimeout = \"soon\"\n\n[routes.other]\npath = \"/other\"\nupstream = \"missing\"\n"
    ));
    assert!(
        wait_metric(&gw, FAILURE, 1.0, Duration::from_secs(5)).await,
        "rejected reload not counted; stderr:\n{}",
        gw.stderr()
    );
    assert_eq!(gw.config_hash().await, hash);
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );

    // What `tollgate check` says about the same file...
    let check = check_config(&gw);
    assert_eq!(check.status.code(), Some(1));
    let check_err = String::from_utf8(check.stderr).unwrap();
    let expected: Vec<&str> = check_err
        .lines()
        .filter(|l| !l.ends_with(" errors") && !l.ends_with(" error"))
        .collect();
    assert_eq!(expected.len(), 2, "{check_err}");
    // ...is what the running gateway logged, line for line, at error level.
    let ok = eventually(Duration::from_secs(5), || async {
        let logged: Vec<serde_json::Value> = log_lines(&gw);
        expected.iter().all(|line| {
            logged
                .iter()
                .any(|l| l["level"] == "ERROR" && l["message"].as_str() == Some(line))
        })
    })
    .await;
    assert!(
        ok,
        "expected log lines {expected:#?}\nstderr:\n{}",
        gw.stderr()
    );
    assert!(
        gw.stderr().contains("previous config keeps serving"),
        "{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start_binary(&one_route("old", "/old", "a", &a.target()), "").await;
    let hash = gw.config_hash().await;

    // Make the config path a symlink into another directory: changes made there are invisible
    // to the watch on the config's own directory, so only SIGHUP can pick them up.
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.toml");
    std::fs::copy(&gw.config_path, &real).unwrap();
    let link_tmp = gw.dir.path().join(".link.tmp");
    std::os::unix::fs::symlink(&real, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, &gw.config_path).unwrap();
    // The swap itself is seen by the watch, but the content is the same: nothing to apply.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gw.config_hash().await, hash);
    assert_eq!(metric(&gw, SUCCESS).await, 1.0);

    let text = format!("{}{}", gw.header(), two_routes(&a, &b));
    let tmp = elsewhere.path().join(".real.tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, &real).unwrap();
    // Give a (wrong) watch every chance to fire: the route must still be unknown.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        get(&gw, "/new").await.map(|r| r.0),
        Some(404),
        "changed without SIGHUP"
    );

    gw.signal("HUP");
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "SIGHUP did not reload; stderr:\n{}",
        gw.stderr()
    );
    assert_eq!(gw.config_hash().await, sha256_hex(&text));
    assert_eq!(metric(&gw, SUCCESS).await, 2.0);

    // SIGHUP with a broken file: rejected, logged with its trigger, old config serving.
    let broken = format!(
        "{}{}\n[routes.bad]\npath = \"/bad\"\nupstream = \"nope\"\n",
        gw.header(),
        two_routes(&a, &b)
    );
    std::fs::write(&tmp, &broken).unwrap();
    std::fs::rename(&tmp, &real).unwrap();
    gw.signal("HUP");
    assert!(wait_metric(&gw, FAILURE, 1.0, Duration::from_secs(5)).await);
    assert_eq!(gw.config_hash().await, sha256_hex(&text));
    assert_eq!(
        get(&gw, "/new").await,
        Some((200, r#"{"backend":"b"}"#.into()))
    );
    let logged = eventually(Duration::from_secs(5), || async {
        log_lines(&gw).iter().any(|l| {
            l["trigger"] == "SIGHUP"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("routes.bad.upstream: no upstream named \"nope\""))
        })
    })
    .await;
    assert!(logged, "stderr:\n{}", gw.stderr());
    // SIGHUP reloads, it does not stop the process.
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_changes_are_reported_and_not_applied() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start_binary(&one_route("old", "/old", "a", &a.target()), "").await;
    let [new_port, new_admin] = crate::support::gateway::free_ports::<2>();
    let mut header = gw.header().to_string();
    for (old, new) in [
        (
            format!("listen = [\"{}\"]", gw.addr),
            format!("listen = [\"127.0.0.1:{new_port}\"]"),
        ),
        (
            format!("admin_listen = \"{}\"", gw.admin),
            format!("admin_listen = \"127.0.0.1:{new_admin}\""),
        ),
        (
            "threads = 2".to_string(),
            "threads = 3\nidle_timeout = \"30s\"\nmax_header_bytes = \"16KiB\"".to_string(),
        ),
        (
            "level = \"warn\"".to_string(),
            "level = \"info\"".to_string(),
        ),
    ] {
        assert!(header.contains(&old), "{old} not in {header}");
        header = header.replace(&old, &new);
    }
    // Also a route change: the rest of the file is applied, only those keys wait.
    gw.write_raw(&format!("{header}{}", two_routes(&a, &b)));
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(
        took.is_some(),
        "reload not applied; stderr:\n{}",
        gw.stderr()
    );
    assert_eq!(gw.config_hash().await, file_hash(&gw));

    for key in [
        "server.listen",
        "server.admin_listen",
        "server.threads",
        "log.level",
        // Live for HTTP/1; Pingora's HTTP/2 server has them from its start.
        "server.idle_timeout",
        "server.max_header_bytes",
    ] {
        let warned = eventually(Duration::from_secs(5), || async {
            log_lines(&gw).iter().any(|l| {
                l["level"] == "WARN"
                    && l["key"] == key
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("needs restart"))
            })
        })
        .await;
        assert!(
            warned,
            "no needs-restart warning for {key}; stderr:\n{}",
            gw.stderr()
        );
    }
    // The old listeners still serve (the admin one just answered /config); nothing listens on
    // the new addresses.
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
    for port in [new_port, new_admin] {
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(
            refused.is_err(),
            "new address 127.0.0.1:{port} was half-applied"
        );
    }
    // The log filter stays "warn" until a restart: no info lines appear.
    assert_eq!(
        get(&gw, "/new").await,
        Some((200, r#"{"backend":"b"}"#.into()))
    );
    let infos: Vec<_> = log_lines(&gw)
        .into_iter()
        .filter(|l| l["level"] == "INFO")
        .collect();
    assert!(
        infos.is_empty(),
        "log.level applied without a restart: {infos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_during_steady_traffic_fail_no_request() {
    let a = backend("a").start().await;
    // Both configs route /r to the same backend; they differ in timeouts only.
    let body = |timeout: &str, read: &str| {
        format!(
            "[upstreams.a]\ntargets = [\"{}\"]\nread_timeout = \"{read}\"\n\n[routes.r]\npath = \"/r\"\nupstream = \"a\"\ntimeout = \"{timeout}\"\n",
            a.target()
        )
    };
    let configs = [body("5s", "4s"), body("6s", "3s")];
    let gw = Arc::new(GatewayHandle::start(&configs[0]).await);
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));

    // Two clients: one reusing keep-alive connections, one opening a connection per request.
    let mut clients = Vec::new();
    for keep_alive in [true, false] {
        let (gw, done, ok, failures) = (gw.clone(), done.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5));
            if !keep_alive {
                builder = builder.pool_max_idle_per_host(0);
            }
            let http = builder.build().unwrap();
            // Bounded: stops when the reloads are done, and in any case after 60 s.
            let end = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::SeqCst) && Instant::now() < end {
                let outcome = match http.get(gw.url("/r")).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(t) if t == r#"{"backend":"a"}"# => Ok(()),
                        other => Err(format!("body {other:?}")),
                    },
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("error {e}")),
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        0
                    }
                };
            }
        }));
    }

    // 50 writes, alternating the two configs, each by rename like an editor, 40-60 ms apart.
    // The watch debounces (250 ms), so several writes can be merged into one reload.
    for i in 0..50 {
        gw.write_body(&configs[(i + 1) % 2]);
        tokio::time::sleep(Duration::from_millis(40 + (i as u64 * 7) % 21)).await;
    }
    // The last write (configs[0]) ends up served.
    let last = sha256_hex(format!("{}{}", gw.header(), configs[0]));
    let settled = eventually(Duration::from_secs(5), || async {
        gw.config_hash().await == last
    })
    .await;
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(settled, "the last written config was not applied");

    let failures = failures.lock().unwrap().clone();
    let served = ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(served >= 100, "client loop barely ran: {served} requests");
    let successes = metric(&gw, SUCCESS).await;
    assert!(
        successes >= 2.0,
        "no reload beyond the initial load was applied ({successes})"
    );
    assert_eq!(metric(&gw, FAILURE).await, 0.0);
    // The gateway counted every one of them as a 200 on the route (it counts just after the
    // response went out, hence the short wait).
    let labels = [("route", "r"), ("method", "GET"), ("status", "200")];
    let counted = eventually(Duration::from_secs(2), || async {
        prom::value(&gw.metrics().await, "tollgate_requests_total", &labels) == Some(served as f64)
    })
    .await;
    assert!(
        counted,
        "tollgate_requests_total{labels:?} = {:?}, clients saw {served}",
        prom::value(&gw.metrics().await, "tollgate_requests_total", &labels)
    );
    println!("{served} requests, {successes} successful config loads for 50 writes");
}

/// Writes a config whose new route points nowhere, waits until the rejection is counted and
/// returns the failure count then.
async fn reject_one_write(gw: &GatewayHandle, good: &str) -> f64 {
    gw.write_body(&format!(
        "{good}\n[routes.bad]\npath = \"/bad\"\nupstream = \"nope\"\n"
    ));
    assert!(wait_metric(gw, FAILURE, 1.0, Duration::from_secs(5)).await);
    metric(gw, FAILURE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_file_is_tried_once_not_again_and_again() {
    // Reading the config is itself a file event (inotify reports opens); the watch must not
    // take its own reads, or anyone else's, for a change.
    let a = backend("a").start().await;
    let good = one_route("old", "/old", "a", &a.target());
    let gw = GatewayHandle::start(&good).await;
    assert_eq!(reject_one_write(&gw, &good).await, 1.0);
    for _ in 0..5 {
        // Like `cat`, a backup tool, or `tollgate check` on the same file.
        std::fs::read_to_string(&gw.config_path).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        metric(&gw, FAILURE).await,
        1.0,
        "one bad write, several rejections"
    );
    assert_eq!(metric(&gw, SUCCESS).await, 1.0);
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_files_in_the_config_directory_do_not_trigger_reloads() {
    let a = backend("a").start().await;
    let good = one_route("old", "/old", "a", &a.target());
    let gw = GatewayHandle::start(&good).await;
    // A broken config makes every reload attempt visible in the failure count.
    assert_eq!(reject_one_write(&gw, &good).await, 1.0);

    // Logs, editor swap files, notes: none of them is the config.
    let other = gw.dir.path().join("access.log");
    for i in 0..10 {
        std::fs::write(&other, format!("line {i}\n")).unwrap();
        std::fs::write(gw.dir.path().join(format!(".tollgate.toml.swp{i}")), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        metric(&gw, FAILURE).await,
        1.0,
        "unrelated files triggered reloads"
    );
    assert_eq!(
        get(&gw, "/old").await,
        Some((200, r#"{"backend":"a"}"#.into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_write_is_picked_up() {
    // Not every tool renames: `>` in a shell truncates and writes the same inode.
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&one_route("old", "/old", "a", &a.target())).await;
    let text = format!("{}{}", gw.header(), two_routes(&a, &b));
    std::fs::write(&gw.config_path, &text).unwrap();
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(took.is_some(), "in-place write not picked up");
    assert_eq!(gw.config_hash().await, sha256_hex(&text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_named_relative_to_the_working_directory_is_watched() {
    // `cd /etc/tollgate && tollgate run -c gw.toml`, with `keys_file = "keys.toml"`: removing a
    // consumer from the keys file revokes its key (a reload, counted), and an edit of the
    // config goes live, without a SIGHUP, whatever way the config was named.
    use crate::support::auth::key_digest;
    let a = backend("a").start().await;
    let keys = |consumers: &[(&str, &str)]| -> String {
        consumers
            .iter()
            .map(|(name, key)| format!("{name} = \"{}\"\n", key_digest(key)))
            .collect()
    };
    let body = format!(
        "[auth.partners]\ntype = \"api_key\"\nkeys_file = \"keys.toml\"\n\n{}auth = \"partners\"\n",
        one_route("old", "/old", "a", &a.target())
    );
    for name in ["gw.toml", "./gw.toml", "conf/gw.toml"] {
        let mut keys_path = None;
        let gw = GatewayHandle::start_binary_relative(&body, name, |dir| {
            let path = dir.join("keys.toml");
            std::fs::write(
                &path,
                keys(&[("acme", "acme-key-0001"), ("globex", "globex-key-2")]),
            )
            .unwrap();
            keys_path = Some(path);
        })
        .await;
        let keys_path = keys_path.unwrap();
        let status = |key: &'static str| {
            let gw = &gw;
            async move {
                crate::support::call(gw, "/old", &[("x-api-key", key)])
                    .await
                    .status
            }
        };
        assert_eq!(status("acme-key-0001").await, 200, "{name}");
        let reloads = metric(&gw, SUCCESS).await;

        // Revoked: acme's line goes, by rename as an editor writes.
        let tmp = keys_path.with_extension("tmp");
        std::fs::write(&tmp, keys(&[("globex", "globex-key-2")])).unwrap();
        std::fs::rename(&tmp, &keys_path).unwrap();
        let revoked = eventually(LIVE_WITHIN, || async {
            status("acme-key-0001").await == 401
        })
        .await;
        assert!(
            revoked,
            "{name}: the revoked key still works\n{}",
            gw.stderr()
        );
        assert_eq!(status("globex-key-2").await, 200, "{name}");
        assert!(
            metric(&gw, SUCCESS).await > reloads,
            "{name}: no reload counted"
        );

        // The config itself.
        let b = backend("b").start().await;
        gw.write_body(&format!(
            "{body}\n{}",
            one_route("new", "/new", "b", &b.target())
        ));
        let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
        assert!(took.is_some(), "{name}: the config edit was not picked up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_style_symlink_swap_is_picked_up() {
    // A mounted ConfigMap: tollgate.toml -> ..data/tollgate.toml, ..data -> ..v1; an update
    // writes ..v2 and renames a new ..data link over the old one. The config file's own
    // directory entry never changes.
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start(&one_route("old", "/old", "a", &a.target())).await;
    let dir = gw.dir.path();
    let v1 = dir.join("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::copy(&gw.config_path, v1.join("tollgate.toml")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tollgate.toml", dir.join(".cfg.tmp")).unwrap();
    std::fs::rename(dir.join(".cfg.tmp"), &gw.config_path).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        metric(&gw, SUCCESS).await,
        1.0,
        "same content: nothing applied"
    );

    let v2 = dir.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    let text = format!("{}{}", gw.header(), two_routes(&a, &b));
    std::fs::write(v2.join("tollgate.toml"), &text).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(took.is_some(), "symlink swap not picked up");
    assert_eq!(gw.config_hash().await, sha256_hex(&text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let slow = backend("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let fresh = backend("fresh").start().await;
    let gw = Arc::new(GatewayHandle::start(&one_route("before", "/x", "s", &slow.target())).await);
    let url = gw.url("/x");
    let request = tokio::spawn(async move {
        let r = client().get(url).send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok::<_, String>((status, r.text().await.map_err(|e| e.to_string())?))
    });
    assert!(eventually(Duration::from_secs(5), || async { slow.count() == 1 }).await);

    // Same path, another route name and upstream; applied while the request waits on `slow`.
    gw.write_body(&one_route("after", "/x", "f", &fresh.target()));
    // (Polling /x itself would wait on the slow backend; watch the hash instead.)
    let applied = eventually(LIVE_WITHIN, || async {
        gw.config_hash().await == file_hash(&gw)
    })
    .await;
    assert!(applied, "reload not applied");
    assert_eq!(
        get(&gw, "/x").await,
        Some((200, r#"{"backend":"fresh"}"#.into()))
    );
    assert!(
        !request.is_finished(),
        "the slow request ended before the reload was live"
    );

    let outcome = request.await.unwrap();
    assert_eq!(outcome, Ok((200, r#"{"backend":"slow"}"#.to_string())));
    assert_eq!(slow.count(), 1);
    // Accounted to the route it matched when it arrived.
    let by_route = |route: &'static str| {
        let gw = gw.clone();
        async move {
            prom::sum(
                &gw.metrics().await,
                "tollgate_requests_total",
                &[("route", route), ("status", "200")],
            )
        }
    };
    let counted = eventually(Duration::from_secs(2), || async {
        by_route("before").await == 1.0
    })
    .await;
    assert!(counted, "{:?}", by_route("before").await);
    assert!(by_route("after").await >= 1.0);
    // The access log is written in batches (every 200 ms): poll for the line.
    let logged = eventually(Duration::from_secs(2), || async {
        gw.access_log()
            .iter()
            .any(|l| l["route"] == "before" && l["status"] == 200)
    })
    .await;
    assert!(logged, "{:?}", gw.access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_starting_is_not_lost() {
    // Written after the initial load but before the watch runs: no file event will ever tell.
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let gw = GatewayHandle::start_then_edit_before_run(
        &one_route("old", "/old", "a", &a.target()),
        &two_routes(&a, &b),
    )
    .await;
    let took = wait_serving(&gw, "/new", r#"{"backend":"b"}"#, LIVE_WITHIN).await;
    assert!(
        took.is_some(),
        "the change made during start-up was never applied"
    );
    assert_eq!(gw.config_hash().await, file_hash(&gw));
    assert_eq!(metric(&gw, SUCCESS).await, 2.0);
}

/// The gateway's WARN log lines carrying a config warning about `key`: (trigger, message).
fn config_warnings_logged(gw: &GatewayHandle, key: &str) -> Vec<(String, String)> {
    let needle = format!(": warning: {key}: ");
    log_lines(gw)
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| {
            let message = l["message"].as_str()?;
            message.contains(&needle).then(|| {
                let trigger = l["trigger"].as_str().unwrap_or_default();
                (trigger.to_string(), message.to_string())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_warnings_are_logged_once_per_load() {
    let a = backend("a").start().await;
    let keys = tempfile::tempdir().unwrap();
    let keys_path = crate::support::auth::keys_file(&keys, &[("acme", "acme-key-0001")]);
    // A protected /admin/{*rest} whose bare "/admin" the public catch-all serves: one warning.
    let warned = format!(
        "[auth.partners]\ntype = \"api_key\"\nkeys_file = \"{keys_path}\"\n\n{}\n[routes.admin]\npath = \"/admin/{{*rest}}\"\nupstream = \"a\"\nauth = \"partners\"\n",
        one_route("public", "/{*rest}", "a", &a.target())
    );
    let gw = GatewayHandle::start_binary(&warned, "").await;
    const KEY: &str = "routes.admin.path";
    let logged = eventually(Duration::from_secs(5), || async {
        !config_warnings_logged(&gw, KEY).is_empty()
    })
    .await;
    assert!(logged, "no warning at start-up; stderr:\n{}", gw.stderr());

    // The same line `tollgate check` prints for the file.
    let check = check_config(&gw);
    assert_eq!(check.status.code(), Some(0));
    let check_line = String::from_utf8(check.stderr)
        .unwrap()
        .trim_end()
        .to_string();
    assert_eq!(
        config_warnings_logged(&gw, KEY),
        vec![("startup".to_string(), check_line.clone())]
    );

    // A reload that changes something else: the new config has the warning too, logged once.
    gw.write_body(&format!("{warned}\n# edited\n"));
    let relogged = eventually(LIVE_WITHIN, || async {
        config_warnings_logged(&gw, KEY).len() >= 2
    })
    .await;
    assert!(relogged, "no warning on reload; stderr:\n{}", gw.stderr());
    assert_eq!(
        config_warnings_logged(&gw, KEY),
        vec![
            ("startup".to_string(), check_line.clone()),
            ("file".to_string(), check_line)
        ]
    );

    // A route for "/admin" with the same auth: the next config has no warning to log.
    gw.write_body(&format!(
        "{warned}\n[routes.admin_home]\npath = \"/admin\"\nupstream = \"a\"\nauth = \"partners\"\n"
    ));
    let protected = eventually(LIVE_WITHIN, || async {
        get(&gw, "/admin").await.map(|r| r.0) == Some(401)
    })
    .await;
    assert!(protected, "reload not applied; stderr:\n{}", gw.stderr());
    // Give a (wrong) log line the time to be written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(config_warnings_logged(&gw, KEY).len(), 2, "{}", gw.stderr());
    assert_eq!(metric(&gw, SUCCESS).await, 3.0);
}

//! ConfigMap and Secret volumes as the kubelet updates them: each version of the files in a
//! timestamped directory, `..data` a symlink to the current one, every file a symlink through
//! `..data`; an update writes a new directory, renames a new `..data_tmp` link over `..data`
//! and removes the old directory. The file paths Tollgate was given never change. Under a
//! steady stream of requests, the change is live within 2 s and no request fails.

use crate::support::gateway::catch_all;
use crate::support::tls::{handshake, https_client, tls_section, TestCa};
use crate::support::{backend, client, eventually, free_port, GatewayHandle};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a swapped volume must be serving.
const LIVE_WITHIN: Duration = Duration::from_secs(2);
/// Bounds of every request loop.
const MAX_REQUESTS: usize = 5_000;
const MAX_LOOP_TIME: Duration = Duration::from_secs(30);

/// Writes version `n` of the volume's files into its own timestamped directory.
fn write_version(volume: &Path, n: u32, files: &[(&str, &str)]) -> String {
    let name = format!("..2026_12_06_10_00_00.{n}");
    std::fs::create_dir_all(volume.join(&name)).unwrap();
    for (file, text) in files {
        std::fs::write(volume.join(&name).join(file), text).unwrap();
    }
    name
}

/// Lays out a volume at `volume` holding `files`; returns the path of each file, in order.
fn mount(volume: &Path, files: &[(&str, &str)]) -> Vec<PathBuf> {
    let version = write_version(volume, 1, files);
    symlink(&version, volume.join("..data")).unwrap();
    files
        .iter()
        .map(|(file, _)| {
            let path = volume.join(file);
            symlink(Path::new("..data").join(file), &path).unwrap();
            path
        })
        .collect()
}

/// Replaces the volume's files with `files` (the same names) the way the kubelet does.
fn swap(volume: &Path, files: &[(&str, &str)]) {
    let old = std::fs::read_link(volume.join("..data")).unwrap();
    let n: u32 = old
        .to_str()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let version = write_version(volume, n + 1, files);
    symlink(&version, volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join(old)).unwrap();
}

/// What a request loop saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
}

/// Runs `attempt` until `stop` is set (bounded); each `Err` is a failure.
fn request_loop<F, Fut>(stop: Arc<AtomicBool>, mut attempt: F) -> tokio::task::JoinHandle<Tally>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let end = Instant::now() + MAX_LOOP_TIME;
        for _ in 0..MAX_REQUESTS {
            if stop.load(Ordering::SeqCst) || Instant::now() >= end {
                break;
            }
            match attempt().await {
                Ok(()) => tally.ok += 1,
                Err(e) => tally.failures.push(e),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tally
    })
}

/// Stops the loops and asserts that they sent requests and that none failed.
async fn no_failures(stop: &AtomicBool, loops: Vec<tokio::task::JoinHandle<Tally>>) {
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let t = l.await.unwrap();
        assert!(t.ok > 10, "too few requests: {t:?}");
        assert!(
            t.failures.is_empty(),
            "{} failed: {:?}",
            t.failures.len(),
            t.failures
        );
    }
}

/// GET `url` with `client`: Ok when the answer is 200 with `body`.
async fn expect(client: &reqwest::Client, url: &str, body: &str) -> Result<(), String> {
    let r = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let got = r.text().await.map_err(|e| format!("{e:?}"))?;
    if status == 200 && got == body {
        Ok(())
    } else {
        Err(format!("{url}: {status} {got}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_update_is_live_within_2s_without_a_failed_request() {
    let a = backend("a").start().await;
    let routes = catch_all(&a.target(), "");
    let gw = GatewayHandle::start_placed(&routes, "", |dir, text| {
        mount(&dir.join("config"), &[("tollgate.toml", text)]).remove(0)
    })
    .await;
    let volume = gw.dir.path().join("config");
    assert_eq!(gw.config_path, volume.join("tollgate.toml"));

    let stop = Arc::new(AtomicBool::new(false));
    let url = gw.url("/old");
    let keep_alive = client();
    let loops = vec![request_loop(stop.clone(), move || {
        let (c, url) = (keep_alive.clone(), url.clone());
        async move { expect(&c, &url, r#"{"backend":"a"}"#).await }
    })];
    tokio::time::sleep(Duration::from_millis(200)).await;

    let b = backend("b").start().await;
    let next = format!(
        "{}{routes}\n[upstreams.b]\ntargets = [\"{}\"]\n\n[routes.new]\npath = \"/new\"\nupstream = \"b\"\n",
        gw.header(),
        b.target()
    );
    let swapped = Instant::now();
    swap(&volume, &[("tollgate.toml", &next)]);
    let live = eventually(LIVE_WITHIN, || async {
        crate::support::get(&gw.url("/new"))
            .await
            .is_ok_and(|a| a.status == 200 && a.body == r#"{"backend":"b"}"#)
    })
    .await;
    assert!(
        live,
        "the new route was not live {:?} after the swap",
        swapped.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    no_failures(&stop, loops).await;
    assert_eq!(gw.config_hash().await, crate::support::sha256_hex(&next));
    let versions: Vec<_> = std::fs::read_dir(&volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("..2026"))
        .collect();
    assert_eq!(versions, ["..2026_12_06_10_00_00.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_secret_update_is_live_within_2s_without_a_failed_request() {
    let ca = TestCa::new("Tollgate test CA");
    let first = ca.leaf(&["localhost"], 1001);
    let second = ca.leaf(&["localhost"], 1002);
    let be = backend("users").start().await;
    let secrets = tempfile::tempdir().unwrap();
    let volume = secrets.path().join("tls");
    let paths = mount(
        &volume,
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    );
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = GatewayHandle::start_with(
        &catch_all(&be.target(), ""),
        &tls_section(
            tls_addr,
            paths[0].to_str().unwrap(),
            paths[1].to_str().unwrap(),
        ),
    )
    .await;
    let up = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(tls_addr).await.is_ok()
    })
    .await;
    assert!(up, "HTTPS listener not up");
    assert_eq!(
        handshake(&ca, tls_addr, &[b"h2"]).await.unwrap().leaf,
        first.der
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Requests on a kept-alive HTTPS connection, and fresh handshakes: each must succeed and
    // present one of the two certificates.
    let https = https_client(&ca, tls_addr, true);
    let url = format!("https://localhost:{}/users/1", tls_addr.port());
    let ca = Arc::new(ca);
    let (handshake_ca, known) = (ca.clone(), [first.der.clone(), second.der.clone()]);
    let loops = vec![
        request_loop(stop.clone(), move || {
            let (c, url) = (https.clone(), url.clone());
            async move { expect(&c, &url, r#"{"backend":"users"}"#).await }
        }),
        request_loop(stop.clone(), move || {
            let (ca, known) = (handshake_ca.clone(), known.clone());
            async move {
                let h = handshake(&ca, tls_addr, &[b"h2"]).await?;
                if known.contains(&h.leaf) {
                    Ok(())
                } else {
                    Err("an unknown certificate".to_string())
                }
            }
        }),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;

    let swapped = Instant::now();
    swap(
        &volume,
        &[("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)],
    );
    let live = eventually(LIVE_WITHIN, || async {
        matches!(handshake(&ca, tls_addr, &[b"h2"]).await, Ok(h) if h.leaf == second.der)
    })
    .await;
    assert!(
        live,
        "the renewed certificate was not presented {:?} after the swap",
        swapped.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    no_failures(&stop, loops).await;
    // Plain HTTP kept serving too.
    let r = client().get(gw.url("/users/2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

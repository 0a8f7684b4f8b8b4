//! TLS as a user sees it: the HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN, next to the plain
//! listener), its certificate swapped by a reload for new connections (and kept when the new one
//! is broken), and upstreams reached over verified HTTPS (`tls = true`, `sni`, `ca_file`),
//! requests and health checks alike. Every certificate is made at run time by a test CA.

use crate::support::gateway::catch_all;
use crate::support::tls::{handshake, https_client, start_https, Leaf, TestCa};
use crate::support::{backend, client, eventually, free_port, Backend, GatewayHandle};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const FAILURE: &str = r#"tollgate_config_reloads_total{result="failure"}"#;

/// A gateway in front of backend `users`, with an HTTPS listener (its address is returned) that
/// presents a leaf for `names` signed by `ca`; the certificate files live in the temp dir.
async fn users_over_https(
    ca: &TestCa,
    names: &[&str],
) -> (GatewayHandle, SocketAddr, Backend, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let be = backend("users").start().await;
    let (gw, tls_addr) = start_https(
        &catch_all(&be.target(), ""),
        certs.path(),
        &ca.leaf(names, 1),
    )
    .await;
    (gw, tls_addr, be, certs)
}

/// `GET /users/1` over the HTTPS listener at `addr`, trusting `ca`.
async fn get_user_over_https(ca: &TestCa, addr: SocketAddr, http1_only: bool) -> reqwest::Response {
    https_client(ca, addr, http1_only)
        .get(format!("https://localhost:{}/users/1", addr.port()))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn https_listener_serves_http2_and_http1_next_to_the_plain_listener() {
    let ca = TestCa::new("Tollgate test CA");
    let (gw, tls_addr, be, _certs) = users_over_https(&ca, &["localhost", "127.0.0.1"]).await;

    // ALPN picks HTTP/2 when the client offers it; the chain verifies against the test CA.
    let r = get_user_over_https(&ca, tls_addr, false).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"users"}"#);

    // A client that only speaks HTTP/1.1 falls back to it.
    let r = get_user_over_https(&ca, tls_addr, true).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"users"}"#);

    // The plain listener keeps working at the same time.
    let r = client().get(gw.url("/users/2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"users"}"#);

    // The backend is told which scheme each client used.
    let protos: Vec<Option<String>> = be
        .received()
        .iter()
        .map(|r| r.header("x-forwarded-proto").map(str::to_string))
        .collect();
    assert_eq!(
        protos,
        vec![
            Some("https".to_string()),
            Some("https".to_string()),
            Some("http".to_string())
        ]
    );

    // What ALPN itself says, seen by a bare handshake.
    let h2 = handshake(&ca, tls_addr, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let h1 = handshake(&ca, tls_addr, &[b"http/1.1"]).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn https_listener_certificate_is_not_trusted_by_a_client_of_another_ca() {
    let ca = TestCa::new("Tollgate test CA");
    let stranger = TestCa::new("Some other CA");
    let (_gw, tls_addr, be, _certs) = users_over_https(&ca, &["localhost"]).await;
    let err = handshake(&stranger, tls_addr, &[b"h2"]).await.err();
    assert!(
        err.as_deref().is_some_and(|e| e.contains("certificate")),
        "{err:?}"
    );
    assert!(handshake(&ca, tls_addr, &[b"h2"]).await.is_ok());
    assert_eq!(be.count(), 0);
}

/// Waits (bounded) until a fresh handshake presents `leaf`.
async fn wait_presented(ca: &TestCa, addr: SocketAddr, leaf: &Leaf) -> bool {
    eventually(Duration::from_secs(5), || async {
        matches!(handshake(ca, addr, &[b"h2"]).await, Ok(h) if h.leaf == leaf.der)
    })
    .await
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_and_rejects_a_broken_one() {
    let ca = TestCa::new("Tollgate test CA");
    let certs = tempfile::tempdir().unwrap();
    let be = backend("users").start().await;
    let body = catch_all(&be.target(), "");
    let first = ca.leaf(&["localhost"], 101);
    let (gw, tls_addr) = start_https(&body, certs.path(), &first).await;
    let hs = handshake(&ca, tls_addr, &[b"h2"]).await.unwrap();
    assert_eq!(hs.leaf, first.der);

    // New files next to the config, named by relative paths: resolved against the config's
    // directory, not the working directory. The HTTPS listen address changes too, which needs
    // a restart: the running listener stays where it is and gets the new certificate.
    let second = ca.leaf(&["localhost"], 202);
    second.write(gw.dir.path(), "next");
    let old_cert = certs.path().join("server.crt");
    let old_key = certs.path().join("server.key");
    let moved: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let header = gw
        .header()
        .replace(old_cert.to_str().unwrap(), "next.crt")
        .replace(old_key.to_str().unwrap(), "next.key")
        .replace(&tls_addr.to_string(), &moved.to_string());
    assert_ne!(header, gw.header());
    let config = format!("{header}{body}");
    gw.write_raw(&config);
    assert!(
        wait_presented(&ca, tls_addr, &second).await,
        "new handshakes should present the reloaded certificate"
    );
    assert!(
        tokio::net::TcpStream::connect(moved).await.is_err(),
        "server.tls.listen is restart-only"
    );

    // A certificate whose key does not match: rejected, the running certificate keeps serving.
    let failures = gw.metric(FAILURE).await.unwrap_or(0.0);
    let third = ca.leaf(&["localhost"], 303);
    std::fs::write(gw.dir.path().join("next.crt"), &third.cert_pem).unwrap();
    gw.write_raw(&config); // same text: only the certificate file changed
    let rejected = eventually(Duration::from_secs(5), || async {
        gw.metric(FAILURE).await.unwrap_or(0.0) > failures
    })
    .await;
    assert!(rejected, "a key that does not match must be rejected");
    let hs = handshake(&ca, tls_addr, &[b"h2"]).await.unwrap();
    assert_eq!(
        hs.leaf, second.der,
        "the previous certificate keeps serving"
    );
    let r = get_user_over_https(&ca, tls_addr, false).await;
    assert_eq!(r.status(), 200);

    // A renewal in place (same paths, same config text) with the matching key is applied.
    third.write(gw.dir.path(), "next");
    gw.write_raw(&config);
    assert!(
        wait_presented(&ca, tls_addr, &third).await,
        "a certificate renewed in place should be picked up by a reload"
    );
}

/// An upstream over HTTPS to `target`, trusting the CA in `ca_file`, with an optional `sni` and
/// extra lines.
fn tls_upstream(target: &str, ca_file: &Path, sni: Option<&str>, extra: &str) -> String {
    let sni = sni.map(|s| format!("sni = \"{s}\"\n")).unwrap_or_default();
    format!(
        "[upstreams.users]\ntargets = [\"{target}\"]\ntls = true\n{sni}ca_file = \"{}\"\n{extra}\n[routes.r]\npath = \"/{{*rest}}\"\nupstream = \"users\"\n",
        ca_file.display()
    )
}

/// An HTTPS backend whose certificate for `users.internal` is issued by `issuer`.
async fn https_backend(name: &str, issuer: &TestCa) -> Backend {
    backend(name)
        .tls(issuer.leaf(&["users.internal"], 1).acceptor())
        .start()
        .await
}

/// A gateway in front of `target` over HTTPS, trusting `ca_file` for `sni = "users.internal"`;
/// `extra` goes into the upstream's section.
async fn trusting_gateway(target: &str, ca_file: &Path, extra: &str) -> GatewayHandle {
    GatewayHandle::start(&tls_upstream(
        target,
        ca_file,
        Some("users.internal"),
        extra,
    ))
    .await
}

fn write_ca(dir: &Path, ca: &TestCa) -> std::path::PathBuf {
    let path = dir.join("internal-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

#[tokio::test]
async fn upstream_over_https_verified_with_ca_file_and_sni() {
    let ca = TestCa::new("Internal CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let be = https_backend("users", &ca).await;
    let gw = trusting_gateway(&be.target(), &ca_file, "").await;
    let r = client().get(gw.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"backend":"users"}"#);
    assert_eq!(be.received()[0].uri, "/users/1");
}

#[tokio::test]
async fn upstream_sni_defaults_to_the_target_host_name() {
    let ca = TestCa::new("Internal CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let be = backend("users")
        .tls(ca.leaf(&["localhost"], 1).acceptor())
        .start()
        .await;
    let target = format!("localhost:{}", be.addr.port());
    let gw = GatewayHandle::start(&tls_upstream(&target, &ca_file, None, "")).await;
    let r = client().get(gw.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(be.count(), 1);
}

/// 502 problem+json, nothing reached the backend, and the attempt counts as a connect error.
async fn assert_verification_fails(gw: &GatewayHandle, be: &Backend) {
    let r = client().get(gw.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert_eq!(be.count(), 0, "no request may reach an unverified upstream");
    let sample = format!(
        "tollgate_upstream_requests_total{{outcome=\"connect_error\",target=\"{}\",upstream=\"users\"}}",
        be.target()
    );
    assert_eq!(gw.metric(&sample).await, Some(1.0));
}

/// A gateway trusting "Internal CA" for `sni = "users.internal"`, in front of an HTTPS backend
/// whose certificate is issued for `name` by `issuer` (`None`: the trusted CA itself):
/// verification must fail.
async fn assert_backend_refused(issuer: Option<&TestCa>, name: &str) {
    let ca = TestCa::new("Internal CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let issuer = issuer.unwrap_or(&ca);
    let be = backend("users")
        .tls(issuer.leaf(&[name], 1).acceptor())
        .start()
        .await;
    let gw = trusting_gateway(&be.target(), &ca_file, "").await;
    assert_verification_fails(&gw, &be).await;
}

#[tokio::test]
async fn upstream_certificate_from_another_ca_is_a_502() {
    assert_backend_refused(Some(&TestCa::new("Some other CA")), "users.internal").await;
}

#[tokio::test]
async fn upstream_certificate_for_another_name_is_a_502() {
    // Issued by the trusted CA, but for another host name.
    assert_backend_refused(None, "orders.internal").await;
}

#[tokio::test]
async fn health_checks_use_https_and_verify_the_certificate() {
    let ca = TestCa::new("Internal CA");
    let stranger = TestCa::new("Some other CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let checks = "[upstreams.users.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_after = 1\n";
    // A trusted backend receives the checks over HTTPS (a plain-text check would never reach
    // its HTTP layer) and stays in service.
    let good = https_backend("users", &ca).await;
    let gw = trusting_gateway(&good.target(), &ca_file, checks).await;
    let checked = eventually(Duration::from_secs(5), || async {
        good.received()
            .iter()
            .filter(|r| r.uri == "/healthz")
            .count()
            >= 2
    })
    .await;
    assert!(checked, "health checks should reach the backend over HTTPS");
    let r = client().get(gw.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(gw);

    // An untrusted backend fails its checks: marked unhealthy, requests get 503, not a 502
    // after a doomed handshake.
    let bad = https_backend("users", &stranger).await;
    let gw = trusting_gateway(&bad.target(), &ca_file, checks).await;
    let sample = format!(
        "tollgate_upstream_target_healthy{{target=\"{}\",upstream=\"users\"}}",
        bad.target()
    );
    let unhealthy = eventually(Duration::from_secs(5), || async {
        gw.metric(&sample).await == Some(0.0)
    })
    .await;
    assert!(
        unhealthy,
        "an unverifiable target must fail its health checks"
    );
    let r = client().get(gw.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(bad.count(), 0);
}

#[tokio::test]
async fn a_target_failing_verification_is_retried_on_another_target() {
    let ca = TestCa::new("Internal CA");
    let stranger = TestCa::new("Some other CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let bad = https_backend("bad", &stranger).await;
    let good = backend("good")
        .tls(ca.leaf(&["users.internal"], 2).acceptor())
        .start()
        .await;
    // Round robin starts with the first target: the untrusted one.
    let body = format!(
        "[upstreams.users]\ntargets = [\"{}\", \"{}\"]\ntls = true\nsni = \"users.internal\"\nca_file = \"{}\"\n\n[routes.r]\npath = \"/{{*rest}}\"\nupstream = \"users\"\nretry = {{ attempts = 2, backoff = \"1ms\", max_backoff = \"1ms\" }}\n",
        bad.target(),
        good.target(),
        ca_file.display()
    );
    let gw = GatewayHandle::start(&body).await;
    for _ in 0..4 {
        let r = client().get(gw.url("/users/1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), r#"{"backend":"good"}"#);
    }
    assert_eq!(bad.count(), 0);
    assert_eq!(good.count(), 4);
    let retries = r#"tollgate_upstream_retries_total{reason="connect_error",upstream="users"}"#;
    assert!(
        gw.metric(retries).await.unwrap_or(0.0) >= 1.0,
        "{}",
        gw.metrics().await
    );
}

#[tokio::test]
async fn plain_http_or_garbage_on_the_https_port_is_dropped_and_service_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("Tollgate test CA");
    let (_gw, tls_addr, be, _certs) = users_over_https(&ca, &["localhost"]).await;
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = vec![0u8; 4096];
        // The gateway closes the connection (possibly after a TLS alert), never answers HTTP.
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the connection should be closed");
        assert!(!read.starts_with(b"HTTP/"), "{read:?}");
    }
    let r = get_user_over_https(&ca, tls_addr, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(be.count(), 1);
}

#[test]
fn check_reads_certificate_files_relative_to_the_config_file() {
    let ca = TestCa::new("Tollgate test CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    ca.leaf(&["localhost"], 1)
        .write(&dir.path().join("certs"), "server");
    std::fs::write(dir.path().join("certs/internal-ca.pem"), ca.pem()).unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncert_file = \"certs/server.crt\"\nkey_file = \"certs/server.key\"\n\n[upstreams.users]\ntargets = [\"127.0.0.1:9443\"]\ntls = true\nsni = \"users.internal\"\nca_file = \"certs/internal-ca.pem\"\n\n[routes.r]\npath = \"/\"\nupstream = \"users\"\n",
    )
    .unwrap();
    // Run from another directory: the paths must not depend on the working directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&config)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

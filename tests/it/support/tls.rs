//! Certificates made at run time (rcgen: test CAs and leaf certificates signed by them), a
//! rustls server acceptor for HTTPS backends, and TLS clients that trust a test CA: reqwest for
//! requests, a bare handshake to see which certificate and protocol a listener offers.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by a [`TestCa`], with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) with this serial number.
    pub fn leaf(&self, names: &[&str], serial: u64) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A rustls acceptor serving this certificate (HTTP/1.1), for an HTTPS backend.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS client trusting only `ca`, sending requests for `localhost` to `addr`.
/// `http1_only`: offer only HTTP/1.1 by ALPN; otherwise h2 is offered first.
pub fn https_client(ca: &TestCa, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy();
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// What a TLS listener showed in one fresh handshake as `localhost`.
pub struct Handshake {
    /// The leaf certificate it presented.
    pub leaf: CertificateDer<'static>,
    /// The protocol chosen by ALPN.
    pub alpn: Option<Vec<u8>>,
}

/// A new connection and TLS handshake to `addr`, verifying the chain against `ca` for the name
/// `localhost` and offering `alpn`. `Err` carries the handshake error.
pub async fn handshake(ca: &TestCa, addr: SocketAddr, alpn: &[&[u8]]) -> Result<Handshake, String> {
    let attempt = async {
        let tls = connect(ca, addr, alpn).await?;
        let (_, conn) = tls.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no peer certificate")?;
        Ok(Handshake {
            leaf,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("handshake timed out".into()))
}

/// A new TLS connection to `addr` as `localhost`, verified against `ca`, offering `alpn`.
pub async fn connect(
    ca: &TestCa,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// `[server.tls]` lines for the gateway's `[server]` section (a sub-table: goes last).
pub fn tls_section(addr: SocketAddr, cert: &str, key: &str) -> String {
    format!("[server.tls]\nlisten = [\"{addr}\"]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n")
}

/// Starts a gateway whose HTTPS listener serves `leaf` (files in `certs`, absolute paths), and
/// waits until the HTTPS listener accepts connections.
pub async fn start_https(
    body: &str,
    certs: &Path,
    leaf: &Leaf,
) -> (super::GatewayHandle, SocketAddr) {
    start_https_with(body, "", certs, leaf).await
}

/// [`start_https`] with more `[server]` lines (`server_extra`, put before `[server.tls]`).
pub async fn start_https_with(
    body: &str,
    server_extra: &str,
    certs: &Path,
    leaf: &Leaf,
) -> (super::GatewayHandle, SocketAddr) {
    let (cert, key) = leaf.write(certs, "server");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
    let extra = format!(
        "{server_extra}\n{}",
        tls_section(tls_addr, cert.to_str().unwrap(), key.to_str().unwrap())
    );
    let gw = super::GatewayHandle::start_with(body, &extra).await;
    let up = super::eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(tls_addr).await.is_ok()
    })
    .await;
    assert!(up, "HTTPS listener not up");
    (gw, tls_addr)
}

/// A redis-server that also listens with TLS (certificate for `names`, signed by `ca`); returns
/// it and its TLS port. `client_certs`: clients must present a certificate signed by `ca`
/// (`tls-auth-clients yes`, Redis' own default).
pub fn tls_redis(
    ca: &TestCa,
    names: &[&str],
    client_certs: bool,
) -> (super::redis::RedisServer, u16) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(names, 1).write(dir.path(), "redis");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let [tls_port] = super::gateway::free_ports::<1>();
    let (cert, key, ca_file) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca_file.display().to_string(),
    );
    let server = super::redis::RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        if client_certs { "yes" } else { "no" },
    ]);
    // redis-server read the files at start-up.
    drop(dir);
    (server, tls_port)
}

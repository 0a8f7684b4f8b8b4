//! Connections to Redis: made from `redis_url` (TCP, TLS with `rediss://` with certificate and
//! host name verified, or a Unix socket; AUTH and SELECT sent at once), then written and read
//! by whoever drives them ([`super::mux`]).

use super::resp::{self, ProtocolError, Reply, MAX_REPLY_BYTES};
use super::{SettingError, TlsMaterial};
use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Why a call on a connection failed.
#[derive(Debug)]
pub enum ConnError {
    /// Connecting, writing or reading failed (refused, reset, closed).
    Io(std::io::Error),
    /// The bytes received are not a reply.
    Protocol(ProtocolError),
    /// Redis answered the connection set-up with an error (wrong password, bad database).
    Setup(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Protocol(e) => write!(f, "{e}"),
            ConnError::Setup(why) => f.write_str(why),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> Self {
        ConnError::Protocol(e)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, with its read buffer.
pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

impl Conn {
    /// Writes all of `bytes` (one or more commands).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        Ok(self.io.write_all(bytes).await?)
    }

    /// The next whole reply already received, if any; no I/O.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ConnError> {
        match resp::parse(&self.buf)? {
            Some((reply, used)) => {
                self.buf.advance(used);
                Ok(Some(reply))
            }
            None if self.buf.len() > MAX_REPLY_BYTES => {
                Err(ProtocolError("reply too large".into()).into())
            }
            None => Ok(None),
        }
    }

    /// Reads what has arrived (waiting for at least one byte). Cancel-safe: nothing read is
    /// lost if the future is dropped. A closed connection is an error.
    pub async fn read_more(&mut self) -> Result<(), ConnError> {
        self.buf.reserve(4096);
        if self.io.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some(reply) = self.next_reply()? {
                return Ok(reply);
            }
            self.read_more().await?;
        }
    }
}

/// Makes connections: connects, authenticates and selects the database of `redis_url`.
pub struct Connector {
    info: ConnectionInfo,
    /// For `rediss://`: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// Parses `redis_url` (`redis://`, `rediss://`, `redis+unix://`, `unix://`); no I/O. For
    /// `rediss://`, the server's certificate must chain to the CA in `tls` when given, else to
    /// the system's roots or the Mozilla roots; `tls` may hold a client certificate to present.
    /// Err says what is wrong with which setting.
    pub fn new(redis_url: &str, tls: &TlsMaterial) -> Result<Connector, SettingError> {
        // The redis crate is built without TLS, so it parses a rediss:// URL as redis://; the
        // TLS is this module's.
        let tls_url = redis_url.strip_prefix("rediss://");
        if tls_url.is_some()
            && redis::parse_redis_url(redis_url).is_some_and(|u| u.fragment().is_some())
        {
            return Err(SettingError::new("redis_url", "certificate verification cannot be turned off (#insecure); trust a private CA with [cluster] ca_file instead"));
        }
        let info = match tls_url {
            Some(rest) => format!("redis://{rest}").into_connection_info(),
            None => redis_url.into_connection_info(),
        }
        .map_err(|e| SettingError::new("redis_url", e.to_string()))?;
        let tls = match (tls_url, info.addr()) {
            (Some(_), ConnectionAddr::Tcp(host, _)) => {
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    SettingError::new(
                        "redis_url",
                        format!("\"{host}\" is not a host name for TLS"),
                    )
                })?;
                Some((TlsConnector::from(Arc::new(tls_client(tls)?)), name))
            }
            _ if tls.ca_pem.is_some() => {
                return Err(SettingError::new(
                    "ca_file",
                    "only used with rediss:// (TLS) URLs",
                ));
            }
            _ if tls.client_cert_pem.is_some() => {
                return Err(SettingError::new(
                    "cert_file",
                    "only used with rediss:// (TLS) URLs",
                ));
            }
            _ => None,
        };
        Ok(Connector { info, tls })
    }

    /// `host:port` or the socket path, for logs (never the URL: it may hold a password).
    pub fn address(&self) -> String {
        self.info.addr().to_string()
    }

    async fn open(&self) -> Result<Box<dyn Io>, ConnError> {
        Ok(match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                // Each command is one write answered by one reply: never wait to coalesce.
                stream.set_nodelay(true)?;
                match &self.tls {
                    Some((tls, name)) => Box::new(tls.connect(name.clone(), stream).await?),
                    None => Box::new(stream),
                }
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            other => {
                return Err(ConnError::Setup(format!(
                    "unsupported Redis address {other}"
                )))
            }
        })
    }

    /// A new connection, ready for commands (AUTH and SELECT done).
    pub async fn connect(&self) -> Result<Conn, ConnError> {
        let mut conn = Conn {
            io: self.open().await?,
            buf: BytesMut::with_capacity(4096),
        };
        let commands = self.setup_commands();
        if commands.is_empty() {
            return Ok(conn);
        }
        let batch: Vec<u8> = commands.iter().flat_map(|(_, c)| c.clone()).collect();
        conn.write(&batch).await?;
        for (name, _) in &commands {
            // The message never echoes the command: AUTH carries the password.
            if let Reply::Error(why) = conn.read_reply().await? {
                return Err(ConnError::Setup(format!("{name} refused: {why}")));
            }
        }
        Ok(conn)
    }

    /// AUTH and SELECT from the URL, sent together and answered in order.
    fn setup_commands(&self) -> Vec<(&'static str, Vec<u8>)> {
        let settings = self.info.redis_settings();
        let mut commands = Vec::new();
        if let Some(password) = settings.password() {
            let auth = match settings.username() {
                Some(user) => resp::encode(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => resp::encode(&[b"AUTH", password.as_bytes()]),
            };
            commands.push(("AUTH", auth));
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            commands.push(("SELECT", resp::encode(&[b"SELECT", db.as_bytes()])));
        }
        commands
    }
}

/// The TLS client for `rediss://`: trusts the CA of `tls` alone when given (a private CA),
/// else the system's roots plus the Mozilla roots (so a container without a CA bundle still
/// works); presents the client certificate of `tls` when given.
fn tls_client(tls: &TlsMaterial) -> Result<rustls::ClientConfig, SettingError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.ca_pem.as_deref() {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    SettingError::new("ca_file", format!("not PEM certificates: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    SettingError::new("ca_file", format!("cannot use this certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(SettingError::new("ca_file", "holds no certificate"));
            }
        }
        None => {
            // Unreadable system certificates are skipped: the Mozilla roots remain.
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingError::new("redis_url", format!("TLS to Redis: {e}")))?
        .with_root_certificates(roots);
    match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    SettingError::new("cert_file", format!("not PEM certificates: {e}"))
                })?;
            if chain.is_empty() {
                return Err(SettingError::new("cert_file", "holds no certificate"));
            }
            // The message never quotes the key.
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|_| SettingError::new("key_file", "holds no PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SettingError::new("key_file", format!("does not fit cert_file: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(SettingError::new(
            "cert_file",
            "needs key_file, and key_file needs cert_file",
        )),
    }
}

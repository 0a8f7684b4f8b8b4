//! Connections to Redis driven by the request's own task: the request writes its command and
//! waits for the reply on the socket itself, so a check costs one round trip and no hand-off to
//! a connection task (two cross-thread wake-ups per call with a multiplexed client). A pool
//! (deadpool) lends each call its own connection and reconnects by making new ones. TCP, TLS
//! (`rediss://`, certificate and host name verified) or a Unix socket.

use super::resp::{self, ProtocolError, Reply, MAX_REPLY_BYTES};
use bytes::{Buf, BytesMut};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// The pool lending connections to calls.
pub type Pool = managed::Pool<Connector>;

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
    /// A command was written and its reply not read in full: the call was cut short (timeout),
    /// so the reply may still arrive and the connection must never be lent again.
    in_flight: bool,
}

impl Conn {
    /// Sends one command and reads its reply. An error reply from Redis is `Ok(Reply::Error)`.
    pub async fn call(&mut self, command: &[u8]) -> Result<Reply, ConnError> {
        self.in_flight = true;
        self.io.write_all(command).await?;
        let reply = self.read_reply().await?;
        self.in_flight = false;
        Ok(reply)
    }

    /// Whether any byte of a reply has arrived: a call that failed before that never reached
    /// Redis or was never answered, which tells a dead idle connection from a failed command.
    pub fn received_nothing(&self) -> bool {
        self.buf.is_empty()
    }

    async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some((reply, used)) = resp::parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(ProtocolError("reply too large".into()).into());
            }
            self.buf.reserve(4096);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }
}

/// Makes connections for the pool: connects, authenticates and selects the database of
/// `redis_url`, and refuses to lend a connection whose last call was cut short.
pub struct Connector {
    info: ConnectionInfo,
    /// For `rediss://`: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// Parses `redis_url` (`redis://`, `rediss://`, `redis+unix://`, `unix://`); no I/O. For
    /// `rediss://`, the server's certificate must chain to a CA in `ca_pem` when given, else to
    /// the system's roots or the Mozilla roots. Err says what is wrong with which setting.
    pub fn new(redis_url: &str, ca_pem: Option<&[u8]>) -> Result<Connector, String> {
        // The redis crate is built without TLS, so it parses a rediss:// URL as redis://; the
        // TLS is this module's.
        let tls_url = redis_url.strip_prefix("rediss://");
        if tls_url.is_some()
            && redis::parse_redis_url(redis_url).is_some_and(|u| u.fragment().is_some())
        {
            return Err("redis_url: certificate verification cannot be turned off (#insecure); trust a private CA with [cluster] ca_file instead".into());
        }
        let info = match tls_url {
            Some(rest) => format!("redis://{rest}").into_connection_info(),
            None => redis_url.into_connection_info(),
        }
        .map_err(|e| format!("redis_url: {e}"))?;
        let tls = match (tls_url, info.addr()) {
            (Some(_), ConnectionAddr::Tcp(host, _)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| format!("redis_url: \"{host}\" is not a host name for TLS"))?;
                Some((TlsConnector::from(Arc::new(tls_client(ca_pem)?)), name))
            }
            _ if ca_pem.is_some() => {
                return Err("ca_file: only used with rediss:// (TLS) URLs".into());
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

impl managed::Manager for Connector {
    type Type = Conn;
    type Error = ConnError;

    async fn create(&self) -> Result<Conn, ConnError> {
        let mut conn = Conn {
            io: self.open().await?,
            buf: BytesMut::with_capacity(4096),
            in_flight: false,
        };
        let commands = self.setup_commands();
        if commands.is_empty() {
            return Ok(conn);
        }
        let batch: Vec<u8> = commands.iter().flat_map(|(_, c)| c.clone()).collect();
        conn.in_flight = true;
        conn.io.write_all(&batch).await?;
        for (name, _) in &commands {
            // The message never echoes the command: AUTH carries the password.
            if let Reply::Error(why) = conn.read_reply().await? {
                return Err(ConnError::Setup(format!("{name} refused: {why}")));
            }
        }
        conn.in_flight = false;
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<ConnError> {
        if conn.in_flight || !conn.buf.is_empty() {
            return Err(RecycleError::message("last call was cut short"));
        }
        Ok(())
    }
}

/// The TLS client for `rediss://`: trusts `ca_pem` alone when given (a private CA), else the
/// system's roots plus the Mozilla roots (so a container without a CA bundle still works).
fn tls_client(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca_file: not PEM certificates: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file: cannot use this certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca_file: holds no certificate".into());
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
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS to Redis: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A pool of at most `max_connections` connections, made on demand.
pub fn pool(connector: Connector, max_connections: usize) -> Result<Pool, String> {
    Pool::builder(connector)
        .max_size(max_connections)
        .build()
        .map_err(|e| format!("Redis connection pool: {e}"))
}

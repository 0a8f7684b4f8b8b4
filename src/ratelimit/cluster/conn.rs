//! Connections to Redis driven by the request's own task: the request writes its command and
//! waits for the reply on the socket itself, so a check costs one round trip and no hand-off to
//! a connection task (two cross-thread wake-ups per call with a multiplexed client). A pool
//! (deadpool) lends each call its own connection and reconnects by making new ones.

use super::resp::{self, ProtocolError, Reply, MAX_REPLY_BYTES};
use bytes::{Buf, BytesMut};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
}

impl Connector {
    /// Parses `redis_url` (`redis://`, `redis+unix://`, `unix://`); no I/O.
    pub fn new(redis_url: &str) -> Result<Connector, String> {
        let info = redis_url
            .into_connection_info()
            .map_err(|e| format!("redis_url: {e}"))?;
        if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
            return Err(
                "redis_url: rediss:// (TLS to Redis) is not supported; use redis:// on a private network or a Unix socket"
                    .into(),
            );
        }
        Ok(Connector { info })
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
                Box::new(stream)
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

/// A pool of at most `max_connections` connections, made on demand.
pub fn pool(connector: Connector, max_connections: usize) -> Result<Pool, String> {
    Pool::builder(connector)
        .max_size(max_connections)
        .build()
        .map_err(|e| format!("Redis connection pool: {e}"))
}

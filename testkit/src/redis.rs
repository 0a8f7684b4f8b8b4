//! A real `redis-server` for tests and benches: on a free 127.0.0.1 port, in a temp dir, without
//! persistence; it can be stopped and restarted on the same port, and is killed on drop.

use crate::ports;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer PING.
const START_LIMIT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments, kept across restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Whether `redis-server` can be run here.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts a server and waits until it answers PING; panics (with its log) if it cannot.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (`"--requirepass"`,
    /// `"pw"`, ...). `{dir}` in an argument is replaced by the server's temp dir.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let [port] = ports::free_ports::<1>();
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra: Vec::new(),
        };
        let dir = server.dir.path().display().to_string();
        server.extra = extra.iter().map(|a| a.replace("{dir}", &dir)).collect();
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's temp dir (for a Unix socket started with `{dir}/...`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers, as a hung Redis.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port (stopping it first if it runs): an empty
    /// Redis, its script cache included.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.child = Some(child);
        let end = Instant::now() + START_LIMIT;
        while !self.answers_ping() {
            if Instant::now() >= end {
                self.stop();
                panic!(
                    "redis-server on port {} did not answer PING: {}",
                    self.port,
                    read(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one raw command (RESP inline form) and returns the raw reply; for test set-up only.
    pub fn command(&self, inline: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().expect("addr"),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{inline}\r\n").as_bytes())?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// `total_connections_received` of `INFO stats`: connections accepted since the start, the
    /// one asking included.
    pub fn connections_received(&self) -> u64 {
        let stats = self.command("INFO stats").expect("INFO stats");
        stats
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_connections_received in {stats}"))
    }

    fn answers_ping(&self) -> bool {
        // A server with a password answers NOAUTH: it is up all the same.
        self.command("PING")
            .map(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
            .unwrap_or(false)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

//! A misbehaving HTTP/1.1 service: a raw server that reads request heads (no bodies), records
//! their request lines, and by the path closes without answering, hangs, pauses or varies its
//! answer.

use crate::support::{listener, GatewayHandle};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service that records each request line and answers by the path's first segment:
/// `/die`: reads the request, waits 300 ms and closes without a byte; `/hang`: closes after 5 s
/// without a byte; `/pause`: answers like anything else after 200 ms; `/vary`: a JSON greeting
/// by `Accept-Language`, with `Vary` and `max-age`; anything else: `{"ok":true}`, keeping the
/// connection.
pub struct Service {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn start() -> Service {
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, seen.clone()));
            }
        });
        Service { addr, lines }
    }

    /// Request lines received so far that start with `prefix` (`"POST /die"`).
    pub fn count(&self, prefix: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// A gateway with upstream `svc` (this service, `read_timeout`) and `routes`.
    pub async fn gateway(&self, read_timeout: &str, routes: &str) -> GatewayHandle {
        GatewayHandle::start(&format!(
            "[upstreams.svc]\ntargets = [\"{}\"]\nread_timeout = \"{read_timeout}\"\n{routes}",
            self.addr
        ))
        .await
    }
}

async fn serve(mut conn: tokio::net::TcpStream, lines: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        // One request head (parts send no body).
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let line = head.lines().next().unwrap_or_default().to_owned();
        lines.lock().unwrap().push(line.clone());
        let path = line.split(' ').nth(1).unwrap_or("/");
        let (extra, body) = if path.starts_with("/die") {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        } else if path.starts_with("/pause") {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ("", r#"{"ok":true}"#.to_owned())
        } else if path.starts_with("/hang") {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        } else if path.starts_with("/vary") {
            let french = head.to_ascii_lowercase().contains("accept-language: fr");
            let greeting = if french { "bonjour" } else { "hello" };
            (
                "vary: Accept-Language\r\ncache-control: public, max-age=60\r\n",
                format!("{{\"greeting\":\"{greeting}\"}}"),
            )
        } else {
            ("", r#"{"ok":true}"#.to_owned())
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

//! A raw HTTP/1.1 client over a plain TCP socket, for requests a normal client would rewrite
//! (dot segments in the path, hop-by-hop headers, HEAD responses read byte by byte).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Every byte after the head until the server closed the connection.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `head` (request line and headers, each line without CRLF; `Connection: close` is
/// added unless `head` has a Connection header, which should then say `close`) and `body`
/// (sent as is: set Content-Length or chunked framing in `head`), then reads until the server
/// closes the connection (at most 10 s).
pub async fn raw_request(addr: SocketAddr, head: &[&str], body: &[u8]) -> RawResponse {
    let mut text = String::new();
    for line in head {
        text.push_str(line);
        text.push_str("\r\n");
    }
    if !head
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("connection:"))
    {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to gateway");
        stream
            .write_all(text.as_bytes())
            .await
            .expect("write request head");
        stream.write_all(body).await.expect("write request body");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("the gateway did not answer and close within 10 s");
    parse(&buf)
}

/// Why [`RawConn::try_read_response`] got no whole response.
#[derive(Debug)]
pub enum ReadError {
    /// The connection was closed (or reset) first; the bytes that did arrive.
    Closed(Vec<u8>),
    TimedOut,
}

/// A raw connection kept open across requests: exact bytes out, responses in.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect to gateway"),
            buf: Vec::new(),
        }
    }

    /// Writes bytes exactly as given.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response framed by Content-Length (at most 10 s).
    pub async fn read_response(&mut self) -> RawResponse {
        match self.try_read_response(Duration::from_secs(10)).await {
            Ok(r) => r,
            Err(ReadError::TimedOut) => panic!("no response within 10 s"),
            Err(ReadError::Closed(got)) => panic!(
                "connection closed before a whole response: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }

    /// Reads one response framed by Content-Length, at most `limit`; a close or a time-out
    /// before a whole response is an error rather than a panic.
    pub async fn try_read_response(&mut self, limit: Duration) -> Result<RawResponse, ReadError> {
        let fut = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = parse(&self.buf[..end + 4]);
                    let len: usize = head
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if self.buf.len() >= end + 4 + len {
                        let body = self.buf[end + 4..end + 4 + len].to_vec();
                        self.buf.drain(..end + 4 + len);
                        return Ok(RawResponse { body, ..head });
                    }
                }
                let mut piece = [0u8; 8192];
                match self.stream.read(&mut piece).await {
                    Ok(n) if n > 0 => self.buf.extend_from_slice(&piece[..n]),
                    _ => return Err(ReadError::Closed(std::mem::take(&mut self.buf))),
                }
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(ReadError::TimedOut))
    }

    /// Reads until the gateway closes the connection (at most `limit`): what arrived, and
    /// whether it ended in a close (`false`: still open at the limit, or reset).
    pub async fn read_until_close(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        let mut out = std::mem::take(&mut self.buf);
        let end = tokio::time::Instant::now() + limit;
        loop {
            let mut piece = [0u8; 8192];
            match tokio::time::timeout_at(end, self.stream.read(&mut piece)).await {
                Ok(Ok(0)) => return (out, true),
                Ok(Ok(n)) => out.extend_from_slice(&piece[..n]),
                Ok(Err(_)) | Err(_) => return (out, false),
            }
        }
    }
}

/// Sends `bytes` exactly as given on a new connection and returns everything the gateway
/// sent back until it closed the connection (at most 10 s).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes).await.expect("write request");
    let (out, _) = conn.read_until_close(Duration::from_secs(10)).await;
    out
}

/// Parses the first response of raw bytes (head and everything after it as the body).
pub fn parse_response(buf: &[u8]) -> RawResponse {
    parse(buf)
}

fn parse(buf: &[u8]) -> RawResponse {
    try_parse_response(buf).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses the first response of raw bytes, or says why they hold none.
pub fn try_parse_response(buf: &[u8]) -> Result<RawResponse, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(buf)
            )
        })?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

//! A byte-recording upstream for framing tests: a plain TCP server that keeps every byte the
//! gateway sent, parses complete HTTP/1.1 requests itself (Content-Length or chunked) and
//! answers each with `{"received":BODY_LENGTH}`. A request cut short is recorded in the raw
//! bytes but never counted as a request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One complete request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request line and headers, as sent.
    pub head: String,
    /// The body after de-chunking.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// The request target of the request line, exactly as sent.
    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of header `name` (any case), in order, one per header line.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// The value of header `name` when it came in exactly one line.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_values(name)[..] {
            [one] => Some(one),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    raw: Vec<u8>,
    requests: Vec<RecordedRequest>,
    connections: usize,
}

pub struct Recorder {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = super::listener();
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Recorder { addr, state, task }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Complete, well-formed requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many complete requests were received so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// The complete requests after the first `n`.
    pub fn requests_since(&self, n: usize) -> Vec<RecordedRequest> {
        self.state
            .lock()
            .unwrap()
            .requests
            .get(n..)
            .unwrap_or_default()
            .to_vec()
    }

    /// How many bytes were received so far (complete requests or not).
    pub fn raw_len(&self) -> usize {
        self.state.lock().unwrap().raw.len()
    }

    /// Every byte received, all connections in arrival order.
    pub fn raw(&self) -> Vec<u8> {
        self.state.lock().unwrap().raw.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        state.lock().unwrap().raw.extend_from_slice(&piece[..n]);
        buf.extend_from_slice(&piece[..n]);
        loop {
            match parse(&buf) {
                Parsed::Partial => break,
                Parsed::Malformed => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                Parsed::Complete(len, request) => {
                    let answer = format!("{{\"received\":{}}}", request.body.len());
                    state.lock().unwrap().requests.push(request);
                    buf.drain(..len);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

enum Parsed {
    Partial,
    Malformed,
    Complete(usize, RecordedRequest),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one request from the start of `buf`, strictly (CRLF lines, token header names).
fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Malformed;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if request_line.split(' ').count() != 3 {
        return Parsed::Malformed;
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Malformed;
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Parsed::Malformed;
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Parsed::Malformed;
            }
            match value.parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => return Parsed::Malformed,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Parsed::Malformed;
            }
            chunked = true;
        }
    }
    if chunked && length.is_some() {
        return Parsed::Malformed;
    }
    let start = end + 4;
    let (body, consumed) = if chunked {
        match dechunk(&buf[start..]) {
            Ok(Some((body, used))) => (body, used),
            Ok(None) => return Parsed::Partial,
            Err(()) => return Parsed::Malformed,
        }
    } else {
        let n = length.unwrap_or(0);
        if buf.len() < start + n {
            return Parsed::Partial;
        }
        (buf[start..start + n].to_vec(), n)
    };
    Parsed::Complete(
        start + consumed,
        RecordedRequest {
            head: head.to_string(),
            body,
        },
    )
}

/// Decodes a chunked body: `Ok(None)` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| ())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // No trailers expected from the gateway: the empty line ends the body.
            if rest.len() < 2 {
                return Ok(None);
            }
            if &rest[..2] != b"\r\n" {
                return Err(());
            }
            return Ok(Some((body, total - rest.len() + 2)));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

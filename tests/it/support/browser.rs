//! A real browser for page tests: headless Chromium (Debian's `chromium`; `.ci/run` installs
//! it) driven over the Chrome DevTools Protocol on 127.0.0.1, through a minimal WebSocket
//! client (text frames only). It loads pages, evaluates expressions in them, takes screenshots
//! and collects what the console said (errors, CSP violations, failed loads).

use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one DevTools command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(20);

/// The Chromium binary, or a panic that says how to get it: a page test must not pass without
/// a browser.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(path) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return path;
        }
    }
    panic!(
        "chromium is not installed: the status page is tested in a real browser \
         (apt-get install -y chromium; .ci/run installs it)"
    );
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    socket: TcpStream,
    next_id: u64,
    /// Console and log entries reported so far, as "level: text".
    pub console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `about:blank` and attaches to its page.
    pub async fn launch() -> Browser {
        let binary = chromium();
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let port = devtools_port(profile.path()).await;
        let page = page_socket_path(port).await;
        let socket = connect(port, &page).await;
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            console: Vec::new(),
            _profile: profile,
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends one command and waits for its answer, recording the events that come meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        write_frame(&mut self.socket, message.as_bytes()).await;
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, read_message(&mut self.socket))
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {COMMAND_LIMIT:?}"));
            let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.record(&v);
        }
    }

    fn record(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let text: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console
                    .push(format!("{}: {}", p["type"], text.join(" ")));
            }
            Some("Runtime.exceptionThrown") => self
                .console
                .push(format!("error: {}", p["exceptionDetails"])),
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                self.console
                    .push(format!("{}: {} ({})", e["level"], e["text"], e["url"]));
            }
            _ => {}
        }
    }

    /// The console entries at level error or warning.
    pub fn console_problems(&self) -> Vec<&String> {
        self.console
            .iter()
            .filter(|l| {
                l.starts_with("\"error\"")
                    || l.starts_with("error")
                    || l.starts_with("\"warning\"")
                    || l.starts_with("\"assert\"")
            })
            .collect()
    }

    /// Sets the viewport (CSS pixels); `mobile` also turns on the mobile meta viewport.
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params)
            .await;
    }

    /// Loads `url` and waits (at most 15 s) until the document and its resources have loaded.
    pub async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.eval("document.readyState").await != "complete" {
            assert!(Instant::now() < deadline, "{url} did not finish loading");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a JavaScript expression in the page (JSON; awaits promises).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 100 ms until it is `true` or `limit` passes; returns whether it
    /// became true.
    pub async fn wait_until(&mut self, expression: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression).await == true {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of the element matching `selector` (`null` when none matches).
    pub async fn text(&mut self, selector: &str) -> Value {
        let selector = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "(document.querySelector({selector}) || {{innerText: null}}).innerText"
        ))
        .await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port Chromium's DevTools listen on, from the file it writes into its profile.
async fn devtools_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
        {
            return port;
        }
        assert!(Instant::now() < deadline, "chromium did not start DevTools");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The WebSocket path of the browser's page.
async fn page_socket_path(port: u16) -> String {
    let list: Value = super::client()
        .get(format!("http://127.0.0.1:{port}/json/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let path_start = url.find("/devtools/").expect("a DevTools URL");
    url[path_start..].to_string()
}

/// Opens the WebSocket (RFC 6455 handshake; no Origin header, which DevTools would refuse).
async fn connect(port: u16, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "oversized handshake answer");
        head.push(socket.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "no WebSocket: {head}");
    socket
}

/// One masked text frame (clients must mask).
async fn write_frame(socket: &mut TcpStream, payload: &[u8]) {
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x5a, 0x17, 0xc3, 0x2e];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    socket.write_all(&frame).await.unwrap();
}

/// The next whole text message (fragments joined; control frames skipped).
async fn read_message(socket: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let b0 = socket.read_u8().await.unwrap();
        let b1 = socket.read_u8().await.unwrap();
        let len = match b1 & 0x7f {
            126 => u64::from(socket.read_u16().await.unwrap()),
            127 => socket.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        socket.read_exact(&mut payload).await.unwrap();
        match b0 & 0x0f {
            0x0 | 0x1 => message.extend_from_slice(&payload),
            0x8 => panic!("the browser closed the DevTools connection"),
            _ => continue,
        }
        if b0 & 0x80 != 0 {
            return String::from_utf8(message).expect("text frame");
        }
    }
}

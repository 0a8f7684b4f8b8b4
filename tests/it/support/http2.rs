//! A bare HTTP/2 client on the `h2` crate, for requests whose pseudo-headers a normal client
//! would fix up: `:path`, `:authority` and `:scheme` are sent as given (as far as the `http`
//! types let them be expressed), over h2c (prior knowledge) or TLS with ALPN `h2`.

use super::raw::RawResponse;
use super::tls::TestCa;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::net::SocketAddr;
use std::time::Duration;

/// One request as the pseudo-headers and header fields HTTP/2 carries.
#[derive(Debug, Clone, Default)]
pub struct H2Request {
    pub method: String,
    /// `:scheme`; without `:authority` it is always `http` (the `h2` crate's choice).
    pub scheme: Option<String>,
    /// `:authority`; `None`: no `:authority` at all.
    pub authority: Option<String>,
    pub path: String,
    /// Header fields (names are lowercased by the `http` types).
    pub headers: Vec<(String, String)>,
}

/// What came back for one stream.
#[derive(Debug)]
pub enum H2Answer {
    Response(RawResponse),
    /// The stream or the connection was reset or closed instead.
    Reset(String),
    TimedOut,
}

impl H2Request {
    /// The `http::Request` the `h2` crate sends, or why these bytes cannot be expressed with
    /// it (`Err`: the case cannot be sent over HTTP/2 with this client).
    pub fn build(&self) -> Result<Request<()>, String> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut parts = http::uri::Parts::default();
        let path = PathAndQuery::try_from(self.path.as_str()).map_err(|e| format!(":path: {e}"))?;
        if path.as_str() != self.path {
            // The `http` type drops a fragment: that would be another request.
            return Err(format!(":path: sent as {:?}", path.as_str()));
        }
        parts.path_and_query = Some(path);
        // Without an authority the request is "relative": the h2 crate then sends
        // `:scheme http` and no `:authority`, which it allows for any version but HTTP/2.
        let version = match &self.authority {
            Some(authority) => {
                parts.authority = Some(
                    Authority::try_from(authority.as_str())
                        .map_err(|e| format!(":authority: {e}"))?,
                );
                let scheme = self.scheme.as_deref().unwrap_or("http");
                parts.scheme = Some(Scheme::try_from(scheme).map_err(|e| format!(":scheme: {e}"))?);
                Version::HTTP_2
            }
            None => Version::HTTP_11,
        };
        let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .version(version)
            .body(())
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().append(name, value);
        }
        Ok(request)
    }
}

/// An HTTP/2 connection ready for requests; its driver runs on a task of its own.
pub struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl H2Conn {
    /// h2c by prior knowledge on a plain listener.
    pub async fn plain(addr: SocketAddr) -> H2Conn {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to gateway");
        H2Conn::over(tcp).await
    }

    /// HTTP/2 over TLS (ALPN `h2`) as `localhost`, trusting `ca`.
    pub async fn tls(ca: &TestCa, addr: SocketAddr) -> H2Conn {
        let tls = super::tls::connect(ca, addr, &[b"h2"])
            .await
            .expect("TLS handshake with the gateway");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN did not choose h2"
        );
        H2Conn::over(tls).await
    }

    async fn over<T>(io: T) -> H2Conn
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) =
            tokio::time::timeout(Duration::from_secs(10), h2::client::handshake(io))
                .await
                .expect("HTTP/2 handshake within 10 s")
                .expect("HTTP/2 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Conn { send, driver }
    }

    /// Sends `request` without a body and reads the whole answer (at most 10 s).
    pub async fn exchange(&mut self, request: Request<()>) -> H2Answer {
        let attempt = async {
            let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
            let (response, _) = send
                .send_request(request, true)
                .map_err(|e| e.to_string())?;
            let response = response.await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body_stream = response.into_body();
            let mut body = Vec::new();
            while let Some(chunk) = body_stream.data().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                body.extend_from_slice(&chunk);
                let _ = body_stream.flow_control().release_capacity(chunk.len());
            }
            Ok::<_, String>(RawResponse {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(response)) => H2Answer::Response(response),
            Ok(Err(e)) => H2Answer::Reset(e),
            Err(_) => H2Answer::TimedOut,
        }
    }
}

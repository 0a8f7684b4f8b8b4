//! Baseline for the load benchmark: the smallest Pingora 0.9 HTTP/1 passthrough proxy.
//!
//! It does exactly what every proxy must do and nothing else (no routing, no logging, no
//! policies), so its CPU cost per request is the floor that Tollgate is compared against in
//! `benches/load/run.sh`. Upstream keep-alive pooling is Pingora's default.
//!
//! With `--answer BODY` it proxies nothing: every request is answered from `request_filter`
//! with that body (200, Content-Length). That is the floor for any answer Pingora serves from
//! memory, such as a cache hit: reading the request, writing the response, finishing the session.
//!
//! ```text
//! cargo run --release --example bare_pingora -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --threads 1
//! ```

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[derive(Parser, Debug)]
#[command(about = "Bare Pingora passthrough proxy (benchmark baseline)")]
struct Args {
    /// Address to accept HTTP/1.1 on.
    #[arg(long, default_value = "127.0.0.1:6188")]
    listen: SocketAddr,
    /// Upstream as IP:PORT (a literal address: `HttpPeer::new` with a name would do blocking DNS).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads of the proxy service (`ServerConf.threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Answer every request with this body instead of proxying it.
    #[arg(long)]
    answer: Option<String>,
}

struct Passthrough {
    upstream: SocketAddr,
    answer: Option<Bytes>,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    /// With `--answer`: the response, written here; `true` tells Pingora the request is done.
    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let Some(body) = &self.answer else {
            return Ok(false);
        };
        let mut header = ResponseHeader::build(200, Some(2))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", body.len().to_string())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(body.clone()), true)
            .await?;
        Ok(true)
    }

    /// Always the one upstream, plain HTTP. Returning `Ok` means "connect to this peer";
    /// Pingora reuses a pooled keep-alive connection to it when one is idle.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();

    let conf = ServerConf {
        threads: args.threads,
        // A benchmark process is killed with SIGTERM/SIGINT; don't let it linger 300 s.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: args.upstream,
            answer: args.answer.map(Bytes::from),
        },
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}

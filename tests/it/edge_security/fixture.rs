//! The gateway every edge-security test runs against: four raw-recording backends, one per
//! route, so the backend that received a request tells which route served it.
//!
//! | route        | host                | path             | auth      |
//! |--------------|---------------------|------------------|-----------|
//! | `root`       | any                 | `/`              | none      |
//! | `public`     | any                 | `/{*rest}`       | none      |
//! | `admin`      | any                 | `/admin/{*rest}` | protected |
//! | `admin_host` | `admin.example.com` | `/{*rest}`       | protected |
//!
//! "protected" is an `api_key` policy (header `x-api-key`) or, in the second variant, an HS256
//! `jwt` policy (`Authorization: Bearer`). Every gateway also has an HTTPS listener (HTTP/2 by
//! ALPN) with a certificate for `localhost` from a test CA.

use crate::support::auth::keys_file;
use crate::support::jwt::{claims, TestKey};
use crate::support::prom;
use crate::support::tls::{start_https_with, TestCa};
use crate::support::{GatewayHandle, Recorder};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The admin host of the fixture.
pub const ADMIN_HOST: &str = "admin.example.com";
/// The Host most cases send: no route has it.
pub const GW_HOST: &str = "gw.test";

const API_KEY: &str = "edge-security-key-0001";
const JWT_SECRET: &str = "an-hs256-secret-for-the-edge-tests-0001";
const ISSUER: &str = "https://id.edge.test/";
const AUDIENCE: &str = "tollgate-edge";

/// The route that served a request = the backend that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Root,
    Public,
    Admin,
    AdminHost,
}

impl Route {
    pub const ALL: [Route; 4] = [Route::Root, Route::Public, Route::Admin, Route::AdminHost];

    pub fn name(self) -> &'static str {
        match self {
            Route::Root => "root",
            Route::Public => "public",
            Route::Admin => "admin",
            Route::AdminHost => "admin_host",
        }
    }

    /// Needs a credential.
    pub fn protected(self) -> bool {
        matches!(self, Route::Admin | Route::AdminHost)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which protection the two admin routes have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    ApiKey,
    Jwt,
}

/// Settings beyond the defaults (each needs config keys the spec adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    /// Everything at its default: `merge_slashes = true`, `escaped_slashes = "reject"`.
    Default,
    /// `[server] merge_slashes = false`.
    NoMerge,
    /// The `public` route sets `escaped_slashes = "keep"`; the server keeps "reject".
    KeepOnPublic,
    /// `[server] escaped_slashes = "keep"`; the `admin` route overrides it with "reject".
    KeepOnServer,
    /// `[server] trusted_proxies = ["127.0.0.1/32"]` (the tests' peer is trusted).
    Trusted,
    /// `[server] strip_request_headers = ["x-debug"]`.
    Strip,
    /// Both of the above.
    TrustedStrip,
    /// One more route, `/v1/{*rest}` to the `public` backend with `rewrite = "/internal/{rest}"`.
    Rewrite,
    /// Every route uses a response cache (`[caches.edge]`, no `ttl`: the backends state no
    /// freshness, so each request still goes upstream, through the cache's key and hooks).
    Cached,
}

impl Settings {
    /// Lines for `[server]`, and for the `public` and `admin` routes.
    fn lines(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Settings::Default => ("", "", ""),
            Settings::NoMerge => ("merge_slashes = false", "", ""),
            Settings::KeepOnPublic => ("", "escaped_slashes = \"keep\"", ""),
            Settings::KeepOnServer => (
                "escaped_slashes = \"keep\"",
                "",
                "escaped_slashes = \"reject\"",
            ),
            Settings::Trusted => ("trusted_proxies = [\"127.0.0.1/32\"]", "", ""),
            Settings::Strip => ("strip_request_headers = [\"x-debug\"]", "", ""),
            Settings::TrustedStrip => (
                "trusted_proxies = [\"127.0.0.1/32\"]\nstrip_request_headers = [\"x-debug\"]",
                "",
                "",
            ),
            Settings::Rewrite => ("", "", ""),
            Settings::Cached => ("", "cache = \"edge\"", "cache = \"edge\""),
        }
    }

    /// Routes beyond the four.
    fn extra_routes(self) -> &'static str {
        match self {
            Settings::Rewrite => {
                "[routes.v1]\npath = \"/v1/{*rest}\"\nupstream = \"public\"\nrewrite = \"/internal/{rest}\"\n"
            }
            Settings::Cached => "[caches.edge]\n",
            _ => "",
        }
    }
}

/// A running fixture.
pub struct Edge {
    pub gw: GatewayHandle,
    /// The HTTPS listener.
    pub tls_addr: SocketAddr,
    pub ca: TestCa,
    backends: [Recorder; 4],
    credential: (&'static str, String),
    _dir: tempfile::TempDir,
}

/// How much each backend had received at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    requests: [usize; 4],
    bytes: [usize; 4],
}

impl Edge {
    pub async fn start(policy: Policy, settings: Settings) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let (auth, credential) = match policy {
            Policy::ApiKey => {
                let keys = keys_file(&dir, &[("edge", API_KEY)]);
                (
                    format!(
                        "[auth.guard]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{keys}\"\n"
                    ),
                    ("x-api-key", API_KEY.to_string()),
                )
            }
            Policy::Jwt => {
                let secret = dir.path().join("hs.secret");
                std::fs::write(&secret, JWT_SECRET).unwrap();
                let token = TestKey::hmac(JWT_SECRET.as_bytes()).sign(&claims(ISSUER, AUDIENCE));
                (
                    format!(
                        "[auth.guard]\ntype = \"jwt\"\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n",
                        secret.display()
                    ),
                    ("authorization", format!("Bearer {token}")),
                )
            }
        };
        let backends = [
            Recorder::start().await,
            Recorder::start().await,
            Recorder::start().await,
            Recorder::start().await,
        ];
        let (server, public_extra, admin_extra) = settings.lines();
        let upstreams: String = Route::ALL
            .iter()
            .map(|r| {
                format!(
                    "[upstreams.{}]\ntargets = [\"{}\"]\n\n",
                    r.name(),
                    backends[r.index()].target()
                )
            })
            .collect();
        let body = format!(
            r#"
{auth}
{upstreams}
[routes.root]
path = "/"
upstream = "root"

[routes.public]
path = "/{{*rest}}"
upstream = "public"
{public_extra}

[routes.admin]
path = "/admin/{{*rest}}"
upstream = "admin"
auth = "guard"
{admin_extra}

[routes.admin_host]
host = "{ADMIN_HOST}"
path = "/{{*rest}}"
upstream = "admin_host"
auth = "guard"

{extra_routes}
"#,
            extra_routes = settings.extra_routes()
        );
        let ca = TestCa::new("Tollgate edge test CA");
        let leaf = ca.leaf(&["localhost", "127.0.0.1"], 1);
        let (gw, tls_addr) = start_https_with(&body, server, dir.path(), &leaf).await;
        Edge {
            gw,
            tls_addr,
            ca,
            backends,
            credential,
            _dir: dir,
        }
    }

    /// The credential header that passes the protected routes: (name, value).
    pub fn credential(&self) -> (&'static str, &str) {
        (self.credential.0, &self.credential.1)
    }

    /// The address of `route`'s backend, as the config names it.
    pub fn backend_target(&self, route: Route) -> String {
        self.backends[route.index()].target()
    }

    pub fn mark(&self) -> Mark {
        Mark {
            requests: self.backends.each_ref().map(Recorder::count),
            bytes: self.backends.each_ref().map(Recorder::raw_len),
        }
    }

    /// What reached the backends since `mark`: the complete requests by route, and the routes
    /// whose backend received any byte at all.
    pub fn since(&self, mark: &Mark) -> Delivered {
        let mut requests = Vec::new();
        let mut touched = Vec::new();
        for route in Route::ALL {
            let rec = &self.backends[route.index()];
            if rec.raw_len() != mark.bytes[route.index()] {
                touched.push(route);
            }
            for r in rec.requests_since(mark.requests[route.index()]) {
                requests.push((route, r));
            }
        }
        Delivered { requests, touched }
    }

    /// The access-log line of the request with this id (waits for the log's flush, 2 s).
    pub async fn access_line(&self, request_id: &str) -> Option<serde_json::Value> {
        let find = || {
            self.gw
                .access_log()
                .into_iter()
                .find(|l| l["request_id"] == request_id)
        };
        crate::support::eventually(Duration::from_secs(2), || async { find().is_some() }).await;
        find()
    }

    /// `tollgate_rejected_requests_total` by reason.
    pub async fn rejections(&self) -> BTreeMap<String, f64> {
        prom::samples(&self.gw.metrics().await)
            .into_iter()
            .filter(|s| s.name == "tollgate_rejected_requests_total")
            .filter_map(|s| Some((s.labels.get("reason")?.clone(), s.value)))
            .collect()
    }
}

/// What reached the backends during one exchange.
#[derive(Debug)]
pub struct Delivered {
    pub requests: Vec<(Route, crate::support::RecordedRequest)>,
    /// Backends that received bytes (complete requests or not).
    pub touched: Vec<Route>,
}

impl Delivered {
    pub fn nothing(&self) -> bool {
        self.requests.is_empty() && self.touched.is_empty()
    }

    /// One line per request: route and head, for failure messages.
    pub fn describe(&self) -> String {
        if self.nothing() {
            return "nothing reached a backend".into();
        }
        let mut out: Vec<String> = self
            .requests
            .iter()
            .map(|(route, r)| {
                format!(
                    "{} got {:?} (Host {:?})",
                    route.name(),
                    r.request_line(),
                    r.header_values("host")
                )
            })
            .collect();
        if self.requests.is_empty() {
            out.push(format!("bytes reached {:?}", self.touched));
        }
        out.join("; ")
    }
}

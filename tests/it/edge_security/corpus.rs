//! The request corpus: one line per case, how it is sent and what must happen.
//!
//! A case is sent with the credential of the protected routes (so the route that serves it is
//! visible), except in the auth-bypass runs, which send the same cases without it. Cases tagged
//! with an issue number reproduce that item of the "Edge security" issue.

use super::fixture::Route::{self, Admin, AdminHost, Public, Root};
use super::fixture::{ADMIN_HOST, GW_HOST};

/// The request line.
#[derive(Debug, Clone, Copy)]
pub enum Line {
    /// `METHOD SP target SP version`.
    Parts {
        method: &'static str,
        target: &'static [u8],
        version: &'static str,
    },
    /// These bytes exactly (whitespace and control bytes): HTTP/1.x only.
    Exact(&'static [u8]),
}

/// How a case is sent.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub line: Line,
    /// The `Host` header (`:authority` over HTTP/2); `None`: none at all.
    pub host: Option<&'static str>,
    /// More header lines, `Name: value`.
    pub extra: &'static [&'static str],
}

/// What must happen.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Forwarded once, to this route's backend, as `GET path_and_query`, with this `Host`
    /// and the same `X-Forwarded-Host` (`None`: the client named no host; the Host is the
    /// backend's address and there is no X-Forwarded-Host).
    Served {
        route: Route,
        path_and_query: &'static str,
        host: Option<&'static str>,
    },
    /// Answered by the gateway with `status`; nothing reaches a backend. With a `reason`:
    /// problem+json, and `tollgate_rejected_requests_total{reason}` grows by one. Without:
    /// Pingora's own answer (plain), status only.
    Refused {
        status: u16,
        reason: Option<&'static str>,
    },
    /// `OPTIONS *`: the gateway's own `200` with `Allow` and `Content-Length: 0`.
    Options,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub req: Req,
    pub expect: Expect,
    /// The item of the issue this case reproduces (0: none).
    pub issue: u8,
    /// Also check the refusal's access-log line: status, reason and this `path` (as received).
    pub log_path: Option<&'static str>,
    /// What HTTP/2 gets instead, where Pingora's HTTP/2 server refuses the request itself
    /// (plainly) before the gateway sees it.
    pub over_h2: Option<Expect>,
}

/// `GET target HTTP/1.1` with `Host: gw.test`.
pub const fn get(target: &'static str) -> Req {
    get_bytes(target.as_bytes())
}

pub const fn get_bytes(target: &'static [u8]) -> Req {
    Req {
        line: Line::Parts {
            method: "GET",
            target,
            version: "HTTP/1.1",
        },
        host: Some(GW_HOST),
        extra: &[],
    }
}

/// A request line exactly as given, with `Host: gw.test`.
pub const fn line(bytes: &'static [u8]) -> Req {
    Req {
        line: Line::Exact(bytes),
        host: Some(GW_HOST),
        extra: &[],
    }
}

impl Req {
    pub const fn host(self, host: &'static str) -> Req {
        Req {
            host: Some(host),
            ..self
        }
    }

    pub const fn no_host(self) -> Req {
        Req { host: None, ..self }
    }

    pub const fn with(self, extra: &'static [&'static str]) -> Req {
        Req { extra, ..self }
    }

    pub const fn method(self, method: &'static str) -> Req {
        match self.line {
            Line::Parts {
                target, version, ..
            } => Req {
                line: Line::Parts {
                    method,
                    target,
                    version,
                },
                ..self
            },
            Line::Exact(_) => self,
        }
    }

    pub const fn http10(self) -> Req {
        match self.line {
            Line::Parts { method, target, .. } => Req {
                line: Line::Parts {
                    method,
                    target,
                    version: "HTTP/1.0",
                },
                ..self
            },
            Line::Exact(_) => self,
        }
    }
}

const fn served(route: Route, path_and_query: &'static str, host: &'static str) -> Expect {
    Expect::Served {
        route,
        path_and_query,
        host: Some(host),
    }
}

const fn served_without_host(route: Route, path_and_query: &'static str) -> Expect {
    Expect::Served {
        route,
        path_and_query,
        host: None,
    }
}

/// Tollgate's own 400 with this reason.
const fn refused(reason: &'static str) -> Expect {
    Expect::Refused {
        status: 400,
        reason: Some(reason),
    }
}

/// Pingora's own answer (or any reason): the status, and nothing forwarded.
const fn plain(status: u16) -> Expect {
    Expect::Refused {
        status,
        reason: None,
    }
}

const fn case(name: &'static str, req: Req, expect: Expect) -> Case {
    Case {
        name,
        req,
        expect,
        issue: 0,
        log_path: None,
        over_h2: None,
    }
}

impl Case {
    /// The expectation over `transport`.
    pub fn expect_over(&self, h2: bool) -> Expect {
        match (h2, self.over_h2) {
            (true, Some(expect)) => expect,
            _ => self.expect,
        }
    }

    const fn h2(self, expect: Expect) -> Case {
        Case {
            over_h2: Some(expect),
            ..self
        }
    }

    const fn issue(self, issue: u8) -> Case {
        Case { issue, ..self }
    }

    const fn logged(self, path: &'static str) -> Case {
        Case {
            log_path: Some(path),
            ..self
        }
    }
}

const BAD_TARGET: Expect = refused("bad_target");
const BAD_PATH: Expect = refused("bad_path");
const BAD_HOST: Expect = refused("bad_host");
const MISSING_HOST: Expect = refused("missing_host");
/// Refused by Pingora's HTTP/1 parser, answered by the edge guard.
const MALFORMED_HEAD: Expect = refused("malformed_head");
/// Pingora's HTTP/2 server refuses the same request itself, before any hook, with a bare 400:
/// the edge guard replaces only HTTP/1 answers (an HTTP/2 answer is frames on a shared
/// connection).
const H2_PLAIN_400: Expect = plain(400);
const CONNECT_METHOD: Expect = Expect::Refused {
    status: 405,
    reason: Some("connect_method"),
};
const GW: &str = GW_HOST;
const AH: &str = ADMIN_HOST;

/// Every setting at its default (`merge_slashes = true`, `escaped_slashes = "reject"`).
pub const DEFAULT: &[Case] = &[
    // Request-target forms.
    case("origin-form root", get("/"), served(Root, "/", GW)),
    case("origin-form with query", get("/api/users?id=1"), served(Public, "/api/users?id=1", GW)),
    case("origin-form admin", get("/admin/secret"), served(Admin, "/admin/secret", GW)),
    case("admin host", get("/admin/secret").host(AH), served(AdminHost, "/admin/secret", AH)),
    // Needs the prefix-route rule (`/{*rest}` also matches `/`): host routes come first.
    case("admin host, path /", get("/").host(AH), served(AdminHost, "/", AH)),
    case("absolute-form, same Host", get("http://admin.example.com/x").host(AH), served(AdminHost, "/x", AH)),
    case("absolute-form without Host", get("http://admin.example.com/x").no_host(), served(AdminHost, "/x", AH)).issue(2),
    case("absolute-form https without Host", get("https://admin.example.com/x?q=1").no_host(), served(AdminHost, "/x?q=1", AH)),
    case("absolute-form scheme upper case", get("HTTP://admin.example.com/x").no_host(), served(AdminHost, "/x", AH)),
    case("absolute-form scheme mixed case", get("hTtPs://admin.example.com/x").no_host(), served(AdminHost, "/x", AH)),
    case("absolute-form other host to admin path", get("http://public.example.com/admin/secret").no_host(), served(Admin, "/admin/secret", "public.example.com")),
    case("absolute-form other host, path /", get("http://public.example.com/").no_host(), served(Root, "/", "public.example.com")),
    case("absolute-form with port", get("http://admin.example.com:8080/x").no_host(), served(AdminHost, "/x", "admin.example.com:8080")),
    case("absolute-form without path", get("http://admin.example.com").no_host(), served(AdminHost, "/", AH)),
    case("absolute-form, Host differs", get("http://admin.example.com/x").host("other.example.com"), MALFORMED_HEAD).h2(H2_PLAIN_400),
    case("absolute-form, Host is the admin host", get("http://public.example.com/admin/secret").host(AH), MALFORMED_HEAD).h2(H2_PLAIN_400),
    // Userinfo in `:authority` is refused by Pingora's HTTP/2 server itself.
    case("absolute-form userinfo", get("http://user@admin.example.com/x").no_host(), BAD_HOST).h2(plain(400)),
    case("foo:// without Host", get("foo://admin.example.com/x").no_host(), BAD_TARGET).issue(2),
    case("foo:// with Host", get("foo://admin.example.com/x").host(AH), BAD_TARGET),
    case("scheme:path", get("x:/admin/secret"), BAD_TARGET).issue(1).logged("x:/admin/secret"),
    case("scheme:path, admin Host", get("x:/admin/secret").host(AH), BAD_TARGET).issue(1),
    case("relative target", get("admin/secret"), BAD_TARGET).issue(1),
    case("asterisk prefix", get("*x"), BAD_TARGET).issue(1),
    case("GET *", get("*"), BAD_TARGET),
    case("POST *", get("*").method("POST"), BAD_TARGET),
    case("OPTIONS *", get("*").method("OPTIONS"), Expect::Options),
    case("OPTIONS *, admin Host", get("*").method("OPTIONS").host(AH), Expect::Options),
    case("http:/path", get("http:/x"), BAD_TARGET),
    case("http:// empty authority", get("http://").no_host(), BAD_TARGET),
    case("http:// empty authority, Host", get("http://"), BAD_TARGET),
    case("http:/// empty authority with path", get("http:///admin/secret").no_host(), BAD_TARGET),
    case("query-only target", get("?/admin/secret"), BAD_TARGET),
    case("fragment-only target", get("#/admin/secret"), BAD_TARGET),
    case("CONNECT", get("admin.example.com:443").method("CONNECT").host("admin.example.com:443"), CONNECT_METHOD),
    // Host.
    // HTTP/2 without `:authority` or Host is refused by Pingora's HTTP/2 server itself.
    case("HTTP/1.1 without Host", get("/admin/secret").no_host(), MISSING_HOST).issue(3).logged("/admin/secret").h2(plain(400)),
    case("HTTP/1.1 without Host, root", get("/").no_host(), MISSING_HOST).issue(3).h2(plain(400)),
    case("HTTP/1.1 without Host, public", get("/api/x").no_host(), MISSING_HOST).h2(plain(400)),
    case("HTTP/1.0 without Host", get("/api/x").http10().no_host(), served_without_host(Public, "/api/x")),
    case("HTTP/1.0 without Host, admin", get("/admin/secret").http10().no_host(), served_without_host(Admin, "/admin/secret")),
    case("HTTP/1.0 with admin Host", get("/x").http10().host(AH), served(AdminHost, "/x", AH)),
    case("HTTP/1.0 absolute-form", get("http://admin.example.com/x").http10().no_host(), served(AdminHost, "/x", AH)),
    case("HTTP/1.0 scheme:path", get("x:/admin/secret").http10().no_host(), BAD_TARGET),
    case("Host upper case", get("/x").host("ADMIN.Example.COM"), served(AdminHost, "/x", "ADMIN.Example.COM")),
    case("Host with port", get("/x").host("admin.example.com:8443"), served(AdminHost, "/x", "admin.example.com:8443")),
    case("Host with trailing dot", get("/x").host("admin.example.com."), served(AdminHost, "/x", "admin.example.com.")),
    case("Host with trailing dot and port", get("/x").host("admin.example.com.:443"), served(AdminHost, "/x", "admin.example.com.:443")),
    case("Host IPv6 literal", get("/x").host("[::1]:8080"), served(Public, "/x", "[::1]:8080")),
    case("Host IPv4", get("/x").host("127.0.0.1:8080"), served(Public, "/x", "127.0.0.1:8080")),
    case("Host empty port", get("/x").host("admin.example.com:"), BAD_HOST),
    case("Host port with letters", get("/x").host("admin.example.com:80x"), BAD_HOST),
    case("Host port of 6 digits", get("/x").host("admin.example.com:123456"), BAD_HOST),
    case("Host with path", get("/x").host("admin.example.com/x"), BAD_HOST).logged("/x"),
    // Pingora refuses userinfo in Host while it reads the head; the guard answers for it.
    case("Host with userinfo", get("/x").host("admin.example.com@evil.test"), MALFORMED_HEAD).h2(H2_PLAIN_400),
    case("Host behind userinfo", get("/x").host("evil.test@admin.example.com"), MALFORMED_HEAD).h2(H2_PLAIN_400),
    case("Host with space", get("/x").host("admin.example.com evil"), BAD_HOST),
    // RFC 9112 §3.2: an empty Host names no authority, so it is as good as none.
    case("Host empty", get("/x").host(""), MISSING_HOST),
    case("Host unclosed IPv6", get("/x").host("[::1"), BAD_HOST),
    case("Host non-ASCII", get("/x").host("admín.example.com"), BAD_HOST),
    case("Host wildcard", get("/x").host("*.example.com"), BAD_HOST),
    case("Host list", get("/x").host("admin.example.com,evil.test"), BAD_HOST),
    case("Host with empty label", get("/x").host("admin.example.com.."), BAD_HOST),
    case("two Host headers", get("/x").with(&["Host: admin.example.com"]), MALFORMED_HEAD).h2(H2_PLAIN_400),
    // Request line: whitespace and control bytes.
    case("space inside target", line(b"GET /api/a b HTTP/1.1"), BAD_TARGET).issue(5),
    case("second target after a space", line(b"GET /api/x /admin/secret HTTP/1.1"), BAD_TARGET),
    case("two spaces before target", line(b"GET  /api/x HTTP/1.1"), BAD_TARGET),
    case("two spaces after target", line(b"GET /api/x  HTTP/1.1"), BAD_TARGET),
    case("leading space", line(b" GET /api/x HTTP/1.1"), BAD_TARGET),
    case("trailing space", line(b"GET /api/x HTTP/1.1 "), BAD_TARGET),
    case("TAB before target", line(b"GET\t/api/x HTTP/1.1"), BAD_TARGET),
    case("TAB before version", line(b"GET /api/x\tHTTP/1.1"), BAD_TARGET),
    case("VT in target", line(b"GET /api/\x0bx HTTP/1.1"), BAD_TARGET),
    case("FF in target", line(b"GET /api/\x0cx HTTP/1.1"), BAD_TARGET),
    case("bare CR in target", line(b"GET /api/\rx HTTP/1.1"), BAD_TARGET),
    case("bare CR at the end", line(b"GET /api/x HTTP/1.1\r"), BAD_TARGET),
    case("NUL in target", line(b"GET /api/\x00x HTTP/1.1"), BAD_TARGET),
    case("SOH in target", line(b"GET /api/\x01x HTTP/1.1"), BAD_TARGET).logged("/api/\\x01x"),
    case("DEL in target", line(b"GET /api/\x7fx HTTP/1.1"), BAD_TARGET),
    // Percent-encoding.
    case("encoded unreserved letter", get("/%61dmin/secret"), served(Admin, "/admin/secret", GW)).issue(4),
    case("encoded upper-case letters", get("/%41%44MIN/x"), BAD_PATH),
    case("encoded tilde", get("/api/%7euser"), served(Public, "/api/~user", GW)),
    case("encoded unreserved marks", get("/api/%2D%2e%5F%7E%30"), served(Public, "/api/-._~0", GW)),
    case("lower-case hex upper-cased", get("/api/caf%c3%a9"), served(Public, "/api/caf%C3%A9", GW)),
    case("encoded ; kept", get("/api/a%3bb"), served(Public, "/api/a%3Bb", GW)),
    case("encoded ? and # kept", get("/api/%3f%23"), served(Public, "/api/%3F%23", GW)),
    case("double-encoded letter", get("/%2561dmin/secret"), served(Public, "/%2561dmin/secret", GW)),
    case("encoded slash to admin", get("/admin%2fsecret"), BAD_PATH).issue(4),
    case("encoded slash, public", get("/api/a%2Fb"), BAD_PATH),
    case("encoded slash, admin", get("/admin/a%2fb"), BAD_PATH),
    case("%00", get("/api/%00"), BAD_PATH).logged("/api/%00"),
    case("%0a", get("/api/%0a"), BAD_PATH),
    case("%1F", get("/api/%1F"), BAD_PATH),
    case("%7f", get("/api/%7f"), BAD_PATH),
    case("%5C", get("/api/%5C"), BAD_PATH),
    case("%5c traversal", get("/api/..%5c..%5cadmin"), BAD_PATH),
    case("raw backslash", get("/api/a\\b"), BAD_PATH),
    case("malformed %zz", get("/api/%zz"), BAD_PATH).logged("/api/%zz"),
    case("truncated %4", get("/api/%4"), BAD_PATH),
    case("lone %", get("/api/%"), BAD_PATH),
    case("%% then hex", get("/api/%%34%31"), BAD_PATH),
    case("%2e%2e segment", get("/api/%2e%2e/admin/secret"), BAD_PATH),
    case("leading %2e%2e segment", get("/%2e%2e/admin/secret"), BAD_PATH),
    case("%2E segment", get("/api/%2E"), BAD_PATH),
    case("mixed .%2e segment", get("/api/.%2e/admin"), BAD_PATH),
    case("dot-dot segment", get("/api/../admin/secret"), BAD_PATH),
    case("dot segment", get("/api/./x"), BAD_PATH),
    // Slashes.
    case("leading //", get("//admin/secret"), served(Admin, "/admin/secret", GW)).issue(4),
    case("inner //", get("/admin//secret"), served(Admin, "/admin/secret", GW)),
    case("only slashes", get("///"), served(Root, "/", GW)),
    case("trailing //", get("/api//x//"), served(Public, "/api/x/", GW)),
    case("// in path, not in query", get("//api/x?a=//b"), served(Public, "/api/x?a=//b", GW)),
    // Path parameters.
    case("; in first segment", get("/admin;x/secret"), BAD_PATH),
    case("..; segment", get("/..;/admin/secret"), BAD_PATH),
    case("..; after a segment", get("/api/..;/admin/secret"), BAD_PATH),
    case("lone ; segment", get("/;/admin/secret"), BAD_PATH),
    case("; closing a segment", get("/admin;/secret"), BAD_PATH),
    case("encoded ; in first segment", get("/admin%3bx/secret"), BAD_PATH),
    case("path parameter, same route", get("/api/x;jsessionid=1"), served(Public, "/api/x;jsessionid=1", GW)),
    case("path parameter on admin", get("/admin/secret;x=1"), served(Admin, "/admin/secret;x=1", GW)),
    case("encoded ; segment, same route", get("/api/%3B/admin"), served(Public, "/api/%3B/admin", GW)),
    // Case and trimming: what case-insensitive (Express, ASP.NET, IIS) and trimming (Spring,
    // IIS) backends read as another route is ambiguous; what they read as the same is not.
    case("upper-case prefix", get("/ADMIN/secret"), BAD_PATH),
    case("mixed-case prefix", get("/Admin/secret"), BAD_PATH),
    case("prefix with a trailing dot", get("/admin./secret"), BAD_PATH),
    case("prefix with a trailing space", get("/admin%20/secret"), BAD_PATH),
    case("dotless i in the prefix", get("/adm%C4%B1n/secret"), BAD_PATH),
    case("capitals on public", get("/API/Users"), served(Public, "/API/Users", GW)),
    case("capitals on admin", get("/admin/Secret"), served(Admin, "/admin/Secret", GW)),
    case("trailing dot on public", get("/api/x."), served(Public, "/api/x.", GW)),
    // Raw non-ASCII.
    case("raw UTF-8", get("/api/café"), BAD_PATH),
    case("raw CJK", get("/api/日本"), BAD_PATH),
    case("raw 0xFF", get_bytes(b"/admin/\xff"), BAD_PATH),
    // Query and fragment.
    case("query byte for byte", get("/api/x?a=%2F&b=..%2F"), served(Public, "/api/x?a=%2F&b=..%2F", GW)),
    case("query never normalised", get("/api/x?q=%61%3b&r=/../admin;x"), served(Public, "/api/x?q=%61%3b&r=/../admin;x", GW)),
    case("query not routed", get("/?/admin/secret"), served(Root, "/?/admin/secret", GW)),
    case("empty query kept", get("/api/x?"), served(Public, "/api/x?", GW)),
    case("malformed % in query", get("/api/x?%zz"), served(Public, "/api/x?%zz", GW)),
    case("fragment dropped", get("/api/x?a=b#frag"), served(Public, "/api/x?a=b", GW)),
    case("fragment on admin", get("/admin/secret#x"), served(Admin, "/admin/secret", GW)),
    case("fragment hiding a traversal", get("/api/x#/../../admin/secret"), served(Public, "/api/x", GW)),
    // Client X-Forwarded-Host never survives.
    case("client X-Forwarded-Host, HTTP/1.0 without Host", get("/api/x").http10().no_host().with(&["X-Forwarded-Host: admin.example.com"]), served_without_host(Public, "/api/x")).issue(6),
    case("client X-Forwarded-Host, absolute-form", get("http://public.example.com/api/x").no_host().with(&["X-Forwarded-Host: admin.example.com"]), served(Public, "/api/x", "public.example.com")).issue(6),
    case("client X-Forwarded-Host, Host", get("/api/x").with(&["X-Forwarded-Host: admin.example.com"]), served(Public, "/api/x", GW)),
];

/// `[server] merge_slashes = false`.
pub const NO_MERGE: &[Case] = &[
    case("leading // to admin", get("//admin/secret"), BAD_PATH),
    case("only slashes", get("///"), BAD_PATH),
    case("inner // on public", get("/api//x"), served(Public, "/api//x", GW)),
    case("inner // on admin", get("/admin//secret"), served(Admin, "/admin//secret", GW)),
    case("no // at all", get("/admin/secret"), served(Admin, "/admin/secret", GW)),
];

/// `escaped_slashes = "keep"` on the `public` route only.
pub const KEEP_ON_PUBLIC: &[Case] = &[
    case("%2F kept", get("/api/a%2Fb"), served(Public, "/api/a%2Fb", GW)),
    case("%2f kept, upper-cased", get("/api/a%2fb"), served(Public, "/api/a%2Fb", GW)),
    // The lenient reading keeps %2F under "keep": the matched route is `public` either way.
    case("%2f in the first segment", get("/admin%2fsecret"), served(Public, "/admin%2Fsecret", GW)),
    case("%2F on admin (server default)", get("/admin/a%2Fb"), BAD_PATH),
    case("%5C still refused", get("/api/a%5Cb"), BAD_PATH),
];

/// `[server] escaped_slashes = "keep"`, `admin` route back to "reject".
pub const KEEP_ON_SERVER: &[Case] = &[
    case("%2F kept on public", get("/api/a%2Fb"), served(Public, "/api/a%2Fb", GW)),
    case("%2F on admin (route override)", get("/admin/a%2Fb"), BAD_PATH),
    case("%2F on the admin host", get("/a%2fb").host(AH), served(AdminHost, "/a%2Fb", AH)),
];

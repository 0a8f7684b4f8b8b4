//! What `[cluster] redis_url` names, as the redis crate's clients: one Redis (`redis://`,
//! `rediss://` for TLS, `redis+unix://` or `unix://`), or a Redis Cluster (`redis+cluster://` or
//! `rediss+cluster://`: seed nodes separated by commas, `redis+cluster://[user:password@]host:port,
//! host:port`). Nothing here does I/O: the clients connect when first used.
//!
//! TLS is the crate's (rustls): the server's certificate and host name are always verified,
//! against `ca_file` alone when given, else against the system's roots and the Mozilla roots.

use super::{SettingError, TlsMaterial};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::io::tcp::TcpSettings;
use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Schemes of a `redis_url` that names a Redis Cluster (plain, TLS).
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// Whether `redis_url` names a Redis Cluster rather than one Redis.
pub fn is_cluster_url(redis_url: &str) -> bool {
    CLUSTER_SCHEMES
        .iter()
        .any(|(s, _)| redis_url.starts_with(s))
}

/// Where the limiter's Redis calls go.
pub enum Target {
    /// One Redis (or a proxy in front of several).
    Single(Box<redis::Client>),
    /// A Redis Cluster, found from its seed nodes; calls go to the master of their keys' slot.
    Cluster(Box<ClusterClient>),
}

impl Target {
    /// Parses `redis_url` and builds the client; `timeout` bounds each connection attempt. Err
    /// names the setting at fault and never quotes the URL (it may hold a password).
    pub fn new(
        redis_url: &str,
        tls: &TlsMaterial,
        timeout: Duration,
    ) -> Result<Target, SettingError> {
        let cluster = is_cluster_url(redis_url);
        let nodes: Vec<String> = if cluster {
            cluster_nodes(redis_url)?
        } else {
            vec![redis_url.to_string()]
        };
        let mut infos = Vec::with_capacity(nodes.len());
        for node in &nodes {
            infos.push(node_info(node)?);
        }
        let secure = matches!(infos[0].addr(), ConnectionAddr::TcpTls { .. });
        let certificates = match secure {
            true => Some(certificates(tls)?),
            false if tls.ca_pem.is_some() => return Err(only_with_tls("ca_file")),
            false if tls.client_cert_pem.is_some() || tls.client_key_pem.is_some() => {
                return Err(only_with_tls("cert_file"))
            }
            false => None,
        };
        // Each command is one write answered by one reply: never wait to coalesce.
        let tcp = TcpSettings::default().set_nodelay(true);
        if cluster {
            if infos.iter().any(|i| i.redis_settings().db() != 0) {
                return Err(SettingError::new(
                    "redis_url",
                    "a Redis Cluster has only database 0: leave the path out or write /0",
                ));
            }
            let mut builder = ClusterClientBuilder::new(infos)
                .tcp_settings(tcp)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Redirections and reconnects within the call timeout, waiting milliseconds (the
                // crate's defaults wait seconds, far beyond any call's deadline).
                .retries(3)
                .min_retry_wait(2)
                .max_retry_wait(timeout.as_millis().clamp(3, 1_000) as u64);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let client = builder
                .build()
                .map_err(|e| SettingError::new("redis_url", e.to_string()))?;
            return Ok(Target::Cluster(Box::new(client)));
        }
        let info = infos.remove(0).set_tcp_settings(tcp);
        let client = match certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
        .map_err(|e| SettingError::new("redis_url", e.to_string()))?;
        Ok(Target::Single(Box::new(client)))
    }
}

/// The seed nodes of a cluster URL, each as a one-node URL with the same credentials and path:
/// `redis+cluster://u:p@a:1,b:2/0` gives `redis://u:p@a:1/0` and `redis://u:p@b:2/0`.
fn cluster_nodes(redis_url: &str) -> Result<Vec<String>, SettingError> {
    let (rest, scheme) = CLUSTER_SCHEMES
        .iter()
        .find_map(|(s, node)| redis_url.strip_prefix(s).map(|rest| (rest, *node)))
        .ok_or_else(|| SettingError::new("redis_url", "is not a Redis Cluster URL"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{scheme}{userinfo}{host}{tail}"))
        .collect();
    if hosts.split(',').any(str::is_empty) {
        return Err(SettingError::new(
            "redis_url",
            "a Redis Cluster URL lists its seed nodes as host:port separated by commas, like \"redis+cluster://10.0.0.1:6379,10.0.0.2:6379\"",
        ));
    }
    Ok(nodes)
}

/// One node's URL parsed by the crate; `#insecure` (no certificate verification) is refused.
fn node_info(url: &str) -> Result<ConnectionInfo, SettingError> {
    if url.starts_with("rediss://")
        && redis::parse_redis_url(url).is_some_and(|u| u.fragment().is_some())
    {
        return Err(SettingError::new(
            "redis_url",
            "certificate verification cannot be turned off (#insecure); trust a private CA with [cluster] ca_file instead",
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| SettingError::new("redis_url", e.to_string()))?;
    if let ConnectionAddr::TcpTls { host, .. } = info.addr() {
        if ServerName::try_from(host.as_str()).is_err() {
            return Err(SettingError::new(
                "redis_url",
                format!("\"{host}\" is not a host name for TLS"),
            ));
        }
    }
    // The crate would name itself to Redis (CLIENT SETINFO) on every new connection: one more
    // reply to wait for before the first check, for nothing the limiter needs.
    let redis = info.redis_settings().clone().set_skip_set_lib_name();
    Ok(info.set_redis_settings(redis))
}

fn only_with_tls(setting: &'static str) -> SettingError {
    SettingError::new(setting, "only used with rediss:// (TLS) URLs")
}

/// The crate's TLS material from `[cluster]`'s files, checked here so that a bad file is a
/// config error naming its setting rather than a failed connection later: the CA (else the
/// system's roots and the Mozilla roots, so a container without a CA bundle still works) and
/// the optional client certificate and key, which must fit each other.
fn certificates(tls: &TlsMaterial) -> Result<TlsCertificates, SettingError> {
    let mut roots = rustls::RootCertStore::empty();
    let root_pem = match tls.ca_pem.as_deref() {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    SettingError::new("ca_file", format!("not PEM certificates: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    SettingError::new("ca_file", format!("cannot use this certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(SettingError::new("ca_file", "holds no certificate"));
            }
            pem.to_vec()
        }
        None => default_roots_pem(),
    };
    let client_tls = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    SettingError::new("cert_file", format!("not PEM certificates: {e}"))
                })?;
            if chain.is_empty() {
                return Err(SettingError::new("cert_file", "holds no certificate"));
            }
            // The message never quotes the key.
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|_| SettingError::new("key_file", "holds no PEM private key"))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| SettingError::new("redis_url", format!("TLS to Redis: {e}")))?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|e| {
                    SettingError::new("key_file", format!("does not fit cert_file: {e}"))
                })?;
            Some(ClientTlsConfig {
                client_cert: cert_pem.clone(),
                client_key: key_pem.clone(),
            })
        }
        (None, None) => None,
        _ => {
            return Err(SettingError::new(
                "cert_file",
                "needs key_file, and key_file needs cert_file",
            ))
        }
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert: Some(root_pem),
    })
}

/// The system's roots (those rustls can use; unreadable ones are skipped) and the Mozilla roots,
/// as PEM: the crate takes one CA bundle.
fn default_roots_pem() -> Vec<u8> {
    use base64::Engine;
    let mut usable = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs().certs;
    let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned();
    let mut pem = Vec::new();
    for cert in system.into_iter().chain(mozilla) {
        if usable.add(cert.clone()).is_err() {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// `host:port` of the node(s), or the socket path, for logs (never the URL: it may hold a
/// password).
pub fn address(redis_url: &str) -> String {
    let nodes = if is_cluster_url(redis_url) {
        cluster_nodes(redis_url).unwrap_or_default()
    } else {
        vec![redis_url.to_string()]
    };
    nodes
        .iter()
        .filter_map(|n| n.as_str().into_connection_info().ok())
        .map(|i| i.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `redis_url` as it may be shown (status page): the password of its user info and the value
/// of any `pass`/`password` query parameter replaced by `****`, the rest as written.
pub fn masked_url(redis_url: &str) -> String {
    let Some((scheme, rest)) = redis_url.split_once("://") else {
        return redis_url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        // `user:password@` keeps the user; a bare `secret@` is a password to the crate.
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}:****{}", &authority[at..]),
            None => format!("****{}", &authority[at..]),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("pass") => {
                        format!("{key}=****")
                    }
                    _ => param.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A client for one node of what `redis_url` names (the first seed node of a Redis Cluster),
/// for pub/sub: a Redis Cluster passes a PUBLISH on to every node, so one node hears them all.
pub fn one_node_client(
    redis_url: &str,
    tls: &TlsMaterial,
    timeout: Duration,
) -> Result<redis::Client, SettingError> {
    let url = if is_cluster_url(redis_url) {
        cluster_nodes(redis_url)?.remove(0)
    } else {
        redis_url.to_string()
    };
    match Target::new(&url, tls, timeout)? {
        Target::Single(client) => Ok(*client),
        Target::Cluster(_) => Err(SettingError::new("redis_url", "expected one node")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_never_holds_a_password() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:6379/0", "redis://:****@h:6379/0"),
            ("rediss://app:s3cr@t@h:6380", "rediss://app:****@h:6380"),
            ("redis://s3cret@h", "redis://****@h"),
            (
                "redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001",
                "redis+cluster://u:****@10.0.0.1:7000,10.0.0.2:7001",
            ),
            (
                "unix:///run/r.sock?db=1&pass=s3cret",
                "unix:///run/r.sock?db=1&pass=****",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(masked_url(url), shown);
            assert!(!masked_url(url).contains("s3cr"));
        }
    }

    #[test]
    fn a_cluster_url_lists_seed_nodes_with_shared_credentials_and_path() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p%40w@10.0.0.1:7000,10.0.0.2:7001/0").unwrap(),
            [
                "redis://u:p%40w@10.0.0.1:7000/0",
                "redis://u:p%40w@10.0.0.2:7001/0"
            ]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://[::1]:7000,redis.internal:7001").unwrap(),
            ["rediss://[::1]:7000", "rediss://redis.internal:7001"]
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1,",
        ] {
            assert!(cluster_nodes(bad).is_err(), "{bad}");
        }
        assert!(is_cluster_url("rediss+cluster://a:1"));
        assert!(!is_cluster_url("rediss://a:1"));
    }

    #[test]
    fn cluster_urls_are_checked_without_quoting_them() {
        let t = Duration::from_millis(50);
        let none = TlsMaterial::default();
        let ok = Target::new(
            "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001",
            &none,
            t,
        );
        assert!(matches!(ok, Ok(Target::Cluster(_))));
        let db = Target::new("redis+cluster://:secret@127.0.0.1:7000/3", &none, t)
            .err()
            .unwrap();
        assert!(db.to_string().starts_with("redis_url:") && db.message.contains("database 0"));
        assert!(!db.to_string().contains("secret"));
        let insecure = Target::new("rediss+cluster://h:7000#insecure", &none, t)
            .err()
            .unwrap();
        assert!(insecure.message.contains("#insecure"), "{insecure}");
        assert_eq!(
            address("redis+cluster://:pw@127.0.0.1:7000,localhost:7001"),
            "127.0.0.1:7000,localhost:7001"
        );
    }

    #[test]
    fn the_default_roots_are_a_bundle_the_crate_reads() {
        let pem = default_roots_pem();
        let n = CertificateDer::pem_slice_iter(&pem)
            .filter(Result::is_ok)
            .count();
        assert!(
            n >= webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() / 2,
            "{n}"
        );
    }
}

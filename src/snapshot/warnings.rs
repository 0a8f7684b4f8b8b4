//! Config warnings: settings that are valid but probably not what was meant, found once the
//! route table is built. They never stop a config from loading.

use super::Route;
use crate::config::{ConfigWarning, ServerConfig};
use crate::route::{BarePrefix, RouteTable};
use std::net::SocketAddr;
use std::sync::Arc;

/// Every warning for a compiled config, unlocated (see `Source::warnings`).
pub(super) fn of(server: &ServerConfig, routes: &RouteTable<Arc<Route>>) -> Vec<ConfigWarning> {
    let mut warnings: Vec<ConfigWarning> = public_admin_listener(server).into_iter().collect();
    warnings.extend(routes.bare_prefixes().iter().filter_map(bare_prefix_auth));
    warnings
}

/// `/admin/{*rest}` is protected, but the bare `/admin` is served by a route with another auth
/// (typically a public `/{*rest}`): a link or client that drops the trailing slash gets
/// something else, and the author most likely thought `/admin` was covered.
fn bare_prefix_auth(found: &BarePrefix<'_, Arc<Route>>) -> Option<ConfigWarning> {
    let mine = auth_name(found.value);
    let theirs = auth_name(found.served_value);
    if mine == theirs {
        return None;
    }
    let path = &found.path;
    Some(ConfigWarning::new(
        format!("routes.{}.path", found.route),
        format!(
            "{path:?} (without the trailing slash) is served by route {:?} (auth: {}), not by this \
             route (auth: {}); add a route for {path:?} or give them the same auth",
            found.served_by,
            describe(theirs),
            describe(mine),
        ),
    ))
}

/// The route's auth policy name; `None` for a public route.
fn auth_name(route: &Route) -> Option<&str> {
    route.auth.as_ref().map(|a| &*a.name)
}

/// `none` or the quoted policy name, as the warning shows an auth.
fn describe(auth: Option<&str>) -> String {
    match auth {
        None => "none".to_string(),
        Some(name) => format!("{name:?}"),
    }
}

/// `server.admin_listen` on an address other hosts can reach: the admin API has no
/// authentication of its own for reads.
fn public_admin_listener(server: &ServerConfig) -> Option<ConfigWarning> {
    let raw = server.admin_listen.as_deref()?;
    // Validation already refused an address that does not parse.
    let addr: SocketAddr = raw.parse().ok()?;
    // `::ffff:127.0.0.1` is loopback too.
    if addr.ip().to_canonical().is_loopback() {
        return None;
    }
    Some(ConfigWarning::new(
        "server.admin_listen",
        format!(
            "{raw:?} is not a loopback address, so the admin API (metrics, the loaded config, and \
             cache purge once caching ships) is reachable from the network; listen on 127.0.0.1 \
             unless a firewall keeps other hosts out"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(admin: &str) -> ServerConfig {
        ServerConfig {
            admin_listen: Some(admin.to_string()),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn admin_listener_off_loopback_is_a_warning() {
        for public in [
            "0.0.0.0:9901",
            "[::]:9901",
            "192.0.2.10:9901",
            "[2001:db8::1]:9901",
        ] {
            let w = public_admin_listener(&server(public));
            assert!(
                w.as_ref().is_some_and(|w| w.path == "server.admin_listen"
                    && w.message.contains("reachable from the network")),
                "{public}: {w:?}"
            );
        }
        for private in [
            "127.0.0.1:9901",
            "127.0.0.2:9901",
            "[::1]:9901",
            "[::ffff:127.0.0.1]:9901",
        ] {
            assert_eq!(public_admin_listener(&server(private)), None, "{private}");
        }
        let none = ServerConfig {
            admin_listen: None,
            ..ServerConfig::default()
        };
        assert_eq!(public_admin_listener(&none), None);
    }
}

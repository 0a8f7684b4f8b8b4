//! The HTTPS listener's settings: Mozilla "intermediate" TLS, ALPN h2 then http/1.1, and a
//! certificate callback that takes the certificate from the live snapshot on every handshake,
//! so a reload that changes the certificate applies to the next connection without a restart.

use super::TlsIdentity;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{ListenerConfig, TlsAccept};
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use std::sync::Arc;

/// Where the HTTPS listeners find the certificate of the config that is live now (the snapshot
/// store implements it).
pub trait LiveIdentity: Send + Sync {
    fn identity(&self) -> Option<Arc<TlsIdentity>>;
}

/// Hands the live config's certificate to each handshake.
struct LiveCertificate {
    live: Arc<dyn LiveIdentity>,
}

#[async_trait]
impl TlsAccept for LiveCertificate {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        // Absent only if a reload removed `[server.tls]` (the listener itself stays until a
        // restart): without a certificate the handshake fails, which is what the config says.
        let Some(identity) = self.live.identity() else {
            tracing::warn!(
                "TLS handshake refused: [server.tls] was removed; restart to close the listener"
            );
            return;
        };
        let (leaf, intermediates) = (&identity.chain[0], &identity.chain[1..]);
        let installed = ext::ssl_use_certificate(ssl, leaf)
            .and_then(|()| ext::ssl_use_private_key(ssl, &identity.key))
            .and_then(|()| {
                intermediates
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = installed {
            tracing::warn!("TLS handshake refused: cannot install the certificate: {e}");
        }
    }
}

/// Settings for every `server.tls.listen` address.
pub fn listener_settings(live: Arc<dyn LiveIdentity>) -> pingora::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(LiveCertificate { live }))?;
    // Prefer HTTP/2, fall back to HTTP/1.1 for clients that do not offer h2.
    settings.enable_h2();
    Ok(settings)
}

/// Adds the `server.tls.listen` addresses to `service` (the proxy service, next to its plain
/// listeners), each with [`listener_settings`].
pub fn add_https_listeners<A>(
    service: &mut pingora::services::listening::Service<A>,
    live: &Arc<dyn LiveIdentity>,
    addrs: &[String],
) -> pingora::Result<()> {
    for addr in addrs {
        service.add_listener(
            ListenerConfig::tcp(addr.as_str())
                .tls(listener_settings(live.clone())?)
                .l4_buffer(crate::edge::client_buffers()),
        );
    }
    Ok(())
}

//! Purges across instances: with `[cluster]`, a purge made on one instance's admin API is
//! published on a Redis channel, and every instance, subscribed from start, applies it (within
//! milliseconds). The subscription is kept by a background service that re-subscribes after a
//! Redis outage and follows `[cluster]` across reloads. A purge made while Redis is down is
//! applied locally and reported as not propagated.

use super::purge;
use super::store::Purge;
use crate::ratelimit::cluster::{one_node_client, SettingError, Settings};
use crate::snapshot::Store;
use async_trait::async_trait;
use futures::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// The Redis channel purges travel on.
pub const CHANNEL: &str = "tollgate:cache:purge";
/// Longest wait between two subscription attempts while Redis is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a live subscription checks whether a reload changed `[cluster]`.
const FOLLOW_CONFIG_EVERY: Duration = Duration::from_secs(1);

/// Where purges are published and heard: one Redis node.
pub struct PurgeChannel {
    client: redis::Client,
    timeout: Duration,
    /// `host:port`, for logs (never the URL: it may hold a password).
    addr: String,
}

impl PurgeChannel {
    /// No I/O: connects when used.
    pub fn new(settings: &Settings) -> Result<PurgeChannel, SettingError> {
        Ok(PurgeChannel {
            client: one_node_client(&settings.redis_url, &settings.tls, settings.timeout)?,
            // A purge is rare and worth more than a rate-limit check's budget.
            timeout: settings.timeout.max(Duration::from_secs(1)),
            addr: crate::ratelimit::cluster::address(&settings.redis_url),
        })
    }

    /// Tells the other instances; `false` when Redis could not be reached in time.
    pub async fn publish(&self, from: &str, purge: &Purge) -> bool {
        let Some(body) = purge::to_json(purge) else {
            return false;
        };
        let message = message(from, &body);
        let send = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(redis = %self.addr, "cache purge not propagated: {e}");
                false
            }
            Err(_) => {
                tracing::warn!(redis = %self.addr, "cache purge not propagated: Redis did not answer in time");
                false
            }
        }
    }
}

fn message(from: &str, purge: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(purge.len() + from.len() + 24);
    m.extend_from_slice(b"{\"from\":");
    m.extend_from_slice(&serde_json::to_vec(from).unwrap_or_default());
    m.extend_from_slice(b",\"purge\":");
    m.extend_from_slice(purge);
    m.push(b'}');
    m
}

/// Reads a message from the channel: who sent it and the purge. Anything else is ignored.
fn read_message(payload: &[u8]) -> Option<(String, Purge)> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let from = value.get("from")?.as_str()?.to_owned();
    let body = serde_json::to_vec(value.get("purge")?).ok()?;
    Some((from, purge::parse(&body).ok()?))
}

/// The subscription of one gateway.
pub struct PurgeService {
    store: Arc<Store>,
}

impl PurgeService {
    pub fn new(store: Arc<Store>) -> PurgeService {
        PurgeService { store }
    }

    fn channel(&self) -> Option<Arc<PurgeChannel>> {
        self.store.snapshot().purge_channel.clone()
    }

    /// Applies what the others publish until the connection drops, `[cluster]` changes or
    /// the server stops (`true`).
    async fn listen(
        &self,
        channel: &Arc<PurgeChannel>,
        shutdown: &mut ShutdownWatch,
    ) -> Result<bool, redis::RedisError> {
        let connect = tokio::time::timeout(channel.timeout, channel.client.get_async_pubsub());
        let mut pubsub = match connect.await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            }
        };
        pubsub.subscribe(CHANNEL).await?;
        tracing::info!(redis = %channel.addr, "listening for cache purges from other instances");
        let store = self.store.snapshot().cache_store;
        let me = store.instance().to_owned();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(true),
                message = messages.next() => {
                    let Some(message) = message else { return Ok(false) };
                    match read_message(message.get_payload_bytes()) {
                        Some((from, purge)) if from != me => {
                            let n = store.purge(&purge);
                            tracing::debug!(from, ?purge, n, "cache purge from another instance");
                        }
                        Some(_) => {}
                        None => tracing::warn!("ignored a malformed cache purge message"),
                    }
                }
                _ = tokio::time::sleep(FOLLOW_CONFIG_EVERY) => {
                    if !self.channel().is_some_and(|c| Arc::ptr_eq(&c, channel)) {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for PurgeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.channel() {
                None => FOLLOW_CONFIG_EVERY,
                Some(channel) => match self.listen(&channel, &mut shutdown).await {
                    Ok(true) => return,
                    Ok(false) => {
                        backoff = Duration::from_millis(100);
                        Duration::ZERO
                    }
                    Err(e) => {
                        tracing::warn!(redis = %channel.addr, "cache purge subscription failed, retrying in {backoff:?}: {e}");
                        let wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        wait
                    }
                },
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let purge = Purge::Tag("product-7".into());
        let body = purge::to_json(&purge).unwrap();
        let m = message("abc", &body);
        assert_eq!(read_message(&m), Some(("abc".into(), purge)));
        assert_eq!(read_message(b"{\"from\":\"x\"}"), None);
        assert_eq!(read_message(b"garbage"), None);
    }
}

//! The background JWKS refresh: a Pingora background service that, every second, starts a
//! load for each live key store whose `jwks_refresh` interval has passed (sooner after a
//! failure). Loads run in their own tasks, so a slow provider delays no other policy.

use super::store::KeyRegistry;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_secs(1);

pub struct JwksService {
    registry: Arc<KeyRegistry>,
}

impl JwksService {
    pub fn new(registry: Arc<KeyRegistry>) -> JwksService {
        JwksService { registry }
    }
}

#[async_trait]
impl BackgroundService for JwksService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            for store in self.registry.live() {
                store.refresh_if_due(now);
            }
        }
    }
}

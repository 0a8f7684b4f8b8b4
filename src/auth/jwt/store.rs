//! Key stores: the live key set of a JWKS-backed policy, kept fresh in the background and
//! refetched on demand when a token names an unknown `kid`, and the registry that keeps a store
//! across config reloads while its settings are unchanged.
//!
//! A failed load (provider down, non-2xx, garbage, no usable key, too large) never replaces the
//! last good set. An outage is logged once when it starts and once when it ends; every attempt
//! is counted in `tollgate_jwks_refresh_total`. On-demand refetches are limited to one per
//! [`ON_DEMAND_INTERVAL`] per store and all callers share the fetch in flight, so tokens with
//! made-up kids cannot hammer the identity provider.

use super::jwks;
use super::keys::KeySet;
use super::settings::KeySource;
use crate::observe::Metrics;
use crate::registry::Registry;
use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Deadline of one JWKS load (connect, answer and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one unknown-kid refetch per store in this interval.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed load the background refresh tries again this soon (or at `jwks_refresh`, if
/// shorter), so a provider that recovers is noticed without waiting a whole refresh interval.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A key set with the generation number it was published under; the generation grows whenever
/// the keys change, so a cached verdict can tell cheaply whether its key may be gone.
pub struct Published {
    pub generation: u64,
    pub keys: KeySet,
}

/// The keys of one JWKS source for one policy.
pub struct KeyStore {
    policy: String,
    source: KeySource,
    refresh_every: Duration,
    client: Result<reqwest::Client, String>,
    metrics: Arc<Metrics>,
    current: ArcSwap<Published>,
    fetch: Mutex<FetchState>,
}

impl FetchState {
    fn busy(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|(_, task)| !task.is_finished())
    }
}

#[derive(Default)]
struct FetchState {
    /// The load in flight; every caller awaits the same one. The task handle tells whether it
    /// ended (even by a panic, which would skip clearing this field).
    in_flight: Option<(Shared<BoxFuture<'static, ()>>, tokio::task::AbortHandle)>,
    last_attempt: Option<Instant>,
    last_on_demand: Option<Instant>,
    /// Set while loads fail: the outage has been logged.
    failing: bool,
    last_error: Option<String>,
    fingerprint: Option<[u8; 32]>,
}

impl KeyStore {
    fn new(
        policy: &str,
        source: KeySource,
        refresh_every: Duration,
        client: Result<reqwest::Client, String>,
        metrics: Arc<Metrics>,
    ) -> KeyStore {
        KeyStore {
            policy: policy.to_string(),
            source,
            refresh_every,
            client,
            metrics,
            current: ArcSwap::from_pointee(Published {
                generation: 0,
                keys: KeySet::default(),
            }),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The key set in use now.
    pub fn current(&self) -> Arc<Published> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    fn state(&self) -> MutexGuard<'_, FetchState> {
        self.fetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the keys unless a set is already there, waiting at most `timeout` (start-up calls
    /// this so keys are fetched at load, not by the first request). Err says why no key set is
    /// available; the store keeps retrying in the background either way.
    pub async fn ensure_loaded(self: &Arc<Self>, timeout: Duration) -> Result<(), String> {
        if !self.current().keys.is_empty() {
            return Ok(());
        }
        let fetch = self.join_or_start(&mut self.state());
        // A timeout here leaves the load running; its result is published when it arrives.
        let _ = tokio::time::timeout(timeout, fetch).await;
        if !self.current().keys.is_empty() {
            return Ok(());
        }
        Err(self
            .state()
            .last_error
            .clone()
            .unwrap_or_else(|| format!("no answer within {timeout:?}")))
    }

    /// Loads the keys now (or joins the load in flight) and waits for the outcome.
    pub async fn refresh(self: &Arc<Self>) {
        let fetch = self.join_or_start(&mut self.state());
        fetch.await;
    }

    /// Starts a background load if the refresh interval (shorter after a failure) has passed
    /// and none is in flight; returns whether it started one.
    pub fn refresh_if_due(self: &Arc<Self>, now: Instant) -> bool {
        let mut st = self.state();
        if st.busy() {
            return false;
        }
        let every = if st.failing {
            self.refresh_every.min(RETRY_AFTER_FAILURE)
        } else {
            self.refresh_every
        };
        if st
            .last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return false;
        }
        drop(self.join_or_start(&mut st));
        true
    }

    /// For a token whose `kid` is not in the set: refetches (at most once per
    /// [`ON_DEMAND_INTERVAL`], or joins the load in flight) and waits at most `wait` for it.
    /// Returns whether a load was awaited; the caller looks the key up again either way.
    pub async fn refetch_for_unknown_kid(self: &Arc<Self>, wait: Duration) -> bool {
        let fetch = {
            let mut st = self.state();
            let now = Instant::now();
            if !st.busy() {
                if st
                    .last_on_demand
                    .is_some_and(|t| now.saturating_duration_since(t) < ON_DEMAND_INTERVAL)
                {
                    return false;
                }
                st.last_on_demand = Some(now);
            }
            self.join_or_start(&mut st)
        };
        tokio::time::timeout(wait, fetch).await.is_ok()
    }

    /// The load in flight, or a new one. The load runs in its own task so it finishes (and
    /// its result is kept) even when every waiting request has given up.
    fn join_or_start(self: &Arc<Self>, st: &mut FetchState) -> Shared<BoxFuture<'static, ()>> {
        if let Some((fetch, _)) = st.in_flight.as_ref().filter(|_| st.busy()) {
            return fetch.clone();
        }
        let store = self.clone();
        let task = tokio::spawn(async move {
            let result = store.load().await;
            store.apply(result);
        });
        let handle = task.abort_handle();
        let fetch = async move {
            let _ = task.await;
        }
        .boxed()
        .shared();
        st.in_flight = Some((fetch.clone(), handle));
        st.last_attempt = Some(Instant::now());
        fetch
    }

    async fn load(&self) -> Result<KeySet, String> {
        match &self.source {
            KeySource::JwksUrl(url) => {
                let client = self.client.as_ref().map_err(Clone::clone)?;
                jwks::fetch(client, url, FETCH_TIMEOUT).await
            }
            KeySource::JwksFile(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || jwks::read_file(&path))
                    .await
                    .unwrap_or_else(|e| Err(format!("reading the file failed: {e}")))
            }
            KeySource::Secret(_) => Err("a secret has no key store".into()),
        }
    }

    /// Publishes a good set (a new generation only if the keys changed) or records a failure;
    /// logs an outage once and its end once.
    pub(crate) fn apply(&self, result: Result<KeySet, String>) {
        let mut st = self.state();
        st.in_flight = None;
        // A set given at construction (a JWKS file) counts as a load for the refresh timer.
        st.last_attempt.get_or_insert_with(Instant::now);
        match result {
            Ok(keys) => {
                let fingerprint = keys.fingerprint();
                let count = keys.len();
                if st.fingerprint != Some(fingerprint) {
                    let generation = self.generation() + 1;
                    if st.fingerprint.is_some() {
                        tracing::info!(policy = %self.policy, source = ?self.source, keys = count, "JWT keys changed");
                    }
                    self.current.store(Arc::new(Published { generation, keys }));
                    st.fingerprint = Some(fingerprint);
                }
                if st.failing {
                    tracing::info!(policy = %self.policy, source = ?self.source, keys = count, "JWT keys loaded again after failures");
                }
                st.failing = false;
                st.last_error = None;
                self.metrics.jwks_refresh(&self.policy, true, count);
            }
            Err(error) => {
                if !st.failing {
                    tracing::warn!(policy = %self.policy, source = ?self.source, %error, "cannot load JWT keys; the last good keys stay in use (logged once until it recovers)");
                }
                st.failing = true;
                st.last_error = Some(error);
                self.metrics
                    .jwks_refresh(&self.policy, false, self.current().keys.len());
            }
        }
    }
}

/// Hands out key stores, reusing a store while its policy name, source and refresh interval
/// are unchanged (as `upstream::StateRegistry` does for upstream state), so a reload neither
/// forgets the keys nor refetches them. Holds weak references: a store dies with the last
/// snapshot using it.
pub struct KeyRegistry {
    metrics: Arc<Metrics>,
    client: Result<reqwest::Client, String>,
    entries: Registry<StoreKey, KeyStore>,
}

/// What makes two policies share a key store: same name, source, refresh interval and trusted
/// CA for the JWKS URL.
type StoreKey = (String, KeySource, Duration, Option<Vec<u8>>);

impl KeyRegistry {
    pub fn new(metrics: Arc<Metrics>) -> KeyRegistry {
        KeyRegistry {
            metrics,
            client: jwks::http_client(),
            entries: Registry::new(),
        }
    }

    /// The store for these settings, and whether it was created now. Err when `jwks_ca_pem`
    /// holds no usable certificate.
    pub(crate) fn store_for(
        &self,
        settings: &super::JwtSettings,
    ) -> Result<(Arc<KeyStore>, bool), String> {
        let key = (
            settings.policy.clone(),
            settings.keys.clone(),
            settings.jwks_refresh,
            settings.jwks_ca_pem.clone(),
        );
        self.entries.try_get_or_insert(key, || {
            let client = match &settings.jwks_ca_pem {
                Some(pem) => Ok(jwks::http_client_trusting(pem)?),
                None => self.client.clone(),
            };
            Ok(Arc::new(KeyStore::new(
                &settings.policy,
                settings.keys.clone(),
                settings.jwks_refresh,
                client,
                self.metrics.clone(),
            )))
        })
    }

    /// The stores some snapshot still uses (for the background refresh).
    pub fn live(&self) -> Vec<Arc<KeyStore>> {
        self.entries.live()
    }
}

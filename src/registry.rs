//! State that outlives config snapshots (upstream health and circuits, JWT key sets, rate-limit
//! buckets, ...): handed to every snapshot whose settings for it are unchanged, so a reload
//! neither forgets that a target is down nor refetches keys nor refills buckets; a changed
//! setting starts fresh state.
//!
//! Keyed by the settings themselves (types that derive `Hash` and `Eq`), holding weak
//! references: state dies with the last snapshot using it. A config that is compiled but then
//! rejected adds its own entry next to the running one instead of replacing it, so going back
//! to the running settings finds the running state.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub struct Registry<K, V: ?Sized> {
    entries: Mutex<HashMap<K, Weak<V>>>,
}

impl<K: Eq + Hash, V: ?Sized> Default for Registry<K, V> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: ?Sized> Registry<K, V> {
    pub fn new() -> Registry<K, V> {
        Registry::default()
    }

    /// The state for `key`: the live one, or a new one from `make`.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> Arc<V>) -> Arc<V> {
        match self.try_get_or_insert_with(key, || Ok::<_, std::convert::Infallible>(make())) {
            Ok(state) => state,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with), for state whose making can fail
    /// (nothing is registered then). The second value says whether the state is new.
    pub fn try_get_or_insert_with<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<Arc<V>, E>,
    ) -> Result<Arc<V>, E> {
        self.try_get_or_insert(key, make).map(|(state, _)| state)
    }

    /// The state for `key` and whether it was made now.
    pub fn try_get_or_insert<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<Arc<V>, E>,
    ) -> Result<(Arc<V>, bool), E> {
        let mut entries = self.lock();
        if let Some(state) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok((state, false));
        }
        let state = make()?;
        entries.insert(key, Arc::downgrade(&state));
        // Forget entries nobody uses any more, so the map does not grow with renamed entries
        // or rejected configs.
        entries.retain(|_, w| w.strong_count() > 0);
        Ok((state, true))
    }

    /// Every state some snapshot still uses.
    pub fn live(&self) -> Vec<Arc<V>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// A poisoned lock only means another thread panicked while holding it; the map itself is
    /// always consistent (one insert or retain at a time).
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Weak<V>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_settings_same_state_until_nobody_holds_it() {
        let registry: Registry<(String, u32), Vec<u32>> = Registry::new();
        let a = registry.get_or_insert_with(("a".into(), 1), || Arc::new(vec![1]));
        let again = registry.get_or_insert_with(("a".into(), 1), || Arc::new(vec![2]));
        assert!(Arc::ptr_eq(&a, &again));
        let changed = registry.get_or_insert_with(("a".into(), 2), || Arc::new(vec![3]));
        assert!(!Arc::ptr_eq(&a, &changed));
        assert_eq!(registry.live().len(), 2);
        drop((a, again));
        let fresh = registry.get_or_insert_with(("a".into(), 1), || Arc::new(vec![4]));
        assert_eq!(*fresh, vec![4]);
        let failed =
            registry.try_get_or_insert_with(("b".into(), 1), || Err::<Arc<Vec<u32>>, _>("no"));
        assert_eq!(failed.unwrap_err(), "no");
        assert_eq!(registry.live().len(), 2);
    }
}

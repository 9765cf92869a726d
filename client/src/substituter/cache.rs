//! The resolution cache: bounded (LRU), with a time-to-live per value, and single-flight — while
//! one task resolves a key, every other request for it waits for that result instead of asking
//! the logs again.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

type Slot<V> = watch::Receiver<Option<Arc<V>>>;

struct Inner<K: Hash + Eq, V> {
    ready: lru::LruCache<K, (Arc<V>, Instant)>,
    pending: HashMap<K, Slot<V>>,
}

/// A bounded TTL cache with single-flight resolution.
pub struct Cache<K: Hash + Eq, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
}

impl<K: Hash + Eq, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// The state of one key for a caller.
pub enum Entry<K: Hash + Eq + Clone, V> {
    /// A fresh value.
    Ready(Arc<V>),
    /// Someone is resolving it: wait with [`Waiter::wait`].
    Pending(Waiter<V>),
    /// The caller must resolve it and [`Owner::complete`] it (dropping the owner un-completed
    /// releases the waiters with `None`).
    Owned(Owner<K, V>),
}

/// Waits for a value another task is resolving.
pub struct Waiter<V>(Slot<V>);

impl<V> Waiter<V> {
    /// The value, or `None` if its owner gave up.
    pub async fn wait(mut self) -> Option<Arc<V>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

/// The duty to resolve one key.
pub struct Owner<K: Hash + Eq + Clone, V> {
    key: K,
    tx: Option<watch::Sender<Option<Arc<V>>>>,
    cache: Cache<K, V>,
}

impl<K: Hash + Eq + Clone, V> Owner<K, V> {
    /// The key to resolve.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// A waiter for this key's value (for the owner's own caller).
    pub fn waiter(&self) -> Option<Waiter<V>> {
        self.tx.as_ref().map(|tx| Waiter(tx.subscribe()))
    }

    /// Stores the value for `ttl` and wakes every waiter.
    pub fn complete(mut self, value: Arc<V>, ttl: Duration) {
        let now = Instant::now();
        {
            let mut inner = self.cache.lock();
            inner.pending.remove(&self.key);
            if !ttl.is_zero() {
                inner
                    .ready
                    .put(self.key.clone(), (value.clone(), now + ttl));
            }
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(value));
        }
    }
}

impl<K: Hash + Eq + Clone, V> Drop for Owner<K, V> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.cache.lock().pending.remove(&self.key);
        }
    }
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    /// A cache holding at most `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                ready: lru::LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
                pending: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of `key`: a fresh value, a resolution to wait for, or the duty to resolve it.
    pub fn entry(&self, key: &K) -> Entry<K, V> {
        let mut inner = self.lock();
        if let Some((v, expires)) = inner.ready.get(key) {
            if *expires > Instant::now() {
                return Entry::Ready(v.clone());
            }
            inner.ready.pop(key);
        }
        if let Some(slot) = inner.pending.get(key) {
            return Entry::Pending(Waiter(slot.clone()));
        }
        let (tx, rx) = watch::channel(None);
        inner.pending.insert(key.clone(), rx);
        Entry::Owned(Owner {
            key: key.clone(),
            tx: Some(tx),
            cache: self.clone(),
        })
    }

    /// A fresh value for `key`, if any (no claim is made).
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        let mut inner = self.lock();
        match inner.ready.get(key) {
            Some((v, expires)) if *expires > Instant::now() => Some(v.clone()),
            _ => None,
        }
    }

    /// Whether `key` has a fresh value or is being resolved.
    pub fn is_known(&self, key: &K) -> bool {
        let mut inner = self.lock();
        inner.pending.contains_key(key)
            || matches!(inner.ready.get(key), Some((_, e)) if *e > Instant::now())
    }

    /// Forgets `key`'s value (a pending resolution is left alone).
    pub fn invalidate(&self, key: &K) {
        self.lock().ready.pop(key);
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn single_flight_and_ttl() {
        let c: Cache<u32, String> = Cache::new(2);
        let Entry::Owned(owner) = c.entry(&1) else {
            panic!("first caller must own the key")
        };
        let Entry::Pending(w) = c.entry(&1) else {
            panic!("second caller must wait")
        };
        let waiting = tokio::spawn(w.wait());
        owner.complete(Arc::new("one".into()), Duration::from_secs(60));
        assert_eq!(
            waiting.await.unwrap().as_deref().map(String::as_str),
            Some("one")
        );
        assert!(matches!(c.entry(&1), Entry::Ready(v) if *v == "one"));

        // A zero TTL wakes waiters but caches nothing.
        let Entry::Owned(o) = c.entry(&2) else {
            panic!()
        };
        o.complete(Arc::new("two".into()), Duration::ZERO);
        assert!(matches!(c.entry(&2), Entry::Owned(_)));

        // An owner dropped without completing releases its waiters with None.
        let Entry::Owned(o) = c.entry(&3) else {
            panic!()
        };
        let Entry::Pending(w) = c.entry(&3) else {
            panic!()
        };
        drop(o);
        assert!(w.wait().await.is_none());
        assert!(matches!(c.entry(&3), Entry::Owned(_)));
    }

    #[tokio::test]
    async fn bounded_and_expiring() {
        let c: Cache<u32, u32> = Cache::new(2);
        for k in 0..3 {
            let Entry::Owned(o) = c.entry(&k) else {
                panic!()
            };
            o.complete(
                Arc::new(k),
                Duration::from_millis(if k == 2 { 1 } else { 60_000 }),
            );
        }
        assert_eq!(c.len(), 2);
        assert!(c.peek(&0).is_none(), "least recently used is evicted");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(c.peek(&2).is_none(), "expired");
        assert_eq!(c.peek(&1).as_deref(), Some(&1));
    }
}

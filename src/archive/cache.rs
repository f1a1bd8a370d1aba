//! A small in-process cache of rendered answers with a time to live: what
//! lets `/archive/{slug}` answer without a database round trip per
//! request. Each replica keeps its own; a change made elsewhere shows here
//! within the TTL, and a change made in this process clears it at once
//! ([`TtlCache::clear`], called once the change has committed).
//!
//! A load that started before a clear and ends after it would put back
//! what the clear took out (a page read just before the issue went private,
//! say): each clear starts a new generation, and a load stores its value
//! only if no clear happened while it ran.
//!
//! Bounded: past `capacity` entries, the expired ones go, and if that is
//! not enough, all of them. Addresses a visitor makes up (slugs of no
//! issue, cursors) cannot grow it without end; they cost a reload.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    entries: RwLock<HashMap<K, (Instant, V)>>,
    ttl: Duration,
    capacity: usize,
    generation: AtomicU64,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            ttl,
            capacity,
            generation: AtomicU64::new(0),
        }
    }

    /// The value of `key` if its load began less than the TTL ago; otherwise
    /// what `load` gives, stored for the next callers. An error is passed
    /// on and nothing is stored.
    pub async fn get_or_load<E>(
        &self,
        key: K,
        load: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        if let Some(value) = self.fresh(&key) {
            return Ok(value);
        }
        let generation = self.generation.load(Ordering::Acquire);
        // The value is as old as the state it read, which is from when the
        // load began: stamped at the end, a slow load would be served for
        // its TTL plus its own duration.
        let read_at = Instant::now();
        let value = load.await?;
        self.store(generation, read_at, key, value.clone());
        Ok(value)
    }

    fn fresh(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let (read_at, value) = entries.get(key)?;
        (read_at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn store(&self, generation: u64, read_at: Instant, key: K, value: V) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        // Read under the lock that `clear` takes too: a clear either
        // happened before this (and the value is dropped) or waits for it
        // (and removes the value).
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (read_at, value));
    }

    /// Forgets every value, and any load in flight: the next caller of
    /// each key loads it again.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    async fn counting_load(loads: &AtomicUsize, value: u32) -> Result<u32, ()> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    #[tokio::test]
    async fn a_value_is_loaded_once_within_its_ttl_and_again_after() {
        let cache = TtlCache::new(Duration::from_millis(50), 10);
        let loads = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(
                cache.get_or_load("a", counting_load(&loads, 1)).await,
                Ok(1)
            );
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.fresh(&"a").is_some() {
            assert!(Instant::now() < deadline, "the value never expired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            cache.get_or_load("a", counting_load(&loads, 2)).await,
            Ok(2)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_clear_forgets_every_value_at_once() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let loads = AtomicUsize::new(0);
        cache
            .get_or_load("a", counting_load(&loads, 1))
            .await
            .unwrap();
        cache.clear();
        assert_eq!(
            cache.get_or_load("a", counting_load(&loads, 2)).await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn a_load_that_overlaps_a_clear_is_not_kept() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        // The load reads the old state, then the change commits and clears.
        let stale = cache
            .get_or_load("a", async {
                cache.clear();
                Ok::<_, ()>("before the change")
            })
            .await;
        assert_eq!(stale, Ok("before the change"));
        let loads = AtomicUsize::new(0);
        let fresh = cache
            .get_or_load("a", async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>("after the change")
            })
            .await;
        assert_eq!(fresh, Ok("after the change"));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_value_expires_a_ttl_after_its_load_began_not_after_it_ended() {
        let ttl = Duration::from_millis(50);
        let cache = TtlCache::new(ttl, 10);
        let value = cache
            .get_or_load("a", async {
                // A load slower than the TTL: what it read is already too
                // old to serve when it ends.
                let began = Instant::now();
                while began.elapsed() <= ttl {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, ()>(1)
            })
            .await;
        assert_eq!(value, Ok(1));
        assert!(cache.fresh(&"a").is_none());
    }

    #[tokio::test]
    async fn errors_are_passed_on_and_not_kept() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        assert_eq!(
            cache
                .get_or_load("a", async { Err::<u32, _>("down") })
                .await,
            Err("down")
        );
        assert_eq!(
            cache.get_or_load("a", async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
    }

    #[tokio::test]
    async fn it_never_holds_more_than_its_capacity() {
        let cache = TtlCache::new(Duration::from_secs(60), 4);
        for key in 0..100 {
            cache
                .get_or_load(key, async { Ok::<_, ()>(key) })
                .await
                .unwrap();
            assert!(cache.entries.read().unwrap().len() <= 4);
        }
    }
}

//! A small in-process cache of rendered answers with a time to live: what
//! lets `/archive/{slug}` answer without a database round trip per
//! request. Each replica keeps its own; a change made elsewhere shows here
//! within the TTL, and a change made in this process clears it at once
//! ([`TtlCache::clear`], called once the change has committed).
//!
//! Built on `moka`, which keeps the size bound and, more to the point, runs
//! one load per key however many requests miss it at once: when a popular
//! page expires, the requests that arrive meanwhile wait for that one
//! load rather than each reading the database. What this module adds:
//!
//! - A value lives a TTL from when its load *began*: the state it shows is
//!   that old, and a slow load must not be served for its TTL plus its own
//!   duration.
//! - A load that started before a clear and ends after it would put back
//!   what the clear took out (a page read just before the issue went
//!   private, say). Each clear starts a new generation, part of every key:
//!   such a load stores its value under the old generation, where no
//!   caller looks any more.
//! - One request's failure is not another's: the callers waiting on a load
//!   that failed (or whose request went away) load for themselves.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

pub struct TtlCache<K, V> {
    entries: Cache<(u64, K), Entry<V>>,
    generation: AtomicU64,
}

#[derive(Clone)]
struct Entry<V> {
    read_at: Instant,
    value: V,
}

/// Each entry lives what is left of the TTL after its load began.
struct FromRead(Duration);

impl<K, V> Expiry<K, Entry<V>> for FromRead {
    fn expire_after_create(
        &self,
        _key: &K,
        entry: &Entry<V>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.0.saturating_sub(entry.read_at.elapsed()))
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(FromRead(ttl))
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The value of `key` if its load began less than the TTL ago;
    /// otherwise what `load` gives, stored for the next callers. Callers
    /// that miss while a load of the key is running wait for it. An error
    /// is passed on to the caller whose load it was, and nothing is stored.
    pub async fn get_or_load<E>(
        &self,
        key: K,
        load: impl AsyncFn() -> Result<V, E>,
    ) -> Result<V, E> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut failed = None;
        let loaded = self
            .entries
            .optionally_get_with((generation, key), async {
                let read_at = Instant::now();
                match load().await {
                    Ok(value) => Some(Entry { read_at, value }),
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                }
            })
            .await;
        match (loaded, failed) {
            (Some(entry), _) => Ok(entry.value),
            (None, Some(e)) => Err(e),
            // The load this caller waited on failed: it was another
            // request's, which has its answer. This one tries on its own.
            (None, None) => load().await,
        }
    }

    /// Forgets every value, and any load in flight: the next caller of
    /// each key loads it again.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    #[cfg(test)]
    async fn fresh(&self, key: K) -> Option<V> {
        let generation = self.generation.load(Ordering::Acquire);
        self.entries
            .get(&(generation, key))
            .await
            .map(|entry| entry.value)
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
                cache.get_or_load("a", || counting_load(&loads, 1)).await,
                Ok(1)
            );
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.fresh("a").await.is_some() {
            assert!(Instant::now() < deadline, "the value never expired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            cache.get_or_load("a", || counting_load(&loads, 2)).await,
            Ok(2)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_clear_forgets_every_value_at_once() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let loads = AtomicUsize::new(0);
        cache
            .get_or_load("a", || counting_load(&loads, 1))
            .await
            .unwrap();
        cache.clear();
        assert_eq!(
            cache.get_or_load("a", || counting_load(&loads, 2)).await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn a_load_that_overlaps_a_clear_is_not_kept() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        // The load reads the old state, then the change commits and clears.
        let stale = cache
            .get_or_load("a", || async {
                cache.clear();
                Ok::<_, ()>("before the change")
            })
            .await;
        assert_eq!(stale, Ok("before the change"));
        let loads = AtomicUsize::new(0);
        let fresh = cache
            .get_or_load("a", || async {
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
            .get_or_load("a", || async {
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
        assert!(cache.fresh("a").await.is_none());
    }

    #[tokio::test]
    async fn errors_are_passed_on_and_not_kept() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        assert_eq!(
            cache
                .get_or_load("a", || async { Err::<u32, _>("down") })
                .await,
            Err("down")
        );
        assert_eq!(
            cache.get_or_load("a", || async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
    }

    #[tokio::test]
    async fn it_never_holds_more_than_its_capacity() {
        let cache = TtlCache::new(Duration::from_secs(60), 4);
        for key in 0..100 {
            cache
                .get_or_load(key, || async { Ok::<_, ()>(key) })
                .await
                .unwrap();
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entries.entry_count() <= 4);
    }

    #[tokio::test]
    async fn callers_that_miss_at_once_share_one_load() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let loads = AtomicUsize::new(0);
        let (release, released) = tokio::sync::watch::channel(false);
        let load = || {
            let mut released = released.clone();
            let loads = &loads;
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                released.wait_for(|go| *go).await.map_err(|_| ())?;
                Ok::<_, ()>(1)
            }
        };
        let callers = futures::future::join_all((0..20).map(|_| cache.get_or_load("a", load)));
        let (answers, ()) = tokio::join!(callers, async {
            release.send(true).unwrap();
        });
        assert!(answers.iter().all(|answer| *answer == Ok(1)));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_caller_waiting_on_a_load_that_fails_loads_for_itself() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let (release, released) = tokio::sync::watch::channel(false);
        let failing = || {
            let mut released = released.clone();
            async move {
                released.wait_for(|go| *go).await.map_err(|_| "closed")?;
                Err::<u32, _>("down")
            }
        };
        let (first, second, ()) = tokio::join!(
            cache.get_or_load("a", failing),
            cache.get_or_load("a", || async { Ok::<_, &str>(7) }),
            async {
                release.send(true).unwrap();
            }
        );
        assert_eq!(first, Err("down"));
        assert_eq!(second, Ok(7));
    }
}

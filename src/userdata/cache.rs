//! The user record cache of the MongoDB source.
//!
//! Entries are never dropped for age (only for capacity or by a change event): past the TTL they
//! are "stale", refetched on the next lookup, and still served when the source is down and
//! `on_unavailable: serve_cached` allows it. Concurrent misses for one user share one fetch.
//!
//! Bounded by `max_bytes`, each entry weighed by its real heap size (`weight.rs`), and optionally
//! by `max_entries`. Delete events carry only the document `_id`, so a small index maps `_id`s to
//! cached users. Every change to the cache (insert, eviction, invalidation) happens under the
//! flights lock, and each entry that leaves passes through `release`, which keeps the index and
//! the bytes in step with the cache.
//!
//! The cache is a `quick_cache` (weighed CLOCK-PRO): a read takes a shard's read lock, with none
//! of moka's read-side housekeeping, and an entry costs about half of moka's bookkeeping.

use super::weight::record_heap;
use super::{Unavailable, UserRecord};
use crate::cache_sizing;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one fetch from the source yields.
pub struct Fetched {
    pub record: Arc<UserRecord>,
    /// The chosen document's `_id` (canonical text), so a delete event, which only carries the
    /// `_id`, can find the user it belongs to.
    pub doc_id: Option<String>,
}

pub struct Entry {
    pub record: Arc<UserRecord>,
    doc_id: Option<Box<str>>,
    fetched: Instant,
    generation: u64,
    /// Real heap bytes, for the bytes gauge.
    bytes: u32,
    /// What the cache's weigher sees: `bytes`, raised to `max_bytes / max_entries` when
    /// `max_entries` is set, so that neither bound can be exceeded.
    weight: u32,
}

impl Entry {
    /// Time since the record was read from the source (for `/explain`).
    pub(crate) fn age(&self) -> Duration {
        self.fetched.elapsed()
    }
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Entry>, Unavailable>>>;

struct Flights {
    running: HashMap<String, Flight>,
    /// Bumped by every change event. A fetch that overlapped an event may have read the document
    /// just before it changed, so its result is returned but not cached.
    events: u64,
}

/// Heap bytes a cached user costs beyond its record and the strings of its keys: the cache's slab
/// slot and hash-table share (with room for ghost keys and the slab's growth), the `Arc<Entry>`
/// allocation and the `_id` index slot. Measured with the counting allocator of
/// `benches/footprint.rs` (row "user: user data cache entry", 20 000 users, minus each entry's
/// record and key strings).
pub const ENTRY_OVERHEAD: usize = 250;

/// A document `_id` → the user it was cached for, and which entry (its address, compared only
/// while the entry is alive) put it there, so a late eviction of an older entry cannot remove
/// the mapping a newer one made.
type DocIndex = HashMap<Box<str>, (Box<str>, usize)>;

#[derive(Clone)]
struct EntryWeight;

impl Weighter<String, Arc<Entry>> for EntryWeight {
    fn weight(&self, _user: &String, entry: &Arc<Entry>) -> u64 {
        u64::from(entry.weight)
    }
}

/// Collects what an insert evicts (or refuses: an entry heavier than a shard), for `release`.
#[derive(Clone, Default)]
struct Evicted;

impl Lifecycle<String, Arc<Entry>> for Evicted {
    type RequestState = Vec<Arc<Entry>>;

    fn on_evict(&self, state: &mut Self::RequestState, _user: String, entry: Arc<Entry>) {
        state.push(entry);
    }
}

/// A typical cached user's weight, for the cache's first sizing (it grows as needed): an
/// 8-field document packed, with the entry's bookkeeping, weighs ~565 B.
const TYPICAL_ENTRY_BYTES: u64 = 640;

/// A slab slot (user id `String`, `Arc`, links) with its hash-table share: what a remembered
/// ghost key costs.
const SLOT_BYTES: u64 = 72;

#[doc(hidden)]
pub struct RecordCache {
    entries: Cache<String, Arc<Entry>, EntryWeight, DefaultHashBuilder, Evicted>,
    by_doc_id: Mutex<DocIndex>,
    /// Real heap bytes of the cached entries, `ENTRY_OVERHEAD` included.
    bytes: AtomicU64,
    /// `max_bytes / max_entries`: the least an entry weighs (0 without `max_entries`).
    min_weight: u32,
    ttl: Duration,
    /// Entries of an older generation are stale: bumped when events may have been missed (a new
    /// change stream) or when role definitions changed.
    generation: AtomicU64,
    /// Also the lock that orders cache commits against invalidations.
    flights: Mutex<Flights>,
    /// While set and in the future, lookups do not try the source: after a failure, every
    /// request would otherwise wait the full timeout for the same answer.
    down_until: Mutex<Option<Instant>>,
}

/// How long lookups skip the source after it failed to answer.
const DOWN_HOLD: Duration = Duration::from_secs(1);

impl RecordCache {
    pub fn new(max_bytes: u64, max_entries: Option<u64>, ttl: Duration) -> Self {
        let min_weight = max_entries.map_or(0, |n| {
            u32::try_from(max_bytes / n.max(1)).unwrap_or(u32::MAX)
        });
        let typical = TYPICAL_ENTRY_BYTES.max(u64::from(min_weight));
        let (estimated, weight_capacity) = cache_sizing::sizing(max_bytes, typical, SLOT_BYTES);
        let entries = Cache::with(
            estimated,
            weight_capacity,
            EntryWeight,
            Default::default(),
            Evicted,
        );
        Self {
            entries,
            by_doc_id: Mutex::default(),
            bytes: AtomicU64::new(0),
            min_weight,
            ttl,
            generation: AtomicU64::new(0),
            flights: Mutex::new(Flights {
                running: HashMap::new(),
                events: 0,
            }),
            down_until: Mutex::new(None),
        }
    }

    pub fn get(&self, user_id: &str) -> Option<Arc<Entry>> {
        self.entries.get(user_id)
    }

    pub(crate) fn is_fresh(&self, entry: &Entry) -> bool {
        entry.generation == self.generation.load(Ordering::Acquire)
            && entry.fetched.elapsed() < self.ttl
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the cached users.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Caches a record as a fetch would (for benches and tests; lookups go through fetches).
    pub fn insert(&self, user_id: &str, fetched: Fetched) -> Arc<Entry> {
        let _flights = self.lock_flights();
        self.insert_at(user_id, fetched, self.generation.load(Ordering::Acquire))
    }

    fn insert_at(&self, user_id: &str, fetched: Fetched, generation: u64) -> Arc<Entry> {
        let entry = self.entry(user_id, fetched, generation);
        self.bytes
            .fetch_add(u64::from(entry.bytes), Ordering::AcqRel);
        // The entry it replaces leaves first, so that releasing it cannot drop the new mapping
        // of this same `_id`.
        self.remove(user_id);
        if let Some(doc_id) = &entry.doc_id {
            lock(&self.by_doc_id).insert(doc_id.clone(), (user_id.into(), entry_address(&entry)));
        }
        let mut evicted = Vec::new();
        self.entries
            .insert_with_lifecycle(user_id.to_owned(), entry.clone(), &mut evicted);
        for gone in &evicted {
            self.release(gone);
        }
        entry
    }

    /// Takes `user_id`'s entry out of the cache and releases it.
    fn remove(&self, user_id: &str) {
        if let Some((_, gone)) = self.entries.remove(user_id) {
            self.release(&gone);
        }
    }

    /// An entry left the cache (evicted, invalidated, replaced or refused): its bytes are given
    /// back, and its `_id` mapping dropped unless a newer entry made it.
    fn release(&self, entry: &Arc<Entry>) {
        self.bytes
            .fetch_sub(u64::from(entry.bytes), Ordering::AcqRel);
        if let Some(doc_id) = &entry.doc_id {
            let mut index = lock(&self.by_doc_id);
            if index
                .get(doc_id)
                .is_some_and(|(_, owner)| *owner == entry_address(entry))
            {
                index.remove(doc_id);
            }
        }
    }

    fn entry(&self, user_id: &str, fetched: Fetched, generation: u64) -> Arc<Entry> {
        let doc_id: Option<Box<str>> = fetched.doc_id.map(String::into_boxed_str);
        // The key is held twice (cache and index), the `_id` twice (entry and index).
        let keys = 2 * user_id.len() + 2 * doc_id.as_deref().map_or(0, str::len);
        let bytes = record_heap(&fetched.record) + keys + ENTRY_OVERHEAD;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::new(Entry {
            record: fetched.record,
            doc_id,
            fetched: Instant::now(),
            generation,
            bytes,
            weight: bytes.max(self.min_weight),
        })
    }

    /// Runs `fetch` unless a fetch for this user is already running, in which case its result is
    /// shared. The fetch runs as its own task so a cancelled request cannot strand the others.
    pub(crate) async fn get_or_fetch<Fut>(
        self: &Arc<Self>,
        user_id: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Arc<Entry>, Unavailable>
    where
        Fut: Future<Output = Result<Fetched, Unavailable>> + Send + 'static,
    {
        let flight = {
            let mut flights = self.lock_flights();
            match flights.running.get(user_id) {
                Some(flight) => flight.clone(),
                None => {
                    let events = flights.events;
                    let generation = self.generation.load(Ordering::Acquire);
                    let cache = self.clone();
                    let key = user_id.to_owned();
                    let fetch = fetch();
                    let task = tokio::spawn(async move {
                        // A panicking fetch must still end the flight, or the user's later
                        // lookups would all join its failure.
                        let fetched = AssertUnwindSafe(fetch)
                            .catch_unwind()
                            .await
                            .unwrap_or(Err(Unavailable));
                        cache.finish(&key, fetched, events, generation)
                    });
                    let flight = task
                        .map(|joined| joined.unwrap_or(Err(Unavailable)))
                        .boxed()
                        .shared();
                    flights.running.insert(user_id.to_owned(), flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    fn finish(
        &self,
        user_id: &str,
        fetched: Result<Fetched, Unavailable>,
        events: u64,
        generation: u64,
    ) -> Result<Arc<Entry>, Unavailable> {
        let mut flights = self.lock_flights();
        flights.running.remove(user_id);
        let fetched = fetched?;
        if flights.events == events {
            Ok(self.insert_at(user_id, fetched, generation))
        } else {
            Ok(self.entry(user_id, fetched, generation))
        }
    }

    /// A document changed: drop the named users and the owner of the document `_id`, and keep
    /// fetches that are running now from caching what they read.
    pub fn invalidate(&self, user_ids: &[String], doc_id: Option<&str>) {
        let mut flights = self.lock_flights();
        flights.events += 1;
        let owner = doc_id.and_then(|id| lock(&self.by_doc_id).remove(id).map(|(user, _)| user));
        for user_id in user_ids.iter().map(String::as_str).chain(owner.as_deref()) {
            self.remove(user_id);
        }
    }

    /// Makes every entry stale without dropping it, so it can still bridge an outage.
    pub(crate) fn mark_all_stale(&self) {
        let mut flights = self.lock_flights();
        flights.events += 1;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Returns whether the source was considered up until now.
    pub(crate) fn source_down(&self) -> bool {
        let mut down = self.lock_down();
        let was_up = down.is_none();
        *down = Some(Instant::now() + DOWN_HOLD);
        was_up
    }

    /// Returns whether the source was considered down until now.
    pub(crate) fn source_up(&self) -> bool {
        self.lock_down().take().is_some()
    }

    pub(crate) fn source_held_down(&self) -> bool {
        self.lock_down().is_some_and(|until| Instant::now() < until)
    }

    // A panic while holding these locks cannot leave their data inconsistent (each critical
    // section is a few map operations), so a poisoned lock is used as is.
    fn lock_flights(&self) -> MutexGuard<'_, Flights> {
        lock(&self.flights)
    }

    fn lock_down(&self) -> MutexGuard<'_, Option<Instant>> {
        lock(&self.down_until)
    }
}

/// Identifies an entry while it is alive (`release` holds it while comparing).
fn entry_address(entry: &Arc<Entry>) -> usize {
    Arc::as_ptr(entry) as usize
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

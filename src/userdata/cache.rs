//! The user record cache of the MongoDB source.
//!
//! Entries are never dropped for age (only for capacity or by a change event): past the TTL they
//! are "stale", refetched on the next lookup, and still served when the source is down and
//! `on_unavailable: serve_cached` allows it. Concurrent misses for one user share one fetch.

use super::{Unavailable, UserRecord};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one fetch from the source yields.
pub(crate) struct Fetched {
    pub record: Arc<UserRecord>,
    /// The chosen document's `_id` (canonical text), so a delete event, which only carries the
    /// `_id`, can find the user it belongs to.
    pub doc_id: Option<String>,
}

pub(crate) struct Entry {
    pub record: Arc<UserRecord>,
    fetched: Instant,
    generation: u64,
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

pub(crate) struct RecordCache {
    entries: Cache<String, Arc<Entry>>,
    by_doc_id: Cache<String, String>,
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
    pub(crate) fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            entries: Cache::builder().max_capacity(max_entries).build(),
            by_doc_id: Cache::builder().max_capacity(max_entries).build(),
            ttl,
            generation: AtomicU64::new(0),
            flights: Mutex::new(Flights {
                running: HashMap::new(),
                events: 0,
            }),
            down_until: Mutex::new(None),
        }
    }

    pub(crate) fn get(&self, user_id: &str) -> Option<Arc<Entry>> {
        self.entries.get(user_id)
    }

    pub(crate) fn is_fresh(&self, entry: &Entry) -> bool {
        entry.generation == self.generation.load(Ordering::Acquire)
            && entry.fetched.elapsed() < self.ttl
    }

    pub(crate) fn len(&self) -> u64 {
        // moka counts lazily; only misses and the admin side ask, so the flush is affordable.
        self.entries.run_pending_tasks();
        self.entries.entry_count()
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
        let entry = Arc::new(Entry {
            record: fetched.record,
            fetched: Instant::now(),
            generation,
        });
        if flights.events == events {
            self.entries.insert(user_id.to_owned(), entry.clone());
            if let Some(doc_id) = fetched.doc_id {
                self.by_doc_id.insert(doc_id, user_id.to_owned());
            }
        }
        Ok(entry)
    }

    /// A document changed: drop the named users and the owner of the document `_id`, and keep
    /// fetches that are running now from caching what they read.
    pub(crate) fn invalidate(&self, user_ids: &[String], doc_id: Option<&str>) {
        let mut flights = self.lock_flights();
        flights.events += 1;
        for user_id in user_ids {
            self.entries.invalidate(user_id);
        }
        if let Some(owner) = doc_id.and_then(|id| self.by_doc_id.remove(id)) {
            self.entries.invalidate(&owner);
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
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_down(&self) -> MutexGuard<'_, Option<Instant>> {
        self.down_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

//! The per-worker front of the verified-token cache: a small direct-mapped table per worker
//! thread, holding worker-local copies of sessions, so that a hit on a hot token writes only
//! memory its own worker uses (no shared cache state, no shared `Arc` or `Bytes` counts).

use super::{Session, TokenDigest};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Slots per worker. A worker serves its hot tokens from here; the rest come from the shared
/// cache and are copied in, replacing whatever shared their slot.
pub const SLOTS: usize = 256;

/// Sessions heavier than this (kept claims or mapped data) are served from the shared cache
/// without a local copy: this caps the front at `lanes × SLOTS × MAX_LOCAL_BYTES`.
pub const MAX_LOCAL_BYTES: usize = 1024;

/// One worker's table, on its own cache lines so that two workers never write the same line.
#[repr(align(128))]
struct Lane {
    table: Mutex<Table>,
    /// Hits served here, added to the shared hit counter when metrics are read (or the cache is
    /// dropped), so a hit does not write the counter the other workers write too.
    hits: AtomicU64,
}

/// A slot: the full key (never a prefix) and this worker's session for it.
type Slot = Option<(TokenDigest, Arc<Session>)>;

struct Table {
    slots: Box<[Slot]>,
    /// Per slot, the first 8 bytes of the last key the shared cache answered without a local
    /// copy: a token is copied in only when it comes back while its mark is still there. With
    /// many rotating tokens a copy would be made and dropped on nearly every request (several
    /// allocations, and a per-user rendering lost with each copy); a hot token is copied on its
    /// second shared hit. A mark shared by two keys only costs a copy, never a wrong answer.
    seen: Box<[u64]>,
    /// `Session::local_heap_bytes` of what `slots` holds.
    bytes: usize,
}

pub struct Front {
    lanes: Box<[Lane]>,
    next_lane: AtomicUsize,
}

thread_local! {
    /// This thread's lane: (the front it was handed out by, lane index). Per thread rather than
    /// per front, so a lookup costs no shared map; a front it does not match hands out a new one.
    static LANE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

impl Front {
    /// `lanes`: how many threads get a lane of their own; later threads share one (a busy
    /// lane is skipped, never waited for).
    pub fn new(lanes: usize) -> Self {
        let lanes = (0..lanes.max(1))
            .map(|_| Lane {
                table: Mutex::new(Table {
                    slots: vec![None; SLOTS].into_boxed_slice(),
                    seen: vec![0; SLOTS].into_boxed_slice(),
                    bytes: 0,
                }),
                hits: AtomicU64::new(0),
            })
            .collect();
        Self {
            lanes,
            next_lane: AtomicUsize::new(0),
        }
    }

    /// The most the front holds: every slot of every lane with the largest local copy.
    pub fn max_bytes(lanes: usize) -> u64 {
        (lanes.max(1) * SLOTS * MAX_LOCAL_BYTES) as u64
    }

    fn lane(&self) -> &Lane {
        let me = self.lanes.as_ptr() as usize;
        let index = LANE.with(|lane| match lane.get() {
            (front, index) if front == me => index,
            _ => {
                let index = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
                lane.set((me, index));
                index
            }
        });
        &self.lanes[index % self.lanes.len()]
    }

    pub(super) fn slot(key: &TokenDigest) -> usize {
        // The key is a SHA-256: any two bytes of it are uniformly distributed.
        usize::from(u16::from_le_bytes([key[0], key[1]])) % SLOTS
    }

    /// This worker's copy, if it holds one that `still_valid` accepts; a copy it refuses is
    /// dropped. `None` also when the lane is busy (a thread sharing it).
    pub fn get(
        &self,
        key: &TokenDigest,
        still_valid: impl FnOnce(&crate::verify::Proof) -> bool,
    ) -> Lookup {
        let lane = self.lane();
        let Ok(mut table) = lane.table.try_lock() else {
            return Lookup::Miss;
        };
        let slot = Self::slot(key);
        let found = match &table.slots[slot] {
            Some((k, session)) if k == key => session.clone(),
            _ => return Lookup::Miss,
        };
        if still_valid(&found.proof) {
            lane.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(found);
        }
        table.bytes = table.bytes.saturating_sub(found.local_heap_bytes());
        table.slots[slot] = None;
        Lookup::Invalid
    }

    /// Whether a worker-local copy of `key` is worth making now: true when the shared cache
    /// answered it recently on this worker already (see `Table::seen`), else marks it.
    pub fn admit(&self, key: &TokenDigest) -> bool {
        let lane = self.lane();
        let Ok(mut table) = lane.table.try_lock() else {
            return false;
        };
        let slot = Self::slot(key);
        let mark = u64::from_le_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ]);
        if table.seen[slot] == mark {
            table.seen[slot] = 0;
            return true;
        }
        table.seen[slot] = mark;
        false
    }

    /// Keeps `session` (already this worker's own) for this worker's next requests of `key`.
    pub fn put(&self, key: TokenDigest, session: Arc<Session>) {
        let size = session.local_heap_bytes();
        if size > MAX_LOCAL_BYTES {
            return;
        }
        let lane = self.lane();
        let Ok(mut table) = lane.table.try_lock() else {
            return;
        };
        let slot = Self::slot(&key);
        let old = table.slots[slot].replace((key, session));
        let freed = old.map_or(0, |(_, s)| s.local_heap_bytes());
        table.bytes = table.bytes.saturating_sub(freed) + size;
    }

    /// Drops every worker's copy of `key` (the shared cache found it no longer valid).
    pub fn forget(&self, key: &TokenDigest) {
        let slot = Self::slot(key);
        for lane in self.lanes.iter() {
            if let Ok(mut table) = lane.table.lock() {
                if matches!(&table.slots[slot], Some((k, _)) if k == key) {
                    if let Some((_, old)) = table.slots[slot].take() {
                        table.bytes = table.bytes.saturating_sub(old.local_heap_bytes());
                    }
                }
            }
        }
    }

    /// Hits served since the last call, across lanes.
    pub fn take_hits(&self) -> u64 {
        self.lanes
            .iter()
            .map(|lane| lane.hits.swap(0, Ordering::Relaxed))
            .sum()
    }

    /// What the lanes hold now (read when metrics are scraped).
    pub fn bytes(&self) -> usize {
        let table =
            (SLOTS * (std::mem::size_of::<Slot>() + std::mem::size_of::<u64>())) * self.lanes.len();
        table
            + self
                .lanes
                .iter()
                .filter_map(|lane| lane.table.lock().ok().map(|t| t.bytes))
                .sum::<usize>()
    }
}

pub enum Lookup {
    Hit(Arc<Session>),
    /// Held but no longer valid: the shared cache's entry is not either.
    Invalid,
    Miss,
}

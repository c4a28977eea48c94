//! Sizing a `quick_cache` so that a byte bound holds for everything it allocates.
//!
//! Each entry's weight already counts its own slot (the weighers add the measured per-entry
//! bookkeeping). What no weight counts is the ghost list: CLOCK-PRO remembers the hashes of
//! recently evicted keys, up to half the estimated entry count, each in a slab slot of its own.
//! Their worst case is taken off the weight capacity up front.

/// At most one ghost key per this many estimated entries: quick_cache's default ghost allocation
/// (0.5), which the constructor used here (`Cache::with`) keeps.
const ENTRIES_PER_GHOST: u64 = 2;

/// What a cache of at most `max_bytes`, whose entries typically weigh `typical_entry` bytes and
/// whose slab slots cost `slot_bytes` (a ghost's cost, with its hash-table share), is built
/// with: (estimated entries, weight capacity).
pub fn sizing(max_bytes: u64, typical_entry: u64, slot_bytes: u64) -> (usize, u64) {
    let estimated = (max_bytes / typical_entry.max(1)).max(1);
    let ghosts = estimated / ENTRIES_PER_GHOST;
    let weight_capacity = max_bytes.saturating_sub(ghosts * slot_bytes).max(1);
    (
        usize::try_from(estimated).unwrap_or(usize::MAX),
        weight_capacity,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghosts_come_out_of_the_bound() {
        // 32 MiB of ~512-byte entries: 65 536 estimated, 32 768 ghosts of 72 B = 2.25 MiB.
        let (estimated, capacity) = sizing(32 << 20, 512, 72);
        assert_eq!(estimated, 65_536);
        assert_eq!(capacity, (32 << 20) - 32_768 * 72);
        // A bound smaller than its ghosts' worst case still makes a (tiny) cache.
        assert_eq!(sizing(1_000, 1, 72).1, 1);
    }
}

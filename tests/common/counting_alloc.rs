//! A global allocator that counts the live heap and each thread's allocations, for the binaries
//! that check cache weighers against real allocations (`tests/*_cache_weight.rs`,
//! `benches/footprint.rs`) and that a hot path does not allocate (`tests/rule_allocations.rs`). Each declares
//! it as its own `#[global_allocator]`; included by `#[path]` rather than through `common`, so
//! those binaries do not pull in the whole harness.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct Counting;

/// Bytes currently allocated through [`Counting`].
pub static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations (and reallocations) made by this thread: unlike `LIVE`, not disturbed by
    /// tests running beside it.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// How many times this thread has allocated or reallocated so far.
#[allow(dead_code)]
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

fn count_one() {
    // `try_with`: a thread being torn down still frees and may allocate.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        count_one();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        count_one();
        System.realloc(ptr, layout, new_size)
    }
}

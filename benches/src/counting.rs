//! The benches' counting allocator (`channel_bench`, `channel_setup`,
//! `channel_floor` include this file): every call goes to the system
//! allocator unchanged; while counting is on ([`count`]) it also keeps
//! the live heap bytes and the number of allocations. Off, it costs one
//! relaxed load per call.
#![allow(dead_code)] // each bench reads what it needs

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering::Relaxed};

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Live heap bytes since counting began.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocations (and reallocations) while counting.
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Install with `#[global_allocator] static GLOBAL: Counting = Counting;`.
pub(crate) struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only
// counters are kept beside it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_add(l.size() as isize, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(l.size() as isize, Relaxed);
        }
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        System.realloc(p, l, new)
    }
}

/// Counting on or off.
pub(crate) fn count(on: bool) {
    COUNTING.store(on, Relaxed);
}

/// Live heap bytes (a difference of two readings is what was kept; frees
/// of blocks made before counting began make it an underestimate by at
/// most what was freed).
pub(crate) fn live() -> isize {
    LIVE.load(Relaxed)
}

/// Allocations so far while counting.
pub(crate) fn allocs() -> u64 {
    ALLOCS.load(Relaxed)
}

/// Resident set size, bytes (Linux; 0 elsewhere).
pub(crate) fn rss() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

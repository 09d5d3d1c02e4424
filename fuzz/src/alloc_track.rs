//! A global allocator wrapper that counts live heap bytes and their peak, so
//! the harness can tell when one input made the library allocate far more
//! than the input's size justifies. Install it in a binary or test with
//! `#[global_allocator] static A: TrackingAlloc = TrackingAlloc;`; without
//! it the counters stay at zero and nothing is reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TRAP: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IN_TRAP: Cell<bool> = const { Cell::new(false) };
}

/// The counting allocator (delegates to the system allocator).
pub struct TrackingAlloc;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
    let trap = TRAP.load(Ordering::Relaxed);
    if trap != 0 && by >= trap && !IN_TRAP.with(Cell::get) {
        IN_TRAP.with(|t| t.set(true));
        eprintln!(
            "allocation of {by} bytes at:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        IN_TRAP.with(|t| t.set(false));
    }
}

/// Prints a backtrace for every allocation of at least `bytes` (0: never),
/// to find where a reproduced input allocates.
pub fn set_trap(bytes: usize) {
    TRAP.store(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Heap bytes allocated and not yet freed (0 without the allocator).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak measurement; returns the current live bytes.
pub fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The most live heap bytes since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

//! Large buffers that are about to be filled at once (an adapter read from disk, its packed copy):
//! asks Linux for transparent huge pages on them before the first write, so filling 10 MB takes a
//! handful of page faults instead of thousands. On a cold adapter load most of the time is
//! first-touch page faults, not copying.
//!
//! A served adapter's packed buffer can also come from a [`Reserve`] of one pre-faulted buffer
//! per element type (as S-LoRA preallocates its adapter pool): [`take_filled`] hands it out
//! when it fits, and [`refill_later`] faults in the next one on a background thread after a
//! load, so the page faults of the next cold load happen off its path.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Below this size the hint is not worth a system call.
const HINT_BYTES: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// An empty `Vec` with room for `n` elements, hinted for huge pages when it is large.
pub(crate) fn with_capacity<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    hint_huge_pages(&v);
    v
}

/// `n` copies of `value` in a buffer hinted for huge pages before it is written.
pub(crate) fn filled<T: Clone>(n: usize, value: T) -> Vec<T> {
    let mut v = with_capacity(n);
    v.resize(n, value);
    v
}

/// Pre-faulted buffers waiting for the next adapter load, one per element type (a
/// `Vec<E>` behind `dyn Any`, keyed by `TypeId::of::<E>()`).
struct Reserve {
    spares: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
    refilling: AtomicBool,
}

static RESERVE: std::sync::LazyLock<Reserve> = std::sync::LazyLock::new(|| Reserve {
    spares: Mutex::new(HashMap::new()),
    refilling: AtomicBool::new(false),
});

/// Whether a spare of `capacity` elements serves a request for `n`: it holds them and wastes
/// at most a quarter more (adapters of one rank and targets have one size; the cache counts
/// an adapter's elements, so a loose fit would hide memory from it).
fn spare_fits(capacity: usize, n: usize) -> bool {
    capacity >= n && capacity - n <= n / 4
}

/// `n` copies of `value`: the reserve's pre-faulted buffer for `E` when it fits (its pages are
/// already backed, so filling it costs no page faults), a fresh [`filled`] buffer otherwise.
pub(crate) fn take_filled<E: Clone + Send + 'static>(n: usize, value: E) -> Vec<E> {
    let spare = RESERVE.spares.lock().ok().and_then(|mut m| {
        let fits = m
            .get(&TypeId::of::<E>())
            .and_then(|b| b.downcast_ref::<Vec<E>>())
            .is_some_and(|v| spare_fits(v.capacity(), n));
        if fits {
            m.remove(&TypeId::of::<E>())
        } else {
            None
        }
    });
    match spare.and_then(|b| b.downcast::<Vec<E>>().ok()) {
        Some(v) => {
            let mut v = *v;
            v.clear();
            v.resize(n, value);
            v
        }
        None => filled(n, value),
    }
}

/// Puts a pre-faulted buffer of `n` copies of `value` in the reserve for `E`, on a background
/// thread, unless one that fits is there or a refill is already running. Returns at once.
pub(crate) fn refill_later<E: Clone + Send + 'static>(n: usize, value: E) {
    if n.saturating_mul(std::mem::size_of::<E>()) < HINT_BYTES {
        return; // small buffers fault in quickly anyway
    }
    let has_fitting = RESERVE.spares.lock().is_ok_and(|m| {
        m.get(&TypeId::of::<E>())
            .and_then(|b| b.downcast_ref::<Vec<E>>())
            .is_some_and(|v| spare_fits(v.capacity(), n))
    });
    if has_fitting || RESERVE.refilling.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("adapter-reserve".into())
        .spawn(move || {
            let v = filled(n, value);
            if let Ok(mut m) = RESERVE.spares.lock() {
                m.insert(TypeId::of::<E>(), Box::new(v));
            }
            RESERVE.refilling.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        RESERVE.refilling.store(false, Ordering::Release);
    }
}

/// Whether the reserve holds a buffer for `E` that serves `n` elements (tests).
#[cfg(test)]
fn reserved<E: 'static>(n: usize) -> bool {
    RESERVE.spares.lock().is_ok_and(|m| {
        m.get(&TypeId::of::<E>())
            .and_then(|b| b.downcast_ref::<Vec<E>>())
            .is_some_and(|v| spare_fits(v.capacity(), n))
    })
}

#[cfg(target_os = "linux")]
fn hint_huge_pages<T>(v: &Vec<T>) {
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    if bytes < HINT_BYTES {
        return;
    }
    let start = v.as_ptr() as usize;
    let begin = start.next_multiple_of(HUGE_PAGE);
    let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= begin {
        return;
    }
    // SAFETY: [begin, end) lies inside the allocation `v` owns (begin ≥ its start, end ≤ its end)
    // and is page-aligned; MADV_HUGEPAGE only changes how the kernel backs those pages, never
    // their contents or validity, and a failure (THP disabled) leaves them as they were.
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn hint_huge_pages<T>(_: &Vec<T>) {}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_have_the_asked_size_and_contents() {
        let v: Vec<u16> = super::filled(3 << 20, 7);
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&x| x == 7));
        let w: Vec<f32> = super::with_capacity(10);
        assert!(w.is_empty() && w.capacity() >= 10);
    }

    #[test]
    fn the_reserve_hands_out_a_refilled_buffer_holding_exactly_what_was_asked() {
        // A type of its own, so no other test shares this reserve slot.
        #[derive(Clone, Debug, PartialEq)]
        struct Cell(u32);
        let n = 2 << 20; // 8 MB
        assert!(!super::reserved::<Cell>(n));
        // Stale contents of a reused buffer never show: every element is the asked value.
        let first = super::take_filled(n, Cell(1));
        assert!(first.len() == n && first.iter().all(|c| *c == Cell(1)));
        super::refill_later(n, Cell(9));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !super::reserved::<Cell>(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "the reserve was never refilled"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Too small or much too large a spare is not handed out.
        assert!(!super::reserved::<Cell>(n + 1) && !super::reserved::<Cell>(n * 3 / 4));
        let second = super::take_filled(n - 5, Cell(2));
        assert!(second.len() == n - 5 && second.iter().all(|c| *c == Cell(2)));
        assert!(
            second.capacity() >= n,
            "the reserved buffer was not the one handed out"
        );
        assert!(
            !super::reserved::<Cell>(n),
            "a taken spare stays in the reserve"
        );
    }
}

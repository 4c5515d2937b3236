//! Large buffers that are about to be filled at once (an adapter read from disk, its packed copy):
//! asks Linux for transparent huge pages on them before the first write, so filling 10 MB takes a
//! handful of page faults instead of thousands. On a cold adapter load most of the time is
//! first-touch page faults, not copying.

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
}

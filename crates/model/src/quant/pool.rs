//! A small spinning thread pool for the decode kernels.
//!
//! Decoding runs a few hundred short parallel loops per token (one per projection), each tens of
//! microseconds long. General-purpose pools put their workers to sleep between such loops, and the
//! wake-ups cost as much as the work. Here workers spin for a while after each loop (as llama.cpp's do),
//! so the next loop starts at once; after ~2 ms without work they park and give the core back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

struct Job {
    /// Borrowed closure; only called while the submitting thread waits in [`parallel_for`].
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

// SAFETY: `f` is only dereferenced for tasks claimed before `done` reaches `n`, and the submitter
// keeps the closure alive until then.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.n {
                return;
            }
            // SAFETY: see the `Send`/`Sync` note: the closure is alive while tasks remain.
            unsafe { (*self.f)(i) };
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct Pool {
    epoch: AtomicU64,
    job: Mutex<Option<Arc<Job>>>,
    workers: OnceLock<Vec<Thread>>,
}

const SPIN_FOR: Duration = Duration::from_millis(2);

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            workers: OnceLock::new(),
        }));
        let handles = (0..threads().saturating_sub(1))
            .filter_map(|i| {
                let spawned = std::thread::Builder::new()
                    .name(format!("ol-kernel-{i}"))
                    .spawn(move || worker(pool));
                spawned.ok().map(|h| h.thread().clone())
            })
            .collect();
        pool.workers.get_or_init(|| handles);
        pool
    })
}

fn worker(pool: &'static Pool) {
    let mut seen = pool.epoch.load(Ordering::Acquire);
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = pool.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN_FOR {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
        let job = pool.job.lock().expect("pool lock").clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

/// Threads the kernels use: `OPENLEDGER_THREADS`, else rayon's setting, else all cores.
///
/// Also pins `RAYON_NUM_THREADS` when unset: without it candle re-reads /proc/cpuinfo on every matrix
/// product to count cores, which costs several percent of decode time.
pub fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let n = std::env::var("OPENLEDGER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rayon::current_num_threads)
            .max(1);
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        n
    })
}

/// Runs `f(0..n)` across the pool and the calling thread; returns when every call has finished.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let workers = pool.workers.get().map(Vec::as_slice).unwrap_or(&[]);
    if n <= 1 || workers.is_empty() {
        (0..n).for_each(f);
        return;
    }
    // SAFETY: the lifetime is erased only for the duration of this call (we wait for `done == n`).
    let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let job = Arc::new(Job {
        f,
        n,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    *pool.job.lock().expect("pool lock") = Some(job.clone());
    pool.epoch.fetch_add(1, Ordering::AcqRel);
    for w in workers {
        w.unpark();
    }
    job.work();
    while job.done.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
    }
}

/// A raw pointer to an output buffer that parallel tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: users write disjoint elements, and the buffer outlives the `parallel_for` that uses it.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

//! A small thread pool for the decode kernels: panic-safe, and idle when there is no work.
//!
//! Decoding runs a few hundred short parallel loops per token (one per projection), each tens of
//! microseconds long. General-purpose pools put their workers to sleep between such loops, and the
//! wake-ups cost as much as the work. Here workers spin briefly after each loop, so the next loop of
//! the same forward pass starts at once: up to [`HOT_SPIN`] while a forward pass is running (see
//! [`busy`]), [`COLD_SPIN`] otherwise. Then they sleep on a condition variable until the next loop is
//! published, with no periodic wake-up, so a process with a model loaded uses no CPU between requests.
//!
//! Every task runs under `catch_unwind`: a task that panics (on a worker or on the calling thread) is
//! counted, the remaining tasks still run, [`parallel_for`] returns only once no thread is inside the
//! closure any more, and then reports the panic as a [`TaskPanicked`] error. Workers survive.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a worker keeps spinning for the next loop while a forward pass is running: longer than
/// the serial stretches between two loops of one pass (norms, rotary, short attention), far shorter
/// than a request.
pub const HOT_SPIN: Duration = Duration::from_micros(300);
/// How long a worker spins after a loop outside any forward pass before it sleeps.
pub const COLD_SPIN: Duration = Duration::from_micros(10);

/// Some tasks of a [`parallel_for`] panicked; the loop's output is incomplete and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{panicked} of {tasks} parallel kernel tasks panicked (first: {message})")]
pub struct TaskPanicked {
    /// Tasks that panicked.
    pub panicked: usize,
    /// Tasks in the loop.
    pub tasks: usize,
    /// The first panic's message.
    pub message: String,
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Drops a panic payload; a payload whose own destructor panics is leaked instead of unwinding.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding the pool's locks; should it ever, the data (a job handle, a
    // message, a unit) is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The panics of one loop: how many, and the first one's message.
#[derive(Default)]
struct Panics {
    count: usize,
    first: Option<String>,
}

impl Panics {
    fn record(&mut self, payload: Box<dyn Any + Send>) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(panic_message(&*payload));
        }
        drop_payload(payload);
    }
}

struct Job {
    /// The caller's closure with its lifetime erased. Only dereferenced for a task index `< n`
    /// claimed from `next`, and each such call is counted in `done` when it ends, normally or by a
    /// panic; the caller does not return (nor unwind) before `done == n` (see [`WaitForJob`]).
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panics: Mutex<Panics>,
}

// SAFETY: `Job` is shared with the workers only to run `f`, which is `Sync` (callable from any
// thread at once); the pointer is dereferenced only while the caller keeps the closure alive (see the
// field's comment). The other fields are atomics and a mutex.
unsafe impl Send for Job {}
// SAFETY: as for `Send`.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none are left; a task's panic is caught and recorded.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            // SAFETY: `i < n` was claimed here and is not yet counted in `done`, so the caller is
            // still waiting in `parallel_for` and the closure behind `f` is alive (see `Job::f`).
            let ran = catch_unwind(AssertUnwindSafe(|| unsafe { (*self.f)(i) }));
            if let Err(payload) = ran {
                lock(&self.panics).record(payload);
            }
            // Release: the task's writes are visible to the caller once it sees the count.
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.n
    }
}

/// Held by the caller from publishing a job until it returns: its drop runs every task no worker has
/// claimed and then waits until every claimed task has ended, so the closure outlives every call of
/// it even if the caller unwinds.
struct WaitForJob<'a>(&'a Job);

impl Drop for WaitForJob<'_> {
    fn drop(&mut self) {
        self.0.work();
        let mut spins = 0u32;
        while !self.0.finished() {
            if spins < 1 << 12 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct Pool {
    /// Bumped each time a job is published.
    epoch: AtomicU64,
    /// The latest job; workers take it when they see `epoch` change.
    job: Mutex<Option<Arc<Job>>>,
    /// Workers asleep on `wake`, or about to be (counted under `sleep`).
    sleeping: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Forward passes running now (see [`busy`]).
    hot: AtomicUsize,
    workers: OnceLock<usize>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            hot: AtomicUsize::new(0),
            workers: OnceLock::new(),
        }));
        let spawned = (0..threads().saturating_sub(1))
            .filter(|i| {
                std::thread::Builder::new()
                    .name(format!("ol-kernel-{i}"))
                    .spawn(move || worker(pool))
                    .is_ok()
            })
            .count();
        pool.workers.get_or_init(|| spawned);
        pool
    })
}

/// Waits for the epoch to move past `seen`: spins for a while (see the module doc), then sleeps.
fn next_epoch(pool: &Pool, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = pool.epoch.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            let limit = if pool.hot.load(Ordering::Relaxed) > 0 {
                HOT_SPIN
            } else {
                COLD_SPIN
            };
            if start.elapsed() >= limit {
                break;
            }
        }
    }
    // Sleep. `sleeping` is raised, and the epoch re-read, under `sleep`; the publisher bumps the
    // epoch before reading `sleeping` (both SeqCst), and notifies under `sleep`: either this thread
    // sees the new epoch, or the publisher sees it sleeping and wakes it. No wake-up is lost, and
    // none is needed but the publisher's.
    let mut guard = lock(&pool.sleep);
    pool.sleeping.fetch_add(1, Ordering::SeqCst);
    let e = loop {
        let e = pool.epoch.load(Ordering::SeqCst);
        if e != seen {
            break e;
        }
        guard = pool
            .wake
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner);
    };
    pool.sleeping.fetch_sub(1, Ordering::SeqCst);
    e
}

fn worker(pool: &'static Pool) {
    // The epoch before any job: workers start while the pool is being built, before any loop can be
    // published, but may first run after one was; starting from 0 they still take it.
    let mut seen = 0;
    loop {
        seen = next_epoch(pool, seen);
        let job = lock(&pool.job).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

/// Marks a forward pass as running while held: between its loops, workers spin up to [`HOT_SPIN`]
/// for the next one instead of going to sleep. Hold it only while more loops surely follow soon.
pub fn busy() -> Busy {
    pool().hot.fetch_add(1, Ordering::Relaxed);
    Busy(())
}

/// See [`busy`].
#[must_use = "the pass counts as running only while this is held"]
pub struct Busy(());

impl Drop for Busy {
    fn drop(&mut self) {
        pool().hot.fetch_sub(1, Ordering::Relaxed);
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

/// Runs `f(0..n)` across the pool and the calling thread; returns when every call has ended.
///
/// A call that panics does not stop the others; once all have ended the panics are reported as one
/// error, and whatever `f` was writing must be discarded.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) -> Result<(), TaskPanicked> {
    let pool = pool();
    let workers = pool.workers.get().copied().unwrap_or(0);
    let panics = if n <= 1 || workers == 0 {
        let mut panics = Panics::default();
        for i in 0..n {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                panics.record(payload);
            }
        }
        panics
    } else {
        // SAFETY: only the lifetime is erased (same fat-pointer layout). The pointer is dereferenced
        // only by `Job::work` for claimed tasks, and `wait` below keeps this call from returning or
        // unwinding until every claimed task has ended: the closure outlives every use.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Arc::new(Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panics: Mutex::new(Panics::default()),
        });
        let wait = WaitForJob(&job);
        *lock(&pool.job) = Some(job.clone());
        pool.epoch.fetch_add(1, Ordering::SeqCst);
        if pool.sleeping.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this after any sleeper's epoch check (see `next_epoch`).
            drop(lock(&pool.sleep));
            pool.wake.notify_all();
        }
        // Runs the tasks no worker has taken, then waits for the workers' to end.
        drop(wait);
        {
            let mut slot = lock(&pool.job);
            if slot.as_ref().is_some_and(|j| Arc::ptr_eq(j, &job)) {
                *slot = None;
            }
        }
        let panics = std::mem::take(&mut *lock(&job.panics));
        panics
    };
    match panics.count {
        0 => Ok(()),
        count => Err(TaskPanicked {
            panicked: count,
            tasks: n,
            message: panics.first.unwrap_or_default(),
        }),
    }
}

/// A raw pointer to an output buffer that parallel tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: users write disjoint elements, and the buffer outlives the `parallel_for` that uses it
// (which returns only after every task has ended, even when one panics).
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

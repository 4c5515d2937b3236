//! The kernel thread pool survives its tasks: a task that panics, on a worker or on the calling
//! thread, surfaces as an error once no task is running any more, and the pool keeps working.
//!
//! Every wait here is bounded: a test that would hang fails with a message instead.

use openledger_model::quant::pool::{self, parallel_for};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once};
use std::time::{Duration, Instant};

/// Longest any test waits for the pool before calling it hung.
const HANG: Duration = Duration::from_secs(60);

/// Four kernel threads (three workers and the caller) whatever the machine, so tasks do run on
/// workers; and one test at a time, so the tests' tasks do not mix in the pool's single job slot.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    static ENV: Once = Once::new();
    ENV.call_once(|| std::env::set_var("OPENLEDGER_THREADS", "4"));
    assert_eq!(pool::threads(), 4);
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn on_worker() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("ol-kernel"))
}

/// Spins until `flag` is set; false after [`HANG`].
fn wait_for(flag: &AtomicBool) -> bool {
    let t = Instant::now();
    while !flag.load(Ordering::Acquire) {
        if t.elapsed() > HANG {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Runs `body` on its own thread and returns its result, failing the test if it takes over [`HANG`].
fn watchdog<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung for {HANG:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

/// What one instrumented loop saw.
#[derive(Debug)]
struct Outcome {
    /// The loop's result: `Err` with the panic's message.
    result: Result<(), String>,
    /// Tasks still inside the closure when `parallel_for` returned.
    running_at_return: usize,
    /// Tasks that ran to completion or panicked, counted when `parallel_for` returned.
    finished_at_return: usize,
}

/// `n` tasks; `panics(i)` says which panic. Every task counts itself in and out.
fn instrumented(
    n: usize,
    task: impl Fn(usize) -> Option<&'static str> + Send + Sync + 'static,
) -> Outcome {
    let running = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parallel_for(n, &|i| {
            running.fetch_add(1, Ordering::SeqCst);
            struct Out<'a>(&'a AtomicUsize, &'a AtomicUsize);
            impl Drop for Out<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                    self.1.fetch_add(1, Ordering::SeqCst);
                }
            }
            let _out = Out(&running, &finished);
            if let Some(msg) = task(i) {
                panic!("{msg}");
            }
        })
    }));
    let running_at_return = running.load(Ordering::SeqCst);
    let finished_at_return = finished.load(Ordering::SeqCst);
    let result = match result {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic".into())),
    };
    Outcome {
        result,
        running_at_return,
        finished_at_return,
    }
}

/// A following loop computes the right result, with workers taking part (they survived).
fn pool_still_works() {
    watchdog("the loop after a panic", || {
        let n = 256;
        let out: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let worker_ran = AtomicBool::new(false);
        parallel_for(n, &|i| {
            if on_worker() {
                worker_ran.store(true, Ordering::Release);
            } else {
                // The caller waits in its task until a worker has run one: the pool must still
                // have live workers to finish this loop.
                assert!(wait_for(&worker_ran), "no worker took a task");
            }
            out[i].store(i * i + 1, Ordering::SeqCst);
        })
        .expect("a loop of tasks that do not panic");
        assert!(worker_ran.load(Ordering::Acquire));
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v.load(Ordering::SeqCst), i * i + 1, "task {i}");
        }
    });
}

#[test]
fn a_task_panicking_on_a_worker_is_an_error_and_the_pool_keeps_working() {
    let _one = setup();
    let n = 64;
    let worker_panicked = std::sync::Arc::new(AtomicBool::new(false));
    let flag = worker_panicked.clone();
    let out = watchdog("a loop whose worker task panics", move || {
        instrumented(n, move |_| {
            if on_worker() {
                flag.store(true, Ordering::Release);
                return Some("crafted tensor on a worker");
            }
            // The caller's tasks wait until a worker has taken (and failed) one.
            assert!(wait_for(&flag), "no worker took a task");
            None
        })
    });
    assert!(worker_panicked.load(Ordering::Acquire));
    let err = out.result.clone().expect_err("the panic must surface");
    assert!(err.contains("crafted tensor on a worker"), "{err}");
    assert_eq!(out.running_at_return, 0, "tasks still running: {out:?}");
    assert_eq!(out.finished_at_return, n, "{out:?}");
    pool_still_works();
}

#[test]
fn a_task_panicking_on_the_caller_waits_for_the_workers_then_is_an_error() {
    let _one = setup();
    let n = 64;
    let worker_tasks = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = worker_tasks.clone();
    let out = watchdog("a loop whose caller task panics", move || {
        let caller = std::thread::current().id();
        let (worker_started, caller_panicked) = (AtomicBool::new(false), AtomicBool::new(false));
        instrumented(n, move |_| {
            if std::thread::current().id() == caller {
                // Panic only once a worker is inside a task, which then outlasts the panic: the
                // loop must not return (freeing the closure) while that task still runs.
                assert!(wait_for(&worker_started), "no worker took a task");
                caller_panicked.store(true, Ordering::Release);
                return Some("crafted tensor on the caller");
            }
            counted.fetch_add(1, Ordering::SeqCst);
            worker_started.store(true, Ordering::Release);
            assert!(wait_for(&caller_panicked), "the caller took no task");
            std::thread::sleep(Duration::from_millis(50));
            None
        })
    });
    assert!(worker_tasks.load(Ordering::SeqCst) > 0);
    let err = out.result.clone().expect_err("the panic must surface");
    assert!(err.contains("crafted tensor on the caller"), "{err}");
    assert_eq!(out.running_at_return, 0, "tasks still running: {out:?}");
    assert_eq!(out.finished_at_return, n, "{out:?}");
    pool_still_works();
}

#[test]
fn every_panicking_task_is_counted_and_the_rest_still_run() {
    let _one = setup();
    let n = 100;
    let out = watchdog("a loop where every third task panics", move || {
        instrumented(n, |i| (i % 3 == 0).then_some("every third task"))
    });
    let err = out.result.clone().expect_err("the panics must surface");
    assert!(err.contains("every third task"), "{err}");
    assert!(err.contains("34 of 100"), "{err}");
    assert_eq!(out.running_at_return, 0, "{out:?}");
    assert_eq!(out.finished_at_return, n, "{out:?}");
    pool_still_works();
}

#[test]
fn loops_compute_every_index_once() {
    let _one = setup();
    watchdog("plain loops", || {
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(n, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1), "n={n}");
        }
    });
}

/// CPU time (user + system, all threads) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the `rusage` passed, a valid, writable, zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Between loops that are not part of one forward pass (a request's serial stretches: sampling,
/// detokenizing, I/O), workers give their cores back instead of spinning through the gap. Here the
/// gaps are 1 ms sleeps; workers that spun for milliseconds after each loop would burn whole cores.
#[test]
fn workers_do_not_spin_through_serial_stretches() {
    let _one = setup();
    watchdog("loops with serial gaps", || {
        let sink: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        let run = || {
            parallel_for(sink.len(), &|i| {
                sink[i].fetch_add(i, Ordering::Relaxed);
            })
            .unwrap()
        };
        run();
        let (cpu0, t0) = (cpu_time(), Instant::now());
        for _ in 0..300 {
            run();
            std::thread::sleep(Duration::from_millis(1));
        }
        let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        assert!(
            share < 0.5,
            "300 small loops 1 ms apart used {cpu:?} of CPU in {wall:?} ({:.0}% of a core)",
            share * 100.0
        );
    });
}

//! An idle process with the model loaded must idle: after generating, the kernel pool's workers give
//! their cores back and sleep until the next request, with no periodic wake-ups.
//!
//! The only test in its binary, so nothing else runs in the process while it measures.

mod common;
use common::model;

use openledger_model::{generate, GenerateParams};
use std::time::{Duration, Instant};

/// CPU time (user + system, all threads) and voluntary context switches of this process so far.
fn usage() -> (Duration, i64) {
    // SAFETY: `getrusage` only writes the `rusage` we pass, which is a valid, writable struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(
        rc,
        0,
        "getrusage failed: {}",
        std::io::Error::last_os_error()
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_nvcsw as i64)
}

/// Generates a few tokens, then idles for 10 s: the process must use under 2% of one core over that
/// window, and its threads must not keep waking up (a worker polling every 50 ms would wake ~200
/// times; a parked one not at all).
#[test]
fn an_idle_process_with_the_model_loaded_uses_under_two_percent_of_a_core() {
    let (m, tok) = model();
    let prompt = tok.encode("The sea is", true).unwrap();
    let params = GenerateParams {
        max_tokens: 8,
        ..Default::default()
    };
    let g = generate(m, tok, prompt, params, None, &mut |_| true).unwrap();
    assert_eq!(g.tokens.len(), 8, "{g:?}");

    let (cpu0, switches0) = usage();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let wall = t0.elapsed();
    let (cpu1, switches1) = usage();

    let share = (cpu1 - cpu0).as_secs_f64() / wall.as_secs_f64();
    let wakeups = switches1 - switches0;
    assert!(
        share < 0.02,
        "idle for {wall:?}, the process used {:?} of CPU ({:.2}% of a core)",
        cpu1 - cpu0,
        share * 100.0
    );
    assert!(
        wakeups < 50,
        "idle for {wall:?}, the process's threads blocked {wakeups} times (periodic wake-ups)"
    );
}

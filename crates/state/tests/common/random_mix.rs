//! The driver of the random-mix property tests (`supply_invariants_gov`,
//! `supply_invariants_rlhf`; each includes this file with `#[path]`): how many transactions to
//! send and with which seed, the proptest runner over runs of random steps with a `burn` flag,
//! the failure report that says how to replay, and the checks that the mix reached every flow.

#![allow(dead_code)]

use proptest::{
    prelude::*,
    test_runner::{RngSeed, TestCaseError, TestError, TestRunner},
};
use std::{cell::RefCell, collections::BTreeMap, fmt::Debug};

/// Transactions to send: the count in environment variable `var`, else `default`.
pub fn target_txs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{var} is a count")))
        .unwrap_or(default)
}

/// The seed: `PROPTEST_RNG_SEED`, else `default` (fixed so that coverage checks cannot fail by
/// chance in CI).
pub fn seed(default: u64) -> u64 {
    match std::env::var("PROPTEST_RNG_SEED") {
        Ok(v) => v.parse().expect("PROPTEST_RNG_SEED is a u64"),
        Err(_) => default,
    }
}

/// What a random mix sent in all its runs.
pub struct Mix {
    /// Runs made.
    pub cases: u64,
    /// Accepted transactions (and other counted effects) by kind, over all runs.
    pub accepted: BTreeMap<&'static str, u64>,
}

/// Runs random sequences of `steps` steps drawn from `step`, each with a random `burn` flag,
/// through `run` (which returns the run's outcome, the transactions it sent and its counts by
/// kind) until `target` transactions are sent; panics with the seed, the flag and the shrunk
/// sequence on a failure, and if fewer than `target` transactions were sent.
pub fn run<S, I>(
    target: u64,
    seed: u64,
    steps: usize,
    max_shrink_iters: u32,
    step: S,
    run: impl Fn(bool, &[S::Value]) -> (Result<(), TestCaseError>, u64, I),
) -> Mix
where
    S: Strategy,
    S::Value: Debug,
    I: IntoIterator<Item = (&'static str, u64)>,
{
    let cases = target.div_ceil(steps as u64).max(2);
    eprintln!("{cases} random runs of {steps} transactions, seed {seed} (replay with PROPTEST_RNG_SEED={seed})");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: u32::try_from(cases).expect("fewer than 2^32 runs"),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters,
        ..ProptestConfig::default()
    });
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(step, steps..=steps),
    );
    let totals: RefCell<(u64, BTreeMap<&'static str, u64>)> = RefCell::default();
    let result = runner.run(&strategy, |(burn, steps)| {
        let (outcome, sent, counts) = run(burn, &steps);
        let mut t = totals.borrow_mut();
        t.0 += sent;
        for (k, n) in counts {
            *t.1.entry(k).or_default() += n;
        }
        outcome
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (burn, steps))) => {
            panic!("{reason}\nseed {seed}; burn {burn}; shrunk failing sequence:\n{steps:#?}")
        }
        Err(e) => panic!("seed {seed}: {e}"),
    }
    let (sent, accepted) = totals.into_inner();
    eprintln!("{sent} transactions sent; accepted by kind: {accepted:?}");
    assert!(sent >= target, "only {sent} of {target} transactions sent");
    Mix { cases, accepted }
}

impl Mix {
    /// Asserts that every kind in `kinds` was accepted in at least a quarter of the runs' count.
    pub fn assert_reached_often(&self, kinds: &[&str]) {
        let cases = self.cases;
        for kind in kinds {
            let n = self.accepted.get(kind).copied().unwrap_or(0);
            assert!(
                n >= cases / 4,
                "only {n} accepted {kind} in {cases} runs: the random mix no longer reaches that flow"
            );
        }
    }

    /// Asserts that every kind in `kinds` was accepted at least once.
    pub fn assert_reached(&self, kinds: &[&str]) {
        let cases = self.cases;
        for kind in kinds {
            let n = self.accepted.get(kind).copied().unwrap_or(0);
            assert!(
                n > 0,
                "no {kind} in {cases} runs: the random mix no longer reaches that flow"
            );
        }
    }
}

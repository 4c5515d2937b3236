//! Flywheel simulator speed: (1) plain OPEN transfers and stakes through the real executor
//! (`openledger_sim::chain::SimChain`, one thread), in transactions per second; (2) a whole
//! scenario run (default scenarios/quick.toml): executor transactions per second and inference
//! records per second (inferences are recorded in `recordInferences` batches, so one
//! transaction carries up to 256 of them); (3) optionally `--sweep POINTS SEEDS [SCENARIO]`
//! (default scenarios/quick.toml) over the initial subsidy 0..10,000 OPEN, in parallel on all
//! cores (RAYON_NUM_THREADS sets how many).
//!
//! `--no-executor` skips (1), to profile scenario runs alone.
//!
//! Usage: sim-speed [--no-executor] [SCENARIO.toml ...] [--sweep POINTS SEEDS [SCENARIO.toml]]

use alloy_primitives::U256;
use alloy_sol_types::SolCall;
use openledger_sim::{
    chain::SimChain,
    sim::{agent_addr, genesis, kind},
    sweep, Scenario, Sim,
};
use openledger_types::{abi::IStaking, modules::STAKING, units::one_open};
use std::time::Instant;

/// The same allocator as the `openledger` binary (mimalloc: glibc malloc/free took 30–40% of a run).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (its place in mimalloc.h's `mi_option_e`), set as the `openledger`
/// binary sets it: freed memory goes back to the OS after 10 s, not 1 s, so a long run does not
/// keep faulting zeroed huge pages in again.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn executor_speed() {
    let sc = Scenario::default();
    let mut chain = SimChain::new(genesis(&sc).unwrap(), false).unwrap();
    let ex = agent_addr(kind::EXCHANGE, 0);
    let n = 200_000u32;
    let t = Instant::now();
    for i in 0..n {
        chain
            .send(
                ex,
                agent_addr(kind::USER, i % 10_000),
                one_open() * U256::from(2u64),
                Vec::new(),
            )
            .expect("transfer");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "transfers: {n} in {s:.3} s = {:.0} tx/s (1 thread)",
        n as f64 / s
    );
    let stake = IStaking::stakeCall {}.abi_encode();
    let t = Instant::now();
    for i in 0..n {
        chain
            .send(
                agent_addr(kind::USER, i % 10_000),
                STAKING,
                one_open(),
                stake.clone(),
            )
            .expect("stake");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "stakes: {n} in {s:.3} s = {:.0} tx/s (1 thread)",
        n as f64 / s
    );
}

fn scenario_speed(path: &str) {
    let sc = Scenario::load(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut sim = Sim::new(&sc, false).unwrap();
    sim.run().unwrap();
    let ran = t.elapsed().as_secs_f64();
    let sum = sim.summary();
    let s = t.elapsed().as_secs_f64();
    let agents =
        sim.contributors.len() + sim.users.len() + sim.stakers.len() + 2 * sim.datanets.len();
    println!(
        "{path}: {} days, {agents} agents joined, {} txs, {} inferences, {} in {s:.2} s = {:.0} tx/s, {:.0} inferences/s; supply check {}",
        sc.days,
        sum.transactions_accepted,
        sum.totals.inferences,
        sum.outcome.label,
        sum.transactions_accepted as f64 / s,
        sum.totals.inferences as f64 / s,
        if sum.supply_check.ok { "passed" } else { "FAILED" }
    );
    let kv = &sim.chain.kv;
    let bytes = kv.size_bytes();
    println!(
        "  days {ran:.2} s, summary {:.2} s (state: {} entries, {:.1} MB; digest {})",
        s - ran,
        kv.len(),
        bytes as f64 / 1e6,
        sum.state_digest
    );
}

fn main() {
    // SAFETY: sets a plain integer option before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    println!("threads: {}", rayon::current_num_threads());
    let before = args.len();
    args.retain(|a| a != "--no-executor");
    if args.len() == before {
        executor_speed();
    }
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--sweep" {
            let points: usize = args[i + 1].parse().unwrap();
            let seeds: u32 = args[i + 2].parse().unwrap();
            let path = match args.get(i + 3) {
                Some(p) if p.ends_with(".toml") => {
                    i += 1;
                    p.clone()
                }
                _ => "scenarios/quick.toml".to_string(),
            };
            let sc = Scenario::load(std::path::Path::new(&path)).unwrap();
            let values: Vec<f64> = (0..points)
                .map(|p| p as f64 * 10_000.0 / points as f64)
                .collect();
            let t = Instant::now();
            let r = sweep::sweep(&sc, "subsidy.initial_open", &values, seeds).unwrap();
            let s = t.elapsed().as_secs_f64();
            let up: u32 = r.iter().map(|p| p.take_offs).sum();
            println!(
                "sweep {path}: {points} points x {seeds} seeds = {} runs in {s:.1} s ({:.2} s per run per core, {up} take-offs)",
                points * seeds as usize,
                s * rayon::current_num_threads() as f64 / (points * seeds as usize) as f64
            );
            i += 3;
        } else {
            scenario_speed(&args[i]);
            i += 1;
        }
    }
}

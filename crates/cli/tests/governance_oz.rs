//! OpenZeppelin's own `IGovernor` ABI drives the governor of a real dev node, and the
//! `openledger gov` commands run a parameter proposal end to end.
//!
//! The ABI is the JSON artifact shipped in the `@openzeppelin/contracts` npm package (5.x),
//! fetched once with `npm pack` into Cargo's test scratch directory. First every function and
//! event of OZ's `IGovernor` must have a selector of `contracts/IGovernor.sol`. Then, against
//! `init --dev` + `node --dev` (governance in seconds):
//! - the CLI stakes for dev0..dev2, refuses a fee split that does not sum to 10,000 before
//!   sending anything, proposes a split change, cancels another proposal while it is pending,
//!   and votes with dev1 (for) and dev2 (against);
//! - `tests/governance_oz.py` (web3.py with OZ's ABI) runs its own proposal through propose,
//!   votes (castVote, castVoteWithReason, castVoteBySig with an EIP-712 signature and its replay
//!   refused), queue, execute after the timelock and cancel, decoding every event with OZ's ABI;
//! - the CLI then queues and executes its proposal; `openledger params` shows the new split and
//!   `gov show` / `gov list` the states.
//!
//! Needs the virtualenv at `<workspace>/.venv` (`./scripts/setup-python`) and npm.

mod common;

use alloy_primitives::keccak256;
use alloy_sol_types::SolInterface;
use common::Env;
use openledger_types::abi::IGovernor;
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

fn workspace_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root exists")
}

/// `build/contracts` of `@openzeppelin/contracts@5`, fetched with npm once.
fn oz_build_dir() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openzeppelin-contracts-5");
    let build = cache.join("package/build/contracts");
    if build.join("IGovernor.json").is_file() {
        return build;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let pack = Command::new("npm")
        .args(["pack", "@openzeppelin/contracts@5", "--pack-destination"])
        .arg(&cache)
        .current_dir(&cache)
        .output()
        .unwrap_or_else(|e| panic!("running npm (needed to fetch OpenZeppelin's ABI): {e}"));
    assert!(
        pack.status.success(),
        "npm pack @openzeppelin/contracts@5 failed (is the npm registry reachable?):\n{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let tgz = String::from_utf8_lossy(&pack.stdout)
        .lines()
        .last()
        .expect("npm pack names the tarball")
        .trim()
        .to_string();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(cache.join(&tgz))
        .arg("-C")
        .arg(&cache)
        .status()
        .expect("run tar");
    assert!(untar.success(), "extracting {tgz} failed");
    assert!(
        build.join("IGovernor.json").is_file(),
        "no IGovernor.json in {tgz}"
    );
    build
}

fn canonical(item: &Value) -> String {
    let types: Vec<&str> = item["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    format!("{}({})", item["name"].as_str().unwrap(), types.join(","))
}

#[test]
fn openzeppelin_igovernor_abi_and_the_cli_drive_the_governor() {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `./scripts/setup-python` from {} first",
        python.display(),
        root.display()
    );
    let build = oz_build_dir();

    // Every function and event of OZ's IGovernor is ours, selector for selector.
    let artifact: Value =
        serde_json::from_slice(&std::fs::read(build.join("IGovernor.json")).unwrap()).unwrap();
    let (mut functions, mut events) = (0, 0);
    for item in artifact["abi"].as_array().unwrap() {
        let sig = canonical(item);
        let hash = keccak256(sig.as_bytes());
        match item["type"].as_str() {
            Some("function") => {
                let selector: [u8; 4] = hash[..4].try_into().unwrap();
                assert!(
                    IGovernor::IGovernorCalls::valid_selector(selector),
                    "OZ's IGovernor.{sig} is missing from contracts/IGovernor.sol"
                );
                functions += 1;
            }
            Some("event") => {
                assert!(
                    IGovernor::IGovernorEvents::SELECTORS.contains(&hash.0),
                    "OZ's event {sig} is missing from contracts/IGovernor.sol"
                );
                events += 1;
            }
            _ => {}
        }
    }
    assert!(
        functions >= 29 && events == 6,
        "{functions} functions, {events} events"
    );

    let env = Env::new();
    let _node = env.start();
    for (who, amount) in [("dev0", "20000"), ("dev1", "30000"), ("dev2", "5000")] {
        env.ok(&["--from", who, "stake", "add", amount]);
    }
    // The proposal threshold counts votes one second before proposing.
    std::thread::sleep(Duration::from_millis(1100));

    let err = env.fails(&[
        "--from",
        "dev0",
        "gov",
        "propose",
        "--set",
        "fee_split.contributors_bps=6000",
        "--description",
        "unbalanced",
    ]);
    assert!(
        err.contains("must sum to") && err.contains("model_owner_bps"),
        "{err}"
    );
    let id_of = |out: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix("proposal "))
            .unwrap_or_else(|| panic!("no proposal id in:\n{out}"))
            .trim()
            .to_string()
    };
    let out = env.ok(&[
        "--from",
        "dev0",
        "gov",
        "propose",
        "--set",
        "fee_split.contributors_bps=6000",
        "--set",
        "fee_split.model_owner_bps=2000",
        "--description",
        "Contributors get 60%",
    ]);
    assert!(out.contains("ProposalCreated"), "{out}");
    let split = id_of(&out);
    let out = env.ok(&[
        "--from",
        "dev0",
        "gov",
        "propose",
        "--grant",
        "0x000000000000000000000000000000000000bEEF=10",
        "--description",
        "A bounty, withdrawn",
    ]);
    let withdrawn = id_of(&out);
    let err = env.fails(&["--from", "dev1", "gov", "cancel", &withdrawn]);
    assert!(err.contains("only by its proposer"), "{err}");
    env.ok(&["--from", "dev0", "gov", "cancel", &withdrawn]);
    assert!(env.ok(&["gov", "show", &withdrawn]).contains("Canceled"));

    let wait_for = |id: &str, state: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = env.ok(&["gov", "show", id]);
            if out
                .lines()
                .any(|l| l.trim() == format!("state        {state}"))
            {
                return out;
            }
            assert!(Instant::now() < deadline, "not {state} within 90 s:\n{out}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(&split, "Active");
    let out = env.ok(&[
        "--from",
        "dev1",
        "gov",
        "vote",
        &split,
        "for",
        "--reason",
        "more for data",
    ]);
    assert!(
        out.contains("VoteCast") && out.contains("for with 30000 OPEN"),
        "{out}"
    );
    env.ok(&["--from", "dev2", "gov", "vote", &split, "against"]);

    // OZ's ABI through web3.py.
    let key = |i: u32| format!("{}", keccak256(format!("openledger dev key {i}")));
    let client = Command::new(&python)
        .arg(root.join("tests/governance_oz.py"))
        .arg(format!("http://127.0.0.1:{}", env.port))
        .arg(&build)
        .args((0..4).map(key))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the web3.py client");
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success() && stdout.contains("governance_oz: all checks passed"),
        "the web3.py client failed ({}):\n{stdout}\n{}",
        client.status,
        String::from_utf8_lossy(&client.stderr)
    );

    // The CLI's proposal: queue, then execute once the timelock has passed.
    let shown = wait_for(&split, "Succeeded");
    assert!(shown.contains("for 30000 / against 5000"), "{shown}");
    env.ok(&["--from", "dev3", "gov", "queue", &split]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.ol(&["--from", "dev3", "gov", "execute", &split]);
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("ParamsChanged fee_split") && text.contains("ProposalExecuted"),
                "{text}"
            );
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("timelock"), "{err}");
        assert!(Instant::now() < deadline, "still in the timelock: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let params: Value = serde_json::from_str(&env.ok(&["params"])).unwrap();
    assert_eq!(params["fee_split"]["contributors_bps"], 6000);
    assert_eq!(params["fee_split"]["model_owner_bps"], 2000);
    assert_eq!(params["min_stake"], "3", "the web3.py proposal's change");
    let list = env.ok(&["gov", "list"]);
    assert!(
        list.contains(&format!("Executed  {split}"))
            && list.contains(&format!("Canceled  {withdrawn}")),
        "{list}"
    );
    assert!(list.lines().count() >= 4, "{list}");
}

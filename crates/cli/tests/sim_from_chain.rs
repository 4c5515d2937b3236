//! `openledger sim run --from-chain` against a real dev node: the run starts from the node's
//! datanet (an approved and a pending contribution), base model and adapter, stake and
//! inference user, under the node's parameters; its report records that state, so `sim verify`
//! re-runs it after the node is gone; without a node the command says where it looked.

mod common;

use common::{sample, stdout, Env};
use serde_json::Value;

const SCENARIO: &str = r#"
name = "from the dev chain"
days = 20
seed = 4
[subsidy]
initial_open = 500.0
days = 10
[contributors]
max = 40
initial = 5
[users]
max = 60
initial = 3
[stakers]
count = 3
"#;

fn dev(env: &Env, i: u8) -> String {
    env.ok(&["keys", "list"])
        .lines()
        .find(|l| l.starts_with(&format!("dev{i} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string()
}

#[test]
fn a_run_starts_from_the_nodes_state_and_its_report_verifies_without_the_node() {
    let env = Env::new();
    let node = env.start();
    let h = |b: u8| format!("0x{}", format!("{b:02x}").repeat(32));
    let s = |n: &str| sample(n).to_str().unwrap().to_string();
    env.ok(&["--from", "dev0", "datanet", "create", "Bees"]);
    env.ok(&[
        "--from",
        "dev1",
        "datanet",
        "contribute",
        "1",
        &s("alice.jsonl"),
    ]);
    env.ok(&[
        "--from",
        "dev2",
        "datanet",
        "contribute",
        "1",
        &s("carol.md"),
    ]);
    env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
    env.ok(&[
        "--from",
        "dev2",
        "model",
        "register-base",
        "smol",
        "--hash",
        &h(1),
    ]);
    env.ok(&[
        "--from",
        "dev2",
        "model",
        "register-adapter",
        "bees",
        "--base",
        "1",
        "--datanet",
        "1@1",
        "--config-hash",
        &h(2),
        "--adapter-hash",
        &h(3),
    ]);
    env.ok(&["--from", "dev3", "inference", "deposit", "5"]);
    env.ok(&[
        "--from",
        "dev3",
        "inference",
        "approve-operator",
        &dev(&env, 9),
        "2",
    ]);
    env.ok(&[
        "--from",
        "dev9",
        "inference",
        "record",
        "--caller",
        &dev(&env, 3),
        "--adapter",
        "1",
        "--prompt-tokens",
        "100",
        "--completion-tokens",
        "50",
        "--attribution",
        "1:400000",
        "--attribution-root",
        &h(0xaa),
    ]);
    env.ok(&["--from", "dev4", "stake", "add", "100"]);

    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = dir.path().join("out");
    let text = env.ok(&[
        "sim",
        "run",
        "--from-chain",
        "--scenario",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        text.contains(
            "1 datanets, 2 contributions, 1 base models, 1 adapters, 1 stakers, 1 inference users"
        ),
        "{text}"
    );
    assert!(text.contains("supply check passed"), "{text}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let start = &report["scenario"]["start"];
    let c = &start["datanets"][0]["contributions"];
    assert_eq!(
        (c[0]["status"].as_u64(), c[1]["status"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(start["adapters"][0]["name"], "bees");
    assert_eq!(start["adapters"][0]["datanet_versions"][0], 1);
    assert_eq!(start["stakers"][0]["stake"], "100");
    assert_eq!(
        start["users"][0]["credit"], "4.998",
        "5 OPEN less the recorded 0.002 OPEN fee"
    );
    // The dev chain's governance runs in seconds; the simulator's clock ticks in days.
    assert_eq!(start["params"]["voting_period_secs"], 20);
    assert_eq!(report["scenario"]["chain"]["voting_period_days"], 1);
    let approved = report["results"]["totals"]["contributions_approved"].as_u64();
    assert!(approved > Some(0), "{approved:?}");

    // The report holds the chain state: it re-runs without the node.
    drop(node);
    let v = env.ok(&["sim", "verify", out.join("report.json").to_str().unwrap()]);
    assert!(v.contains("verified"), "{v}");

    // No node: the error says where it looked.
    let o = env.ol(&[
        "sim",
        "run",
        "--from-chain",
        "--scenario",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let e = common::stderr(&o);
    assert!(
        e.contains(&format!("127.0.0.1:{}", env.port)) && e.contains("openledger node"),
        "{e}"
    );
}

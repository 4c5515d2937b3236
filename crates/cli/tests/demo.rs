//! `openledger demo` end to end, as a user runs it: a fresh dev chain with SmolLM2, the sample
//! datanet, a LoRA fine-tune, paid and attributed answers over the OpenAI API, a governance
//! vote and a second round. Its report.json must show positive rewards for every accepted
//! contributor whose fact was asked about, none for the refused, duplicate and rejected ones,
//! every generated answer attributed mostly to the contributor whose fact it states, and a
//! larger contributors' share (and reward) in round two.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`).

use serde_json::Value;
use std::process::Command;

mod common;
use common::process::workspace_root;

fn wei(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a wei amount: {v}"))
}

#[test]
fn the_demo_pays_the_contributors_whose_data_answered_and_the_vote_raises_their_share() {
    let root = workspace_root();
    let model = root.join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        model.is_file(),
        "{} is missing: run ./scripts/fetch-model",
        model.display()
    );
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .current_dir(&root)
        .arg("demo")
        // Ten simulated days keep the debug build's simulation within seconds.
        .args(["--sim-days", "10", "--out"])
        .arg(out.path())
        .env_remove("OPENLEDGER_HOME")
        .env_remove("OPENLEDGER_RPC")
        .env_remove("OPENLEDGER_FROM")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("http://cdn") && !html.contains("<script src"));

    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    let (r1, r2) = (&rounds[0], &rounds[1]);

    // Every generated answer states its contributor's fact and is attributed mostly to them.
    let mut asked = std::collections::BTreeSet::new();
    for round in rounds {
        let answers = round["answers"].as_array().unwrap();
        assert!(answers.len() >= 3);
        for a in answers {
            let who = a["expected_contributor"].as_str().unwrap();
            asked.insert(who.to_string());
            // A bare question: the answer comes from what the adapter learned, not the prompt.
            let prompt = a["prompt"].as_str().unwrap();
            assert!(prompt.starts_with("What is") && prompt.len() < 60, "{a}");
            let text = a["answer"].as_str().unwrap().to_lowercase();
            assert!(
                text.contains(&a["phrase"].as_str().unwrap().to_lowercase()),
                "{a}"
            );
            let top = a["contributions"]
                .as_array()
                .unwrap()
                .iter()
                .max_by(|x, y| {
                    x["weight"]
                        .as_f64()
                        .unwrap()
                        .total_cmp(&y["weight"].as_f64().unwrap())
                })
                .unwrap_or_else(|| panic!("answer attributed to nobody: {a}"));
            assert_eq!(top["contributor"], who, "{a}");
            assert!(top["weight"].as_f64().unwrap() > 0.0);
            assert!(a["receipt_id"].as_u64().unwrap() > 0);
        }
    }
    assert!(asked.len() >= 2, "facts of at least two contributors");

    // The facts' questions came from a prompt/response datanet the contributors built.
    assert!(report["qa_datanet_id"].as_u64().unwrap() > report["datanet_id"].as_u64().unwrap());
    for c in report["contributors"].as_array().unwrap() {
        if asked.contains(c["name"].as_str().unwrap()) {
            assert!(c["qa_rows"].as_u64().unwrap() > 0, "{c}");
        }
    }

    // Who earned what.
    for c in report["contributors"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (e1, e2) = (wei(&r1["rewards_wei"][name]), wei(&r2["rewards_wei"][name]));
        if c["outcome"] == "accepted" {
            if asked.contains(name) {
                assert!(e1 > 0 && e2 > 0, "{name} earned {e1} and {e2}");
                // The same answers under a larger contributors' share pay more.
                assert!(e2 > e1, "{name} earned {e1} then {e2}");
            }
        } else {
            assert_eq!((e1, e2), (0, 0), "{name} ({}) earned", c["outcome"]);
        }
    }
    let outcomes: Vec<&str> = report["contributors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("refused")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| o.starts_with("rejected")),
        "{outcomes:?}"
    );

    // The vote raised the contributors' share.
    let bps = |r: &Value| r["fee_split"]["contributors_bps"].as_u64().unwrap();
    assert!(bps(r2) > bps(r1), "{} -> {}", bps(r1), bps(r2));

    // Training taught the published adapter to answer every asked question: its greedy answer
    // states the fact (the base model's does not), and the fact's sentence as the answer is at
    // least 0.5 nats/token more likely under base + adapter than under the base model.
    let learned = report["learning"].as_array().unwrap();
    for who in &asked {
        let f = learned
            .iter()
            .find(|f| f["contributor"] == who.as_str())
            .unwrap_or_else(|| panic!("no learning check of {who}'s fact: {learned:?}"));
        let (base, adapter) = (
            f["base_nll"].as_f64().unwrap(),
            f["adapter_nll"].as_f64().unwrap(),
        );
        assert!(base - adapter >= 0.5, "{who}'s fact not learned: {f}");
        assert_eq!(f["answers"], true, "{who}'s question not answered: {f}");
        let phrase = f["phrase"].as_str().unwrap().to_lowercase();
        assert!(
            f["answer"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&phrase),
            "{f}"
        );
        assert_ne!(f["answer"], f["base_answer"], "{f}");
    }
    let html_learning = html.contains("What the adapter learned");
    assert!(html_learning, "report.html has no learning table");

    // The adapter was trained and its loss recorded; the simulation ran.
    assert!(!report["loss"].as_array().unwrap().is_empty());
    assert!(report["simulation"]["inferences"].as_u64().is_some());
}

/// Ctrl-C while the demo runs: it stops the embedded node, removes its temporary chain home and
/// exits with status 130 (before the fix SIGINT killed it and left the home behind).
#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_node_and_removes_the_temporary_home() {
    use std::io::BufRead;
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .current_dir(&root)
        .arg("demo")
        .arg("--out")
        .arg(out.path())
        .env("TMPDIR", tmp.path())
        .env_remove("OPENLEDGER_HOME")
        .env_remove("OPENLEDGER_RPC")
        .env_remove("OPENLEDGER_FROM")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.contains("== [1/") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    // The node is up and the first step running.
    let started = rx.recv_timeout(std::time::Duration::from_secs(300));
    let home: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("openledger-demo-"))
        .collect();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        started.is_ok() && kill.success(),
        "the demo did not start\n{stdout}\n{stderr}"
    );
    assert_eq!(home.len(), 1, "one temporary home while it ran: {home:?}");
    assert_eq!(status.code(), Some(130), "{status:?}\n{stdout}\n{stderr}");
    assert!(stderr.contains("the embedded node stopped"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}\n{stderr}");
}

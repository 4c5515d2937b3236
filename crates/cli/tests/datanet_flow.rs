//! The datanet pipeline end to end through the `openledger` CLI against a real node, with the
//! sample datanet: contributions are ingested, deduplicated (the first contributor keeps the
//! credit; a duplicate flood earns nothing and records nothing), approved into versions,
//! exported with their contributors, proven and verified (and tampered proofs fail); bad files
//! get clear errors and write nothing; contributing needs a key (staging is signed); exports
//! stream to a file; a SIGKILLed node restarts with every accepted row, its near-duplicate index
//! rebuilt; permissioned datanets refuse readers without a grant.

mod common;

use common::{sample, Env};
use serde_json::Value;

fn export(env: &Env, datanet: &str) -> Vec<Value> {
    env.ok(&["datanet", "export", datanet])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn first_text(file: &str) -> String {
    let line = std::fs::read_to_string(sample(file)).unwrap();
    let v: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    v["text"].as_str().unwrap().to_string()
}

#[test]
fn contribute_dedupe_approve_export_prove_restart_and_permissions() {
    let env = Env::new();
    let s = |n: &str| sample(n).to_str().unwrap().to_string();
    let node = env.start();
    let dev = |i: u8| {
        env.ok(&["keys", "list"])
            .lines()
            .find(|l| l.starts_with(&format!("dev{i} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_lowercase()
    };

    env.ok(&[
        "--from",
        "dev0",
        "datanet",
        "create",
        "Urban beekeeping",
        "--summary",
        "bees",
        "--tags",
        "bees,cities",
    ]);
    let out = env.ok(&[
        "--from",
        "dev1",
        "datanet",
        "contribute",
        "1",
        &s("alice.jsonl"),
    ]);
    assert!(out.contains("60 rows"), "{out}");
    assert!(out.contains("ContributionSubmitted"), "{out}");

    // Bob's three copies of Alice's rows are refused: Alice keeps the credit.
    let out = env.ok(&[
        "--from",
        "dev2",
        "datanet",
        "contribute",
        "1",
        &s("bob.txt"),
    ]);
    assert!(out.contains("57 rows"), "{out}");
    assert!(out.contains("3 exact duplicates refused"), "{out}");

    // A duplicate flood earns nothing, records nothing and stores nothing.
    let blobs = env.blob_count();
    let err = env.fails(&[
        "--from",
        "dev3",
        "datanet",
        "contribute",
        "1",
        &s("alice.jsonl"),
    ]);
    assert!(err.contains("nothing to contribute"), "{err}");
    assert!(err.contains("60 exact duplicates refused"), "{err}");
    assert_eq!(env.blob_count(), blobs);
    let contributions = env.ok(&["datanet", "contributions", "1"]);
    assert_eq!(contributions.lines().count(), 2, "{contributions}");

    // Staging is signed: without a key nothing is uploaded.
    let err = env.fails(&["datanet", "contribute", "1", &s("carol.md"), "--dry-run"]);
    assert!(err.contains("--from"), "{err}");
    assert_eq!(env.blob_count(), blobs);

    // Bad files get clear errors and write nothing.
    let dir = tempfile::tempdir().unwrap();
    let bad = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    for (file, expect) in [
        (bad("empty.txt", b""), "has no rows"),
        (
            bad("broken.jsonl", b"{\"text\": \"fine\"}\n{\"text\": oops}\n"),
            "line 2",
        ),
        (bad("latin1.txt", b"caf\xe9 au lait\n"), "invalid UTF-8"),
        (
            bad("wrong.csv", b"title,body\nx,y\n"),
            "missing field \"text\"",
        ),
        (
            bad("big.txt", &vec![b'a'; 6 * 1024 * 1024]),
            "limit per file",
        ),
        (bad("notes.exe", b"MZ"), "unsupported file type"),
    ] {
        let err = env.fails(&["--from", "dev4", "datanet", "contribute", "1", &file]);
        assert!(err.contains(expect), "{file}: {err}");
    }
    assert_eq!(env.blob_count(), blobs);

    // The owner approves both; a stranger cannot.
    let err = env.fails(&["--from", "dev5", "datanet", "approve", "1"]);
    assert!(err.contains("only the owner"), "{err}");
    env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
    env.ok(&["--from", "dev0", "datanet", "approve", "2"]);
    let rows = export(&env, "1");
    assert_eq!(rows.len(), 117);
    // --out streams the export into a file, renamed into place once whole.
    let out_path = dir.path().join("v2.jsonl");
    let printed = env.ok(&[
        "datanet",
        "export",
        "1",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, rows, "{printed}");
    assert!(!out_path.with_extension("partial").exists());
    assert_eq!(rows[0]["contribution_id"], 1);
    assert_eq!(
        rows[0]["contributor"].as_str().unwrap().to_lowercase(),
        dev(1)
    );
    assert_eq!(rows[116]["contribution_id"], 2);
    assert_eq!(
        rows[116]["contributor"].as_str().unwrap().to_lowercase(),
        dev(2)
    );
    let board = env.ok(&["datanet", "leaderboard", "1"]);
    let first = board.lines().nth(1).unwrap().to_lowercase();
    assert!(
        first.contains(&dev(1)) && first.contains("100.00%"),
        "{board}"
    );

    // A proof verifies against the chain; tampering with it fails.
    let proof_path = dir.path().join("proof.json");
    let p = proof_path.to_str().unwrap();
    env.ok(&[
        "datanet",
        "prove",
        "1",
        "--text",
        &first_text("alice.jsonl"),
        "--version",
        "1",
        "-o",
        p,
    ]);
    let out = env.ok(&["datanet", "verify-proof", p]);
    assert!(out.contains("VALID"), "{out}");
    let proof: Value =
        serde_json::from_str(&std::fs::read_to_string(&proof_path).unwrap()).unwrap();
    let tamper = |f: &dyn Fn(&mut Value)| {
        let mut t = proof.clone();
        f(&mut t);
        std::fs::write(&proof_path, serde_json::to_string(&t).unwrap()).unwrap();
        env.fails(&["datanet", "verify-proof", p])
    };
    let err = tamper(&|t| t["row"]["text"] = Value::from("Bees prefer diesel."));
    assert!(err.contains("INVALID") && err.contains("altered"), "{err}");
    let err = tamper(&|t| t["row_index"] = Value::from(5));
    assert!(err.contains("INVALID"), "{err}");
    let err =
        tamper(&|t| t["contributor"] = Value::from("0x000000000000000000000000000000000000dEaD"));
    assert!(err.contains("INVALID"), "{err}");
    let err = tamper(&|t| {
        let fake = format!("0x{}", "ab".repeat(32));
        t["version_root"] = Value::from(fake);
    });
    assert!(err.contains("INVALID"), "{err}");

    // Carol's rows go in; then the node dies without warning.
    env.ok(&[
        "--from",
        "dev3",
        "datanet",
        "contribute",
        "1",
        &s("carol.md"),
    ]);
    // The owner reviews the pending rows before approving.
    let review = env.ok(&["datanet", "rows", "--contribution", "3", "--limit", "5"]);
    assert_eq!(
        review.lines().filter(|l| l.contains(" c3 ")).count(),
        5,
        "{review}"
    );
    env.ok(&["--from", "dev0", "datanet", "approve", "3"]);
    let before = export(&env, "1");
    assert_eq!(before.len(), 181);
    drop(node);
    let node = env.start();
    assert_eq!(export(&env, "1"), before, "a restart loses no accepted row");
    // The rebuilt index still finds Dave's two near-copies of Carol's rows.
    let out = env.ok(&[
        "--from",
        "dev4",
        "datanet",
        "contribute",
        "1",
        &s("dave.csv"),
        "--dry-run",
    ]);
    assert!(out.contains("2 near-duplicates"), "{out}");
    assert!(out.contains("dry run"), "{out}");

    // A permissioned datanet: rows only for the owner and grantees.
    env.ok(&[
        "--from",
        "dev0",
        "datanet",
        "create",
        "Bee Q&A",
        "--type",
        "prompt-response",
        "--permissioned",
    ]);
    env.ok(&[
        "--from",
        "dev0",
        "datanet",
        "contribute",
        "2",
        &s("qa/erin.jsonl"),
    ]);
    env.ok(&["--from", "dev0", "datanet", "approve", "4"]);
    let err = env.fails(&["datanet", "export", "2"]);
    assert!(err.contains("permissioned"), "{err}");
    let err = env.fails(&["--from", "dev6", "datanet", "export", "2"]);
    assert!(err.contains("no access"), "{err}");
    let err = env.fails(&[
        "--from",
        "dev6",
        "datanet",
        "contribute",
        "2",
        &s("qa/erin.jsonl"),
    ]);
    assert!(err.contains("no access"), "{err}");
    let dev6 = dev(6);
    env.ok(&["--from", "dev0", "datanet", "grant-access", "2", &dev6]);
    let qa = env.ok(&["--from", "dev6", "datanet", "export", "2"]);
    assert_eq!(qa.lines().count(), 60);
    let v = env.json(&["datanet", "contribution", "4"]);
    assert_eq!(v["status"], "approved");
    drop(node);
}

//! The attribution index end to end through the CLI, on the sample datanet tokenised with
//! SmolLM2's tokenizer (installed by ./scripts/fetch-model): an index grown one batch per
//! datanet version (the second split into many small shards) answers exactly as one built at
//! once, and a response quoting a contributor's planted facts gives that contributor at least
//! 90% of the attributed weight.

mod common;

use common::{sample, Env};
use serde_json::Value;
use std::path::PathBuf;

fn tokenizer() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        p.exists(),
        "run ./scripts/fetch-model first ({})",
        p.display()
    );
    p.to_str().unwrap().to_string()
}

fn weights(a: &Value) -> Vec<(u64, f64)> {
    a["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["contribution_id"].as_u64().unwrap(),
                c["weight"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn grown_index_equals_full_rebuild_and_planted_facts_pay_their_contributor() {
    let env = Env::new();
    let node = env.start();
    let tok = tokenizer();
    // `openledger ARGS --tokenizer SmolLM2`, which must succeed.
    let with_tok = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--tokenizer", tok.as_str()]);
        env.ok(&a)
    };
    let query = |q: &str, text: &str, index: &str| with_tok(&["index", q, text, "--index", index]);
    let attribute_json = |args: &[&str]| -> Value {
        let mut a = vec!["attribute"];
        a.extend(args);
        a.push("--json");
        serde_json::from_str(&with_tok(&a)).unwrap()
    };
    let s = |n: &str| sample(n).to_str().unwrap().to_string();
    env.ok(&["--from", "dev0", "datanet", "create", "Urban beekeeping"]);
    for (key, file) in [
        ("dev1", "alice.jsonl"),
        ("dev2", "bob.txt"),
        ("dev3", "carol.md"),
        ("dev4", "dave.csv"),
    ] {
        env.ok(&["--from", key, "datanet", "contribute", "1", &s(file)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let grown = dir.path().join("grown");
    let full = dir.path().join("full");
    let (g, f) = (grown.to_str().unwrap(), full.to_str().unwrap());
    for c in ["1", "2"] {
        env.ok(&["--from", "dev0", "datanet", "approve", c]);
    }
    with_tok(&["index", "build", "1@2", "--out", g]);
    for c in ["3", "4"] {
        env.ok(&["--from", "dev0", "datanet", "approve", c]);
    }
    // The second version is split into shards of at most 400 tokens.
    let out = with_tok(&[
        "index",
        "build",
        "1@4",
        "--out",
        g,
        "--max-shard-tokens",
        "400",
    ]);
    let shards: usize = out
        .split(" shard(s), root")
        .next()
        .and_then(|s| s.rsplit(": ").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shard count in {out}"));
    assert!(shards > 3, "{out}");
    let out = with_tok(&["index", "build", "1@4", "--out", g]);
    assert!(out.contains("nothing to do"), "{out}");
    with_tok(&["index", "build", "1@4", "--out", f]);

    for phrase in [
        " the queen",
        " the bees",
        " Thursby lid-tap",
        " Orlin nine-square count",
        " nectar flow",
        " a",
    ] {
        let a = query("count", phrase, g);
        let b = query("count", phrase, f);
        let n = |s: &str| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        assert_eq!(n(&a), n(&b), "{phrase}");
        for q in ["next", "matches", "prob"] {
            if q == "prob" && phrase == " a" {
                continue;
            }
            let qa = query(q, phrase, g);
            let qb = query(q, phrase, f);
            assert_eq!(qa, qb, "index {q} {phrase}");
        }
    }
    // A planted phrase matches whole from its first token, and once it has begun each of its
    // tokens is all but certain given the tokens before it.
    let m = query("matches", " Thursby lid-tap", g);
    let lens: Vec<usize> = m
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(lens.len() > 2 && lens[0] == lens.len(), "{m}");
    let p = query("prob", " Thursby lid-tap", g);
    let ppl: f64 = p
        .split("perplexity ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no perplexity in {p}"));
    assert!((1.0..1.5).contains(&ppl), "{p}");
    let out = query("count", " Thursby lid-tap", g);
    assert!(!out.starts_with("0 "), "{out}");
    let rows = query("rows", " Thursby lid-tap", g);
    assert!(
        rows.starts_with("1 rows contain it") && rows.contains("contribution 1 "),
        "{rows}"
    );

    // Alice's planted facts, amid ordinary prose.
    let response = "A good beekeeper listens first. Under the Thursby lid-tap, a queenright colony answers two knocks on the roof with a short rise in sound. \
        Then open the hive slowly. On the Penhallow brood-arc index, a score of five or more on the central frames marks a sound queen.";
    let a = attribute_json(&[
        "--index",
        g,
        "--prompt",
        "How do I know my colony has a queen?",
        "--response",
        response,
    ]);
    let w = weights(&a);
    let total: f64 = w.iter().map(|x| x.1).sum();
    assert!(total > 0.0 && total <= 1.0 + 1e-9, "{a}");
    assert_eq!(w[0].0, 1, "alice's contribution first: {w:?}");
    assert!(w[0].1 / total >= 0.9, "{w:?}");

    // Carol's and dave's facts split the weight between them.
    let response = "For sugar rolls I use a Quillfeather sugar-roll jar, a wide-mouthed jar with a 3.2 millimetre stainless mesh lid. \
        The Tillingham verge mix is sown in early autumn at two grams per square metre onto scraped, weed-free ground.";
    let a = attribute_json(&["--index", f, "--response", response]);
    let w = weights(&a);
    let total: f64 = w.iter().map(|x| x.1).sum();
    let of = |c: u64| w.iter().find(|x| x.0 == c).map_or(0.0, |x| x.1);
    assert!((of(3) + of(4)) / total >= 0.9, "{w:?}");
    assert!(of(3) > 0.2 * total && of(4) > 0.2 * total, "{w:?}");
    let text = with_tok(&["attribute", "--index", f, "--response", response]);
    assert!(
        text.contains("[1: ") && text.contains("contribution 3"),
        "{text}"
    );

    // An operator records the inference with the commitment; anyone holding the index verifies it.
    let a = attribute_json(&["--index", f, "--response", response, "--commit-top", "3"]);
    let c = &a["commitment"];
    let root = c["root"].as_str().unwrap().to_string();
    let info = env.ok(&["index", "info", "--index", f]);
    let index_root = info.split("root ").nth(1).unwrap().trim().to_string();
    let hash = format!("0x{}", "11".repeat(32));
    env.ok(&[
        "--from",
        "dev5",
        "model",
        "register-base",
        "SmolLM2",
        "--hash",
        &hash,
    ]);
    env.ok(&[
        "--from",
        "dev5",
        "model",
        "register-adapter",
        "bees",
        "--base",
        "1",
        "--datanet",
        "1@4",
        "--config-hash",
        &hash,
        "--adapter-hash",
        &hash,
        "--index-root",
        &index_root,
    ]);
    env.ok(&["--from", "dev6", "inference", "deposit", "10"]);
    let key = |name: &str| {
        env.ok(&["keys", "list"])
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    };
    env.ok(&[
        "--from",
        "dev6",
        "inference",
        "approve-operator",
        &key("dev5"),
        "10",
    ]);
    // The operator records straight from the attribute output.
    let file = dir.path().join("attribution.json");
    std::fs::write(&file, a.to_string()).unwrap();
    env.ok(&[
        "--from",
        "dev5",
        "inference",
        "record",
        "--caller",
        &key("dev6"),
        "--adapter",
        "1",
        "--prompt-tokens",
        "10",
        "--completion-tokens",
        "60",
        "--attribution-file",
        file.to_str().unwrap(),
    ]);
    let receipt = env.ok(&["inference", "receipt", "1"]);
    assert!(receipt.contains(&root), "{receipt}");
    let out = with_tok(&[
        "attribution",
        "verify",
        "1",
        "--index",
        f,
        "--response",
        response,
    ]);
    assert!(out.contains("VERIFIED"), "{out}");
    let err = env.fails(&[
        "attribution",
        "verify",
        "1",
        "--index",
        f,
        "--tokenizer",
        &tok,
        "--response",
        "Under the Thursby lid-tap, a queenright colony answers two knocks on the roof.",
    ]);
    assert!(err.contains("MISMATCH"), "{err}");
    // The grown index answers exactly as the registered one, so it recomputes the same
    // attribution, but it is not the index the adapter committed to on chain.
    let grown_info = env.ok(&["index", "info", "--index", g]);
    let grown_root = grown_info.split("root ").nth(1).unwrap().trim().to_string();
    assert_ne!(grown_root, index_root);
    let err = env.fails(&[
        "attribution",
        "verify",
        "1",
        "--index",
        g,
        "--tokenizer",
        &tok,
        "--response",
        response,
    ]);
    assert!(
        err.contains("MISMATCH: index root")
            && err.contains(&grown_root)
            && err.contains(&index_root),
        "{err}"
    );
    // A data file of the registered index changed in place (same size) is refused by name.
    let tampered = dir.path().join("tampered");
    std::fs::create_dir(&tampered).unwrap();
    for entry in walk_files(&full) {
        let to = tampered.join(entry.strip_prefix(&full).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let tokens = tampered.join("shard-0000/tokens.bin");
    let mut bytes = std::fs::read(&tokens).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&tokens, bytes).unwrap();
    let err = env.fails(&[
        "attribution",
        "verify",
        "1",
        "--index",
        tampered.to_str().unwrap(),
        "--tokenizer",
        &tok,
        "--response",
        response,
    ]);
    assert!(
        err.contains("tokens.bin") && err.contains("BLAKE3"),
        "{err}"
    );
    drop(node);
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

//! `openledger adapter merge` and `openledger adapter init` against a dev node serving SmolLM2:
//! adapters published on chain are merged (their bundles downloaded and checked against the
//! chain), the result is published with its parents recorded and their datanets inherited, and
//! it answers through the OpenAI API; merges that must equal their parent answer as it does;
//! refusals leave nothing on chain. A freshly initialised adapter answers as the base model.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`).

mod common;

use alloy_primitives::B256;
use common::openlora::{chat, model_path, post, write_adapter, Served};
use openledger_model::{peft, Device, Target};
use openledger_node::openlora::{artifacts, bundle};
use openledger_types::{abi::IModel, modules};
use serde_json::Value;
use std::path::{Path, PathBuf};

const PROMPT: &str = "Write one sentence about honey bees.";
const BASE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Greedy answer text of `model` (paid with `key` when it is an adapter).
fn answer(s: &Served, key: Option<&str>, model: &str) -> String {
    let (st, body) = post(
        &s.url("/v1/chat/completions"),
        key,
        &chat(24, model, PROMPT),
    );
    assert_eq!(st, 200, "{model}: {body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

fn adapter(s: &Served, id: u64) -> IModel::Adapter {
    s.view(modules::MODEL, IModel::getAdapterCall { adapterId: id })
}

fn adapter_count(s: &Served) -> u64 {
    s.view(modules::MODEL, IModel::adapterCountCall {})
}

/// `openledger --from dev4 adapter merge ARGS…`; the new adapter id (the last stdout line).
fn merge(s: &Served, args: &[&str]) -> u64 {
    let mut all = vec!["--from", "dev4", "adapter", "merge"];
    all.extend_from_slice(args);
    let out = s.env.ok(&all);
    out.lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("adapter merge printed {out:?}; its last line should be the id"))
}

fn merge_fails(s: &Served, args: &[&str]) -> String {
    let mut all = vec!["--from", "dev4", "adapter", "merge"];
    all.extend_from_slice(args);
    s.env.fails(&all)
}

/// Publishes the adapter in `dir` as `name` (owner dev3) on base model `base`.
fn publish_dir(s: &Served, dir: &Path, name: &str, base: &str, datanets: &str) -> u64 {
    let out = s.env.ok(&[
        "--from",
        "dev3",
        "model",
        "publish-adapter",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--base",
        base,
        "--datanets",
        datanets,
    ]);
    common::openlora::adapter_id_in(&out)
}

/// The bundle the node stores under `hash`, downloaded.
fn download(s: &Served, hash: &B256) -> Vec<u8> {
    let mut resp = common::openlora::agent()
        .get(s.url(&format!("/v1/artifacts/{hash}")))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap()
}

/// The file named `name` somewhere under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}

#[test]
fn merged_adapters_are_published_with_their_parents_and_answer() {
    let s = Served::start();
    let key = s.api_key("dev5", "10", "10");
    // Parent a on datanet 1, parent b on a second datanet, so the merge spans both.
    let a = s.publish("bees-a", 7, 16.0);
    s.env.ok(&[
        "--from",
        "dev0",
        "datanet",
        "create",
        "Honey",
        "--summary",
        "honey",
    ]);
    s.env.ok(&[
        "--from",
        "dev2",
        "datanet",
        "contribute",
        "2",
        common::sample("bob.txt").to_str().unwrap(),
    ]);
    s.env.ok(&["--from", "dev0", "datanet", "approve", "2"]);
    let b_dir = s.work.path().join("b");
    write_adapter(&b_dir, 8, 8.0);
    let b = publish_dir(&s, &b_dir, "bees-b", "1", "2@1");
    assert_eq!((a, b), (1, 2));

    // Linear merge, kept in --out.
    let out = s.work.path().join("linear");
    let m = merge(
        &s,
        &[
            "bees-a",
            "adapter-2",
            "--name",
            "bees-linear",
            "--weights",
            "0.7,0.3",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(m, 3);
    let parents: Vec<u64> = s.view(modules::MODEL, IModel::parentsOfCall { adapterId: m });
    assert_eq!(parents, vec![1, 2]);
    let merged = adapter(&s, m);
    assert_eq!(merged.baseModelId, 1);
    assert_eq!(merged.name, "bees-linear");
    assert_eq!(
        (merged.datanetIds.clone(), merged.datanetVersions.clone()),
        (vec![1, 2], vec![1, 1]),
        "the merged adapter lists the union of its parents' datanet versions"
    );
    assert_eq!(
        merged.attributionIndexRoot,
        adapter(&s, a).attributionIndexRoot
    );
    // The node holds the bundle under the on-chain hash; it carries merge.json, whose BLAKE3
    // is the on-chain mergeConfigHash, and the merged weights written to --out.
    let bundle_bytes = download(&s, &merged.adapterHash);
    assert_eq!(bundle::blake3_hash(&bundle_bytes), merged.adapterHash);
    let record = std::fs::read_to_string(out.join("merge.json")).unwrap();
    assert_eq!(
        bundle::blake3_hash(record.as_bytes()),
        merged.trainingConfigHash
    );
    let bundle_file = s.work.path().join("linear.bundle");
    std::fs::write(&bundle_file, &bundle_bytes).unwrap();
    let (config, carried) = bundle::read_bundle(&bundle_file).unwrap();
    assert_eq!(carried.as_deref(), Some(record.as_str()));
    assert_eq!(
        config,
        std::fs::read_to_string(out.join("adapter_config.json")).unwrap()
    );
    let r: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(r["method"], "linear");
    assert_eq!(r["base_model_id"], 1);
    assert_eq!(r["parents"][0]["id"], "adapter-1");
    assert_eq!(r["parents"][0]["name"], "bees-a");
    assert_eq!(r["parents"][1]["name"], "bees-b");
    assert_eq!(r["parents"][0]["weight"], 0.7);
    assert_eq!(r["parents"][1]["weight"], 0.3);
    // The merge used the parents in the order named, with their weights: the merged weights
    // are what the merge computes from the parents' own files.
    let pa = peft::load(&s.work.path().join("adapter-bees-a"), &Device::Cpu).unwrap();
    let pb = peft::load(&b_dir, &Device::Cpu).unwrap();
    let (expect, _) = openledger_model::merge::merge(
        &[(&pa, 0.7), (&pb, 0.3)],
        &openledger_model::merge::MergeOptions::default(),
    )
    .unwrap();
    assert!(
        peft::weights_bytes(&expect).unwrap()
            == std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        "the merged weights are the merge of bees-a at 0.7 and bees-b at 0.3"
    );

    // TIES, in a temporary directory; then both merged adapters answer through the OpenAI API,
    // resolved through the chain and paid.
    let t = merge(
        &s,
        &[
            "bees-a",
            "bees-b",
            "--name",
            "bees-ties",
            "--method",
            "ties",
            "--density",
            "0.5",
            "--rank",
            "4",
        ],
    );
    assert_eq!(t, 4);
    let parents: Vec<u64> = s.view(modules::MODEL, IModel::parentsOfCall { adapterId: t });
    assert_eq!(parents, vec![1, 2]);
    assert_eq!(adapter(&s, t).datanetIds, vec![1, 2]);
    for (name, id) in [("bees-linear", m), ("adapter-4", t)] {
        let (st, body) = post(
            &s.url("/v1/chat/completions"),
            Some(&key),
            &chat(16, name, PROMPT),
        );
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(body["attribution"]["adapter_id"], id, "{body}");
    }

    // A merge that must equal its parent answers as it does (greedy). The parent changes the
    // base model's answer, so this cannot pass by the merge doing nothing. bees-copy is bees-a
    // published again (the same bytes). Linear, as PEFT's, scales both factors by √(w·s): at
    // 0.25,0.25 with bees-a's scale s = 16/4 = 4, A' = 2A and B' = 2B at scale 1, which is
    // s·B·A exactly; powers of two keep every product bit-identical. (This model quantizes
    // activations to 8 bits, so a rounding-level difference, as cat at 0.5,0.5 has from its
    // summation order, can flip a greedy token.)
    let parent = answer(&s, Some(&key), "bees-a");
    assert_ne!(parent, answer(&s, None, BASE), "bees-a changes the answer");
    s.publish("bees-copy", 7, 16.0);
    assert_eq!(
        adapter(&s, 5).adapterHash,
        adapter(&s, a).adapterHash,
        "the copy has the same bytes"
    );
    let quarter = merge(
        &s,
        &[
            "bees-a",
            "bees-copy",
            "--weights",
            "0.25,0.25",
            "--name",
            "bees-quarter",
        ],
    );
    assert_eq!(
        answer(&s, Some(&key), &format!("adapter-{quarter}")),
        parent
    );

    // Refusals, with nothing recorded on chain and nothing written.
    let count = adapter_count(&s);
    let err = merge_fails(&s, &["bees-a", "no-such", "--name", "x1"]);
    assert!(err.contains("no adapter named \"no-such\""), "{err}");
    let err = merge_fails(&s, &["bees-a", "adapter-99", "--name", "x1"]);
    assert!(err.contains("adapter-99"), "{err}");
    let err = merge_fails(
        &s,
        &["bees-a", "bees-b", "--name", "x1", "--weights", "0.5"],
    );
    assert!(err.contains("1 weights for 2 adapters"), "{err}");
    let err = merge_fails(&s, &["bees-a", "adapter-1", "--name", "x1"]);
    assert!(err.contains("named twice"), "{err}");
    let err = merge_fails(&s, &["bees-a", "bees-b", "--name", "bees-b"]);
    assert!(err.contains("taken"), "{err}");
    let err = merge_fails(
        &s,
        &["bees-a", "bees-b", "--name", "x1", "--method", "ties"],
    );
    assert!(err.contains("needs --density"), "{err}");
    let err = merge_fails(
        &s,
        &[
            "bees-a",
            "bees-b",
            "--name",
            "x1",
            "--method",
            "ties",
            "--density",
            "1.5",
        ],
    );
    assert!(err.contains("outside (0, 1]"), "{err}");
    let err = merge_fails(&s, &["bees-a", "bees-b", "--name", "x1", "--rank", "4"]);
    assert!(err.contains("takes no --rank"), "{err}");
    let err = merge_fails(&s, &["bees-a", "--name", "x1"]);
    assert!(err.contains("at least two"), "{err}");
    // An adapter of another base model.
    s.env.ok(&[
        "--from",
        "dev3",
        "model",
        "register-base",
        "Other-Model",
        "--hash",
        &format!("0x{}", "11".repeat(32)),
    ]);
    let other_dir = s.work.path().join("other");
    write_adapter(&other_dir, 9, 8.0);
    publish_dir(&s, &other_dir, "other-base", "2", "1@1");
    let count = count + 1;
    let err = merge_fails(&s, &["bees-a", "other-base", "--name", "x1"]);
    assert!(err.contains("only on one base model"), "{err}");
    assert!(err.contains("Other-Model"), "{err}");
    // A bundle altered on the node's disk is refused: the node checks it before serving the
    // download (and the CLI checks what it downloads against adapterHash as well).
    let tampered_dir = s.work.path().join("tampered");
    write_adapter(&tampered_dir, 10, 8.0);
    let tampered = publish_dir(&s, &tampered_dir, "tampered", "1", "1@1");
    let count = count + 1;
    let hash = adapter(&s, tampered).adapterHash;
    let stored =
        find_file(&s.env.home, &artifacts::hex(&hash)).expect("the node stores the bundle");
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&stored, &bytes).unwrap();
    let err = merge_fails(&s, &["bees-a", "tampered", "--name", "x1"]);
    assert!(
        err.contains("\"tampered\"")
            && (err.contains("corrupt") || err.contains("not to the adapterHash on chain")),
        "{err}"
    );
    assert_eq!(
        adapter_count(&s),
        count,
        "refused merges registered nothing"
    );

    // --no-publish writes the merged adapter and records nothing.
    let local = s.work.path().join("local");
    let out = s.env.ok(&[
        "adapter",
        "merge",
        "bees-a",
        "bees-b",
        "--name",
        "local-only",
        "--method",
        "svd",
        "--rank",
        "2",
        "--no-publish",
        "--out",
        local.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().last().unwrap().trim(), local.to_str().unwrap());
    assert_eq!(peft::load(&local, &Device::Cpu).unwrap().config.r, 2);
    assert!(local.join("merge.json").is_file());
    assert_eq!(adapter_count(&s), count);
    let err = s.env.fails(&[
        "adapter",
        "merge",
        "bees-a",
        "bees-b",
        "--name",
        "local-2",
        "--no-publish",
        "--out",
        local.to_str().unwrap(),
    ]);
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn an_initialised_adapter_answers_like_the_base_model() {
    let s = Served::start();
    let dir = s.work.path().join("fresh");
    let out = s.env.ok(&[
        "adapter",
        "init",
        "--model",
        model_path().to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--targets",
        "all",
        "--seed",
        "3",
    ]);
    assert_eq!(out.lines().last().unwrap().trim(), dir.to_str().unwrap());
    let fresh = peft::load(&dir, &Device::Cpu).unwrap();
    assert_eq!((fresh.config.r, fresh.config.alpha), (8, 16.0));
    assert_eq!(fresh.config.targets, Target::ALL.to_vec());
    assert_eq!(fresh.config.base_model.as_deref(), Some(BASE));
    assert_eq!(fresh.pairs().count(), 30 * 7, "every layer of SmolLM2");
    for (_, t, pair) in fresh.pairs() {
        let a: Vec<f32> = pair.a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = pair.b.flatten_all().unwrap().to_vec1().unwrap();
        let (_, fan_in) = pair.a.dims2().unwrap();
        let bound = 1.0 / (fan_in as f32).sqrt();
        assert!(b.iter().all(|&x| x == 0.0), "{t:?}: B starts at zero");
        assert!(
            a.iter().all(|x| x.abs() <= bound),
            "{t:?}: Kaiming-uniform A"
        );
        assert!(a.iter().any(|&x| x != 0.0), "{t:?}: A is random");
    }
    // Published and called, it answers exactly as the base model does.
    let id = publish_dir(&s, &dir, "fresh", "1", "1@1");
    let key = s.api_key("dev5", "10", "10");
    assert_eq!(
        answer(&s, Some(&key), &format!("adapter-{id}")),
        answer(&s, None, BASE)
    );
    // The same seed gives the same adapter; another directory holding files is not overwritten.
    let again = s.work.path().join("again");
    s.env.ok(&[
        "adapter",
        "init",
        "--model",
        model_path().to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--targets",
        "all",
        "--seed",
        "3",
    ]);
    assert_eq!(
        std::fs::read(again.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(dir.join("adapter_model.safetensors")).unwrap()
    );
    let model = model_path();
    let err = s.env.fails(&[
        "adapter",
        "init",
        "--model",
        model.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(err.contains("is not empty"), "{err}");
    let err = s.env.fails(&[
        "adapter",
        "init",
        "--model",
        model.to_str().unwrap(),
        "--out",
        s.work.path().join("x").to_str().unwrap(),
        "--targets",
        "q,x",
    ]);
    assert!(err.contains("not a projection"), "{err}");
}

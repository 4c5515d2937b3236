//! ModelFactory to OpenLoRA end to end on a dev chain with SmolLM2: `openledger factory train`
//! fine-tunes an adapter on datanet 1 version 1 (two steps), `openledger factory publish`
//! registers it: the chain records the base model found by the model file's hash, the datanet
//! version trained on, and a trainingConfigHash that is the BLAKE3 of the bundle's training
//! config, which holds the job's complete config.toml and metrics.json. The node then serves the
//! trained adapter by name through the OpenAI API, paid and attributed. A job that trained on
//! local files only, or that did not finish, is refused with the reason.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`).

mod common;

use alloy_primitives::hex;
use common::openlora::{chat, model_path, post, Served};
use openledger_node::openlora::bundle;
use openledger_types::{abi::IModel, modules};
use serde_json::Value;
use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Copies a job directory (files and one level of subdirectories: the adapters).
fn copy_job(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                if f.file_type().unwrap().is_file() {
                    std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
                }
            }
        } else {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_trained_job_is_published_with_its_provenance_and_served_with_attribution() {
    let s = Served::start();
    let job = s.work.path().join("job");
    let model = model_path();
    let job_s = job.to_str().unwrap();
    s.env.ok(&[
        "--from",
        "dev3",
        "factory",
        "train",
        "--base",
        model.to_str().unwrap(),
        "--datanet",
        "1@1",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--cutoff-len",
        "64",
        "--lora-rank",
        "4",
        "--lora-target",
        "q,v",
        "--out",
        job_s,
    ]);

    // A job trained on local files only cannot be registered: the chain needs a datanet.
    let local = s.work.path().join("local-job");
    copy_job(&job, &local);
    let config = read(&local.join("config.toml"));
    let no_datanet: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("datanet ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        no_datanet, config,
        "config.toml names the datanet: {config}"
    );
    std::fs::write(local.join("config.toml"), &no_datanet).unwrap();
    let mut metrics: Value = serde_json::from_str(&read(&local.join("metrics.json"))).unwrap();
    metrics["config_hash"] = hex::encode(bundle::blake3_hash(no_datanet.as_bytes())).into();
    std::fs::write(local.join("metrics.json"), metrics.to_string()).unwrap();
    let publish = |dir: &Path, name: &str| -> Vec<String> {
        [
            "--from",
            "dev3",
            "factory",
            "publish",
            dir.to_str().unwrap(),
            "--name",
            name,
        ]
        .map(String::from)
        .to_vec()
    };
    let args = publish(&local, "local");
    let err = s
        .env
        .fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("only on local files"), "{err}");

    // A job that did not finish (no metrics.json yet) is refused, saying how to finish it.
    std::fs::remove_file(local.join("metrics.json")).unwrap();
    let err = s
        .env
        .fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("has not finished"), "{err}");
    assert!(err.contains("--resume"), "{err}");

    // A base model id whose hash is not the job's model file's is refused.
    s.env.ok(&[
        "--from",
        "dev3",
        "model",
        "register-base",
        "Other",
        "--hash",
        &format!("0x{}", "22".repeat(32)),
    ]);
    let mut args = publish(&job, "trained");
    args.extend(["--base".to_string(), "2".to_string()]);
    let err = s
        .env
        .fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("registered with hash"), "{err}");

    // Published: base model 1 found by the GGUF's SHA-256.
    let args = publish(&job, "trained");
    let out = s
        .env
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let id = common::openlora::adapter_id_in(out.lines().last().unwrap_or_default());
    assert_eq!(
        s.view(
            modules::MODEL,
            IModel::adapterByNameCall {
                name: "trained".into()
            }
        ),
        id
    );
    let a = s.view(modules::MODEL, IModel::getAdapterCall { adapterId: id });
    assert_eq!(a.baseModelId, 1);
    assert_eq!((a.datanetIds, a.datanetVersions), (vec![1], vec![1]));

    // The node's bundle carries the job's config and metrics; trainingConfigHash is its BLAKE3.
    let mut resp = common::openlora::agent()
        .get(s.url(&format!("/v1/artifacts/{}", a.adapterHash)))
        .call()
        .unwrap();
    let served = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(bundle::blake3_hash(&served), a.adapterHash);
    let file = s.work.path().join("bundle");
    std::fs::write(&file, &served).unwrap();
    let (_, training) = bundle::read_bundle(&file).unwrap();
    let training = training.expect("the bundle carries a training config");
    assert_eq!(
        a.trainingConfigHash,
        bundle::blake3_hash(training.as_bytes())
    );
    let t: Value = serde_json::from_str(&training).unwrap();
    assert_eq!(t["config_toml"], read(&job.join("config.toml")));
    let metrics: Value = serde_json::from_str(&read(&job.join("metrics.json"))).unwrap();
    assert_eq!(t["metrics"], metrics);
    assert_eq!(metrics["status"], "finished");
    assert_eq!(metrics["steps"], 2);
    // Its weights are the job's final adapter.
    let weights = std::fs::read(job.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(
        metrics["adapter_hash"],
        hex::encode(bundle::blake3_hash(&weights))
    );

    // Served by name through the OpenAI API, paid and attributed.
    let key = s.api_key("dev5", "10", "10");
    let (status, body) = post(
        &s.url("/v1/chat/completions"),
        Some(&key),
        &chat(8, "trained", "How do I keep bees in a city?"),
    );
    assert_eq!(status, 200, "{body}");
    let attribution = &body["attribution"];
    assert!(attribution.is_object(), "{body}");
    assert_eq!(attribution["adapter"], "trained");
    assert_eq!(attribution["adapter_id"], id);
}

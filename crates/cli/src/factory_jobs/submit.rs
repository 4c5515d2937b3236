//! Reading a job submission (`POST /v1/factory/jobs`), before anything is queued:
//!
//! ```json
//! {"config": { …TrainConfig, LLaMA-Factory names… }, "datanets": ["1@2", "3"]}
//! ```
//!
//! A node trains only on datanets: a dataset in the config must name one (`datanet =
//! "ID@VERSION"`; its local `path` is ignored), and no path the submitter writes is read. The
//! base model is one of the node's (`[factory] base_models`), named by path or file name, or
//! the first of them when the config names none. Settings that cannot train are refused with
//! the trainer's own message, and so is a job larger than the node allows (`[factory]` bounds).

use super::store::{DatanetVersion, Submission};
use openledger_factory::config::{DatasetSpec, Format};
use openledger_factory::TrainConfig;
use openledger_node::config::FactorySettings;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Most datanet versions one job trains on.
pub const MAX_DATANETS: usize = 16;
/// Most held-out prompts generated before and after training.
pub const MAX_SAMPLE_PROMPTS: usize = 16;
/// Most tokens generated per sample.
pub const MAX_SAMPLE_TOKENS: usize = 256;
/// Most checkpoints one job keeps on disk.
pub const MAX_CHECKPOINTS_KEPT: usize = 10;

/// A datanet reference as submitted: `ID@VERSION`, or `ID` (or a number) for the latest
/// version (0).
pub fn parse_datanet(v: &Value) -> Result<(u64, u64), String> {
    if let Some(id) = v.as_u64() {
        return Ok((id, 0));
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("datanets: {v} is not \"ID@VERSION\" or an id"))?;
    let (id, version) = s.split_once('@').unwrap_or((s, "0"));
    let bad = || format!("datanets: {s:?} is not \"ID@VERSION\" or an id");
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    let version: u64 = version.trim().parse().map_err(|_| bad())?;
    if id == 0 {
        return Err(bad());
    }
    Ok((id, version))
}

/// The base model `named` (by path or file name; `None`: the first) among `allowed`.
pub fn resolve_base(named: Option<&str>, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    let names: Vec<String> = allowed.iter().map(|p| file_name(p)).collect();
    if allowed.is_empty() {
        return Err(
            "this node has no base model to train on: its operator sets [factory] base_models (or [serve] model) in config.toml".into(),
        );
    }
    let Some(named) = named else {
        return Ok(allowed[0].clone());
    };
    let wanted = Path::new(named);
    allowed
        .iter()
        .find(|p| {
            p.as_path() == wanted
                || wanted.file_name().map(|n| n.to_string_lossy()) == Some(file_name(p).into())
        })
        .cloned()
        .ok_or_else(|| {
            format!(
                "base_model {named:?} is not one this node trains on; name one of: {}",
                names.join(", ")
            )
        })
}

/// The last component of a model path.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// What a submission asks for, checked; datanet versions may still be 0 (latest), resolved
/// against the chain by the caller.
pub fn parse(
    body: &[u8],
    settings: &FactorySettings,
    base_models: &[PathBuf],
) -> Result<(TrainConfig, Vec<(u64, u64)>), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut top) = v else {
        return Err(
            "the body must be a JSON object {\"config\": {…}, \"datanets\": [\"ID@VERSION\"]}"
                .into(),
        );
    };
    let mut config = match top.remove("config") {
        Some(Value::Object(c)) => c,
        None => serde_json::Map::new(),
        Some(other) => return Err(format!("config must be an object, not {other}")),
    };
    let mut refs = Vec::new();
    match top.remove("datanets") {
        Some(Value::Array(items)) => {
            for it in &items {
                refs.push(parse_datanet(it)?);
            }
        }
        None => {}
        Some(other) => {
            return Err(format!(
                "datanets must be a list of \"ID@VERSION\", not {other}"
            ))
        }
    }
    if let Some(k) = top.keys().next() {
        return Err(format!(
            "unknown field {k:?}: a submission has \"config\" and \"datanets\""
        ));
    }
    // Datasets of a config written for `factory train`: their datanet is what counts.
    match config.remove("datasets") {
        Some(Value::Array(specs)) => {
            for (i, spec) in specs.iter().enumerate() {
                match spec.get("datanet") {
                    Some(d) => refs.push(parse_datanet(d)?),
                    None => {
                        return Err(format!(
                            "datasets[{i}] is a local file; a node trains only on datanets: name it as a datanet (\"ID@VERSION\")"
                        ))
                    }
                }
            }
        }
        None => {}
        Some(other) => return Err(format!("datasets must be a list, not {other}")),
    }
    let named_base = match config.remove("base_model") {
        Some(Value::String(s)) => Some(s),
        None => None,
        Some(other) => return Err(format!("base_model must be a string, not {other}")),
    };
    let mut cfg: TrainConfig =
        serde_json::from_value(Value::Object(config)).map_err(|e| format!("config: {e}"))?;
    cfg.base_model = resolve_base(named_base.as_deref(), base_models)?;
    if refs.is_empty() {
        return Err(
            "nothing to train on: name at least one datanet (\"datanets\": [\"ID@VERSION\"])"
                .into(),
        );
    }
    refs.sort_unstable();
    refs.dedup();
    if refs.len() > MAX_DATANETS {
        return Err(format!(
            "{} datanet versions named; one job trains on at most {MAX_DATANETS}",
            refs.len()
        ));
    }
    // The trainer's own checks, with a placeholder where the exports will be.
    let mut probe = cfg.clone();
    probe.datasets.push(DatasetSpec {
        path: "-".into(),
        format: Format::Datanet,
        datanet: None,
    });
    probe.check().map_err(|e| e.to_string())?;
    check_bounds(&cfg, settings)?;
    Ok((cfg, refs))
}

/// The node's bounds on one job.
fn check_bounds(c: &TrainConfig, s: &FactorySettings) -> Result<(), String> {
    if c.max_steps > s.max_steps {
        return Err(format!(
            "max_steps is {}; this node runs at most {} steps per job ([factory] max_steps)",
            c.max_steps, s.max_steps
        ));
    }
    let tokens = c.per_device_train_batch_size.saturating_mul(c.cutoff_len);
    if tokens > s.max_batch_tokens {
        return Err(format!(
            "per_device_train_batch_size × cutoff_len is {tokens} tokens; this node trains at most {} per micro-batch ([factory] max_batch_tokens): lower one, and raise gradient_accumulation_steps instead",
            s.max_batch_tokens
        ));
    }
    if c.sample_prompts > MAX_SAMPLE_PROMPTS {
        return Err(format!(
            "sample_prompts is {}; at most {MAX_SAMPLE_PROMPTS}",
            c.sample_prompts
        ));
    }
    if c.sample_max_tokens > MAX_SAMPLE_TOKENS {
        return Err(format!(
            "sample_max_tokens is {}; at most {MAX_SAMPLE_TOKENS}",
            c.sample_max_tokens
        ));
    }
    if c.save_total_limit > MAX_CHECKPOINTS_KEPT {
        return Err(format!(
            "save_total_limit is {}; a node job keeps at most {MAX_CHECKPOINTS_KEPT} checkpoints",
            c.save_total_limit
        ));
    }
    Ok(())
}

/// The accepted submission once its datanet versions are resolved.
pub fn accepted(config: TrainConfig, datanets: Vec<DatanetVersion>) -> Submission {
    let mut config = config;
    config.datasets.clear();
    Submission { config, datanets }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<PathBuf> {
        vec!["/m/SmolLM2.gguf".into(), "/m/tiny".into()]
    }

    fn parse_json(v: Value) -> Result<(TrainConfig, Vec<(u64, u64)>), String> {
        parse(
            v.to_string().as_bytes(),
            &FactorySettings::default(),
            &models(),
        )
    }

    #[test]
    fn a_submission_names_datanets_and_a_base_model_of_the_node() {
        let (c, refs) = parse_json(serde_json::json!({
            "config": {"lora_rank": 4, "base_model": "tiny",
                       "datasets": [{"path": "/etc/passwd", "datanet": "2@1"}]},
            "datanets": ["1@3", 5, "2@1"]
        }))
        .unwrap();
        assert_eq!(c.lora_rank, 4);
        assert_eq!(c.base_model, PathBuf::from("/m/tiny"));
        assert!(c.datasets.is_empty(), "no submitted path is kept");
        assert_eq!(refs, vec![(1, 3), (2, 1), (5, 0)]);
        let (c, _) = parse_json(serde_json::json!({"datanets": ["1"]})).unwrap();
        assert_eq!(c.base_model, PathBuf::from("/m/SmolLM2.gguf"));
    }

    #[test]
    fn local_files_other_models_and_bad_settings_are_refused() {
        let cases = [
            (
                serde_json::json!({"config": {"datasets": [{"path": "/etc/passwd"}]}, "datanets": ["1"]}),
                "local file",
            ),
            (
                serde_json::json!({"config": {"base_model": "/etc/shadow"}, "datanets": ["1"]}),
                "not one this node trains on",
            ),
            (
                serde_json::json!({"config": {"lora_rank": 0}, "datanets": ["1"]}),
                "lora_rank is 0",
            ),
            (
                serde_json::json!({"config": {"lora_rnak": 4}, "datanets": ["1"]}),
                "lora_rnak",
            ),
            (serde_json::json!({"config": {}}), "nothing to train on"),
            (
                serde_json::json!({"config": {}, "datanets": ["x@1"]}),
                "ID@VERSION",
            ),
            (
                serde_json::json!({"config": {"max_steps": 1_000_000}, "datanets": ["1"]}),
                "max_steps",
            ),
            (
                serde_json::json!({"config": {"per_device_train_batch_size": 1024, "cutoff_len": 1024}, "datanets": ["1"]}),
                "max_batch_tokens",
            ),
            (
                serde_json::json!({"config": {}, "datanets": ["1"], "extra": 1}),
                "unknown field",
            ),
        ];
        for (body, want) in cases {
            let err = parse_json(body.clone()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
        let err = parse(b"{", &FactorySettings::default(), &models()).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = resolve_base(None, &[]).unwrap_err();
        assert!(err.contains("base_models"), "{err}");
    }
}

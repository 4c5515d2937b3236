//! `openledger factory publish JOB_DIR`: puts a finished fine-tuning job's adapter on chain. The
//! base model is found by the content hash of the job's base model file; the attribution index is
//! built over exactly the datanet versions the job trained on; the bundle's training
//! configuration is the job's complete `config.toml` and `metrics.json` (config, data and adapter
//! hashes, final losses), so the on-chain `trainingConfigHash` commits to all of them.

use crate::commands::Session;
use crate::publish_adapter::{self, Publication, MAX_WEIGHTS_BYTES};
use alloy_primitives::B256;
use alloy_sol_types::SolCall;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use openledger_factory::{config::TrainConfig, Metrics};
use openledger_node::openlora::bundle;
use openledger_types::{abi::IModel, modules};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PublishArgs {
    /// The job directory (`openledger factory train --out`).
    job: PathBuf,
    /// The adapter's unique on-chain name (what the OpenAI API's `model` field names).
    #[arg(long)]
    name: String,
    /// The on-chain base model id (default: the one registered with the hash of the job's
    /// base model file); checked against that hash.
    #[arg(long)]
    base: Option<u64>,
    /// Publish the adapter at the best validation loss (adapter-best/) instead of the final one.
    #[arg(long)]
    best: bool,
}

/// Where the publication's files are assembled inside the job directory.
const PUBLISH_DIR: &str = "publish";

/// The format tag of the training configuration a factory job publishes.
const TRAINING_CONFIG_FORMAT: &str = "openledger-factory/1";

/// A finished job: its config, config text, metrics and the adapter directory to publish.
pub(crate) struct FinishedJob {
    pub(crate) config: TrainConfig,
    pub(crate) config_text: String,
    pub(crate) metrics: serde_json::Value,
    pub(crate) adapter: PathBuf,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn blake3_hex(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(alloy_primitives::hex::encode(bundle::blake3_hash(&bytes)))
}

/// Opens the job, refusing one that did not finish or whose files changed since it did (also
/// for the node's `POST /v1/factory/jobs/{id}/publish`).
pub(crate) fn finished_job(dir: &Path, best: bool) -> Result<FinishedJob> {
    let config_path = dir.join(openledger_factory::CONFIG_FILE);
    if !config_path.is_file() {
        bail!(
            "{} is not a factory job directory (no {})",
            dir.display(),
            openledger_factory::CONFIG_FILE
        );
    }
    let resume = format!("openledger factory train --resume {}", dir.display());
    let metrics_path = dir.join(openledger_factory::METRICS_FILE);
    if !metrics_path.is_file() {
        bail!(
            "the job in {} has not finished (no {}): finish it with `{resume}`",
            dir.display(),
            openledger_factory::METRICS_FILE
        );
    }
    let metrics_text = read(&metrics_path)?;
    let m: Metrics = serde_json::from_str(&metrics_text)
        .with_context(|| format!("reading {}", metrics_path.display()))?;
    if m.status != "finished" && m.status != "early_stopped" {
        bail!(
            "the job in {} did not finish: it was {} at step {} of {}; finish it with `{resume}`",
            dir.display(),
            m.status,
            m.steps,
            m.total_steps
        );
    }
    let config_text = read(&config_path)?;
    if blake3_hex(&config_path)? != m.config_hash {
        bail!(
            "{} changed after the job finished (its BLAKE3 is not the config_hash in {}): the adapter was not trained with it",
            config_path.display(),
            metrics_path.display()
        );
    }
    let adapter = dir.join(if best {
        openledger_factory::BEST_ADAPTER_DIR
    } else {
        openledger_factory::ADAPTER_DIR
    });
    let weights = adapter.join(bundle::WEIGHTS_FILE);
    if !weights.is_file() {
        if best {
            bail!(
                "{} has no best adapter ({} is missing): the job had no validation set; publish the final adapter without --best",
                dir.display(),
                weights.display()
            );
        }
        bail!("{} is missing: the job did not finish", weights.display());
    }
    if !best && m.adapter_hash.as_deref() != Some(blake3_hex(&weights)?.as_str()) {
        bail!(
            "{} is not the adapter the job finished with (its BLAKE3 is not the adapter_hash in {})",
            weights.display(),
            metrics_path.display()
        );
    }
    let config = TrainConfig::from_toml(&config_text)
        .with_context(|| format!("reading {}", config_path.display()))?;
    Ok(FinishedJob {
        config,
        config_text,
        metrics: serde_json::from_str(&metrics_text)?,
        adapter,
    })
}

/// The datanet versions the job trained on, in its config's order.
fn trained_datanets(c: &TrainConfig, dir: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for d in &c.datasets {
        let Some(spec) = &d.datanet else { continue };
        let (id, version) = crate::commands::parse_datanet_version(spec)
            .map_err(|e| anyhow!("dataset {} names datanet {spec:?}: {e}", d.path.display()))?;
        if version == 0 {
            bail!(
                "the job trained on the latest version of datanet {id} without recording which: retrain with --datanet {id}@VERSION"
            );
        }
        if !out.contains(&(id, version)) {
            out.push((id, version));
        }
    }
    if out.is_empty() {
        bail!(
            "the job in {} trained only on local files, no datanet: the chain registers an adapter only with the datanet versions it was trained on (at least one); train with --datanet ID@VERSION",
            dir.display()
        );
    }
    Ok(out)
}

/// The on-chain base model of the job: `--base`, checked against the hash of the job's base
/// model file, or the one registered with that hash.
fn base_model(s: &Session, model: &Path, base: Option<u64>) -> Result<u64> {
    let hash = crate::openlora_glue::model_hash(model)
        .with_context(|| format!("the job's base model {}", model.display()))?;
    let rpc = s.rpc()?;
    let get = |id: u64| -> Result<IModel::BaseModel> {
        let out = rpc
            .view(
                modules::MODEL,
                IModel::getBaseModelCall { modelId: id }.abi_encode(),
            )
            .with_context(|| format!("base model {id}"))?;
        Ok(IModel::getBaseModelCall::abi_decode_returns(&out)?)
    };
    if let Some(id) = base {
        let b = get(id)?;
        if b.modelHash != hash {
            bail!(
                "base model {id} ({:?}) is registered with hash {}, but the job trained on {} (SHA-256 {hash})",
                b.name,
                b.modelHash,
                model.display()
            );
        }
        return Ok(id);
    }
    let out = rpc.view(modules::MODEL, IModel::baseModelCountCall {}.abi_encode())?;
    let count = IModel::baseModelCountCall::abi_decode_returns(&out)?;
    let mut found: Vec<(u64, String)> = Vec::new();
    for id in 1..=count {
        let b = get(id)?;
        if b.modelHash == hash {
            found.push((id, b.name));
        }
    }
    match found.as_slice() {
        [] => bail!(
            "no base model on chain has the hash of the job's base model {} (SHA-256 {hash}): register it with `openledger model register-base NAME --hash {hash}`",
            model.display()
        ),
        [(id, name)] => {
            eprintln!("base model {id} ({name:?}) has the hash of {}", model.display());
            Ok(*id)
        }
        many => bail!(
            "base models {} all have the hash of {}: pick one with --base",
            many.iter()
                .map(|(id, n)| format!("{id} ({n:?})"))
                .collect::<Vec<_>>()
                .join(", "),
            model.display()
        ),
    }
}

/// Writes `adapter_config.json`, the weights and `training_config.json` (the job's config and
/// metrics) into `out`, ready to pack.
pub(crate) fn stage_adapter(job: &FinishedJob, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for f in [bundle::CONFIG_FILE, bundle::WEIGHTS_FILE] {
        std::fs::copy(job.adapter.join(f), out.join(f))
            .with_context(|| format!("copying {}", job.adapter.join(f).display()))?;
    }
    let training = serde_json::json!({
        "format": TRAINING_CONFIG_FORMAT,
        "adapter": job.adapter.file_name().map(|n| n.to_string_lossy().into_owned()),
        "config_toml": job.config_text,
        "metrics": job.metrics,
    });
    let path = out.join(bundle::TRAINING_CONFIG_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&training)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `openledger factory publish`.
pub fn run(s: &Session, a: PublishArgs) -> Result<()> {
    let job = finished_job(&a.job, a.best)?;
    let datanets = trained_datanets(&job.config, &a.job)?;
    publish_adapter::check_name_free(&s.rpc()?, &a.name)?;
    let base = base_model(s, &job.config.base_model, a.base)?;
    let staging = a.job.join(PUBLISH_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    let adapter_dir = staging.join("adapter");
    stage_adapter(&job, &adapter_dir)?;
    let index_dir = staging.join("index");
    crate::index_cmd::build_new(s, &datanets, &job.config.base_model, &index_dir)?;
    let packed = bundle::pack_dir(&adapter_dir, MAX_WEIGHTS_BYTES).map_err(|e| anyhow!("{e}"))?;
    let config_hash: B256 = packed.config_hash;
    let id = publish_adapter::publish(
        s,
        &packed,
        &Publication {
            name: &a.name,
            base,
            datanets: &datanets,
            index: Some(&index_dir),
            training_config_hash: config_hash,
        },
    )?;
    eprintln!(
        "trainingConfigHash {config_hash}: BLAKE3 of {}",
        adapter_dir.join(bundle::TRAINING_CONFIG_FILE).display()
    );
    println!("{id}");
    Ok(())
}

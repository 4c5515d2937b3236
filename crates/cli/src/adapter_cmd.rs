//! `openledger adapter merge` and `openledger adapter init`.
//!
//! `merge` combines adapters registered on chain into a new one (OpenLoRA's adapter merging,
//! `openledger_model::merge`): it resolves each parent by name or `adapter-<id>`, downloads its
//! bundle from the node and checks it against the on-chain `adapterHash`, merges, writes the PEFT
//! directory with `merge.json` (the merge record, naming each parent by on-chain id, name and
//! hash), and publishes it: the bundle (carrying `merge.json` as its training configuration) is
//! uploaded and `registerMergedAdapter` records the parents, BLAKE3 of `merge.json` and BLAKE3 of
//! the bundle. The chain gives the merged adapter its parents' datanet versions, so their
//! contributors keep earning from it.
//!
//! `init` writes a freshly initialised adapter for a base model (A random, B zero, as PEFT does),
//! which changes nothing until trained: a real adapter to publish before ModelFactory trains one.

use crate::{
    commands::Session,
    publish_adapter::{self, Uploader},
    wallet::Rpc,
};
use alloy_sol_types::SolCall;
use anyhow::{anyhow, bail, Context, Result};
use openledger_model::{
    merge::{self, MajoritySign, MergeMethod, MergeOptions, MergeRecord},
    peft, Device, LoraAdapter, LoraConfig, Target,
};
use openledger_node::openlora::{artifacts, bundle};
use openledger_types::{abi::IModel, modules};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The merge record's file name in the merged adapter's directory.
pub const MERGE_RECORD_FILE: &str = "merge.json";

#[derive(clap::Subcommand, Debug)]
pub enum AdapterCmd {
    /// Merge adapters registered on chain (names or adapter-<id>, of one base model) into a new
    /// adapter; publish it with its parents recorded on chain (they keep earning from it). Prints
    /// the new adapter's id last.
    Merge(MergeArgs),
    /// Write a freshly initialised PEFT LoRA adapter for a base model: A random (Kaiming-uniform)
    /// and B zero, exactly as PEFT initialises LoRA, so it leaves the model's output unchanged
    /// until trained. It lets you publish a real adapter (`openledger model publish-adapter`)
    /// before ModelFactory trains one.
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The adapters to merge: on-chain names or adapter-<id>, at least two, in weight order.
    #[arg(required = true)]
    pub parents: Vec<String>,
    /// The merged adapter's unique on-chain name.
    #[arg(long)]
    pub name: String,
    /// One weight per adapter, comma-separated (default: an even average, 1/N each for linear,
    /// cat, svd and dare_linear, which sum; 1 each for ties and dare_ties, whose disjoint mean
    /// already averages). Note that linear, as PEFT's, scales both factors by √weight: two copies
    /// of one adapter at 0.5,0.5 give twice its update (use cat for the exact weighted sum).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub weights: Option<Vec<f64>>,
    /// linear, cat, svd, ties, dare_linear or dare_ties (PEFT's add_weighted_adapter methods).
    #[arg(long, default_value = "linear", value_parser = parse_method)]
    pub method: MergeMethod,
    /// The fraction of each update kept, in (0, 1]: required by ties, dare_linear and dare_ties.
    #[arg(long)]
    pub density: Option<f64>,
    /// The merged rank for svd, ties, dare_linear and dare_ties (default: the largest parent
    /// rank); linear keeps the parents' rank and cat sums them.
    #[arg(long)]
    pub rank: Option<usize>,
    /// How ties and dare_ties elect each element's sign: total or frequency (default total).
    #[arg(long, value_parser = parse_sign)]
    pub majority_sign: Option<MajoritySign>,
    /// Fixes DARE's drop mask and the SVD sketch, so a merge is reproducible.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the merged PEFT directory here (a new or empty directory; default: a temporary one).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only write the merged adapter to --out: no upload, no transaction.
    #[arg(long, requires = "out")]
    pub no_publish: bool,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The base model: a GGUF file or a Hugging Face directory (its real shapes are used).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the PEFT adapter (a new or empty directory).
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// lora_alpha (the update is scaled by alpha/r).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// The projections to adapt: all, or a comma-separated list of q,k,v,o,gate,up,down
    /// (default: q,v, PEFT's default for Llama models).
    #[arg(long, default_value = "q,v", value_parser = parse_targets)]
    pub targets: Targets,
    /// Seeds A's random values.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A parsed `--targets`.
#[derive(Clone, Debug)]
pub struct Targets(pub Vec<Target>);

fn parse_method(s: &str) -> Result<MergeMethod, String> {
    s.parse()
        .map_err(|e: openledger_model::ModelError| e.to_string())
}

fn parse_sign(s: &str) -> Result<MajoritySign, String> {
    s.parse()
        .map_err(|e: openledger_model::ModelError| e.to_string())
}

fn parse_targets(s: &str) -> Result<Targets, String> {
    if s.trim() == "all" {
        return Ok(Targets(Target::ALL.to_vec()));
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let t = Target::parse(part).ok_or_else(|| {
            format!("{part:?} is not a projection: use all, or some of q,k,v,o,gate,up,down")
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort();
    Ok(Targets(out))
}

/// Runs an `openledger adapter` subcommand.
pub fn run(s: &Session, c: AdapterCmd) -> Result<()> {
    match c {
        AdapterCmd::Merge(a) => run_merge(s, a),
        AdapterCmd::Init(a) => run_init(a),
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch> {
        let p =
            std::env::temp_dir().join(format!("openledger-{what}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Refuses an output directory that already holds something (nothing is overwritten).
fn check_out(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut d| d.next().is_some()) {
        Ok(true) => bail!(
            "{} is not empty; name a new or empty directory for the adapter",
            dir.display()
        ),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("reading {}: {e}", dir.display())),
    }
}

/// The merge options and one weight per parent, checked before anything is downloaded.
fn merge_options(a: &MergeArgs, parents: usize) -> Result<(MergeOptions, Vec<f64>)> {
    let m = a.method;
    let weights = match &a.weights {
        Some(w) if w.len() != parents => bail!(
            "{} weights for {parents} adapters: give one weight per adapter, in the order named",
            w.len()
        ),
        Some(w) => w.clone(),
        None if m.uses_sign() => vec![1.0; parents],
        None => vec![1.0 / parents as f64; parents],
    };
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        bail!("weight {w} is not a finite number");
    }
    if m == MergeMethod::Linear && weights.iter().any(|w| *w < 0.0) {
        bail!("linear takes weights ≥ 0 (it scales both factors by √weight, as PEFT does); use cat or svd to subtract an adapter");
    }
    match (m.uses_density(), a.density) {
        (true, None) => bail!("{m} needs --density, the fraction of each update to keep, in (0, 1] (1 keeps everything)"),
        (true, Some(d)) if !(d > 0.0 && d <= 1.0) => {
            bail!("--density {d} is outside (0, 1]: it is the fraction of each update to keep")
        }
        (false, Some(_)) => {
            bail!("{m} takes no --density; it applies to ties, dare_linear and dare_ties")
        }
        _ => {}
    }
    match (m.uses_svd(), a.rank) {
        (_, Some(0)) => bail!("--rank 0: the merged rank must be at least 1"),
        (_, Some(r)) if r > merge::MAX_RANK => {
            bail!("--rank {r} is over the largest rank an adapter may have, {}", merge::MAX_RANK)
        }
        (false, Some(_)) => bail!(
            "{m} takes no --rank: linear keeps the parents' rank and cat sums them; svd, ties, dare_linear and dare_ties truncate to --rank"
        ),
        _ => {}
    }
    if a.majority_sign.is_some() && !m.uses_sign() {
        bail!("{m} elects no sign; --majority-sign applies to ties and dare_ties");
    }
    let opts = MergeOptions {
        method: m,
        density: a.density,
        majority_sign: a.majority_sign.unwrap_or_default(),
        rank: a.rank,
        seed: a.seed,
    };
    Ok((opts, weights))
}

/// Finds an on-chain adapter by name, `adapter-<id>` or a bare id.
fn resolve(rpc: &Rpc, named: &str) -> Result<IModel::Adapter> {
    let digits = named.strip_prefix("adapter-").unwrap_or(named);
    let id = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits
            .parse()
            .map_err(|_| anyhow!("{named:?}: no such adapter id"))?
    } else {
        match publish_adapter::adapter_by_name(rpc, named)? {
            0 => bail!("no adapter named {named:?} on chain (name one by its registered name or adapter-<id>)"),
            id => id,
        }
    };
    let out = rpc
        .view(
            modules::MODEL,
            IModel::getAdapterCall { adapterId: id }.abi_encode(),
        )
        .map_err(|e| anyhow!("no adapter {named:?} on chain (adapter-{id}): {e}"))?;
    Ok(IModel::getAdapterCall::abi_decode_returns(&out)?)
}

fn base_model(rpc: &Rpc, id: u64) -> Result<IModel::BaseModel> {
    let out = rpc
        .view(
            modules::MODEL,
            IModel::getBaseModelCall { modelId: id }.abi_encode(),
        )
        .with_context(|| format!("base model {id}"))?;
    Ok(IModel::getBaseModelCall::abi_decode_returns(&out)?)
}

/// Downloads adapter `a`'s bundle into `dir`, refuses it unless it hashes to the on-chain
/// `adapterHash`, and loads it.
fn fetch_parent(s: &Session, a: &IModel::Adapter, dir: &Path) -> Result<LoraAdapter> {
    let what = format!("adapter {:?} (adapter-{})", a.name, a.id);
    eprintln!("{what}: downloading bundle {}", a.adapterHash);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("bundle");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    s.rest(false)?
        .get_to(&format!("/v1/artifacts/{}", a.adapterHash), &mut file)
        .with_context(|| format!("downloading {what}'s bundle from the node"))?;
    drop(file);
    let got = artifacts::hash_file(&path).with_context(|| format!("reading {}", path.display()))?;
    if got != a.adapterHash {
        bail!(
            "{what}: the node's bundle hashes to {got}, not to the adapterHash on chain {}; refusing it",
            a.adapterHash
        );
    }
    let peft_dir = dir.join("peft");
    bundle::unpack(&path, &peft_dir).map_err(|e| anyhow!("{what}: {e}"))?;
    peft::load(&peft_dir, &Device::Cpu).with_context(|| format!("loading {what}"))
}

/// `merge.json`: the merge record with each parent's on-chain id, name and adapter hash, and the
/// base model's id.
fn record_json(record: &MergeRecord, parents: &[IModel::Adapter]) -> Result<String> {
    let mut v = serde_json::to_value(record)?;
    for (p, a) in v["parents"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("the merge record lists no parents"))?
        .iter_mut()
        .zip(parents)
    {
        p["id"] = json!(format!("adapter-{}", a.id));
        p["name"] = json!(a.name);
        p["adapter_hash"] = json!(a.adapterHash);
    }
    v["base_model_id"] = json!(parents[0].baseModelId);
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

/// Runs `openledger adapter merge`.
fn run_merge(s: &Session, a: MergeArgs) -> Result<()> {
    if a.parents.len() < 2 {
        bail!("name at least two adapters to merge (the chain records merges of 2 or more)");
    }
    let (opts, weights) = merge_options(&a, a.parents.len())?;
    if let Some(out) = &a.out {
        check_out(out)?;
    }
    let rpc = s.rpc()?;
    // Refuse what the chain would refuse before any download or computation.
    let uploader = if a.no_publish {
        openledger_state::modules::model::check_adapter_name(&a.name)
            .map_err(|e| anyhow!("{e}"))?;
        None
    } else {
        publish_adapter::check_name_free(&rpc, &a.name)?;
        Some(Uploader::new(s)?)
    };
    let mut parents: Vec<IModel::Adapter> = Vec::with_capacity(a.parents.len());
    for named in &a.parents {
        let p = resolve(&rpc, named)?;
        if let Some(q) = parents.iter().find(|q| q.id == p.id) {
            bail!(
                "adapter {:?} (adapter-{}) is named twice; a merge needs distinct parents",
                q.name,
                q.id
            );
        }
        if let Some(q) = parents.first().filter(|q| q.baseModelId != p.baseModelId) {
            let (b0, b1) = (
                base_model(&rpc, q.baseModelId)?,
                base_model(&rpc, p.baseModelId)?,
            );
            bail!(
                "adapter {:?} is built on base model {} {:?} and adapter {:?} on base model {} {:?}: adapters merge only on one base model",
                q.name, b0.id, b0.name, p.name, b1.id, b1.name
            );
        }
        parents.push(p);
    }
    let base = base_model(&rpc, parents[0].baseModelId)?;

    let scratch = Scratch::new("merge")?;
    let mut adapters = Vec::with_capacity(parents.len());
    for (i, p) in parents.iter().enumerate() {
        let dir = scratch.0.join(format!("parent-{i}"));
        let mut adapter = fetch_parent(s, p, &dir)?;
        // The chain says they share one base model; what each bundle declares as its base
        // (a hub name, a local path) must not make the merge refuse them.
        adapter.config.base_model = Some(base.name.clone());
        adapters.push(adapter);
    }
    eprintln!(
        "merging {} adapters with {} (weights {weights:?}{}{})",
        adapters.len(),
        opts.method,
        opts.density
            .map(|d| format!(", density {d}"))
            .unwrap_or_default(),
        opts.rank.map(|r| format!(", rank {r}")).unwrap_or_default(),
    );
    let pairs: Vec<(&LoraAdapter, f64)> = adapters.iter().zip(weights.iter().copied()).collect();
    let (merged, record) = merge::merge(&pairs, &opts)?;
    drop(adapters);
    let record = record_json(&record, &parents)?;

    let out = match &a.out {
        Some(d) => d.clone(),
        None => scratch.0.join("merged"),
    };
    peft::save(&merged, &out).with_context(|| format!("writing {}", out.display()))?;
    let record_path = out.join(MERGE_RECORD_FILE);
    std::fs::write(&record_path, &record)
        .with_context(|| format!("writing {}", record_path.display()))?;
    // The bundle carries the record as its training configuration, so the chain's
    // trainingConfigHash (the mergeConfigHash) is the hash of the record the bundle holds.
    let config = std::fs::read_to_string(out.join(bundle::CONFIG_FILE))?;
    let weights_file = std::fs::read(out.join(bundle::WEIGHTS_FILE))?;
    let packed = bundle::pack_parts(&config, &weights_file, Some(&record))
        .map_err(|e| anyhow!("packing the merged adapter: {e}"))?;
    let (adapter_hash, merge_hash) = (
        bundle::blake3_hash(&packed),
        bundle::blake3_hash(record.as_bytes()),
    );
    eprintln!(
        "merged adapter: rank {}, {} projections; mergeConfigHash {merge_hash}, adapterHash {adapter_hash}{}",
        merged.config.r,
        merged.pairs().count(),
        a.out
            .as_ref()
            .map(|d| format!("; written to {}", d.display()))
            .unwrap_or_default()
    );
    let Some(uploader) = uploader else {
        println!("{}", out.display());
        return Ok(());
    };
    uploader
        .upload_bytes(&packed, &adapter_hash)
        .context("uploading the merged adapter's bundle")?;
    eprintln!("bundle uploaded: {} bytes", packed.len());
    let data = IModel::registerMergedAdapterCall {
        name: a.name.clone(),
        parentIds: parents.iter().map(|p| p.id).collect(),
        mergeConfigHash: merge_hash,
        adapterHash: adapter_hash,
    }
    .abi_encode();
    let id = publish_adapter::send_registration(
        &rpc,
        &s.signer()?,
        "registerMergedAdapter",
        &a.name,
        data,
    )?;
    println!("{id}");
    Ok(())
}

/// Runs `openledger adapter init`.
fn run_init(a: InitArgs) -> Result<()> {
    if a.rank == 0 || a.rank > merge::MAX_RANK {
        bail!("--rank {} is outside 1..={}", a.rank, merge::MAX_RANK);
    }
    if !(a.alpha.is_finite() && a.alpha > 0.0) {
        bail!("--alpha {} must be a positive number", a.alpha);
    }
    check_out(&a.out)?;
    eprintln!("reading the shapes of {}", a.model.display());
    let model = openledger_model::load::load(&a.model, &Device::Cpu)
        .with_context(|| format!("loading the base model {}", a.model.display()))?;
    let mut config = LoraConfig::new(a.rank, a.alpha, &a.targets.0);
    // PEFT's base_model_name_or_path: the model's file or directory name (not a local path).
    config.base_model = a
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let layers = model.blocks.len();
    let adapter = LoraAdapter::init(
        config,
        &|t| model.target_dims(t),
        layers,
        a.seed,
        false,
        &Device::Cpu,
    )?;
    peft::save(&adapter, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "initialised a rank-{} adapter of {} parameters over {layers} layers ({}); B is zero, so it changes nothing until trained",
        a.rank,
        adapter.num_params(),
        a.targets
            .0
            .iter()
            .map(|t| t.peft_name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(method: &str, weights: Option<Vec<f64>>) -> MergeArgs {
        MergeArgs {
            parents: vec!["a".into(), "b".into()],
            name: "m".into(),
            weights,
            method: parse_method(method).unwrap(),
            density: None,
            rank: None,
            majority_sign: None,
            seed: 0,
            out: None,
            no_publish: false,
        }
    }

    #[test]
    fn default_weights_average_and_bad_options_are_refused() {
        let (_, w) = merge_options(&args("linear", None), 2).unwrap();
        assert_eq!(w, vec![0.5, 0.5]);
        let mut ties = args("ties", None);
        assert!(merge_options(&ties, 2).is_err(), "ties needs a density");
        ties.density = Some(0.5);
        let (o, w) = merge_options(&ties, 2).unwrap();
        assert_eq!((o.density, w), (Some(0.5), vec![1.0, 1.0]));
        ties.density = Some(1.5);
        assert!(merge_options(&ties, 2).is_err());
        assert!(merge_options(&args("linear", Some(vec![1.0])), 2).is_err());
        assert!(merge_options(&args("linear", Some(vec![-1.0, 1.0])), 2).is_err());
        let mut linear = args("linear", None);
        linear.rank = Some(4);
        assert!(merge_options(&linear, 2).is_err(), "linear takes no rank");
        let mut svd = args("svd", None);
        svd.rank = Some(0);
        assert!(merge_options(&svd, 2).is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_targets("all").unwrap().0, Target::ALL.to_vec());
        assert_eq!(
            parse_targets("v,q_proj,v").unwrap().0,
            vec![Target::Q, Target::V]
        );
        assert!(parse_targets("q,x").is_err());
    }
}

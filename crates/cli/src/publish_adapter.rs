//! `openledger model publish-adapter DIR`: packs a PEFT adapter directory into one bundle
//! (`openledger_node::openlora::bundle`), uploads it to the node's artifact store (its BLAKE3
//! is the on-chain `adapterHash`), uploads the attribution index and registers it with the node
//! (its root goes on chain), then sends `registerAdapter` and prints the adapter id.
//!
//! The pieces other adapter commands share (`openledger adapter merge`) are here too: the signed
//! [`Uploader`], [`adapter_by_name`], [`check_name_free`] and [`send_registration`]; and
//! `openledger factory publish` uses [`publish`] for the same upload-and-register sequence.

use crate::{commands::Session, wallet::Rpc};
use alloy_primitives::{keccak256, B256, U256};
use alloy_signer::SignerSync;
use alloy_sol_types::SolCall;
use anyhow::{anyhow, bail, Context, Result};
use openledger_node::openlora::{
    artifacts::{self, IndexFile, IndexUpload},
    bundle,
};
use openledger_types::{abi::IModel, modules, request_auth};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// Largest adapter weights file packed (the node's default artifact limit).
pub(crate) const MAX_WEIGHTS_BYTES: u64 = 256 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct PublishAdapterArgs {
    /// The PEFT adapter directory: adapter_config.json, adapter_model.safetensors and
    /// optionally training_config.json.
    pub dir: PathBuf,
    /// Its unique on-chain name (what the OpenAI API's `model` field names).
    #[arg(long)]
    pub name: String,
    /// The base model id it was trained on.
    #[arg(long)]
    pub base: u64,
    /// The datanet versions it was trained on, as ID@VERSION, comma-separated (e.g. 1@2,3@1).
    #[arg(long, value_delimiter = ',', required = true,
          value_parser = crate::commands::parse_datanet_version)]
    pub datanets: Vec<(u64, u64)>,
    /// Its attribution index directory (built with `openledger index build`): uploaded, and
    /// its root recorded on chain.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// The training-config hash to record (default: BLAKE3 of DIR/training_config.json, or of
    /// adapter_config.json when there is none).
    #[arg(long)]
    pub config_hash: Option<B256>,
}

/// A signed uploader to the node's artifact routes.
pub(crate) struct Uploader {
    base: String,
    chain_id: u64,
    signer: alloy_signer_local::PrivateKeySigner,
    agent: ureq::Agent,
}

impl Uploader {
    /// An uploader to the session's node, signing with the --from key.
    pub(crate) fn new(s: &Session) -> Result<Uploader> {
        let signer = s.signer()?;
        let rest = s.rest(true)?;
        Ok(Uploader {
            base: rest.base.clone(),
            chain_id: rest.chain_id,
            signer,
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            ),
        })
    }

    fn auth(&self, path: &str, body_hash: &B256) -> Result<String> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let msg = request_auth::message(self.chain_id, "POST", path, time, &nonce, body_hash);
        let sig = self.signer.sign_message_sync(msg.as_bytes())?;
        Ok(request_auth::header(
            self.signer.address(),
            time,
            &nonce,
            body_hash,
            &sig,
        ))
    }

    /// `POST path` with `body` (keccak-256 `hash`), the node's JSON answer.
    fn post(&self, path: &str, hash: &B256, body: impl ureq::AsSendBody) -> Result<Value> {
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", self.auth(path, hash)?)
            .header("Content-Type", "application/octet-stream")
            .header("Expect", "100-continue")
            .send(body)
            .map_err(|e| {
                anyhow!(
                    "cannot reach the node at {}: {e} (is `openledger node` running?)",
                    self.base
                )
            })?;
        let status = resp.status();
        let v: Value = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_json()
            .unwrap_or_default();
        if !status.is_success() {
            match v["error"].as_str() {
                Some(e) => bail!("{e}"),
                None => bail!(
                    "{path}: HTTP {status} (does this node have OpenLoRA's artifact routes? upgrade it)"
                ),
            }
        }
        Ok(v)
    }

    /// Uploads bytes as an artifact; checks the node stored them under `blake3`.
    pub(crate) fn upload_bytes(&self, bytes: &[u8], blake3: &B256) -> Result<()> {
        let v = self.post("/v1/artifacts", &keccak256(bytes), bytes)?;
        check_stored(&v, blake3)
    }

    /// Uploads a file as an artifact, streamed (read twice: once to hash, once to send);
    /// returns its BLAKE3.
    fn upload_file(&self, path: &Path) -> Result<B256> {
        let (keccak, blake3) = hash_file(path)?;
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let v = self
            .post("/v1/artifacts", &keccak, file)
            .with_context(|| format!("uploading {}", path.display()))?;
        check_stored(&v, &blake3)?;
        Ok(blake3)
    }
}

fn check_stored(answer: &Value, blake3: &B256) -> Result<()> {
    let stored: B256 = serde_json::from_value(answer["hash"].clone())
        .with_context(|| format!("unexpected answer to an upload: {answer}"))?;
    if stored != *blake3 {
        bail!("the node stored the upload as {stored}, but its BLAKE3 is {blake3}: it was altered in transit");
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(B256, B256)> {
    artifacts::upload_hashes(path).with_context(|| format!("reading {}", path.display()))
}

/// The files of the index in `dir` that make it up: `index.json` and every file of the shards
/// it lists, as (path inside the index, path on disk).
fn index_files(
    dir: &Path,
    manifest: &openledger_attribution::Manifest,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![(
        openledger_attribution::index::MANIFEST.to_string(),
        dir.join(openledger_attribution::index::MANIFEST),
    )];
    for shard in &manifest.shards {
        let sdir = dir.join(&shard.dir);
        let mut names: Vec<String> = std::fs::read_dir(&sdir)
            .with_context(|| format!("reading {}", sdir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            out.push((format!("{}/{n}", shard.dir), sdir.join(&n)));
        }
    }
    Ok(out)
}

/// Uploads the index in `dir` and has the node check and store it; returns its root.
fn publish_index(up: &Uploader, dir: &Path) -> Result<B256> {
    let ix = openledger_attribution::Index::open(dir)
        .with_context(|| format!("opening the index {}", dir.display()))?;
    let root = ix.root();
    let files = index_files(dir, ix.manifest())?;
    drop(ix);
    let mut listed = Vec::with_capacity(files.len());
    for (rel, path) in &files {
        listed.push(IndexFile {
            path: rel.clone(),
            hash: up.upload_file(path)?,
        });
    }
    let body = serde_json::to_vec(&IndexUpload {
        files: listed,
        root: Some(root),
    })?;
    let v = up
        .post("/v1/indexes", &keccak256(&body), &body)
        .context("registering the index with the node")?;
    if v["root"] != serde_json::json!(root) {
        bail!("the node computed index root {}, not {root}", v["root"]);
    }
    eprintln!(
        "index {} uploaded: {} files, root {root}",
        dir.display(),
        files.len()
    );
    Ok(root)
}

/// The adapter registered under `name` on chain (0: none).
pub(crate) fn adapter_by_name(rpc: &Rpc, name: &str) -> Result<u64> {
    let out = rpc.view(
        modules::MODEL,
        IModel::adapterByNameCall {
            name: name.to_string(),
        }
        .abi_encode(),
    )?;
    Ok(IModel::adapterByNameCall::abi_decode_returns(&out)?)
}

/// Refuses a name the chain would refuse: malformed, or taken by another adapter.
pub(crate) fn check_name_free(rpc: &Rpc, name: &str) -> Result<()> {
    openledger_state::modules::model::check_adapter_name(name).map_err(|e| anyhow!("{e}"))?;
    let taken = adapter_by_name(rpc, name)?;
    if taken != 0 {
        bail!("the adapter name {name:?} is taken by adapter {taken}; pick another");
    }
    Ok(())
}

/// Sends a model-module call that registers the adapter `name` (`what` names the call in
/// errors), checks it succeeded and returns the new adapter's id.
pub(crate) fn send_registration(
    rpc: &Rpc,
    signer: &alloy_signer_local::PrivateKeySigner,
    what: &str,
    name: &str,
    data: Vec<u8>,
) -> Result<u64> {
    let receipt = rpc.send(signer, modules::MODEL, U256::ZERO, data)?;
    let tx = receipt["transactionHash"].as_str().unwrap_or("?");
    if receipt["status"].as_str() != Some("0x1") {
        bail!("{what} failed in transaction {tx}");
    }
    let id = adapter_by_name(rpc, name)?;
    eprintln!("registered adapter {name:?} in transaction {tx}");
    Ok(id)
}

/// What [`publish`] registers.
pub(crate) struct Publication<'a> {
    pub name: &'a str,
    pub base: u64,
    pub datanets: &'a [(u64, u64)],
    /// The attribution index directory to upload (none: a zero root).
    pub index: Option<&'a Path>,
    pub training_config_hash: B256,
}

/// Checks the name and the base model, uploads the bundle and the index, sends
/// `registerAdapter` and returns the new adapter's id.
pub(crate) fn publish(s: &Session, packed: &bundle::Packed, p: &Publication) -> Result<u64> {
    let signer = s.signer()?;
    let rpc = s.rpc()?;
    check_name_free(&rpc, p.name)?;
    rpc.view(
        modules::MODEL,
        IModel::getBaseModelCall { modelId: p.base }.abi_encode(),
    )
    .with_context(|| format!("base model {}", p.base))?;
    let up = Uploader::new(s)?;
    up.upload_bytes(&packed.bytes, &packed.hash)
        .context("uploading the adapter bundle")?;
    eprintln!(
        "bundle uploaded: {} bytes, adapter hash {}",
        packed.bytes.len(),
        packed.hash
    );
    let index_root = match p.index {
        Some(dir) => publish_index(&up, dir)?,
        None => B256::ZERO,
    };
    let data = IModel::registerAdapterCall {
        baseModelId: p.base,
        name: p.name.to_string(),
        datanetIds: p.datanets.iter().map(|d| d.0).collect(),
        datanetVersions: p.datanets.iter().map(|d| d.1).collect(),
        trainingConfigHash: p.training_config_hash,
        adapterHash: packed.hash,
        attributionIndexRoot: index_root,
    }
    .abi_encode();
    send_registration(&rpc, &signer, "registerAdapter", p.name, data)
}

/// Runs `openledger model publish-adapter`.
pub fn run(s: &Session, a: PublishAdapterArgs) -> Result<()> {
    check_name_free(&s.rpc()?, &a.name)?;
    let packed = bundle::pack_dir(&a.dir, MAX_WEIGHTS_BYTES).map_err(|e| anyhow!("{e}"))?;
    let id = publish(
        s,
        &packed,
        &Publication {
            name: &a.name,
            base: a.base,
            datanets: &a.datanets,
            index: a.index.as_deref(),
            training_config_hash: a.config_hash.unwrap_or(packed.config_hash),
        },
    )?;
    println!("{id}");
    Ok(())
}

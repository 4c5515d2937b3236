//! The artifact store and adapter resolution.
//!
//! Artifacts are files named by their BLAKE3 hash under `<dir>/artifacts/` (`<64 hex>`),
//! uploaded with a signed `POST /v1/artifacts` (streamed to `<dir>/tmp/` while hashing, never
//! held in memory whole; renamed into place only when the signature covers exactly the bytes
//! received, so a refused upload leaves nothing behind) and read back with
//! `GET /v1/artifacts/{hash}`. Uploads share the datanet staging guards: the replay table and
//! the per-account bytes-per-hour quota.
//!
//! `POST /v1/indexes` turns uploaded files into an attribution index: it links them into
//! `<dir>/indexes/<root hex>/` and opens the result with [`openledger_attribution::Index::open`],
//! which checks every file against the hashes its manifest and shard records name, so the
//! directory's root is what its files hold; a root other than the one claimed is refused.
//!
//! [`OpenLora::resolve_adapter`] maps the OpenAI `model` field to an adapter on chain (pending
//! state), checks its base model is the one served, verifies its bundle against the on-chain
//! `adapterHash` and unpacks it once into `<dir>/adapters/<hash hex>/` (the PEFT layout; see
//! [`super::bundle`]). A stored file whose bytes no longer match its hash is removed and the
//! adapter refused until it is uploaded again. Hashes of files are remembered with the file's
//! length, inode and modification time, and trusted only for files last modified well before
//! they were hashed (git's "racily clean" rule), so a file changed later is hashed again.

use super::{bundle, signed_request, OpenLora};
use crate::{datanets::ApiError, sequencer::now};
use alloy_primitives::{Address, Keccak256, B256};
use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path as UrlPath, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use openledger_state::{
    codec,
    modules::model::{adapter, adapter_by_name, base_model},
    StateRead,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{Read, Write},
    path::{Component, Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

/// Limits of the artifact routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// Largest artifact one upload may carry.
    pub max_artifact_bytes: u64,
    /// Most files one index may list.
    pub max_index_files: usize,
    /// Uploads and index checks run at once; more wait (up to the staging `queue_wait_secs`).
    pub max_concurrent: usize,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        ArtifactLimits {
            max_artifact_bytes: 256 * 1024 * 1024,
            max_index_files: 10_000,
            max_concurrent: 4,
        }
    }
}

/// Most adapters [`OpenLora::chain_adapters`] lists.
pub const MAX_LISTED_ADAPTERS: usize = 10_000;
/// Largest `POST /v1/indexes` body.
const MAX_INDEX_REQUEST_BYTES: usize = 4 << 20;
/// Deepest path inside an index.
const MAX_INDEX_PATH_DEPTH: usize = 4;

/// An adapter resolved from the chain, with its verified PEFT directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAdapter {
    pub id: u64,
    pub name: String,
    pub owner: Address,
    /// The on-chain `adapterHash`: BLAKE3 of the bundle.
    pub hash: B256,
    /// `adapter_config.json` + `adapter_model.safetensors`.
    pub peft_dir: PathBuf,
    /// The attribution index the adapter registered, when it was uploaded here.
    pub index_dir: Option<PathBuf>,
    /// (datanet id, version) it was trained on.
    pub datanets: Vec<(u64, u64)>,
}

/// What identifies a file's contents between two looks, short of reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
}

fn stamp(meta: &fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        len: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        inode,
    }
}

/// A file under `tmp/`, deleted when dropped unless kept.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("held until kept")
    }
    fn keep(mut self) -> PathBuf {
        self.0.take().expect("held until kept")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The artifact store, indexes and unpacked adapters under one directory.
pub struct Artifacts {
    dir: PathBuf,
    limits: ArtifactLimits,
    slots: tokio::sync::Semaphore,
    /// path → (stamp when hashed, hash, when hashed).
    hashed: Mutex<HashMap<PathBuf, (Stamp, B256, SystemTime)>>,
    /// Serialises unpacking and index materialisation.
    writing: Mutex<()>,
    next_tmp: AtomicU64,
}

/// `0x`-less lower-case hex of a hash, as files are named.
pub fn hex(h: &B256) -> String {
    h.to_string().trim_start_matches("0x").to_string()
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// BLAKE3 of a file, read in pieces.
pub fn hash_file(path: &Path) -> std::io::Result<B256> {
    let mut f = fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(B256::from(*h.finalize().as_bytes()))
}

/// keccak-256 (what a signed upload's signature covers) and BLAKE3 (the artifact's name) of a
/// file, read once.
pub fn upload_hashes(path: &Path) -> std::io::Result<(B256, B256)> {
    let mut f = fs::File::open(path)?;
    let (mut k, mut h) = (Keccak256::new(), blake3::Hasher::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        k.update(&buf[..n]);
        h.update(&buf[..n]);
    }
    Ok((k.finalize(), B256::from(*h.finalize().as_bytes())))
}

impl Artifacts {
    /// Opens the store under `dir`, creating its directories and clearing `tmp/` (uploads a
    /// crash cut short).
    pub fn open(dir: &Path, limits: ArtifactLimits) -> Result<Artifacts, String> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_err("clearing", &tmp, e))?;
        }
        for sub in ["artifacts", "adapters", "indexes", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_err("creating", &p, e))?;
        }
        Ok(Artifacts {
            dir: dir.to_path_buf(),
            slots: tokio::sync::Semaphore::new(limits.max_concurrent.max(1)),
            limits,
            hashed: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
            next_tmp: AtomicU64::new(0),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &ArtifactLimits {
        &self.limits
    }

    /// Where the artifact with BLAKE3 `hash` is (or would be) stored.
    pub fn path(&self, hash: &B256) -> PathBuf {
        self.dir.join("artifacts").join(hex(hash))
    }

    /// Whether the artifact is stored (not checked).
    pub fn contains(&self, hash: &B256) -> bool {
        self.path(hash).is_file()
    }

    /// Where the adapter with bundle hash `hash` is unpacked.
    pub fn adapter_path(&self, hash: &B256) -> PathBuf {
        self.dir.join("adapters").join(hex(hash))
    }

    /// Where the index with root `root` is materialised.
    pub fn index_path(&self, root: &B256) -> PathBuf {
        self.dir.join("indexes").join(hex(root))
    }

    fn temp(&self, what: &str) -> TempPath {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        TempPath(Some(
            self.dir
                .join("tmp")
                .join(format!("{what}-{}-{n}", std::process::id())),
        ))
    }

    /// BLAKE3 of the file at `path`, hashed again unless it is unchanged since it was last
    /// hashed and was last modified well before that.
    pub fn hash_cached(&self, path: &Path) -> std::io::Result<B256> {
        let now_stamp = stamp(&fs::metadata(path)?);
        if let Some((s, h, at)) = lock(&self.hashed).get(path) {
            let settled = s.modified + Duration::from_secs(2) <= *at;
            if *s == now_stamp && settled {
                return Ok(*h);
            }
        }
        let at = SystemTime::now();
        let h = hash_file(path)?;
        // The stamp from before hashing: a change while hashing makes the next look hash again.
        lock(&self.hashed).insert(path.to_path_buf(), (now_stamp, h, at));
        Ok(h)
    }

    fn forget(&self, path: &Path) {
        lock(&self.hashed).remove(path);
    }

    /// The stored artifact `hash`, checked against its name. A stored file whose bytes hash to
    /// something else is deleted (with its unpacked adapter) and refused.
    pub fn verified(&self, hash: &B256, what: &str) -> Result<PathBuf, String> {
        let p = self.path(hash);
        if !p.is_file() {
            return Err(format!(
                "{what} {hash} is not stored on this node: upload it (openledger model publish-adapter, or POST /v1/artifacts)"
            ));
        }
        let got = self.hash_cached(&p).map_err(|e| io_err("reading", &p, e))?;
        if got != *hash {
            tracing::error!(file = %p.display(), expected = %hash, found = %got, "a stored artifact is corrupt; removing it");
            self.forget(&p);
            let _ = fs::remove_file(&p);
            let _ = fs::remove_dir_all(self.adapter_path(hash));
            return Err(format!(
                "{what} {hash} is corrupt on this node (its bytes hash to {got}); it was removed: upload it again"
            ));
        }
        Ok(p)
    }

    /// Moves the finished upload at `tmp` (BLAKE3 `hash`) into the store; true when it was not
    /// stored yet. A stored copy is replaced (healing one that was damaged).
    fn store(&self, tmp: TempPath, hash: &B256) -> Result<bool, String> {
        let dest = self.path(hash);
        let new = !dest.is_file();
        let from = tmp.keep();
        fs::rename(&from, &dest).map_err(|e| {
            let _ = fs::remove_file(&from);
            io_err("storing", &dest, e)
        })?;
        self.forget(&dest);
        Ok(new)
    }

    /// The unpacked PEFT directory of the bundle `hash`, unpacking it first if needed; the
    /// bundle and the unpacked files are checked against `hash` every time.
    pub fn adapter_dir(&self, hash: &B256) -> Result<PathBuf, String> {
        let bundle_path = self.verified(hash, "the adapter bundle")?;
        let dir = self.adapter_path(hash);
        let _w = lock(&self.writing);
        let weights = dir.join(bundle::WEIGHTS_FILE);
        let config = dir.join(bundle::CONFIG_FILE);
        if weights.is_file() && config.is_file() {
            let (want_config, _) = bundle::read_bundle(&bundle_path)?;
            let ok = self.hash_cached(&weights).ok() == Some(*hash)
                && self.hash_cached(&config).ok()
                    == Some(bundle::blake3_hash(want_config.as_bytes()));
            if ok {
                return Ok(dir);
            }
            tracing::warn!(dir = %dir.display(), "an unpacked adapter differs from its bundle; unpacking it again");
        }
        let tmp = self.temp("adapter");
        bundle::unpack(&bundle_path, tmp.path())
            .map_err(|e| format!("the adapter bundle {hash}: {e}"))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_err("replacing", &dir, e))?;
        }
        self.forget(&weights);
        self.forget(&config);
        fs::rename(tmp.path(), &dir).map_err(|e| io_err("unpacking into", &dir, e))?;
        tmp.keep();
        Ok(dir)
    }

    /// Links the stored files `files` (path in the index → hash) into an index directory,
    /// checks it opens and has root `claimed` (when given). Returns its root and whether it
    /// was new.
    pub fn materialise_index(
        &self,
        files: &[IndexFile],
        claimed: Option<B256>,
    ) -> Result<(B256, bool), ApiError> {
        check_index_files(files, self.limits.max_index_files)?;
        let missing: Vec<String> = files
            .iter()
            .filter(|f| !self.contains(&f.hash))
            .map(|f| format!("{} ({})", f.path, f.hash))
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::Unprocessable(format!(
                "{} of the index's files were not uploaded: {}{}; upload each with POST /v1/artifacts first",
                missing.len(),
                missing[..missing.len().min(5)].join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            )));
        }
        let tmp = self.temp("index");
        for f in files {
            let src = self
                .verified(&f.hash, &format!("index file {}", f.path))
                .map_err(ApiError::Unprocessable)?;
            let dest = tmp.path().join(&f.path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| ApiError::Internal(io_err("creating", parent, e)))?;
            }
            if fs::hard_link(&src, &dest).is_err() {
                fs::copy(&src, &dest)
                    .map_err(|e| ApiError::Internal(io_err("copying to", &dest, e)))?;
            }
        }
        let root = openledger_attribution::Index::open(tmp.path())
            .map_err(|e| {
                ApiError::Unprocessable(format!("the uploaded files do not make an index: {e}"))
            })?
            .root();
        if let Some(c) = claimed {
            if c != root {
                return Err(ApiError::Unprocessable(format!(
                    "the uploaded index has root {root}, not the claimed {c}: upload the index you mean to register"
                )));
            }
        }
        let new = self
            .store_index(tmp.path(), &root)
            .map_err(ApiError::Internal)?;
        if new {
            tmp.keep();
        }
        Ok((root, new))
    }

    /// Moves the index directory `from` (root `root`, checked by the caller) where OpenLoRA
    /// finds it, unless a complete one is there already; true when it was moved.
    pub fn store_index(&self, from: &Path, root: &B256) -> Result<bool, String> {
        let dest = self.index_path(root);
        let _w = lock(&self.writing);
        if dest.join(openledger_attribution::index::MANIFEST).is_file() {
            return Ok(false);
        }
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(|e| io_err("replacing", &dest, e))?;
        }
        fs::rename(from, &dest).map_err(|e| io_err("storing the index in", &dest, e))?;
        Ok(true)
    }

    /// Stores `bytes` as the artifact `hash` (their BLAKE3, checked) unless a sound copy is
    /// stored already; true when it was written.
    pub fn put(&self, hash: &B256, bytes: &[u8]) -> Result<bool, String> {
        let got = bundle::blake3_hash(bytes);
        if got != *hash {
            return Err(format!("the bytes hash to {got}, not {hash}"));
        }
        if self.verified(hash, "the artifact").is_ok() {
            return Ok(false);
        }
        let tmp = self.temp("put");
        fs::write(tmp.path(), bytes).map_err(|e| io_err("writing", tmp.path(), e))?;
        self.store(tmp, hash)
    }
}

/// One file of an index upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    /// Path inside the index directory: `index.json` or `<shard>/<file>`.
    pub path: String,
    /// BLAKE3 of the file, uploaded as an artifact.
    pub hash: B256,
}

/// The body of `POST /v1/indexes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexUpload {
    pub files: Vec<IndexFile>,
    /// The root the uploader expects (refused when the files make another).
    #[serde(default)]
    pub root: Option<B256>,
}

/// Refuses an index listing with no `index.json`, too many files, a path that is not a plain
/// relative path of safe names, or a path listed twice.
fn check_index_files(files: &[IndexFile], max: usize) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if files.len() > max {
        return bad(format!(
            "an index lists at most {max} files, this one {}",
            files.len()
        ));
    }
    let mut seen = HashSet::new();
    for f in files {
        let parts: Vec<Component> = Path::new(&f.path).components().collect();
        let plain = !parts.is_empty()
            && parts.len() <= MAX_INDEX_PATH_DEPTH
            && parts.iter().all(|c| match c {
                Component::Normal(s) => s.to_str().is_some_and(|s| {
                    !s.starts_with('.')
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                }),
                _ => false,
            })
            && !f.path.contains('\\')
            && !f.path.ends_with('/');
        if !plain {
            return bad(format!(
                "index path {:?}: use a relative path of up to {MAX_INDEX_PATH_DEPTH} names of A-Z a-z 0-9 - _ . (not starting with a dot)",
                f.path
            ));
        }
        let norm: PathBuf = parts.iter().collect();
        if !seen.insert(norm) {
            return bad(format!("index path {:?} is listed twice", f.path));
        }
    }
    if !seen.contains(Path::new(openledger_attribution::index::MANIFEST)) {
        return bad(format!(
            "the index lists no {}",
            openledger_attribution::index::MANIFEST
        ));
    }
    Ok(())
}

/// What a `model` value names.
enum Named {
    Id(u64),
    Name(String),
}

/// `adapter-<id>` names the adapter `id` only as written without leading zeros, so an adapter
/// has exactly two names (a padded form names nothing: registered names cannot look like ids).
fn named(model: &str) -> Named {
    match model.strip_prefix("adapter-") {
        Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => match d.parse() {
            Ok(id) if d == format!("{id}") => Named::Id(id),
            _ => Named::Id(0),
        },
        _ => Named::Name(model.to_string()),
    }
}

type ChainAdapter = (
    openledger_types::abi::IModel::Adapter,
    openledger_types::abi::IModel::BaseModel,
);

fn lookup(s: &dyn StateRead, model: &str) -> Result<Option<ChainAdapter>, String> {
    let id = match named(model) {
        Named::Id(id) => id,
        Named::Name(n) => match adapter_by_name(s, &n).map_err(|e| e.to_string())? {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let a = match adapter(s, id) {
        Ok(a) => a,
        Err(openledger_state::ExecError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let b = base_model(s, a.baseModelId).map_err(|e| e.to_string())?;
    Ok(Some((a, b)))
}

impl OpenLora {
    /// Resolves the OpenAI `model` field: an adapter name, `adapter-<id>`, or nothing known
    /// (`Ok(None)`). Reads the chain (pending state); refuses an adapter of another base model
    /// than the one served, or whose bundle is missing or does not hash to its on-chain
    /// `adapterHash`; unpacks the bundle once into `<dir>/adapters/<hash>/`; finds its
    /// attribution index under `<dir>/indexes/<root>/` when it was uploaded. Blocking.
    pub fn resolve_adapter(&self, model: &str) -> Result<Option<ResolvedAdapter>, String> {
        let found = self
            .node
            .chain()
            .with_pending_state(|s| lookup(s, model))
            .map_err(|e| format!("reading adapter {model:?} from the chain: {e}"))?;
        let Some((a, base)) = found else {
            return Ok(None);
        };
        if let Some(served) = self.served_model_hash {
            if base.modelHash != served {
                return Err(format!(
                    "adapter {:?} (id {}) was trained for base model {} {:?} with model hash {}, but this node serves the model with hash {served}; serve that base model to use it",
                    a.name, a.id, base.id, base.name, base.modelHash
                ));
            }
        }
        let peft_dir = self
            .artifacts
            .adapter_dir(&a.adapterHash)
            .map_err(|e| format!("adapter {:?} (id {}): {e}", a.name, a.id))?;
        let index_dir = (!a.attributionIndexRoot.is_zero())
            .then(|| self.artifacts.index_path(&a.attributionIndexRoot))
            .filter(|d| d.join(openledger_attribution::index::MANIFEST).is_file());
        Ok(Some(ResolvedAdapter {
            id: a.id,
            name: a.name,
            owner: a.owner,
            hash: a.adapterHash,
            peft_dir,
            index_dir,
            datanets: a.datanetIds.into_iter().zip(a.datanetVersions).collect(),
        }))
    }

    /// Every adapter registered on chain for the served base model (every base model when none
    /// is served): (id, name), by id, at most [`MAX_LISTED_ADAPTERS`]. Reads the pending state a
    /// thousand adapters at a time, so the chain is never held long.
    pub fn chain_adapters(&self) -> Vec<(u64, String)> {
        const BATCH: u64 = 1000;
        let served = self.served_model_hash;
        let read = |f: &mut dyn FnMut(&dyn StateRead)| self.node.chain().with_pending_state(f);
        let (mut bases, mut count) = (HashSet::new(), 0u64);
        read(&mut |s| {
            let n = codec::get_u64(s, b"m/n").unwrap_or(0);
            bases = (1..=n)
                .filter(|&id| {
                    base_model(s, id).is_ok_and(|b| served.is_none_or(|h| b.modelHash == h))
                })
                .collect();
            count = codec::get_u64(s, b"m/a").unwrap_or(0);
        });
        let mut out = Vec::new();
        let mut next = 1u64;
        while next <= count && out.len() < MAX_LISTED_ADAPTERS {
            let end = next.saturating_add(BATCH - 1).min(count);
            read(&mut |s| {
                for id in next..=end {
                    if let Ok(a) = adapter(s, id) {
                        if bases.contains(&a.baseModelId) && out.len() < MAX_LISTED_ADAPTERS {
                            out.push((a.id, a.name));
                        }
                    }
                }
            });
            next = end + 1;
        }
        out
    }
}

/// The artifact routes.
pub(super) fn routes() -> Router<Arc<OpenLora>> {
    Router::new()
        .route(
            "/v1/artifacts",
            // The handler holds the upload to max_artifact_bytes as it streams in.
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/artifacts/{hash}", get(download))
        .route("/v1/indexes", post(register_index))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn slot(o: &OpenLora) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    let wait = Duration::from_secs(o.node.config.staging.queue_wait_secs);
    match tokio::time::timeout(wait, o.artifacts.slots.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError::Busy(
            format!(
                "the node is already receiving {} artifact uploads or index checks; retry shortly",
                o.artifacts.limits.max_concurrent
            ),
            5,
        )),
    }
}

/// What the blocking writer of an upload came to: bytes, keccak-256 (what the signature
/// covers) and BLAKE3 (the name).
struct Written {
    file: TempPath,
    bytes: u64,
    keccak: B256,
    blake3: B256,
}

fn writer(file: TempPath, mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> Result<Written, String> {
    let mut f = fs::File::create(file.path()).map_err(|e| io_err("creating", file.path(), e))?;
    let (mut k, mut b, mut n) = (Keccak256::new(), blake3::Hasher::new(), 0u64);
    while let Some(chunk) = rx.blocking_recv() {
        k.update(&chunk);
        b.update(&chunk);
        n += chunk.len() as u64;
        f.write_all(&chunk)
            .map_err(|e| io_err("writing", file.path(), e))?;
    }
    f.sync_all()
        .map_err(|e| io_err("writing", file.path(), e))?;
    Ok(Written {
        file,
        bytes: n,
        keccak: k.finalize(),
        blake3: B256::from(*b.finalize().as_bytes()),
    })
}

async fn upload(
    State(o): State<Arc<OpenLora>>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (parts, body) = request.into_parts();
    let node = o.node.clone();
    let signed = signed_request(&parts, &node, "uploading an artifact")?;
    let who = signed.address;
    let cfg = &node.config.staging;
    let guards = node.datanets.guards(cfg);
    let t = now();
    let max = o.artifacts.limits.max_artifact_bytes;
    let too_large = || {
        ApiError::TooLarge(format!(
            "the artifact is over the {max}-byte limit per artifact; an adapter or index file must be smaller"
        ))
    };
    let left = guards.rate.bytes_left(who, t);
    if let Some(n) = content_length(&parts.headers) {
        if n > max {
            return Err(too_large());
        }
        if n > left {
            return Err(guards.rate.over_hourly(who, t));
        }
    }
    if left == 0 {
        return Err(guards.rate.over_hourly(who, t));
    }
    let allowance = max.min(left);
    let _slot = slot(&o).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let file = o.artifacts.temp("upload");
    let writing = tokio::task::spawn_blocking(move || writer(file, rx));
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::BadRequest(format!("the upload was cut short: {e}")))?;
            n = n.saturating_add(chunk.len() as u64);
            if n > allowance {
                return Err(if n > max {
                    too_large()
                } else {
                    guards.rate.over_hourly(who, t)
                });
            }
            if tx.send(chunk).await.is_err() {
                // The writer stopped (its error comes below).
                break;
            }
        }
        Ok(())
    };
    let read = tokio::time::timeout(Duration::from_secs(cfg.max_upload_secs), read).await;
    drop(tx);
    let written = writing
        .await
        .map_err(|e| ApiError::Internal(format!("the upload writer failed: {e}")));
    guards.rate.charge_bytes(who, t, n);
    // Any refusal drops the temporary file with `written`.
    match read {
        Err(_) => {
            return Err(ApiError::TimedOut(format!(
                "the upload did not arrive within {} s",
                cfg.max_upload_secs
            )))
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    let w = written?.map_err(ApiError::Internal)?;
    if w.keccak != signed.body_hash {
        return Err(ApiError::Unauthorized(
            "the upload does not match the body hash its signature covers (altered in transit, or signed over other bytes)".into(),
        ));
    }
    let (hash, bytes) = (w.blake3, w.bytes);
    let arts = o.clone();
    let new = tokio::task::spawn_blocking(move || arts.artifacts.store(w.file, &hash))
        .await
        .map_err(|e| ApiError::Internal(format!("storing the upload failed: {e}")))?
        .map_err(ApiError::Internal)?;
    tracing::info!(%hash, bytes, by = %who, new, "artifact stored");
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "hash": hash, "bytes": bytes }))))
}

fn parse_hash(s: &str) -> Result<B256, ApiError> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.len() != 64 {
        return Err(ApiError::BadRequest(format!(
            "{s:?} is not a 32-byte hash (64 hex digits)"
        )));
    }
    h.parse()
        .map_err(|_| ApiError::BadRequest(format!("{s:?} is not a 32-byte hash")))
}

/// Bytes read per piece of a download.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

async fn download(
    State(o): State<Arc<OpenLora>>,
    UrlPath(hash): UrlPath<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    // Checked whole before the first byte goes out (a corrupt copy is removed and refused);
    // the hash kept by file stamp makes this a lookup after the first time.
    let path = {
        let o = o.clone();
        tokio::task::spawn_blocking(move || o.artifacts.verified(&hash, "artifact"))
            .await
            .map_err(|_| ApiError::NotFound(format!("artifact {hash}: the check failed")))?
            .map_err(ApiError::NotFound)?
    };
    let file = fs::File::open(&path)
        .map_err(|_| ApiError::NotFound(format!("no artifact {hash} on this node")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut h = blake3::Hasher::new();
        loop {
            let mut buf = vec![0u8; DOWNLOAD_CHUNK];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    h.update(&buf);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        // Served bytes that are not what the name promises: cut the transfer short.
        let got = B256::from(*h.finalize().as_bytes());
        if got != hash {
            tracing::error!(%hash, found = %got, "a stored artifact is corrupt; the download was cut short");
            let _ = tx.blocking_send(Err(std::io::Error::other("the stored artifact is corrupt")));
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

async fn register_index(
    State(o): State<Arc<OpenLora>>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (parts, body) = request.into_parts();
    let signed = signed_request(&parts, &o.node, "registering an index")?;
    let bytes = axum::body::to_bytes(body, MAX_INDEX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "an index listing is at most {MAX_INDEX_REQUEST_BYTES} bytes"
            ))
        })?;
    if openledger_types::request_auth::body_hash(&bytes) != signed.body_hash {
        return Err(ApiError::Unauthorized(
            "the request does not match the body hash its signature covers".into(),
        ));
    }
    let up: IndexUpload = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"files\": [{{\"path\", \"hash\"}}], \"root\"}}: {e}"
        ))
    })?;
    let _slot = slot(&o).await?;
    let arts = o.clone();
    let (root, new) =
        tokio::task::spawn_blocking(move || arts.artifacts.materialise_index(&up.files, up.root))
            .await
            .map_err(|e| ApiError::Internal(format!("checking the index failed: {e}")))??;
    tracing::info!(%root, by = %signed.address, new, "attribution index stored");
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "root": root }))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> IndexFile {
        IndexFile {
            path: path.into(),
            hash: B256::ZERO,
        }
    }

    #[test]
    fn index_paths_are_plain_relative_names() {
        let ok = [f("index.json"), f("shard-0000/sa.bin")];
        check_index_files(&ok, 10).unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            ".hidden",
            "a//",
            "a\\b",
            "a/b/c/d/e",
            "",
        ] {
            let list = [f("index.json"), f(bad)];
            assert!(check_index_files(&list, 10).is_err(), "{bad:?}");
        }
        assert!(
            check_index_files(&[f("shard/x")], 10).is_err(),
            "no manifest"
        );
        assert!(check_index_files(&[f("index.json"), f("./index.json")], 10).is_err());
        assert!(check_index_files(&ok, 1).is_err(), "too many");
    }

    #[test]
    fn model_names_and_ids_are_told_apart() {
        assert!(matches!(named("adapter-12"), Named::Id(12)));
        assert!(matches!(named("adapter-012"), Named::Id(0)));
        assert!(matches!(named("adapter-"), Named::Name(_)));
        assert!(matches!(named("adapter-x1"), Named::Name(_)));
        assert!(matches!(named("bees"), Named::Name(_)));
    }
}

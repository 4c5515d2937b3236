//! The adapter registry: adapters by name, read from local PEFT directories, kept in a RAM cache with
//! a byte budget (least recently used evicted first, so a rank-64 adapter weighs eight rank-8 ones).
//! Loads run on tokio's blocking pool, never on the engine thread, so a cold adapter never stalls
//! requests for the others. Every adapter is checked against the base model before it is served.

use crate::error::ServeError;
use crate::metrics::{Histogram, ADAPTER_LOAD_BUCKETS};
use openledger_model::{peft, Device, Llama, LoraAdapter};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Longest adapter name accepted.
pub const MAX_NAME_LEN: usize = 128;

struct Cached {
    adapter: Arc<LoraAdapter>,
    bytes: usize,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    /// Every registered adapter and its directory.
    known: BTreeMap<String, PathBuf>,
    /// Keys of on-chain adapters (`adapter-<id>`): listed from the chain, not by [`AdapterRegistry::names`].
    chain: std::collections::HashSet<String>,
    /// Adapters never evicted (their owners stake at least the governed amount).
    pinned: std::collections::HashSet<String>,
    cache: HashMap<String, Cached>,
    used_bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
    loads: u64,
    evictions: u64,
}

/// Cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Adapters read from disk and checked (registrations and cache misses).
    pub loads: u64,
    pub evictions: u64,
    pub used_bytes: usize,
    pub cached: usize,
}

/// Adapters by name with a RAM cache bounded in bytes.
pub struct AdapterRegistry {
    model: Arc<Llama>,
    device: Device,
    budget_bytes: usize,
    inner: Mutex<Inner>,
    load_seconds: Histogram,
}

/// Bytes an adapter's weights take in memory: its tensors, plus the copy packed for the CPU
/// kernels (an adapter read by the registry keeps only that copy).
pub fn adapter_bytes(a: &LoraAdapter) -> usize {
    a.resident_bytes()
}

/// Whether `name` has the form `adapter-<digits>` (the key of an on-chain adapter).
pub fn is_chain_key(name: &str) -> bool {
    name.strip_prefix("adapter-")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn check_name(name: &str) -> Result<(), ServeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServeError::bad(
            "lora_name",
            format!("an adapter name is 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ . : / @"),
        ))
    }
}

impl AdapterRegistry {
    /// A registry for adapters of `model`, caching up to `budget_bytes` of adapter weights.
    pub fn new(model: Arc<Llama>, device: Device, budget_bytes: usize) -> Self {
        Self {
            model,
            device,
            budget_bytes,
            inner: Mutex::new(Inner::default()),
            load_seconds: Histogram::new(ADAPTER_LOAD_BUCKETS),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain bookkeeping behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the adapters registered locally (not from the chain), sorted.
    pub fn names(&self) -> Vec<String> {
        let g = self.lock();
        g.known
            .keys()
            .filter(|k| !g.chain.contains(*k))
            .cloned()
            .collect()
    }

    /// Whether `name` is an adapter the operator registered locally (not one from the chain).
    pub fn contains_local(&self, name: &str) -> bool {
        let g = self.lock();
        g.known.contains_key(name) && !g.chain.contains(name)
    }

    /// Registers an on-chain adapter's verified PEFT directory under `key`; its weights are read
    /// (and checked against the base model) on first use, off the serving path.
    /// A `pinned` adapter is never evicted once cached (while pinned adapters fit the budget).
    pub fn register_chain(&self, key: &str, dir: &Path, pinned: bool) {
        let mut g = self.lock();
        if !g.known.contains_key(key) {
            g.known.insert(key.to_string(), dir.to_path_buf());
            g.chain.insert(key.to_string());
            if pinned {
                g.pinned.insert(key.to_string());
            }
        }
    }

    /// Whether `name` is pinned in RAM.
    pub fn is_pinned(&self, name: &str) -> bool {
        self.lock().pinned.contains(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().known.contains_key(name)
    }

    pub fn cache_stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.hits,
            misses: g.misses,
            loads: g.loads,
            evictions: g.evictions,
            used_bytes: g.used_bytes,
            cached: g.cache.len(),
        }
    }

    /// Reads and checks the adapter in `dir` (blocking), registers it as `name` and caches it.
    /// Refuses a name already taken, a directory without a PEFT adapter, or an adapter whose shapes
    /// do not fit the base model.
    pub fn load_blocking(&self, name: &str, dir: &Path) -> Result<Arc<LoraAdapter>, ServeError> {
        check_name(name)?;
        if is_chain_key(name) {
            return Err(ServeError::bad(
                "lora_name",
                "names of the form adapter-<number> are reserved for adapters registered on chain",
            ));
        }
        if self.contains(name) {
            return Err(ServeError::Adapter {
                name: name.into(),
                message: "an adapter with this name is already loaded; unload it first".into(),
            });
        }
        let adapter = self.read(name, dir)?;
        let mut g = self.lock();
        if g.known.contains_key(name) {
            return Err(ServeError::Adapter {
                name: name.into(),
                message: "an adapter with this name is already loaded; unload it first".into(),
            });
        }
        g.known.insert(name.into(), dir.to_path_buf());
        self.insert_cached(&mut g, name, adapter.clone());
        tracing::info!(adapter = name, dir = %dir.display(), "adapter registered");
        Ok(adapter)
    }

    /// [`Self::load_blocking`] on the blocking pool.
    pub async fn load(
        self: &Arc<Self>,
        name: String,
        dir: PathBuf,
    ) -> Result<Arc<LoraAdapter>, ServeError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.load_blocking(&name, &dir))
            .await
            .map_err(|_| ServeError::EngineStopped)?
    }

    /// Forgets an adapter (requests already running keep their copy to the end).
    pub fn unload(&self, name: &str) -> Result<(), ServeError> {
        let mut g = self.lock();
        g.chain.remove(name);
        g.pinned.remove(name);
        if g.known.remove(name).is_none() {
            return Err(ServeError::UnknownModel(name.into()));
        }
        if let Some(c) = g.cache.remove(name) {
            g.used_bytes -= c.bytes;
        }
        tracing::info!(adapter = name, "adapter unloaded");
        Ok(())
    }

    /// The adapter's weights: from the cache, or read from disk on the blocking pool.
    /// `Ok(None)` when no adapter has that name.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Option<Arc<LoraAdapter>>, ServeError> {
        let dir = {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            if let Some(c) = g.cache.get_mut(name) {
                c.last_used = tick;
                let a = c.adapter.clone();
                g.hits += 1;
                return Ok(Some(a));
            }
            match g.known.get(name) {
                Some(d) => {
                    let d = d.clone();
                    g.misses += 1;
                    d
                }
                None => return Ok(None),
            }
        };
        let me = self.clone();
        let owned = name.to_string();
        let adapter = tokio::task::spawn_blocking(move || me.read(&owned, &dir))
            .await
            .map_err(|_| ServeError::EngineStopped)??;
        let mut g = self.lock();
        // Cache it unless it was unloaded (or replaced) while we read.
        if g.known.contains_key(name) && !g.cache.contains_key(name) {
            self.insert_cached(&mut g, name, adapter.clone());
        }
        Ok(Some(adapter))
    }

    /// Loads the named, already registered adapters into the cache ahead of traffic.
    pub async fn preload(self: &Arc<Self>, names: &[String]) -> Result<(), ServeError> {
        for n in names {
            if self.get(n).await?.is_none() {
                return Err(ServeError::UnknownModel(n.clone()));
            }
        }
        Ok(())
    }

    /// How long successful adapter reads took.
    pub fn load_seconds(&self) -> &Histogram {
        &self.load_seconds
    }

    fn read(&self, name: &str, dir: &Path) -> Result<Arc<LoraAdapter>, ServeError> {
        let started = Instant::now();
        let err = |message: String| ServeError::Adapter {
            name: name.into(),
            message,
        };
        // On the CPU only the kernels' packed copy is kept (a third of the bytes to write).
        let adapter = if self.device.is_cpu() {
            peft::load_packed(dir)
        } else {
            peft::load(dir, &self.device)
        }
        .map_err(|e| err(format!("reading {}: {e}", dir.display())))?;
        self.model.check_adapter(&adapter).map_err(|e| {
            err(format!(
                "{} does not fit the base model: {e}",
                dir.display()
            ))
        })?;
        let secs = started.elapsed().as_secs_f64();
        self.load_seconds.observe(secs);
        self.lock().loads += 1;
        tracing::debug!(adapter = name, seconds = secs, "adapter read from disk");
        Ok(Arc::new(adapter))
    }

    fn insert_cached(&self, g: &mut Inner, name: &str, adapter: Arc<LoraAdapter>) {
        let bytes = adapter_bytes(&adapter);
        if bytes > self.budget_bytes {
            return; // served from disk each time; it would evict everything else
        }
        while g.used_bytes + bytes > self.budget_bytes {
            // Least recently used first; pinned adapters stay.
            let Some(victim) = g
                .cache
                .iter()
                .filter(|(n, _)| !g.pinned.contains(*n))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(n, _)| n.clone())
            else {
                // Only pinned adapters left: this one is read from disk each time.
                return;
            };
            if let Some(c) = g.cache.remove(&victim) {
                g.used_bytes -= c.bytes;
                g.evictions += 1;
                tracing::debug!(adapter = victim, bytes = c.bytes, "adapter evicted");
            }
        }
        g.tick += 1;
        let last_used = g.tick;
        g.used_bytes += bytes;
        g.cache.insert(
            name.into(),
            Cached {
                adapter,
                bytes,
                last_used,
            },
        );
    }
}

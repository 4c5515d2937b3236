//! dLoRA: when one adapter dominates the traffic, the engine serves from a copy of the base model
//! with that adapter merged into its weights, and goes back to the plain base once the traffic
//! mixes again (the dynamic merge/unmerge of dLoRA, Wu et al., OSDI '24).
//!
//! **Policy.** A window over the last `merge_window` steps (steps with no rows do not count)
//! holds how many rows (sequences) each adapter, and the base, had in each step. When the window
//! is full and one adapter has at least `merge_share` of its rows, that adapter is merged; when its
//! share falls below `unmerge_share` it is unmerged (between the two thresholds nothing changes).
//!
//! **Every row computes what it asked for, in both modes.** With `W' = W + s·B·A` merged:
//! - rows of the merged adapter run with no adapter: `W'x`;
//! - base rows run with the adapter negated ([`LoraAdapter::negated`]): `W'x − s·BAx = Wx`;
//! - rows of another adapter run with it stacked on the negation ([`LoraAdapter::stacked`]):
//!   `W'x + s₂·B₂A₂x − s·BAx`.
//!
//! So no request waits for an unmerge: admission stays the engine's round robin, and a cold
//! adapter's request is served under the same fairness bound as when nothing is merged.
//!
//! **KV caches stay valid.** Each projection gives the same values in both modes up to float
//! rounding (merged, `W + s·BA` is rounded once; unmerged, `s·BAx` is added to `Wx`): about 1e-6
//! relative in f32. The keys and values a sequence cached before a switch are therefore those it
//! would have cached after it, within that tolerance, and sequences keep their caches across
//! switches.
//!
//! **No stall.** The merged copy is built on a helper thread from a clone of the base (tensors are
//! shared; only the projections the adapter touches are new) while the engine keeps stepping on
//! the base, and is swapped in between two steps once ready, if the adapter still dominates.
//! Unmerging swaps the base back: exact and immediate, since the base's weights are never written.
//! The price: while merged, memory holds a second copy of the projections the adapter touches.
//!
//! **f32 bases only.** A quantized projection cannot take a merge, and an f16 one would round it
//! ([`Llama::merge_refusal`]); then the policy never merges, and says why once in the log and on
//! `/metrics` (`openledger_adapter_merge_enabled{reason=…} 0`).

use crate::metrics::{Histogram, ADAPTER_LOAD_BUCKETS};
use openledger_model::{Llama, LoraAdapter, ModelError, Sequence};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When to merge and unmerge (`[serve] dlora`).
#[derive(Debug, Clone, PartialEq)]
pub struct DloraConfig {
    /// Whether the policy may merge at all (it only ever does on an f32 base).
    pub enabled: bool,
    /// Steps the window covers.
    pub merge_window: usize,
    /// Share of the window's rows one adapter needs before it is merged.
    pub merge_share: f64,
    /// Share below which the merged adapter is unmerged (below `merge_share`: hysteresis).
    pub unmerge_share: f64,
}

impl Default for DloraConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            merge_window: 32,
            merge_share: 0.9,
            unmerge_share: 0.6,
        }
    }
}

/// What the policy did, for `/metrics` and tests; shared by the engine thread and its handles.
pub struct DloraStats {
    /// Adapters merged (swaps to a merged copy).
    pub merges: AtomicU64,
    /// Swaps back to the base.
    pub unmerges: AtomicU64,
    /// Forward passes run on a merged copy.
    pub merged_steps: AtomicU64,
    /// Time to build a merged copy (on the helper thread), in seconds.
    pub merge_seconds: Histogram,
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    merged: Option<(String, Arc<Llama>)>,
    off: Option<String>,
}

impl Default for DloraStats {
    fn default() -> Self {
        Self {
            merges: AtomicU64::new(0),
            unmerges: AtomicU64::new(0),
            merged_steps: AtomicU64::new(0),
            merge_seconds: Histogram::new(ADAPTER_LOAD_BUCKETS),
            shared: Mutex::new(Shared::default()),
        }
    }
}

impl DloraStats {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The adapter merged now, if any.
    pub fn merged(&self) -> Option<String> {
        self.shared().merged.as_ref().map(|(n, _)| n.clone())
    }

    /// The merged copy the engine runs now, if any (otherwise it runs the base it was started with).
    pub fn merged_model(&self) -> Option<Arc<Llama>> {
        self.shared().merged.as_ref().map(|(_, m)| m.clone())
    }

    /// Why the policy never merges on this engine (`None` while it may).
    pub fn off_reason(&self) -> Option<String> {
        self.shared().off.clone()
    }
}

/// One row of the batch about to run, as the engine sees it.
pub struct Row<'a> {
    pub seq: &'a mut Sequence,
    /// Its adapter's name (`None`: the base model).
    pub name: Option<&'a str>,
    /// The adapter it asked for.
    pub adapter: Option<&'a Arc<LoraAdapter>>,
}

/// The base with `adapter` merged into a copy of the projections it touches (the base's tensors
/// are shared, not copied, and never written).
pub fn merged_copy(base: &Llama, adapter: &LoraAdapter) -> Result<Llama, ModelError> {
    if let Some(why) = base.merge_refusal() {
        return Err(ModelError::Adapter(why));
    }
    let mut m = base.clone();
    m.merge(adapter)?;
    Ok(m)
}

/// Frees a merged copy on a helper thread: returning hundreds of MB to the system takes tens of
/// milliseconds (75 ms for SmolLM2 in f32), a step's worth, which the engine thread does not wait for.
/// (Should no thread start, the model is dropped here with the closure.)
fn drop_elsewhere(model: Arc<Llama>) {
    let _ = std::thread::Builder::new()
        .name("openlora-dlora-free".into())
        .spawn(move || drop(model));
}

/// The policy and the mode switches; owned by the engine thread.
pub struct Dlora {
    config: DloraConfig,
    stats: Arc<DloraStats>,
    base: Arc<Llama>,
    /// False when disabled or the base cannot take a merge.
    active: bool,
    window: Window,
    merged: Option<Merged>,
    building: Option<Building>,
    /// A merged copy unmerged at the last call, freed at the next one: by then the engine holds
    /// no other reference to it, so the helper thread's drop is the last.
    retired: Option<Arc<Llama>>,
}

struct Merged {
    name: String,
    adapter: Arc<LoraAdapter>,
    model: Arc<Llama>,
    negated: Arc<LoraAdapter>,
    /// Other adapters of the last step stacked on the negation (keyed by address).
    stacked: Vec<(Arc<LoraAdapter>, Arc<LoraAdapter>)>,
}

type Built = Result<(Llama, LoraAdapter, Duration), String>;

struct Building {
    name: String,
    adapter: Arc<LoraAdapter>,
    done: mpsc::Receiver<Built>,
}

impl Dlora {
    /// The policy over `base`; says once (log and `stats`) why it will never merge, if so.
    pub fn new(base: Arc<Llama>, config: DloraConfig, stats: Arc<DloraStats>) -> Self {
        let off = if !config.enabled {
            Some("dLoRA is off in the configuration ([serve] dlora = false)".to_string())
        } else {
            base.merge_refusal()
        };
        if let Some(why) = &off {
            if config.enabled {
                tracing::info!(reason = %why, "dLoRA: adapters will not be merged");
            }
            stats.shared().off = Some(why.clone());
        }
        Self {
            window: Window::new(config.merge_window.max(1)),
            active: off.is_none(),
            config,
            stats,
            base,
            merged: None,
            building: None,
            retired: None,
        }
    }

    /// The weights the next step runs on.
    pub fn model(&self) -> &Arc<Llama> {
        self.merged.as_ref().map_or(&self.base, |m| &m.model)
    }

    /// Between two steps: counts the rows about to run, may swap a merged copy in (or the base
    /// back), and sets each row's adapter for the weights the step will use; returns them. The
    /// caller drops the weights it ran before in favour of these (a merged copy is freed later).
    pub fn before_step<'a>(&mut self, rows: impl IntoIterator<Item = Row<'a>>) -> &Arc<Llama> {
        if let Some(m) = self.retired.take() {
            drop_elsewhere(m);
        }
        if !self.active {
            return &self.base;
        }
        let mut rows: Vec<Row<'a>> = rows.into_iter().filter(|r| !r.seq.is_done()).collect();
        if rows.is_empty() {
            return self.model();
        }
        self.window.push(rows.iter().map(|r| r.name));
        self.poll_build();
        self.decide(&rows);
        if let Err(e) = self.assign(&mut rows) {
            self.turn_off(format!(
                "an adapter could not run beside the merged one: {e}"
            ));
            self.unmerge("stacking failed");
            let _ = self.assign(&mut rows);
        }
        if self.merged.is_some() {
            self.stats.merged_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.model()
    }

    fn decide(&mut self, rows: &[Row]) {
        if let Some(m) = &self.merged {
            if self.window.share(Some(&m.name)) < self.config.unmerge_share {
                self.unmerge("its share of the traffic fell below unmerge_share");
            }
            return;
        }
        if self.building.is_some() || !self.window.full() {
            return;
        }
        let Some((name, share)) = self.window.top_adapter() else {
            return;
        };
        if share < self.config.merge_share {
            return;
        }
        let found = rows
            .iter()
            .find(|r| r.name == Some(name.as_str()))
            .and_then(|r| r.adapter.cloned());
        if let Some(adapter) = found {
            self.start_build(name, adapter);
        }
    }

    fn start_build(&mut self, name: String, adapter: Arc<LoraAdapter>) {
        let (tx, done) = mpsc::channel();
        let (base, a) = (self.base.clone(), adapter.clone());
        let spawned = std::thread::Builder::new()
            .name("openlora-dlora-merge".into())
            .spawn(move || {
                let t = Instant::now();
                let built = merged_copy(&base, &a)
                    .and_then(|m| Ok((m, a.negated()?, t.elapsed())))
                    .map_err(|e| e.to_string());
                let _ = tx.send(built);
            });
        match spawned {
            Ok(_) => {
                tracing::debug!(adapter = %name, "dLoRA: building a merged copy");
                self.building = Some(Building {
                    name,
                    adapter,
                    done,
                })
            }
            Err(e) => self.turn_off(format!("cannot start the merge thread: {e}")),
        }
    }

    fn poll_build(&mut self) {
        let Some(b) = &self.building else {
            return;
        };
        let built = match b.done.try_recv() {
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                Err("the merge thread ended without a result".into())
            }
            Ok(built) => built,
        };
        let Some(b) = self.building.take() else {
            return;
        };
        match built {
            Err(e) => self.turn_off(format!("merging adapter {:?} failed: {e}", b.name)),
            // The traffic may have moved on while the copy was built: then it is dropped.
            Ok((model, negated, took)) => {
                if self.window.share(Some(&b.name)) < self.config.unmerge_share {
                    drop_elsewhere(Arc::new(model));
                } else {
                    let model = Arc::new(model);
                    self.stats.merges.fetch_add(1, Ordering::Relaxed);
                    self.stats.merge_seconds.observe(took.as_secs_f64());
                    self.stats.shared().merged = Some((b.name.clone(), model.clone()));
                    tracing::info!(
                        adapter = %b.name,
                        build_seconds = took.as_secs_f64(),
                        "dLoRA: adapter merged into the base weights"
                    );
                    self.merged = Some(Merged {
                        name: b.name,
                        adapter: b.adapter,
                        model,
                        negated: Arc::new(negated),
                        stacked: Vec::new(),
                    });
                }
            }
        }
    }

    fn unmerge(&mut self, why: &str) {
        if let Some(m) = self.merged.take() {
            self.stats.unmerges.fetch_add(1, Ordering::Relaxed);
            self.stats.shared().merged = None;
            tracing::info!(adapter = %m.name, reason = why, "dLoRA: back to the base weights");
            self.retired = Some(m.model);
        }
    }

    fn turn_off(&mut self, why: String) {
        tracing::warn!(reason = %why, "dLoRA: adapters will not be merged any more");
        self.active = false;
        self.stats.shared().off = Some(why);
    }

    /// Sets every row's adapter for the current mode (see the module doc).
    fn assign(&mut self, rows: &mut [Row]) -> Result<(), ModelError> {
        let Some(m) = &mut self.merged else {
            for r in rows.iter_mut() {
                r.seq.set_adapter(r.adapter.cloned());
            }
            return Ok(());
        };
        let mut kept: Vec<(Arc<LoraAdapter>, Arc<LoraAdapter>)> = Vec::new();
        for r in rows.iter_mut() {
            let a = match r.adapter {
                None => Some(m.negated.clone()),
                Some(a) if Arc::ptr_eq(a, &m.adapter) => None,
                Some(a) => {
                    let find = |v: &[(Arc<LoraAdapter>, Arc<LoraAdapter>)]| {
                        v.iter()
                            .find(|(own, _)| Arc::ptr_eq(own, a))
                            .map(|(_, s)| s.clone())
                    };
                    let s = match find(&kept).or_else(|| find(&m.stacked)) {
                        Some(s) => s,
                        None => Arc::new(a.stacked(&m.negated)?),
                    };
                    if find(&kept).is_none() {
                        kept.push((a.clone(), s.clone()));
                    }
                    Some(s)
                }
            };
            r.seq.set_adapter(a);
        }
        m.stacked = kept;
        Ok(())
    }
}

/// Rows per adapter (`None`: the base) over the last `cap` steps.
struct Window {
    cap: usize,
    steps: VecDeque<Vec<(Option<String>, u64)>>,
    totals: Vec<(Option<String>, u64)>,
    rows: u64,
}

impl Window {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            steps: VecDeque::with_capacity(cap + 1),
            totals: Vec::new(),
            rows: 0,
        }
    }

    fn push<'a>(&mut self, names: impl Iterator<Item = Option<&'a str>>) {
        let mut step: Vec<(Option<String>, u64)> = Vec::new();
        for n in names {
            match step.iter_mut().find(|(k, _)| k.as_deref() == n) {
                Some((_, c)) => *c += 1,
                None => step.push((n.map(str::to_string), 1)),
            }
        }
        for (k, c) in &step {
            match self.totals.iter_mut().find(|(t, _)| t == k) {
                Some((_, t)) => *t += c,
                None => self.totals.push((k.clone(), *c)),
            }
            self.rows += c;
        }
        self.steps.push_back(step);
        if self.steps.len() > self.cap {
            for (k, c) in self.steps.pop_front().unwrap_or_default() {
                if let Some((_, t)) = self.totals.iter_mut().find(|(t, _)| *t == k) {
                    *t -= c;
                }
                self.rows -= c;
            }
            self.totals.retain(|(_, t)| *t > 0);
        }
    }

    fn full(&self) -> bool {
        self.steps.len() >= self.cap
    }

    fn share(&self, name: Option<&str>) -> f64 {
        let n = self
            .totals
            .iter()
            .find(|(k, _)| k.as_deref() == name)
            .map_or(0, |(_, c)| *c);
        n as f64 / self.rows.max(1) as f64
    }

    /// The adapter with the most rows, and its share.
    fn top_adapter(&self) -> Option<(String, f64)> {
        self.totals
            .iter()
            .filter_map(|(k, c)| Some((k.as_ref()?, *c)))
            .max_by_key(|(_, c)| *c)
            .map(|(k, c)| (k.clone(), c as f64 / self.rows.max(1) as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_shares_slide_with_the_steps() {
        let mut w = Window::new(2);
        w.push([Some("a"), Some("a"), None].into_iter());
        assert!(!w.full());
        w.push([Some("a"), Some("b")].into_iter());
        assert!(w.full());
        assert_eq!(w.share(Some("a")), 3.0 / 5.0);
        assert_eq!(w.top_adapter(), Some(("a".to_string(), 0.6)));
        // The first step leaves the window.
        w.push([Some("b"), Some("b"), None].into_iter());
        assert_eq!(w.share(Some("a")), 1.0 / 5.0);
        assert_eq!(w.share(Some("b")), 3.0 / 5.0);
        assert_eq!(w.share(None), 1.0 / 5.0);
        assert_eq!(w.top_adapter(), Some(("b".to_string(), 0.6)));
    }
}

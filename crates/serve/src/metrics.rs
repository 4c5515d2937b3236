//! Prometheus metrics for `GET /metrics`: a small fixed-bucket histogram updated with atomics (no
//! lock, no allocation per observation), the engine's per-request latency histograms and finish
//! counters, and the text exposition (format 0.0.4) of everything under vLLM's metric names where
//! vLLM has one (`vllm:`), and our own (`openlora:`) for the adapter cache.

use crate::Serve;
use openledger_model::generate::FinishReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// vLLM's buckets for time to first token (seconds).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets for inter-token latency (seconds).
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets for whole-request latencies: end to end, queue (seconds).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// Buckets for reading and checking an adapter from disk (seconds).
pub const ADAPTER_LOAD_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram with fixed upper bounds; each observation is two relaxed atomic adds and a
/// compare-and-swap on the sum.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// A consistent-enough copy of a histogram: `cumulative` ends with the `+Inf` bucket, which is the
/// count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    /// `bounds` must be increasing (every table above is).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one value (NaN counts in `+Inf` and leaves the sum alone).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            self.counts[self.bounds.len()].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + v).to_bits())
            });
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What the engine measures per sequence (a request with `n` choices counts `n` sequences).
pub struct RequestMetrics {
    /// Submission to admission into the running batch.
    pub queue_time: Histogram,
    /// Submission to the first generated token.
    pub time_to_first_token: Histogram,
    /// Between consecutive generated tokens of one sequence.
    pub inter_token_latency: Histogram,
    /// Submission to the end of the sequence.
    pub e2e_latency: Histogram,
    /// Sequences ended by each reason: stop, length, abort (client gone), error (runtime failure).
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_abort: AtomicU64,
    pub finished_error: AtomicU64,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            queue_time: Histogram::new(REQUEST_BUCKETS),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_latency: Histogram::new(REQUEST_BUCKETS),
            finished_stop: AtomicU64::new(0),
            finished_length: AtomicU64::new(0),
            finished_abort: AtomicU64::new(0),
            finished_error: AtomicU64::new(0),
        }
    }
}

impl RequestMetrics {
    /// Counts one sequence that ended for `reason`.
    pub fn finished(&self, reason: FinishReason) {
        match reason {
            FinishReason::Stop => &self.finished_stop,
            FinishReason::Length => &self.finished_length,
            FinishReason::Cancelled => &self.finished_abort,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes exposition lines; label values are escaped as the format requires.
struct Exposition {
    out: String,
    model: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}{{model_name=\"{}\"", self.model);
        for (k, v) in extra {
            let _ = write!(self.out, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    fn scalar(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        let snap = h.snapshot();
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (le, n) in snap.bounds.iter().zip(&snap.cumulative) {
            self.sample(&bucket, &[("le", &le.to_string())], n);
        }
        let count = snap.cumulative.last().copied().unwrap_or(0);
        self.sample(&bucket, &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], snap.sum);
        self.sample(&format!("{name}_count"), &[], count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric of `s` in the Prometheus text exposition format.
pub fn render(s: &Serve) -> String {
    let mut e = Exposition {
        out: String::with_capacity(16 << 10),
        model: escape(&s.model_id),
    };
    let st = s.engine.stats();
    let m = s.engine.metrics();
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
    e.scalar(
        "vllm:num_requests_running",
        "gauge",
        "Sequences in the running batch.",
        load(&st.running),
    );
    e.scalar(
        "vllm:num_requests_waiting",
        "gauge",
        "Sequences waiting for a batch slot.",
        s.engine.waiting(),
    );
    e.scalar(
        "vllm:prompt_tokens_total",
        "counter",
        "Prompt tokens of finished sequences.",
        load(&st.prompt_tokens),
    );
    e.scalar(
        "vllm:generation_tokens_total",
        "counter",
        "Tokens generated by finished sequences.",
        load(&st.generation_tokens),
    );
    e.header(
        "vllm:request_success_total",
        "counter",
        "Sequences finished, by finish reason.",
    );
    for (reason, c) in [
        ("stop", &m.finished_stop),
        ("length", &m.finished_length),
        ("abort", &m.finished_abort),
        ("error", &m.finished_error),
    ] {
        e.sample(
            "vllm:request_success_total",
            &[("finished_reason", reason)],
            c.load(Ordering::Relaxed),
        );
    }
    e.histogram(
        "vllm:time_to_first_token_seconds",
        "Time from submission to the first generated token, in seconds.",
        &m.time_to_first_token,
    );
    e.histogram(
        "vllm:inter_token_latency_seconds",
        "Time between consecutive generated tokens of a sequence, in seconds.",
        &m.inter_token_latency,
    );
    e.histogram(
        "vllm:e2e_request_latency_seconds",
        "Time from submission to the end of a sequence, in seconds.",
        &m.e2e_latency,
    );
    e.histogram(
        "vllm:request_queue_time_seconds",
        "Time a sequence waited before joining the running batch, in seconds.",
        &m.queue_time,
    );
    e.scalar(
        "openlora:engine_steps_total",
        "counter",
        "Batched forward passes run by the engine.",
        load(&st.steps),
    );
    let c = s.adapters.cache_stats();
    e.scalar(
        "openlora:adapter_cache_hits_total",
        "counter",
        "Adapter lookups served from the RAM cache.",
        c.hits,
    );
    e.scalar(
        "openlora:adapter_cache_misses_total",
        "counter",
        "Adapter lookups that had to read the adapter from disk.",
        c.misses,
    );
    e.scalar(
        "openlora:adapter_loads_total",
        "counter",
        "Adapters read from disk and checked against the base model.",
        c.loads,
    );
    e.scalar(
        "openlora:adapter_cache_evictions_total",
        "counter",
        "Adapters evicted from the RAM cache to stay within its byte budget.",
        c.evictions,
    );
    e.histogram(
        "openlora:adapter_load_seconds",
        "Time to read an adapter from disk and check it, in seconds.",
        s.adapters.load_seconds(),
    );
    e.scalar(
        "openlora:adapter_cache_bytes",
        "gauge",
        "Bytes of adapter weights in the RAM cache.",
        c.used_bytes,
    );
    e.scalar(
        "openlora:adapter_cache_budget_bytes",
        "gauge",
        "The RAM cache's byte budget.",
        s.config.adapter_cache_bytes,
    );
    e.scalar(
        "openlora:adapters_cached",
        "gauge",
        "Adapters in the RAM cache.",
        c.cached,
    );
    e.scalar(
        "openlora:adapters_registered",
        "gauge",
        "Adapters registered by name.",
        s.adapters.names().len(),
    );
    dlora(&mut e, s.engine.dlora());
    e.out
}

/// The dLoRA policy's metrics (`crate::dlora`), under `openledger_` names.
fn dlora(e: &mut Exposition, d: &crate::dlora::DloraStats) {
    let off = d.off_reason();
    e.header(
        "openledger_adapter_merge_enabled",
        "gauge",
        "1 when a dominant adapter may be merged into the base weights; 0 with the reason otherwise.",
    );
    match &off {
        None => e.sample("openledger_adapter_merge_enabled", &[], 1),
        Some(why) => e.sample("openledger_adapter_merge_enabled", &[("reason", why)], 0),
    }
    e.scalar(
        "openledger_adapter_merges_total",
        "counter",
        "Times a dominant adapter was merged into (a copy of) the base weights.",
        d.merges.load(Ordering::Relaxed),
    );
    e.scalar(
        "openledger_adapter_unmerges_total",
        "counter",
        "Times the engine went back to the unmerged base weights.",
        d.unmerges.load(Ordering::Relaxed),
    );
    e.scalar(
        "openledger_adapter_merged",
        "gauge",
        "1 while an adapter is merged into the weights the engine runs.",
        u8::from(d.merged().is_some()),
    );
    e.scalar(
        "openledger_adapter_merged_steps_total",
        "counter",
        "Batched forward passes run on merged weights.",
        d.merged_steps.load(Ordering::Relaxed),
    );
    e.histogram(
        "openledger_adapter_merge_seconds",
        "Time to build the merged copy of the base weights (off the engine thread), in seconds.",
        &d.merge_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        // le is inclusive: 1.0 falls in the first bucket.
        assert_eq!(s.cumulative, vec![2, 3, 5]);
        assert_eq!(s.sum, 6.0);
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

//! Datanet ingestion speed: generates a deterministic synthetic corpus (JSONL and plain text files
//! of realistic paragraphs, each under the 5 MB file limit) in a temp dir, then times reading +
//! parsing + normalising + hashing + validation + exact and MinHash/LSH dedup + Merkle root +
//! storing the accepted rows (the row-set blob, written durably to a blob store as the node does),
//! and prints MB/s as JSON. With `--runs N` the timed part (reading the files included) runs N times
//! and the best run is reported, next to all of them (handy on a shared machine, and for
//! profiling mostly the pipeline rather than the corpus generation).
//!
//! `--datanet-mb M` first ingests (untimed) another M MB corpus into a [`DatanetIndex`] and then
//! deduplicates against it, the way a contribution to a grown datanet is ingested.
//!
//! Usage: ingest-speed [--mb 50] [--seed 1] [--runs 1] [--datanet-mb 0]

use openledger_datanet::{ingest, rowset, DatanetIndex, Limits, Schema, SourceFile};
use openledger_store::BlobStore;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod flags;
mod rng;
use flags::arg;
use rng::Rng;

/// A vocabulary of pronounceable words with a Zipf-like pick, so text looks like text.
fn vocabulary(rng: &mut Rng) -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ter", "an", "sel", "o", "ri", "da", "ne", "ta", "ver", "qu", "is", "en",
        "tra", "po", "li", "de", "ment", "ar", "ch", "ion", "us",
    ];
    (0..5000)
        .map(|_| {
            let n = 1 + rng.below(3) as usize;
            (0..n).map(|_| SYL[rng.below(24) as usize]).collect()
        })
        .collect()
}

fn paragraph(rng: &mut Rng, vocab: &[String]) -> String {
    let words = 40 + rng.below(160) as usize;
    let mut s = String::new();
    for i in 0..words {
        let r = rng.below(1 << 20) as f64 / (1 << 20) as f64;
        let w = &vocab[((r * r * r) * vocab.len() as f64) as usize];
        if i > 0 {
            s.push(' ');
        }
        s.push_str(w);
        if rng.below(14) == 0 {
            s.push_str(if rng.below(3) == 0 { "," } else { "." });
        }
    }
    s.push('.');
    s
}

/// Writes about `target` bytes of JSONL and text files named `{prefix}NNN.*` into `dir`.
fn write_corpus(
    dir: &Path,
    prefix: &str,
    rng: &mut Rng,
    vocab: &[String],
    target: usize,
) -> anyhow::Result<(Vec<PathBuf>, usize)> {
    let per_file = 4 * 1024 * 1024;
    let mut paths = Vec::new();
    let mut written = 0usize;
    while written < target {
        let jsonl = paths.len() % 2 == 0;
        let limit = per_file.min(target - written);
        let mut body = String::new();
        while body.len() < limit {
            let p = paragraph(rng, vocab);
            if jsonl {
                body.push_str(&serde_json::to_string(&serde_json::json!({ "text": p }))?);
                body.push('\n');
            } else {
                body.push_str(&p);
                body.push_str("\n\n");
            }
        }
        let path = dir.join(format!(
            "{prefix}{:03}.{}",
            paths.len(),
            if jsonl { "jsonl" } else { "txt" }
        ));
        std::fs::write(&path, &body)?;
        written += body.len();
        paths.push(path);
    }
    Ok((paths, written))
}

fn read_all(paths: &[PathBuf], limits: &Limits) -> anyhow::Result<Vec<SourceFile>> {
    Ok(paths
        .iter()
        .map(|p| SourceFile::read(p, limits))
        .collect::<Result<Vec<_>, _>>()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mb: f64 = arg(&args, "--mb", 50.0);
    let seed: u64 = arg(&args, "--seed", 1);
    let runs: usize = arg(&args, "--runs", 1usize).max(1);
    let datanet_mb: f64 = arg(&args, "--datanet-mb", 0.0);
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(seed);
    let vocab = vocabulary(&mut rng);
    let target = (mb * 1024.0 * 1024.0) as usize;
    let (paths, written) = write_corpus(dir.path(), "part", &mut rng, &vocab, target)?;

    // An optional datanet to deduplicate against, ingested before (and outside) the timing.
    let limits = Limits::default();
    let mut index = DatanetIndex::default();
    if datanet_mb > 0.0 {
        let target = (datanet_mb * 1024.0 * 1024.0) as usize;
        let (old, _) = write_corpus(dir.path(), "old", &mut rng, &vocab, target)?;
        let c = ingest(&read_all(&old, &limits)?, Schema::Text, &limits, &index)?;
        index.add_contribution(&c);
    }

    let mut timings = Vec::new();
    let mut result = None;
    for run in 0..runs {
        // A fresh store each run, so every run writes its blob.
        let blobs = BlobStore::open(&dir.path().join(format!("blobs-{run}")))?;
        let start = Instant::now();
        let files = read_all(&paths, &limits)?;
        let read_s = start.elapsed().as_secs_f64();
        let c = ingest(&files, Schema::Text, &limits, &index)?;
        let ingested = start.elapsed().as_secs_f64();
        blobs.put(&rowset::encode(&c))?;
        let total = start.elapsed().as_secs_f64();
        timings.push((read_s, total, total - ingested));
        result = Some((files.len(), c));
    }
    let (files, c) = result.expect("at least one run");
    let (read_s, total_s, store_s) = timings
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one run");
    let ms = |s: f64| (s * 1000.0).round() / 1000.0;
    let mib = written as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest-speed",
            "input_mib": (mib * 100.0).round() / 100.0,
            "files": files,
            "rows": c.row_count(),
            "exact_duplicates": c.duplicates.len(),
            "near_duplicates": c.near_duplicates.len(),
            "threads": rayon::current_num_threads(),
            "runs": runs,
            "datanet_rows": index.len(),
            "read_s": ms(read_s),
            "store_s": ms(store_s),
            "total_s": ms(total_s),
            "all_total_s": timings.iter().map(|t| ms(t.1)).collect::<Vec<_>>(),
            "mib_per_s": (mib / total_s * 10.0).round() / 10.0,
            "rows_root": c.rows_root.to_string(),
            "stages": "read + parse + normalise + validate + BLAKE3 + exact dedup + MinHash/LSH dedup + score + Merkle root + store (row-set blob, fsync)",
        })
    );
    Ok(())
}

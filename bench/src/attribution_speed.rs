//! Attribution index speed: build time, bytes per token, n-gram count latency and span
//! attribution latency for a 400-token response, as JSON.
//!
//! The corpus is `--text-dir DIR` (every `*.txt` file under DIR, split into rows at blank lines
//! and tokenised with `--tokenizer MODEL`, SmolLM2's by default: real text), `--tokens FILE` in
//! infini-gram's tokenized layout (u16 little-endian, each document preceded by 0xFFFF), or a
//! deterministic synthetic corpus of `--mtokens M` million Zipf-distributed ids (SmolLM2's
//! vocabulary size). `--write-tokens FILE` saves the rows in infini-gram's layout, so a peer can
//! index the very same stream. `--ngrams-out FILE` writes
//! the 1,000 queried n-grams and our counts as JSONL (`{"ids": [...], "count": N}`) to compare
//! with the peer's, and `--responses-out FILE` the twenty 400-token responses attributed (JSON).
//!
//! The index is built with the default [`BuildOptions`] (shards split for the cores) or, with
//! `--one-shard`, as a single shard.
//!
//! Usage: attribution-speed [--mtokens 10] [--seed 1] [--tokens FILE]
//!        [--text-dir DIR [--tokenizer MODEL]] [--write-tokens FILE] [--one-shard]
//!        [--ngrams-out FILE] [--responses-out FILE]

use openledger_attribution::{attribute, BuildOptions, Index, Params, RowTokens, TokenId};
use rayon::prelude::*;
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

mod flags;
mod rng;
use flags::arg;
use rng::Rng;

const VOCAB: u32 = 49_152;

/// A Zipf-like token id.
fn token(rng: &mut Rng) -> TokenId {
    let r = rng.unit();
    ((r * r * r) * VOCAB as f64) as TokenId
}

fn synthetic(rng: &mut Rng, tokens: usize) -> Vec<Vec<TokenId>> {
    let mut rows = Vec::new();
    let mut n = 0;
    while n < tokens {
        let len = 50 + rng.below(350) as usize;
        rows.push((0..len).map(|_| token(rng)).collect::<Vec<_>>());
        n += len;
    }
    rows
}

fn read_tokens(path: &str) -> anyhow::Result<Vec<Vec<TokenId>>> {
    let bytes = std::fs::read(path)?;
    let ids: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(ids
        .split(|&t| t == u16::MAX)
        .filter(|r| !r.is_empty())
        .map(|r| r.iter().map(|&t| t as TokenId).collect())
        .collect())
}

/// Every `*.txt` file under `dir`, in path order.
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            text_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "txt") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The paragraphs of every text file under `dir`, tokenised (files that are not UTF-8 are read
/// lossily: the mail corpus has some Latin-1).
fn tokenise_dir(dir: &Path, model: &Path) -> anyhow::Result<Vec<Vec<TokenId>>> {
    let tok = openledger_model::Tokenizer::for_model(model)?;
    let mut files = Vec::new();
    text_files(dir, &mut files)?;
    anyhow::ensure!(!files.is_empty(), "no .txt files under {}", dir.display());
    let per_file: Vec<Vec<Vec<TokenId>>> = files
        .par_iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(f)?).replace("\r\n", "\n");
            text.split("\n\n")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Ok(tok.encode_plain(p)?))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(per_file.into_iter().flatten().collect())
}

fn write_tokens(path: &str, rows: &[Vec<TokenId>]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(&u16::MAX.to_le_bytes());
        for &t in r {
            out.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The value after `name`, if given.
fn path_arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mtokens: f64 = arg(&args, "--mtokens", 10.0);
    let mut rng = Rng(arg(&args, "--seed", 1));
    let started = Instant::now();
    let rows = match (path_arg(&args, "--tokens"), path_arg(&args, "--text-dir")) {
        (Some(path), _) => read_tokens(path)?,
        (None, Some(dir)) => tokenise_dir(
            Path::new(dir),
            Path::new(
                path_arg(&args, "--tokenizer").unwrap_or(openledger_model::DEFAULT_MODEL_PATH),
            ),
        )?,
        (None, None) => synthetic(&mut rng, (mtokens * 1e6) as usize),
    };
    let load_s = started.elapsed().as_secs_f64();
    if let Some(path) = path_arg(&args, "--write-tokens") {
        write_tokens(path, &rows)?;
    }
    let n_tokens: usize = rows.iter().map(|r| r.len()).sum();
    let input: Vec<RowTokens> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| RowTokens {
            tokens: r.clone(),
            contribution_id: 1 + i as u64 / 100,
            contributor: alloy_primitives::Address::repeat_byte((i / 100 % 250) as u8 + 1),
        })
        .collect();
    let mut opts = BuildOptions::default();
    if args.iter().any(|a| a == "--one-shard") {
        opts.threads = 1;
    }
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let index = Index::create(
        &dir.path().join("ix"),
        &input,
        VOCAB,
        BTreeMap::new(),
        &opts,
    )?;
    let build_s = started.elapsed().as_secs_f64();
    let bytes: u64 = index.shards().iter().map(|s| s.meta().data_bytes()).sum();

    // 1,000 n-grams (n = 1..=10): 90% cut from random rows, 10% random ids.
    let mut ngrams: Vec<Vec<TokenId>> = Vec::new();
    while ngrams.len() < 1000 {
        let n = 1 + rng.below(10) as usize;
        if rng.below(10) == 0 {
            ngrams.push((0..n).map(|_| rng.below(VOCAB as u64) as TokenId).collect());
            continue;
        }
        let r = &rows[rng.below(rows.len() as u64) as usize];
        if r.len() >= n {
            let s = rng.below((r.len() - n + 1) as u64) as usize;
            ngrams.push(r[s..s + n].to_vec());
        }
    }
    let mut lat = Vec::with_capacity(ngrams.len());
    let mut counts = Vec::with_capacity(ngrams.len());
    for q in &ngrams {
        let t = Instant::now();
        counts.push(index.count(q));
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    if let Some(path) = path_arg(&args, "--ngrams-out") {
        let mut f = std::fs::File::create(path)?;
        for (q, c) in ngrams.iter().zip(&counts) {
            writeln!(f, "{}", serde_json::json!({ "ids": q, "count": c }))?;
        }
    }

    // 400-token responses: 50-token excerpts of random rows alternating with 50 random ids.
    let mut att = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..20 {
        let mut resp = Vec::with_capacity(400);
        while resp.len() < 400 {
            let r = &rows[rng.below(rows.len() as u64) as usize];
            let s = rng.below(r.len().saturating_sub(50) as u64 + 1) as usize;
            resp.extend_from_slice(&r[s..(s + 50).min(r.len())]);
            resp.extend((0..50).map(|_| token(&mut rng)));
        }
        resp.truncate(400);
        responses.push(serde_json::json!(resp));
        let t = Instant::now();
        let a = attribute(&index, &resp[..40], &resp, &Params::default());
        att.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(a.coverage <= 1.0);
    }
    att.sort_by(f64::total_cmp);
    if let Some(path) = path_arg(&args, "--responses-out") {
        std::fs::write(path, serde_json::to_vec(&responses)?)?;
    }
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "attribution-speed",
            "tokens": n_tokens,
            "rows": rows.len(),
            "threads": opts.threads,
            "shards": index.shards().len(),
            "load_s": r3(load_s),
            "build_s": r3(build_s),
            "bytes_per_token": r3(bytes as f64 / n_tokens as f64),
            "count_us_median": r3(percentile(&lat, 0.5)),
            "count_us_p99": r3(percentile(&lat, 0.99)),
            "ngrams_found": counts.iter().filter(|&&c| c > 0).count(),
            "attribute_400_ms_median": r3(percentile(&att, 0.5)),
            "attribute_400_ms_p90": r3(percentile(&att, 0.9)),
            "root": index.root().to_string(),
        })
    );
    Ok(())
}

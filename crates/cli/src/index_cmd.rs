//! `openledger index …` and `openledger attribute`: build a datanet version's attribution index
//! (rows from the node's export, tokenised with the serving model's tokenizer; a later version
//! adds a shard), query it, and attribute a response to the contributions it draws on, with a
//! readable explanation or JSON.

use crate::commands::Session;
use alloy_primitives::B256;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use openledger_attribution::{
    attribute, commit, Attribution, BuildOptions, Index, Params, RowTokens, TokenId,
};
use openledger_model::Tokenizer;
use openledger_node::datanets::{views::ContributionView, ExportRow};
use rayon::prelude::*;
use std::{
    collections::{BTreeMap, HashMap},
    io::IsTerminal,
    path::{Path, PathBuf},
    time::Instant,
};

#[derive(clap::Args, Debug)]
pub struct TokenizerArg {
    /// The serving model (GGUF file or model directory) whose tokenizer the index uses.
    #[arg(
        long,
        env = "OPENLEDGER_MODEL",
        default_value = openledger_model::DEFAULT_MODEL_PATH
    )]
    pub tokenizer: PathBuf,
}

#[derive(Subcommand)]
pub enum IndexCmd {
    /// Build (or extend with a new shard) the index of DATANET@VERSION.
    Build {
        /// DATANET@VERSION, e.g. 1@3.
        #[arg(value_parser = crate::commands::parse_datanet_version)]
        target: (u64, u64),
        #[command(flatten)]
        tokenizer: TokenizerArg,
        /// Index directory (default: <home>/indexes/datanet-<id>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The most tokens one shard holds; a larger version is split into several shards.
        #[arg(long, default_value_t = BuildOptions::default().max_shard_tokens,
              value_parser = clap::value_parser!(u64).range(2..=i32::MAX as u64 - 1))]
        max_shard_tokens: u64,
        /// Threads to tokenise and build with (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Count a text's occurrences (as tokens) in the index.
    Count(#[command(flatten)] Query),
    /// The tokens that follow a text in the index, most frequent first.
    Next {
        #[command(flatten)]
        q: Query,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Rows containing a text, with their contribution and contributor.
    Rows {
        #[command(flatten)]
        q: Query,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The ∞-gram probability of every token of a text given the text before it (the longest
    /// earlier suffix found in the index decides), and the text's perplexity under it.
    Prob(#[command(flatten)] Query),
    /// The longest match in the index starting at every token of a text.
    Matches(#[command(flatten)] Query),
    /// Shards, sizes and the root to record on chain.
    Info {
        #[arg(long)]
        index: PathBuf,
    },
}

/// A text to look up in an index.
#[derive(clap::Args, Debug)]
pub struct Query {
    /// The text, tokenised as plain text (a word inside a sentence starts with its space).
    text: String,
    /// The index directory.
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

impl Query {
    /// The tokenizer, the text's token ids and the opened index.
    fn load(&self) -> Result<(Tokenizer, Vec<TokenId>, Index)> {
        let tok = tokenizer(&self.tokenizer)?;
        let ids = encode(&tok, &self.text)?;
        Ok((tok, ids, open(&self.index)?))
    }
}

/// Rows tokenised between two progress lines.
const PROGRESS_EVERY: usize = 10_000;

fn tokenizer(arg: &TokenizerArg) -> Result<Tokenizer> {
    Tokenizer::for_model(&arg.tokenizer).with_context(|| {
        format!(
            "loading the tokenizer of {} (run ./scripts/fetch-model, or pass --tokenizer)",
            arg.tokenizer.display()
        )
    })
}

/// Token ids of `text`, without a BOS the tokenizer may add.
fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<TokenId>> {
    Ok(tok.encode_plain(text)?)
}

fn open(dir: &Path) -> Result<Index> {
    Index::open(dir).with_context(|| format!("opening the index in {}", dir.display()))
}

/// Runs an index subcommand.
pub fn run(s: &Session, c: IndexCmd) -> Result<()> {
    match c {
        IndexCmd::Build {
            target: (datanet, version),
            tokenizer: t,
            out,
            max_shard_tokens,
            threads,
        } => {
            let out = out.unwrap_or_else(|| {
                s.cli_home
                    .0
                    .join("indexes")
                    .join(format!("datanet-{datanet}"))
            });
            let opts = BuildOptions {
                max_shard_tokens,
                threads: threads.unwrap_or(BuildOptions::default().threads).max(1),
            };
            build(
                s,
                (datanet, version),
                &tokenizer(&t)?,
                &t.tokenizer,
                &out,
                &opts,
            )
        }
        IndexCmd::Count(q) => {
            let (_, ids, ix) = q.load()?;
            let text = q.text;
            let started = Instant::now();
            let n = ix.count(&ids);
            println!(
                "{n} occurrences of {} tokens ({:.0} µs)",
                ids.len(),
                started.elapsed().as_secs_f64() * 1e6
            );
            if n == 0 && !text.starts_with(char::is_whitespace) {
                eprintln!("(a word inside a sentence is a different token with its leading space: try \" {text}\")");
            }
            Ok(())
        }
        IndexCmd::Next { q, top } => {
            let (tok, ids, ix) = q.load()?;
            let next = ix.next_tokens(&ids);
            let total: u64 = next.iter().map(|x| x.1).sum();
            println!("{total} continuations of {} tokens", ids.len());
            for (id, n) in next.into_iter().take(top) {
                println!(
                    "{:>8}  {:>6.2}%  {:?}",
                    n,
                    100.0 * n as f64 / total.max(1) as f64,
                    tok.decode(&[id], false).unwrap_or_default()
                );
            }
            Ok(())
        }
        IndexCmd::Rows { q, limit } => {
            let (tok, ids, ix) = q.load()?;
            let hits = ix.rows_containing(&ids, 10_000);
            println!("{} rows contain it", hits.len());
            for h in hits.into_iter().take(limit) {
                println!(
                    "contribution {:<4} {}  ×{}  {}",
                    h.contribution_id,
                    h.contributor,
                    h.count,
                    row_preview(&tok, &ix, h.shard, h.row, 100)?
                );
            }
            Ok(())
        }
        IndexCmd::Prob(q) => {
            let (tok, ids, ix) = q.load()?;
            if ids.len() < 2 {
                bail!("give at least two tokens: the first is context only");
            }
            let mut log_sum = 0.0;
            println!("{:>8}  {:>7}  {:>9}  token", "prob", "context", "counts");
            for i in 1..ids.len() {
                let p = ix.infgram_prob(&ids[..i], ids[i]);
                log_sum += p.prob.max(1e-9).ln();
                println!(
                    "{:>8.4}  {:>7}  {:>9}  {:?}",
                    p.prob,
                    p.suffix_len,
                    format!("{}/{}", p.next_count, p.context_count),
                    tok.decode(&ids[i..=i], false).unwrap_or_default()
                );
            }
            println!(
                "perplexity {:.2} over {} tokens (a probability of 0 counts as 1e-9)",
                (-log_sum / (ids.len() - 1) as f64).exp(),
                ids.len() - 1
            );
            Ok(())
        }
        IndexCmd::Matches(q) => {
            let (tok, ids, ix) = q.load()?;
            println!("{:>4}  {:>5}  longest match", "at", "len");
            for (i, len) in ix.longest_matches(&ids).into_iter().enumerate() {
                println!(
                    "{i:>4}  {len:>5}  {:?}",
                    tok.decode(&ids[i..i + len], false).unwrap_or_default()
                );
            }
            Ok(())
        }
        IndexCmd::Info { index } => {
            let ix = open(&index)?;
            let mut bytes = 0u64;
            for (i, sh) in ix.shards().iter().enumerate() {
                let m = sh.meta();
                bytes += m.data_bytes();
                let part = m
                    .source
                    .get("part")
                    .map(|p| format!(" part {p}"))
                    .unwrap_or_default();
                println!(
                    "shard {i}: {} rows, {} tokens, {:?} ids, {}-byte pointers, {} contributions, versions {}{part}",
                    m.rows,
                    m.tokens,
                    m.width,
                    m.ptr_bytes,
                    m.contributions.len(),
                    m.source.get("versions").cloned().unwrap_or_default()
                );
            }
            println!(
                "{} tokens, {:.2} bytes per token; root {}",
                ix.token_count(),
                bytes as f64 / ix.token_count().max(1) as f64,
                ix.root()
            );
            Ok(())
        }
    }
}

fn build(
    s: &Session,
    (datanet, version): (u64, u64),
    tok: &Tokenizer,
    model: &Path,
    out: &Path,
    opts: &BuildOptions,
) -> Result<()> {
    let existing = out.join(openledger_attribution::index::MANIFEST).exists();
    let (index, from) = if existing {
        let ix = open(out)?;
        let m = &ix.manifest().source;
        if m.get("datanet").map(String::as_str) != Some(&datanet.to_string()) {
            bail!(
                "{} holds the index of datanet {}, not {datanet}",
                out.display(),
                m.get("datanet").cloned().unwrap_or_default()
            );
        }
        let done: u64 = m.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
        if version <= done {
            println!(
                "{} already covers version {done}; nothing to do",
                out.display()
            );
            return Ok(());
        }
        (Some(ix), done)
    } else {
        (None, 0)
    };
    let rest = s.rest(true)?;
    let rows = export_rows(&rest, datanet, version, from)?;
    let started = Instant::now();
    let tokens = tokenise(&rows, tok, opts.threads)?;
    let tokenised = started.elapsed().as_secs_f64();
    let mut source = BTreeMap::new();
    source.insert("datanet".to_string(), datanet.to_string());
    source.insert("versions".to_string(), format!("{}..={version}", from + 1));
    source.insert("tokenizer".to_string(), model.display().to_string());
    let vocab = tok.vocab_size() as u32;
    eprintln!("building the suffix array of {} rows…", tokens.len());
    let (mut ix, metas) = match index {
        Some(mut ix) => {
            let metas = ix.add_rows(&tokens, vocab, source, opts)?;
            (ix, metas)
        }
        None => {
            let mut ix = Index::create(out, &tokens, vocab, source, opts)?;
            ix.set_source("datanet", &datanet.to_string())?;
            ix.set_source("tokenizer", &model.display().to_string())?;
            let metas = ix.shards().iter().map(|s| s.meta().clone()).collect();
            (ix, metas)
        }
    };
    ix.set_source("version", &version.to_string())?;
    let (n_rows, n_tokens): (u64, u64) = metas
        .iter()
        .fold((0, 0), |(r, t), m| (r + m.rows, t + m.tokens - m.rows));
    println!(
        "indexed versions {}..={version} of datanet {datanet}: {n_rows} rows, {n_tokens} tokens ({:?} ids) as {} new shard(s) in {:.2} s (tokenising {:.2} s)",
        from + 1,
        metas.first().map(|m| m.width).unwrap_or(openledger_attribution::Width::U16),
        metas.len(),
        started.elapsed().as_secs_f64(),
        tokenised
    );
    println!(
        "{}: {} shard(s), root {} (record it with `openledger model register-adapter … --index-root`)",
        out.display(),
        ix.shards().len(),
        ix.root()
    );
    Ok(())
}

/// The rows of version `version` of `datanet` from contributions approved after version `from`.
fn export_rows(
    rest: &crate::rest::Rest,
    datanet: u64,
    version: u64,
    from: u64,
) -> Result<Vec<ExportRow>> {
    let contributions: Vec<ContributionView> =
        rest.get(&format!("/v1/datanets/{datanet}/contributions"))?;
    let version_of: HashMap<u64, u64> = contributions.iter().map(|c| (c.id, c.version)).collect();
    eprintln!("fetching version {version} of datanet {datanet}…");
    let body = rest.get_bytes(&format!("/v1/datanets/{datanet}/export?version={version}"))?;
    let mut rows = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let r: ExportRow = serde_json::from_slice(line).context("reading the export")?;
        if version_of.get(&r.contribution_id).copied().unwrap_or(0) <= from {
            continue;
        }
        rows.push(r);
    }
    Ok(rows)
}

/// Tokenises rows (their fields joined by newlines) on `threads` threads, with progress lines.
fn tokenise(rows: &[ExportRow], tok: &Tokenizer, threads: usize) -> Result<Vec<RowTokens>> {
    let total = rows.len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the tokenising threads")?;
    let mut tokens = Vec::with_capacity(total);
    for (done, chunk) in rows.chunks(PROGRESS_EVERY).enumerate() {
        let part: Vec<RowTokens> = pool.install(|| {
            chunk
                .par_iter()
                .map(|r| {
                    Ok(RowTokens {
                        tokens: encode(tok, &r.row.fields().join("\n"))?,
                        contribution_id: r.contribution_id,
                        contributor: r.contributor,
                    })
                })
                .collect::<Result<_>>()
        })?;
        tokens.extend(part);
        if total > PROGRESS_EVERY {
            eprintln!(
                "  tokenised {} of {total} rows",
                ((done + 1) * PROGRESS_EVERY).min(total)
            );
        }
    }
    Ok(tokens)
}

/// Builds a new index in `out` (which must not hold one) over the given datanet versions
/// together, tokenised with `model`'s tokenizer: the index of an adapter trained on all of
/// them. Returns its root.
pub(crate) fn build_new(
    s: &Session,
    targets: &[(u64, u64)],
    model: &Path,
    out: &Path,
) -> Result<B256> {
    if out.join(openledger_attribution::index::MANIFEST).exists() {
        bail!("{} already holds an index", out.display());
    }
    let tok = tokenizer(&TokenizerArg {
        tokenizer: model.to_path_buf(),
    })?;
    let opts = BuildOptions::default();
    let rest = s.rest(true)?;
    let mut tokens = Vec::new();
    for &(datanet, version) in targets {
        let rows = export_rows(&rest, datanet, version, 0)?;
        tokens.extend(tokenise(&rows, &tok, opts.threads.max(1))?);
    }
    let ix = create_for_versions(targets, &tokens, &tok, model, out, &opts)?;
    let list =
        |f: &dyn Fn(&(u64, u64)) -> String| targets.iter().map(f).collect::<Vec<_>>().join(",");
    eprintln!(
        "indexed {} rows of datanet versions {} in {}: root {}",
        tokens.len(),
        list(&|t| format!("{}@{}", t.0, t.1)),
        out.display(),
        ix.root()
    );
    Ok(ix.root())
}

/// Creates in `out` the index over `tokens`, the rows of the datanet versions `targets`
/// tokenised with `model`'s tokenizer `tok`, its source naming them (also for the node's
/// `POST /v1/factory/jobs/{id}/publish`).
pub(crate) fn create_for_versions(
    targets: &[(u64, u64)],
    tokens: &[RowTokens],
    tok: &Tokenizer,
    model: &Path,
    out: &Path,
    opts: &BuildOptions,
) -> Result<Index> {
    let list =
        |f: &dyn Fn(&(u64, u64)) -> String| targets.iter().map(f).collect::<Vec<_>>().join(",");
    let mut source = BTreeMap::new();
    source.insert("datanet".to_string(), list(&|t| t.0.to_string()));
    source.insert("version".to_string(), list(&|t| t.1.to_string()));
    source.insert(
        "versions".to_string(),
        list(&|t| format!("{}@{}", t.0, t.1)),
    );
    source.insert("tokenizer".to_string(), model.display().to_string());
    Ok(Index::create(
        out,
        tokens,
        tok.vocab_size() as u32,
        source,
        opts,
    )?)
}

/// `openledger attribute`.
#[derive(clap::Args, Debug)]
pub struct AttributeArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArg,
    /// The prompt (used to re-rank rows).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// The response to attribute.
    #[arg(long)]
    pub response: String,
    /// Print JSON instead of the explanation.
    #[arg(long)]
    pub json: bool,
    /// Also print the on-chain commitment (top K and the root of the full list) for
    /// `openledger inference record --attribution … --attribution-root …`.
    #[arg(long, value_name = "K")]
    pub commit_top: Option<usize>,
}

#[derive(Subcommand)]
pub enum AttributionCmd {
    /// Check that the index is the one the receipt's adapter registered on chain (its
    /// attributionIndexRoot), recompute the receipt's attribution from it, the prompt and the
    /// response, and compare it with the root and top-k the receipt carries.
    Verify {
        receipt: u64,
        #[arg(long)]
        index: PathBuf,
        #[command(flatten)]
        tokenizer: TokenizerArg,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long)]
        response: String,
    },
}

/// Runs `openledger attribution …`.
pub fn run_attribution(s: &Session, c: AttributionCmd) -> Result<()> {
    match c {
        AttributionCmd::Verify {
            receipt,
            index,
            tokenizer: t,
            prompt,
            response,
        } => {
            use alloy_sol_types::SolCall;
            use openledger_types::{
                abi::{IInference, IModel},
                modules,
            };
            let rpc = s.rpc()?;
            let out = rpc
                .view(
                    modules::INFERENCE,
                    IInference::getReceiptCall { receiptId: receipt }.abi_encode(),
                )
                .with_context(|| format!("reading receipt {receipt}"))?;
            let r = IInference::getReceiptCall::abi_decode_returns(&out)
                .with_context(|| format!("reading receipt {receipt}"))?;
            // The index must be the one the receipt's adapter committed to on chain: any other
            // index (even one that recomputes the same attribution) proves nothing.
            let out = rpc
                .view(
                    modules::MODEL,
                    IModel::getAdapterCall {
                        adapterId: r.adapterId,
                    }
                    .abi_encode(),
                )
                .with_context(|| format!("reading adapter {} of receipt {receipt}", r.adapterId))?;
            let adapter = IModel::getAdapterCall::abi_decode_returns(&out)
                .with_context(|| format!("reading adapter {} of receipt {receipt}", r.adapterId))?;
            let on_chain = adapter.attributionIndexRoot;
            if on_chain.is_zero() {
                bail!(
                    "MISMATCH: adapter {} of receipt {receipt} registered no attribution index root on chain, so no index can verify its attribution",
                    r.adapterId
                );
            }
            let ix = open(&index)?;
            if ix.root() != on_chain {
                bail!(
                    "MISMATCH: index root {} of {} differs from the adapter's on-chain root {on_chain} (adapter {} of receipt {receipt}); verify against the index the adapter registered",
                    ix.root(),
                    index.display(),
                    r.adapterId
                );
            }
            let tok = tokenizer(&t)?;
            let a = attribute(
                &ix,
                &encode(&tok, &prompt)?,
                &encode(&tok, &response)?,
                &Params::default(),
            );
            let c = commit(&a, r.top.len());
            let top: Vec<(u64, u32)> = r
                .top
                .iter()
                .map(|x| (x.contributionId, x.weightPpm))
                .collect();
            let ours: Vec<(u64, u32)> = c
                .top
                .iter()
                .map(|w| (w.contribution_id, w.weight_ppm))
                .collect();
            if c.root != r.attributionRoot || top != ours {
                bail!(
                    "MISMATCH: receipt {receipt} commits to root {} and top {top:?}; recomputed from {} the attribution has root {} and top {ours:?}",
                    r.attributionRoot,
                    index.display(),
                    c.root
                );
            }
            println!(
                "VERIFIED: receipt {receipt}'s attribution (root {}, {} contributions, top {}) recomputes from the index {on_chain} that adapter {} registered",
                c.root, c.len, ours.len(), r.adapterId
            );
            Ok(())
        }
    }
}

/// Runs `openledger attribute`.
pub fn run_attribute(a: &AttributeArgs) -> Result<()> {
    let tok = tokenizer(&a.tokenizer)?;
    let ix = open(&a.index)?;
    let prompt = encode(&tok, &a.prompt)?;
    let response = encode(&tok, &a.response)?;
    let started = Instant::now();
    let at = attribute(&ix, &prompt, &response, &Params::default());
    let took = started.elapsed();
    let commitment = a.commit_top.map(|k| commit(&at, k));
    if a.json {
        let mut v = serde_json::to_value(&at)?;
        if let Some(c) = &commitment {
            v["commitment"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    explain(&tok, &ix, &response, &at)?;
    if let Some(c) = commitment {
        let args: Vec<String> = c
            .top
            .iter()
            .map(|w| format!("--attribution {}:{}", w.contribution_id, w.weight_ppm))
            .collect();
        println!(
            "
commitment: {} contributions, root {}
  {} --attribution-root {}",
            c.len,
            c.root,
            args.join(" "),
            c.root
        );
    }
    eprintln!(
        "attributed {} tokens in {:.1} ms",
        response.len(),
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

/// The first `chars` characters of a row's text.
fn row_preview(
    tok: &Tokenizer,
    ix: &Index,
    shard: usize,
    row: u64,
    chars: usize,
) -> Result<String> {
    let text = tok.decode(&ix.row_tokens(shard, row), false)?;
    let short: String = text.chars().take(chars).collect();
    Ok(if short.len() < text.len() {
        short + "…"
    } else {
        short
    })
}

fn explain(tok: &Tokenizer, ix: &Index, response: &[TokenId], at: &Attribution) -> Result<()> {
    let colour = std::io::stdout().is_terminal();
    let paint = |i: usize, s: &str| {
        if colour {
            format!("\x1b[1;{}m{s}\x1b[0m", 31 + (i % 6))
        } else {
            format!("[{}: {s}]", i + 1)
        }
    };
    let mut out = String::new();
    let mut at_pos = 0;
    for (i, s) in at.spans.iter().enumerate() {
        out += &tok.decode(&response[at_pos..s.start], false)?;
        out += &paint(i, &tok.decode(&response[s.start..s.end], false)?);
        at_pos = s.end;
    }
    out += &tok.decode(&response[at_pos..], false)?;
    println!("{out}\n");
    println!(
        "{:.1}% of the response is found verbatim in the datanet; {:.1}% unattributed",
        at.coverage * 100.0,
        (1.0 - at.coverage) * 100.0
    );
    for c in &at.contributions {
        println!(
            "  contribution {:<5} {}  weight {:>6.2}%  ({} spans)",
            c.contribution_id,
            c.contributor,
            c.weight * 100.0,
            c.spans
        );
    }
    for (i, s) in at.spans.iter().enumerate() {
        println!(
            "\n{} tokens {}..{}, {} occurrences, weight {:.2}%",
            paint(i, &format!("span {}", i + 1)),
            s.start,
            s.end,
            s.count,
            s.weight * 100.0
        );
        for r in s.rows.iter().take(3) {
            println!(
                "    contribution {:<4} {} bm25 {:>5.1}  {}",
                r.contribution_id,
                r.contributor,
                r.bm25,
                row_preview(tok, ix, r.shard, r.row, 90)?
            );
        }
    }
    Ok(())
}

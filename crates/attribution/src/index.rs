//! An attribution index: a directory of shards (one per build, e.g. one per datanet version
//! range) listed in `index.json`, queried as one corpus. Rows never span shards and queries never
//! contain the separator, so counts add up across shards and the longest match is the longest of
//! the shards' — answers equal a single index over all rows. Adding a version appends a shard;
//! nothing is rebuilt.
//!
//! Queries: n-gram counts, occurrences with their row, contribution and contributor, rows
//! containing a span, the next-token distribution, the ∞-gram probability, and the longest match
//! at every position of a text.

use crate::{
    build::{read_capped, RowTokens, ShardMeta},
    error::{IndexError, Result},
    parts::{build_parts, remove_quietly, BuildOptions},
    shard::{inside, Shard},
    tokens::TokenId,
};
use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
};

/// Name of the index manifest.
pub const MANIFEST: &str = "index.json";

/// Largest `index.json` read or written, in bytes (about 120 bytes per shard, so room for
/// more than a hundred thousand shards); a crafted manifest cannot make the reader allocate
/// without bound.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// One shard in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Directory name under the index directory.
    pub dir: String,
    /// BLAKE3 of its `shard.json`.
    pub root: B256,
}

/// `index.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Shards, oldest first.
    pub shards: Vec<ShardEntry>,
    /// Free-form provenance of the whole index.
    pub source: BTreeMap<String, String>,
}

impl Manifest {
    /// The index root: BLAKE3 over the shard roots in order. This is what goes on chain.
    pub fn root(&self) -> B256 {
        let mut h = blake3::Hasher::new();
        for s in &self.shards {
            h.update(s.root.as_slice());
        }
        B256::from(*h.finalize().as_bytes())
    }
}

/// Where an n-gram occurs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// Shard number.
    pub shard: usize,
    /// Token position in the shard.
    pub position: u64,
    /// Row number in the shard.
    pub row: u64,
    /// The row's contribution.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
}

/// A row and how often a span occurs in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowHit {
    /// Shard number.
    pub shard: usize,
    /// Row number in the shard.
    pub row: u64,
    /// The row's contribution.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
    /// Occurrences of the span in the row.
    pub count: u64,
}

/// The ∞-gram estimate of P(next | context): the longest suffix of the context that occurs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InfGram {
    /// Tokens of the context used (its longest suffix with a non-zero count).
    pub suffix_len: usize,
    /// Occurrences of that suffix followed by any token (not at a row's end).
    pub context_count: u64,
    /// Occurrences of that suffix followed by `next`.
    pub next_count: u64,
    /// `next_count / context_count` (0 when the context never continues).
    pub prob: f64,
}

/// An opened index.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
}

/// The directory of shard `name` in the index at `index` (canonical): `name` must be one plain
/// path component, and the directory it names must be a directory inside the index (a symlink
/// may not lead out of it).
fn shard_dir(index: &Path, name: &str) -> Result<PathBuf> {
    let mut parts = Path::new(name).components();
    let plain = matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(c)), None) if c == std::ffi::OsStr::new(name)
    );
    if !plain {
        return Err(IndexError::Corrupt(format!(
            "{}: shard directory {name:?} is not a plain name inside the index directory {}",
            index.join(MANIFEST).display(),
            index.display()
        )));
    }
    let dir = inside(&index.join(name), index)?;
    if !dir.is_dir() {
        return Err(IndexError::Corrupt(format!(
            "shard {name:?} of the index directory {} is not a directory",
            index.display()
        )));
    }
    Ok(dir)
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let tmp = dir.join(format!(".{MANIFEST}.partial"));
    let json = serde_json::to_vec_pretty(m).expect("manifest serialises");
    if json.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(IndexError::Build(format!(
            "{MANIFEST} would be {} bytes with {} shards, over the {MAX_MANIFEST_BYTES} bytes it may have; start a new index",
            json.len(),
            m.shards.len()
        )));
    }
    fs::write(&tmp, json).map_err(|e| IndexError::io(&tmp, e))?;
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(|e| IndexError::io(&path, e))
}

impl Index {
    /// Creates an index in `dir` (which must not hold one) from `rows` (one shard, or several
    /// for a large batch: see [`crate::parts`]); `source` is the shards' provenance (the index's
    /// is set with [`Index::set_source`]).
    pub fn create(
        dir: &Path,
        rows: &[RowTokens],
        vocab_size: u32,
        source: BTreeMap<String, String>,
        opts: &BuildOptions,
    ) -> Result<Index> {
        if dir.join(MANIFEST).exists() {
            return Err(IndexError::Exists(dir.to_path_buf()));
        }
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        write_manifest(dir, &Manifest::default())?;
        let added = Index::open(dir).and_then(|mut index| {
            index.add_rows(rows, vocab_size, source, opts)?;
            Ok(index)
        });
        if added.is_err() {
            // Leave no empty index behind: a retry must find the directory as it was.
            let _ = fs::remove_file(dir.join(MANIFEST));
            if created {
                let _ = fs::remove_dir(dir);
            }
        }
        added
    }

    /// Opens the index in `dir`. Every shard must be a directory named by one plain path
    /// component that stays inside `dir` (no absolute path, `..` or symlink out of it), listed
    /// once, must open ([`Shard::open`]: its fields bounds-checked, its files inside it and
    /// matching the BLAKE3 hashes its `shard.json` records) with the root the manifest gives it,
    /// and must share the first shard's vocabulary. The index root is then exactly what the
    /// files hold: it hashes the shard roots, each the hash of a `shard.json` that hashes its
    /// files.
    pub fn open(dir: &Path) -> Result<Index> {
        let path = dir.join(MANIFEST);
        let file = fs::File::open(&path).map_err(|e| IndexError::io(&path, e))?;
        let bytes = read_capped(&path, file, MAX_MANIFEST_BYTES)?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::Corrupt(format!("{}: {e}", path.display())))?;
        let real = fs::canonicalize(dir).map_err(|e| IndexError::io(dir, e))?;
        let mut shards: Vec<Shard> = Vec::with_capacity(manifest.shards.len());
        let mut seen = std::collections::HashSet::new();
        for s in &manifest.shards {
            let sdir = shard_dir(&real, &s.dir)?;
            if !seen.insert(sdir.clone()) {
                return Err(IndexError::Corrupt(format!(
                    "{}: shard {:?} is listed twice",
                    path.display(),
                    s.dir
                )));
            }
            let shard = Shard::open(&sdir)?;
            if shard.root() != s.root {
                return Err(IndexError::Corrupt(format!(
                    "shard {} has root {}, the manifest says {}",
                    s.dir,
                    shard.root(),
                    s.root
                )));
            }
            if let Some(first) = shards.first() {
                if first.meta().vocab_size != shard.meta().vocab_size {
                    return Err(IndexError::Corrupt(format!(
                        "shard {} was built with a vocabulary of {} ids, the first shard with {}",
                        s.dir,
                        shard.meta().vocab_size,
                        first.meta().vocab_size
                    )));
                }
            }
            shards.push(shard);
        }
        Ok(Index {
            dir: dir.to_path_buf(),
            manifest,
            shards,
        })
    }

    /// Appends `rows` (e.g. the rows a new datanet version added) as one shard, or several for a
    /// large batch, all or nothing. Returns the new shards' metadata.
    pub fn add_rows(
        &mut self,
        rows: &[RowTokens],
        vocab_size: u32,
        source: BTreeMap<String, String>,
        opts: &BuildOptions,
    ) -> Result<Vec<ShardMeta>> {
        if let Some(first) = self.shards.first() {
            if first.meta().vocab_size != vocab_size {
                return Err(IndexError::Mismatch(format!(
                    "the index was built with a vocabulary of {} ids, these rows with {vocab_size}",
                    first.meta().vocab_size
                )));
            }
        }
        let first = self.shards.len();
        let name = |k: usize| format!("shard-{:04}", first + k);
        let built = build_parts(rows, vocab_size, &source, opts, |k| self.dir.join(name(k)))?;
        let mut manifest = self.manifest.clone();
        let mut opened = Vec::with_capacity(built.len());
        let added = (|| {
            for (k, (sdir, _)) in built.iter().enumerate() {
                let shard = Shard::open(sdir)?;
                manifest.shards.push(ShardEntry {
                    dir: name(k),
                    root: shard.root(),
                });
                opened.push(shard);
            }
            write_manifest(&self.dir, &manifest)
        })();
        if let Err(e) = added {
            for (sdir, _) in &built {
                remove_quietly(sdir);
            }
            return Err(e);
        }
        self.manifest = manifest;
        self.shards.extend(opened);
        Ok(built.into_iter().map(|(_, meta)| meta).collect())
    }

    /// Records `key = value` in the manifest's provenance (e.g. the datanet version covered).
    /// The root does not cover provenance.
    pub fn set_source(&mut self, key: &str, value: &str) -> Result<()> {
        let mut manifest = self.manifest.clone();
        manifest.source.insert(key.to_string(), value.to_string());
        write_manifest(&self.dir, &manifest)?;
        self.manifest = manifest;
        Ok(())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The index root recorded on chain.
    pub fn root(&self) -> B256 {
        self.manifest.root()
    }

    /// Tokens indexed, separators excluded.
    pub fn token_count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.meta().tokens - s.meta().rows)
            .sum()
    }

    /// Occurrences of `ngram` (0 for the empty n-gram).
    pub fn count(&self, ngram: &[TokenId]) -> u64 {
        if ngram.is_empty() {
            return 0;
        }
        self.shards.iter().map(|s| s.find(ngram).len() as u64).sum()
    }

    fn contribution_of(&self, shard: usize, row: u64) -> (u64, Address) {
        let cs = &self.shards[shard].meta().contributions;
        let i = cs.partition_point(|c| c.first_row <= row).saturating_sub(1);
        cs.get(i)
            .map(|c| (c.contribution_id, c.contributor))
            .unwrap_or_default()
    }

    /// Up to `limit` occurrences of `ngram`, by shard then suffix order.
    pub fn occurrences(&self, ngram: &[TokenId], limit: usize) -> Vec<Occurrence> {
        let mut out = Vec::new();
        if ngram.is_empty() {
            return out;
        }
        for (si, s) in self.shards.iter().enumerate() {
            for k in s.find(ngram) {
                if out.len() == limit {
                    return out;
                }
                let position = s.suffix(k);
                let row = s.row_of(position) as u64;
                let (contribution_id, contributor) = self.contribution_of(si, row);
                out.push(Occurrence {
                    shard: si,
                    position: position as u64,
                    row,
                    contribution_id,
                    contributor,
                });
            }
        }
        out
    }

    /// The rows containing `span` (looking at up to `max_occurrences` occurrences), most
    /// occurrences first.
    pub fn rows_containing(&self, span: &[TokenId], max_occurrences: usize) -> Vec<RowHit> {
        let mut by_row: HashMap<(usize, u64), u64> = HashMap::new();
        for o in self.occurrences(span, max_occurrences) {
            *by_row.entry((o.shard, o.row)).or_default() += 1;
        }
        let mut hits: Vec<RowHit> = by_row
            .into_iter()
            .map(|((shard, row), count)| {
                let (contribution_id, contributor) = self.contribution_of(shard, row);
                RowHit {
                    shard,
                    row,
                    contribution_id,
                    contributor,
                    count,
                }
            })
            .collect();
        hits.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then((a.shard, a.row).cmp(&(b.shard, b.row)))
        });
        hits
    }

    /// The tokens of row `row` of shard `shard` (none for a shard or row that does not exist).
    pub fn row_tokens(&self, shard: usize, row: u64) -> Vec<TokenId> {
        let Some(s) = self.shards.get(shard) else {
            return Vec::new();
        };
        let t = s.tokens();
        s.row_range(usize::try_from(row).unwrap_or(usize::MAX))
            .filter_map(|i| t.get(i))
            .collect()
    }

    /// The tokens that follow `context` and how often, most frequent first (row ends excluded).
    pub fn next_tokens(&self, context: &[TokenId]) -> Vec<(TokenId, u64)> {
        let mut counts: BTreeMap<TokenId, u64> = BTreeMap::new();
        for s in &self.shards {
            let sep = s.meta().width.separator();
            let range = if context.is_empty() {
                0..s.len()
            } else {
                s.find(context)
            };
            let t = s.tokens();
            let d = context.len();
            let mut k = range.start;
            // Suffixes in the range are sorted by their token at depth `d`: hop from one run of
            // equal tokens to the next with a binary search each.
            while k < range.end {
                let Some(tok) = t.get(s.suffix(k) + d) else {
                    k += 1;
                    continue;
                };
                let run = s.extend(k..range.end, d, tok);
                if tok != sep {
                    *counts.entry(tok).or_default() += run.len() as u64;
                }
                k = run.end.max(k + 1);
            }
        }
        let mut out: Vec<(TokenId, u64)> = counts.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Occurrences of `ngram` that are followed by a token of the same row.
    fn continued_count(&self, ngram: &[TokenId]) -> u64 {
        self.next_tokens(ngram).iter().map(|(_, c)| c).sum()
    }

    /// The ∞-gram probability of `next` after `context`: the longest suffix of the context that
    /// occurs followed by some token decides.
    pub fn infgram_prob(&self, context: &[TokenId], next: TokenId) -> InfGram {
        // Counts shrink as the suffix grows, so binary-search the longest continued suffix.
        let (mut lo, mut hi) = (0usize, context.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.continued_count(&context[context.len() - mid..]) > 0 {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let suffix = &context[context.len() - lo..];
        let context_count = self.continued_count(suffix);
        let mut with_next = suffix.to_vec();
        with_next.push(next);
        let next_count = self.count(&with_next);
        InfGram {
            suffix_len: lo,
            context_count,
            next_count,
            prob: if context_count == 0 {
                0.0
            } else {
                next_count as f64 / context_count as f64
            },
        }
    }

    /// For every position `i` of `text`, the length of the longest `text[i..i+len]` that occurs.
    pub fn longest_matches(&self, text: &[TokenId]) -> Vec<usize> {
        (0..text.len())
            .map(|i| {
                self.shards
                    .iter()
                    .map(|s| s.longest_prefix(&text[i..]).0)
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

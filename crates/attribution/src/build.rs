//! Building a shard: rows of token ids (each with its contribution and contributor) are laid out
//! as one token array with a separator before every row, the suffix array is built with libsais
//! (u16 alphabet directly; u32 ids through its integer-alphabet variant), and four files are
//! written into the shard's directory:
//!
//! - `tokens.bin`: the token array, little-endian, 2 or 4 bytes per token;
//! - `sa.bin`: the suffix array, each pointer little-endian in the fewest bytes that hold a
//!   position (3 bytes up to 16M tokens, 4 up to 4G, …);
//! - `rows.bin`: each row's start (the position of its separator), u64 little-endian;
//! - `shard.json`: the [`ShardMeta`] — widths, counts, the contributions with their rows, and the
//!   BLAKE3 hash of each file. The shard's root is the BLAKE3 hash of this file.
//!
//! The directory is written under a temporary name and renamed into place, so a shard is either
//! whole or absent.

use crate::{
    error::{IndexError, Result},
    tokens::{TokenId, Width},
};
use alloy_primitives::{Address, B256};
use libsais::{SuffixArrayConstruction, ThreadCount};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// Name of a shard's metadata file.
pub const META_FILE: &str = "shard.json";

/// One contribution's rows in a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionRows {
    /// The contribution.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
    /// Its first row in the shard.
    pub first_row: u64,
    /// How many rows it has in the shard.
    pub rows: u64,
}

/// A shard's metadata (`shard.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Format version.
    pub format: u32,
    /// Token width.
    pub width: Width,
    /// Vocabulary size of the tokenizer the rows were tokenised with.
    pub vocab_size: u32,
    /// Tokens in `tokens.bin`, separators included.
    pub tokens: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes per suffix-array pointer.
    pub ptr_bytes: u8,
    /// Contributions, in row order.
    pub contributions: Vec<ContributionRows>,
    /// Free-form provenance (datanet, versions, tokenizer name).
    pub source: BTreeMap<String, String>,
    /// BLAKE3 of each data file, hex.
    pub files: BTreeMap<String, String>,
}

impl ShardMeta {
    /// Bytes of the shard's data files: tokens, suffix array and row offsets.
    pub fn data_bytes(&self) -> u64 {
        self.tokens * (self.width.bytes() as u64 + self.ptr_bytes as u64) + self.rows * 8
    }
}

/// A row to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowTokens {
    /// Its token ids.
    pub tokens: Vec<TokenId>,
    /// The contribution it belongs to.
    pub contribution_id: u64,
    /// Who contributed it.
    pub contributor: Address,
}

/// The fewest bytes that hold every position of an `n`-token array.
pub fn ptr_bytes_for(n: u64) -> u8 {
    let bits = 64 - n.max(1).leading_zeros();
    bits.div_ceil(8).max(1) as u8
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a shard from `rows` into `dir` (which must not exist yet). Empty rows are skipped.
/// libsais may use up to `threads` threads (it uses one below [`PARALLEL_FROM`] tokens, where
/// that is faster). Returns the shard's metadata.
pub fn build_shard(
    dir: &Path,
    rows: &[RowTokens],
    vocab_size: u32,
    source: BTreeMap<String, String>,
    threads: usize,
) -> Result<ShardMeta> {
    if dir.exists() {
        return Err(IndexError::Exists(dir.to_path_buf()));
    }
    let width = Width::for_vocab(vocab_size as usize);
    let sep = width.separator();
    let mut flat: Vec<TokenId> = Vec::with_capacity(rows.iter().map(|r| r.tokens.len() + 1).sum());
    let mut starts: Vec<u64> = Vec::with_capacity(rows.len());
    let mut contributions: Vec<ContributionRows> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.tokens.is_empty() {
            continue;
        }
        if let Some(&bad) = r.tokens.iter().find(|&&t| t >= vocab_size || t == sep) {
            return Err(IndexError::BadToken {
                row: i,
                token: bad,
                vocab_size,
            });
        }
        match contributions.last_mut() {
            Some(c) if c.contribution_id == r.contribution_id => c.rows += 1,
            _ => contributions.push(ContributionRows {
                contribution_id: r.contribution_id,
                contributor: r.contributor,
                first_row: starts.len() as u64,
                rows: 1,
            }),
        }
        starts.push(flat.len() as u64);
        flat.push(sep);
        flat.extend_from_slice(&r.tokens);
    }
    if flat.len() >= i32::MAX as usize {
        return Err(IndexError::TooLarge(flat.len()));
    }
    let n = flat.len() as u64;
    let sa = suffix_array(&flat, width, threads)?;
    let ptr_bytes = ptr_bytes_for(n);

    let tmp = tmp_dir(dir);
    fs::create_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
    let mut files = BTreeMap::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = tmp.join(name);
        let mut f = fs::File::create(&path).map_err(|e| IndexError::io(&path, e))?;
        f.write_all(bytes).map_err(|e| IndexError::io(&path, e))?;
        f.sync_all().map_err(|e| IndexError::io(&path, e))?;
        files.insert(name.to_string(), hex(blake3::hash(bytes).as_bytes()));
        Ok(())
    };
    let token_bytes: Vec<u8> = match width {
        Width::U16 => flat
            .iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect(),
        Width::U32 => flat.iter().flat_map(|&t| t.to_le_bytes()).collect(),
    };
    write("tokens.bin", &token_bytes)?;
    drop(token_bytes);
    let mut sa_bytes = Vec::with_capacity(sa.len() * ptr_bytes as usize);
    for &p in &sa {
        sa_bytes.extend_from_slice(&(p as u64).to_le_bytes()[..ptr_bytes as usize]);
    }
    write("sa.bin", &sa_bytes)?;
    drop(sa_bytes);
    let row_bytes: Vec<u8> = starts.iter().flat_map(|s| s.to_le_bytes()).collect();
    write("rows.bin", &row_bytes)?;
    let meta = ShardMeta {
        format: 1,
        width,
        vocab_size,
        tokens: n,
        rows: starts.len() as u64,
        ptr_bytes,
        contributions,
        source,
        files,
    };
    let json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
    let path = tmp.join(META_FILE);
    fs::write(&path, &json).map_err(|e| IndexError::io(&path, e))?;
    fs::rename(&tmp, dir).map_err(|e| IndexError::io(dir, e))?;
    Ok(meta)
}

fn tmp_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shard".into());
    dir.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Below this many tokens libsais runs on one thread: measured on 2 cores, its OpenMP variant
/// is slower than one thread at 10M tokens (0.43 s against 0.35 s).
pub const PARALLEL_FROM: usize = 64 << 20;

/// The suffix array of `flat` (libsais; up to `threads` threads for large shards).
fn suffix_array(flat: &[TokenId], width: Width, threads: usize) -> Result<Vec<i32>> {
    let fail = |e: libsais::LibsaisError| IndexError::Build(format!("{e:?}"));
    let threads = if flat.len() >= PARALLEL_FROM && threads > 1 {
        ThreadCount::fixed(threads.min(u16::MAX as usize) as u16)
    } else {
        ThreadCount::fixed(1)
    };
    Ok(match width {
        Width::U16 => {
            let text: Vec<u16> = flat.iter().map(|&t| t as u16).collect();
            SuffixArrayConstruction::for_text(&text)
                .in_owned_buffer32()
                .multi_threaded(threads)
                .run()
                .map_err(fail)?
                .into_vec()
        }
        Width::U32 => {
            // The separator sorts after every id, as u32::MAX does in the stored array.
            let sep = Width::U32.separator();
            let max = flat
                .iter()
                .filter(|&&t| t != sep)
                .max()
                .copied()
                .unwrap_or(0);
            let mut text: Vec<i32> = flat
                .iter()
                .map(|&t| if t == sep { max as i32 + 1 } else { t as i32 })
                .collect();
            SuffixArrayConstruction::for_text_mut(&mut text)
                .in_owned_buffer32()
                .multi_threaded(threads)
                .run()
                .map_err(fail)?
                .into_vec()
        }
    })
}

/// The root of a shard: BLAKE3 of its `shard.json`.
pub fn shard_root(dir: &Path) -> Result<B256> {
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(|e| IndexError::io(&path, e))?;
    Ok(B256::from(*blake3::hash(&bytes).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_width_is_the_fewest_bytes() {
        assert_eq!(ptr_bytes_for(0), 1);
        assert_eq!(ptr_bytes_for(255), 1);
        assert_eq!(ptr_bytes_for(256), 2);
        assert_eq!(ptr_bytes_for(10_000_000), 3);
        assert_eq!(ptr_bytes_for(1 << 24), 4);
    }
}

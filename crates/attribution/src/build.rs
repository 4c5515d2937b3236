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
    io::{Read, Write},
    path::{Path, PathBuf},
};

/// Name of a shard's metadata file.
pub const META_FILE: &str = "shard.json";

/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// A shard's data files, each hashed in its `shard.json`.
pub const DATA_FILES: [&str; 3] = ["tokens.bin", "sa.bin", "rows.bin"];

/// The most tokens one shard holds, separators included: libsais addresses positions as i32.
pub const MAX_SHARD_TOKENS: u64 = i32::MAX as u64 - 1;

/// Largest `shard.json` read or written, in bytes. Its size grows with the contributions a
/// shard holds (about 150 bytes each), so this leaves room for hundreds of thousands, and a
/// crafted file cannot make the reader allocate without bound.
pub const MAX_META_BYTES: u64 = 64 << 20;

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
    /// Bytes of the shard's data files: tokens, suffix array and row offsets (saturating: a
    /// checked shard's sizes never come near).
    pub fn data_bytes(&self) -> u64 {
        self.tokens
            .saturating_mul(self.width.bytes() as u64 + self.ptr_bytes as u64)
            .saturating_add(self.rows.saturating_mul(8))
    }

    /// The size each data file must have, in [`DATA_FILES`] order, computed with checked
    /// arithmetic.
    pub fn file_sizes(&self) -> Result<[u64; 3], String> {
        let size = |count: u64, width: u64, what: &str| {
            count.checked_mul(width).ok_or_else(|| {
                format!(
                    "{what} {count} × {width} bytes overflows: the metadata is crafted or corrupt"
                )
            })
        };
        Ok([
            size(self.tokens, self.width.bytes() as u64, "tokens")?,
            size(self.tokens, self.ptr_bytes as u64, "tokens")?,
            size(self.rows, 8, "rows")?,
        ])
    }

    /// Checks every field against the layout, before any file is read by it: the format, the
    /// token width for the vocabulary, the counts and their limits, the pointer width, the file
    /// hashes listed, and the contributions covering every row exactly once, in order. The
    /// reason says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not one this build reads (it reads format {FORMAT})",
                self.format
            ));
        }
        let width = Width::for_vocab(self.vocab_size as usize);
        if self.width != width {
            return Err(format!(
                "width {:?} does not fit the vocabulary of {} ids (it takes {width:?})",
                self.width, self.vocab_size
            ));
        }
        if self.tokens > MAX_SHARD_TOKENS {
            return Err(format!(
                "tokens {} is over the {MAX_SHARD_TOKENS} one shard may hold",
                self.tokens
            ));
        }
        // Every row is a separator and at least one token.
        if self.rows > self.tokens / 2 || (self.rows == 0) != (self.tokens == 0) {
            return Err(format!(
                "rows {} cannot lay out as {} tokens (each row is a separator and at least one token)",
                self.rows, self.tokens
            ));
        }
        if !(1..=8).contains(&self.ptr_bytes) {
            return Err(format!(
                "ptr_bytes {} is outside the 1..=8 bytes a suffix-array pointer may take",
                self.ptr_bytes
            ));
        }
        let ptr = ptr_bytes_for(self.tokens);
        if self.ptr_bytes != ptr {
            return Err(format!(
                "ptr_bytes {} is not the {ptr} bytes the layout uses for {} tokens",
                self.ptr_bytes, self.tokens
            ));
        }
        self.file_sizes()?;
        for name in self.files.keys() {
            if !DATA_FILES.contains(&name.as_str()) {
                return Err(format!(
                    "files lists {name:?}, which is not a data file of a shard ({})",
                    DATA_FILES.join(", ")
                ));
            }
        }
        for name in DATA_FILES {
            match self.files.get(name) {
                None => return Err(format!("files has no BLAKE3 hash for {name}")),
                Some(h) if parse_hash(h).is_none() => {
                    return Err(format!(
                        "files gives {name} the hash {h:?}, not 64 hex digits"
                    ))
                }
                Some(_) => {}
            }
        }
        let mut next = 0u64;
        for (i, c) in self.contributions.iter().enumerate() {
            if c.first_row != next || c.rows == 0 {
                return Err(format!(
                    "contribution {i} (id {}) starts at row {} with {} rows; contributions must cover the rows in order, each at least one, and the next row is {next}",
                    c.contribution_id, c.first_row, c.rows
                ));
            }
            next = match next.checked_add(c.rows) {
                Some(n) if n <= self.rows => n,
                _ => {
                    return Err(format!(
                        "contribution {i} (id {}) starts at row {} with {} rows, past the shard's {} rows",
                        c.contribution_id, c.first_row, c.rows, self.rows
                    ))
                }
            };
        }
        if next != self.rows {
            return Err(format!(
                "the contributions cover {next} of the shard's {} rows; every row must belong to one contribution",
                self.rows
            ));
        }
        Ok(())
    }
}

/// A BLAKE3 hash written as 64 hex digits.
pub(crate) fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *o = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
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
    if flat.len() as u64 > MAX_SHARD_TOKENS {
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
        format: FORMAT,
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
    if json.len() as u64 > MAX_META_BYTES {
        let _ = fs::remove_dir_all(&tmp);
        return Err(IndexError::Build(format!(
            "the shard's {} would be {} bytes, over the {MAX_META_BYTES} bytes it may have (its {} contributions take the room); build it from fewer contributions at a time",
            META_FILE,
            json.len(),
            meta.contributions.len()
        )));
    }
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
    let file = fs::File::open(&path).map_err(|e| IndexError::io(&path, e))?;
    let bytes = read_capped(&path, file, MAX_META_BYTES)?;
    Ok(B256::from(*blake3::hash(&bytes).as_bytes()))
}

/// Reads the metadata file `file` (at `path`) whole, refusing it before reading when it is
/// larger than `max` bytes (and never reading more than `max + 1`, should it grow meanwhile).
pub(crate) fn read_capped(path: &Path, file: fs::File, max: u64) -> Result<Vec<u8>> {
    let too_big = |len: u64| {
        IndexError::Corrupt(format!(
            "{} has {len} bytes or more, over the {max} bytes such a file may have",
            path.display()
        ))
    };
    let len = file.metadata().map_err(|e| IndexError::io(path, e))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| IndexError::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sizes_that_overflow_are_refused() {
        let meta = |tokens: u64, rows: u64, ptr_bytes: u8| ShardMeta {
            format: FORMAT,
            width: Width::U32,
            vocab_size: 100_000,
            tokens,
            rows,
            ptr_bytes,
            contributions: vec![],
            source: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        assert_eq!(meta(10, 2, 1).file_sizes().unwrap(), [40, 10, 16]);
        for m in [
            meta(u64::MAX / 3, 0, 1),
            meta(u64::MAX / 4 + 1, 0, 1),
            meta(1, u64::MAX / 8 + 1, 1),
            meta(u64::MAX / 8 + 1, 0, 8),
        ] {
            let err = m.file_sizes().unwrap_err();
            assert!(err.contains("overflows"), "{err}");
            assert!(m.validate().is_err());
        }
        assert_eq!(meta(u64::MAX, u64::MAX, 8).data_bytes(), u64::MAX);
    }

    #[test]
    fn pointer_width_is_the_fewest_bytes() {
        assert_eq!(ptr_bytes_for(0), 1);
        assert_eq!(ptr_bytes_for(255), 1);
        assert_eq!(ptr_bytes_for(256), 2);
        assert_eq!(ptr_bytes_for(10_000_000), 3);
        assert_eq!(ptr_bytes_for(1 << 24), 4);
    }
}

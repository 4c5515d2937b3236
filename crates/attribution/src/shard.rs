//! A shard opened for queries. A shard on disk is untrusted input: before a query reads it,
//! [`Shard::open`] checks every field of its `shard.json` against the layout
//! ([`ShardMeta::validate`]), maps each data file only if it lies inside the shard's directory
//! (no absolute path, `..` or symlink leads out) and has the size the metadata computes, checks
//! the BLAKE3 hash `shard.json` records for it, and checks what the queries rely on in the
//! contents: row offsets in order and on separators, tokens in the vocabulary, suffix-array
//! pointers inside the token array. A shard that fails any check is refused with the file and the
//! reason; queries on an opened shard never index outside its arrays.
//!
//! The shard's root is the BLAKE3 hash of the very `shard.json` bytes that were checked, and
//! that file records the hash of every data file, so a shard that opens is exactly the one its
//! root names. Hashing reads every byte once (BLAKE3 runs at GB/s, the same order as the read).
//!
//! The searches: the range of suffixes starting with a query is found by binary search; extending
//! a match one token at a time narrows that range by two more binary searches on the token at
//! the new depth, so the longest match at a position costs O(length × log N).

use crate::{
    build::{parse_hash, read_capped, ShardMeta, DATA_FILES, MAX_META_BYTES, META_FILE},
    error::{IndexError, Result},
    tokens::{TokenId, Tokens, Width},
};
use alloy_primitives::B256;
use memmap2::Mmap;
use std::{
    cmp::Ordering,
    fs,
    ops::Range,
    path::{Path, PathBuf},
};

/// A shard ready for queries.
pub struct Shard {
    meta: ShardMeta,
    root: B256,
    tokens: Mmap,
    sa: Mmap,
    rows: Mmap,
}

/// `path` made canonical, refused unless it lies inside `within` (itself canonical): what an
/// absolute path, a `..` or a symlink would lead out of the index to is never read.
pub(crate) fn inside(path: &Path, within: &Path) -> Result<PathBuf> {
    let real = fs::canonicalize(path).map_err(|e| IndexError::io(path, e))?;
    if !real.starts_with(within) {
        return Err(IndexError::Corrupt(format!(
            "{} leads to {}, outside {}: an index directory must hold all of its files",
            path.display(),
            real.display(),
            within.display()
        )));
    }
    Ok(real)
}

/// Opens `name` in `dir` (canonical), a regular file inside `dir`.
fn open_file(dir: &Path, name: &str) -> Result<(PathBuf, fs::File)> {
    let path = inside(&dir.join(name), dir)?;
    let file = fs::File::open(&path).map_err(|e| IndexError::io(&path, e))?;
    let md = file.metadata().map_err(|e| IndexError::io(&path, e))?;
    if !md.is_file() {
        return Err(IndexError::Corrupt(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok((path, file))
}

/// Maps data file `name` of the shard in `dir`, checking its size and its BLAKE3 hash against
/// the (validated) metadata.
fn map(dir: &Path, name: &str, expect: u64, hash: &str) -> Result<Mmap> {
    let (path, file) = open_file(dir, name)?;
    let len = file.metadata().map_err(|e| IndexError::io(&path, e))?.len();
    if len != expect {
        return Err(IndexError::Corrupt(format!(
            "{} has {len} bytes, its shard.json says {expect}",
            path.display()
        )));
    }
    if usize::try_from(len).is_err() {
        return Err(IndexError::Corrupt(format!(
            "{} has {len} bytes, more than this machine can map",
            path.display()
        )));
    }
    // SAFETY: the map is read-only, and Rust needs the mapped bytes not to change while they are
    // borrowed. Shard files are written once, into a temporary directory renamed into place,
    // and never modified afterwards (a new version is a new shard); another process writing or
    // truncating a file while it is mapped breaks that, which no mapping can prevent. The
    // length was just checked against the metadata, the bytes are hashed below, and no access
    // depends on the contents for memory safety: every read is bounds-checked slice indexing.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| IndexError::io(&path, e))?;
    if map.len() as u64 != expect {
        return Err(IndexError::Corrupt(format!(
            "{} changed size while it was opened",
            path.display()
        )));
    }
    let want = parse_hash(hash).ok_or_else(|| {
        IndexError::Corrupt(format!(
            "the shard.json of {} gives it the hash {hash:?}, not 64 hex digits",
            path.display()
        ))
    })?;
    let got = blake3::hash(&map);
    if got.as_bytes() != &want {
        return Err(IndexError::Corrupt(format!(
            "{} does not match the BLAKE3 hash its shard.json records ({hash}; the file hashes to {}): it was changed after the index was built",
            path.display(),
            got.to_hex()
        )));
    }
    Ok(map)
}

impl Shard {
    /// Opens the shard in `dir`, refusing it (with the file and the reason) unless every check
    /// in the module documentation passes.
    pub fn open(dir: &Path) -> Result<Shard> {
        let dir = fs::canonicalize(dir).map_err(|e| IndexError::io(dir, e))?;
        let (path, file) = open_file(&dir, META_FILE)?;
        let bytes = read_capped(&path, file, MAX_META_BYTES)?;
        let root = B256::from(*blake3::hash(&bytes).as_bytes());
        let corrupt = |why: String| IndexError::Corrupt(format!("{}: {why}", path.display()));
        let meta: ShardMeta = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        meta.validate().map_err(corrupt)?;
        let sizes = meta.file_sizes().map_err(corrupt)?;
        // The files are hashed side by side: the suffix array is the largest, about two thirds.
        let [tokens, sa, rows] = std::thread::scope(|scope| {
            let (dir, meta) = (&dir, &meta);
            [0, 1, 2]
                .map(|i| {
                    let name = DATA_FILES[i];
                    scope.spawn(move || map(dir, name, sizes[i], &meta.files[name]))
                })
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let shard = Shard {
            tokens: tokens?,
            sa: sa?,
            rows: rows?,
            meta,
            root,
        };
        shard.check_contents(&dir)?;
        Ok(shard)
    }

    /// The contents the queries rely on: rows.bin lists every separator in order (the first at
    /// 0, each row at least one token), every token is in the vocabulary, every suffix-array
    /// pointer is inside the token array.
    fn check_contents(&self, dir: &Path) -> Result<()> {
        let bad = |name: &str, why: String| {
            IndexError::Corrupt(format!("{}: {why}", dir.join(name).display()))
        };
        let n = self.meta.tokens;
        let sep = self.meta.width.separator();
        let tokens = self.tokens();
        if tokens.len() as u64 != n {
            return Err(bad(
                "tokens.bin",
                "its map is not aligned to its token width".into(),
            ));
        }
        let vocab = self.meta.vocab_size;
        // Counted without early exits so the loops vectorise; the first bad token is looked up
        // only when there is one.
        fn scan<T: Copy + Into<TokenId>>(ids: &[T], sep: TokenId, vocab: TokenId) -> (u64, u64) {
            ids.iter().fold((0, 0), |(seps, bad), &t| {
                let t: TokenId = t.into();
                (
                    seps + u64::from(t == sep),
                    bad + u64::from(t != sep && t >= vocab),
                )
            })
        }
        let (separators, outside) = match tokens {
            Tokens::U16(t) => scan(t, sep, vocab),
            Tokens::U32(t) => scan(t, sep, vocab),
        };
        if outside > 0 {
            let (i, t) = (0..tokens.len())
                .filter_map(|i| Some((i, tokens.get(i)?)))
                .find(|&(_, t)| t != sep && t >= vocab)
                .unwrap_or_default();
            return Err(bad(
                "tokens.bin",
                format!("token {t} at position {i} is outside the vocabulary of {vocab} ids"),
            ));
        }
        if separators != self.meta.rows {
            return Err(bad(
                "tokens.bin",
                format!(
                    "holds {separators} row separators, shard.json says {} rows",
                    self.meta.rows
                ),
            ));
        }
        let mut prev: Option<u64> = None;
        for r in 0..self.meta.rows as usize {
            let start = self.row_start(r);
            let ok = match prev {
                None => start == 0,
                Some(p) => start >= p.saturating_add(2),
            } && start < n.saturating_sub(1)
                && tokens.get(start as usize) == Some(sep);
            if !ok {
                return Err(bad(
                    "rows.bin",
                    format!(
                        "row {r} starts at {start}; rows must start at the separators of the {n} tokens, in order from 0, each row at least one token"
                    ),
                ));
            }
            prev = Some(start);
        }
        fn max_pointer<const W: usize>(sa: &[u8]) -> u64 {
            sa.chunks_exact(W).fold(0, |m, p| {
                let mut b = [0u8; 8];
                b[..W].copy_from_slice(p);
                m.max(u64::from_le_bytes(b))
            })
        }
        let max = match self.meta.ptr_bytes {
            1 => max_pointer::<1>(&self.sa),
            2 => max_pointer::<2>(&self.sa),
            3 => max_pointer::<3>(&self.sa),
            4 => max_pointer::<4>(&self.sa),
            5 => max_pointer::<5>(&self.sa),
            6 => max_pointer::<6>(&self.sa),
            7 => max_pointer::<7>(&self.sa),
            _ => max_pointer::<8>(&self.sa),
        };
        if n > 0 && max >= n {
            let k = (0..n as usize)
                .find(|&k| self.suffix(k) as u64 >= n)
                .unwrap_or_default();
            return Err(bad(
                "sa.bin",
                format!("pointer {k} is {}, past the {n} tokens", self.suffix(k)),
            ));
        }
        Ok(())
    }

    /// The shard's root: BLAKE3 of the `shard.json` it was opened from.
    pub fn root(&self) -> B256 {
        self.root
    }

    /// Its metadata.
    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }

    /// The token array.
    pub fn tokens(&self) -> Tokens<'_> {
        match self.meta.width {
            Width::U16 => {
                // SAFETY: u16 has no invalid bit patterns and `align_to` only yields a correctly
                // aligned middle; the file is little-endian like every supported target. The map
                // is page-aligned, so nothing falls outside the middle: `open` refused the shard
                // unless the middle holds exactly `tokens` ids.
                let (_, mid, _) = unsafe { self.tokens.align_to::<u16>() };
                Tokens::U16(mid)
            }
            Width::U32 => {
                // SAFETY: as above, for 4-byte ids.
                let (_, mid, _) = unsafe { self.tokens.align_to::<u32>() };
                Tokens::U32(mid)
            }
        }
    }

    /// Number of tokens (separators included).
    pub fn len(&self) -> usize {
        self.meta.tokens as usize
    }

    /// Whether the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.meta.tokens == 0
    }

    /// The position the `k`-th smallest suffix starts at (`k < len()`).
    #[inline]
    pub fn suffix(&self, k: usize) -> usize {
        let w = self.meta.ptr_bytes as usize;
        let mut b = [0u8; 8];
        b[..w].copy_from_slice(&self.sa[k * w..k * w + w]);
        u64::from_le_bytes(b) as usize
    }

    /// Start position of row `r` (its separator).
    pub fn row_start(&self, r: usize) -> u64 {
        u64::from_le_bytes(self.rows[r * 8..r * 8 + 8].try_into().expect("8 bytes"))
    }

    /// The row holding position `pos`.
    pub fn row_of(&self, pos: usize) -> usize {
        let (mut lo, mut hi) = (0usize, self.meta.rows as usize);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.row_start(mid) as usize <= pos {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The token range of row `r`, without its separator (empty past the last row).
    pub fn row_range(&self, r: usize) -> Range<usize> {
        if r >= self.meta.rows as usize {
            return 0..0;
        }
        let start = self.row_start(r) as usize + 1;
        let end = if r + 1 < self.meta.rows as usize {
            self.row_start(r + 1) as usize
        } else {
            self.len()
        };
        start..end
    }

    /// Compares the suffix at `pos` with `query` on the query's length: `Equal` when the suffix
    /// starts with the query; a suffix that ends first is smaller.
    fn cmp_suffix(&self, tokens: &Tokens<'_>, pos: usize, query: &[TokenId]) -> Ordering {
        for (i, &q) in query.iter().enumerate() {
            match tokens.get(pos + i) {
                None => return Ordering::Less,
                Some(t) if t != q => return t.cmp(&q),
                _ => {}
            }
        }
        Ordering::Equal
    }

    /// The suffix-array range of suffixes starting with `query` (empty when none; the whole
    /// array for the empty query).
    pub fn find(&self, query: &[TokenId]) -> Range<usize> {
        let tokens = self.tokens();
        let n = self.len();
        let lower = partition(0, n, |k| {
            self.cmp_suffix(&tokens, self.suffix(k), query) == Ordering::Less
        });
        let upper = partition(lower, n, |k| {
            self.cmp_suffix(&tokens, self.suffix(k), query) != Ordering::Greater
        });
        lower..upper
    }

    /// Narrows `range` (suffixes sharing a prefix of length `depth`) to those whose token at
    /// `depth` is `next`.
    pub fn extend(&self, range: Range<usize>, depth: usize, next: TokenId) -> Range<usize> {
        let tokens = self.tokens();
        let at = |k: usize| tokens.get(self.suffix(k) + depth);
        // Within the range, suffixes that end at `depth` come first, then by token.
        let lower = partition(range.start, range.end, |k| match at(k) {
            None => true,
            Some(t) => t < next,
        });
        let upper = partition(lower, range.end, |k| at(k) == Some(next));
        lower..upper
    }

    /// The length of the longest prefix of `text` that occurs in the shard, and its range.
    pub fn longest_prefix(&self, text: &[TokenId]) -> (usize, Range<usize>) {
        let sep = self.meta.width.separator();
        let mut range = 0..self.len();
        let mut len = 0;
        for &t in text {
            if t == sep {
                break;
            }
            let next = self.extend(range.clone(), len, t);
            if next.is_empty() {
                break;
            }
            range = next;
            len += 1;
        }
        (len, range)
    }
}

/// The first index in `lo..hi` where `pred` turns false (`pred` is true, then false).
fn partition(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

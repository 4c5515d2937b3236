//! A shard opened for queries: its files memory-mapped (nothing is read up front), checked
//! against the sizes its metadata promises, and the suffix-array searches every query is built
//! from. The range of suffixes starting with a query is found by binary search; extending a match
//! one token at a time narrows that range by two more binary searches on the token at the new
//! depth, so the longest match at a position costs O(length × log N).

use crate::{
    build::{ShardMeta, META_FILE},
    error::{IndexError, Result},
    tokens::{TokenId, Tokens, Width},
};
use memmap2::Mmap;
use std::{cmp::Ordering, fs, ops::Range, path::Path};

/// A shard ready for queries.
pub struct Shard {
    meta: ShardMeta,
    tokens: Mmap,
    sa: Mmap,
    rows: Mmap,
}

fn map(dir: &Path, name: &str, expect: u64) -> Result<Mmap> {
    let path = dir.join(name);
    let file = fs::File::open(&path).map_err(|e| IndexError::io(&path, e))?;
    let len = file.metadata().map_err(|e| IndexError::io(&path, e))?.len();
    if len != expect {
        return Err(IndexError::Corrupt(format!(
            "{} has {len} bytes, its shard.json says {expect}",
            path.display()
        )));
    }
    // SAFETY: shard files are written once and never modified in place (a new version is a new
    // shard); the map is read-only.
    unsafe { Mmap::map(&file) }.map_err(|e| IndexError::io(&path, e))
}

impl Shard {
    /// Opens the shard in `dir`.
    pub fn open(dir: &Path) -> Result<Shard> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| IndexError::io(&path, e))?;
        let meta: ShardMeta = serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::Corrupt(format!("{}: {e}", path.display())))?;
        let n = meta.tokens;
        Ok(Shard {
            tokens: map(dir, "tokens.bin", n * meta.width.bytes() as u64)?,
            sa: map(dir, "sa.bin", n * meta.ptr_bytes as u64)?,
            rows: map(dir, "rows.bin", meta.rows * 8)?,
            meta,
        })
    }

    /// Its metadata.
    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }

    /// The token array.
    pub fn tokens(&self) -> Tokens<'_> {
        match self.meta.width {
            Width::U16 => {
                // SAFETY: a page-aligned map of a file whose length is a multiple of 2; u16 has no
                // invalid bit patterns; the file is little-endian like every supported target.
                let (pre, mid, _) = unsafe { self.tokens.align_to::<u16>() };
                debug_assert!(pre.is_empty());
                Tokens::U16(mid)
            }
            Width::U32 => {
                // SAFETY: as above, for 4-byte ids.
                let (pre, mid, _) = unsafe { self.tokens.align_to::<u32>() };
                debug_assert!(pre.is_empty());
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

    /// The position the `k`-th smallest suffix starts at.
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

    /// The token range of row `r`, without its separator.
    pub fn row_range(&self, r: usize) -> Range<usize> {
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

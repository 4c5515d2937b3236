//! Splitting a batch of rows into shards and building them side by side.
//!
//! A batch (e.g. the rows a datanet version added) becomes one shard unless it is over
//! [`BuildOptions::max_shard_tokens`], or big enough that building it as one part per core is
//! faster: libsais's OpenMP path only pays off on large inputs with many cores, while one
//! single-threaded libsais per core scales with the cores at any size. Parts are contiguous runs
//! of whole rows of about equal size, so rows never span shards and queries over the parts equal
//! queries over the whole.

use crate::{
    build::{build_shard, RowTokens, ShardMeta, PARALLEL_FROM},
    error::{IndexError, Result},
};
use std::{
    collections::BTreeMap,
    ops::Range,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// How rows are split into shards and built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// The most tokens (separators included) one shard holds. At most 2^31 − 1, libsais's limit.
    pub max_shard_tokens: u64,
    /// Shards built at once, each on one thread (default: the available cores).
    pub threads: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            max_shard_tokens: 1 << 30,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A batch is split for the cores only when every part gets at least this many tokens: smaller
/// parts cost more in per-shard query work than they save in build time.
pub const MIN_PARALLEL_PART: u64 = 4 << 20;

/// The contiguous row ranges the batch is built as (never empty; one range for an empty batch).
pub fn plan(rows: &[RowTokens], opts: &BuildOptions) -> Result<Vec<Range<usize>>> {
    let max = opts.max_shard_tokens.clamp(2, i32::MAX as u64 - 1);
    let sizes: Vec<u64> = rows
        .iter()
        .map(|r| match r.tokens.len() {
            0 => 0,
            n => n as u64 + 1,
        })
        .collect();
    if let Some((row, &tokens)) = sizes.iter().enumerate().find(|(_, &s)| s > max) {
        return Err(IndexError::RowTooLarge { row, tokens, max });
    }
    let total: u64 = sizes.iter().sum();
    let mut parts = total.div_ceil(max).max(1);
    if opts.threads > 1 && total < PARALLEL_FROM as u64 {
        parts = parts.max((total / MIN_PARALLEL_PART).min(opts.threads as u64));
    }
    let target = total.div_ceil(parts).max(1);
    let mut ranges = Vec::new();
    let (mut start, mut filled) = (0usize, 0u64);
    for (i, &s) in sizes.iter().enumerate() {
        if filled > 0 && (filled + s > max || filled + s / 2 > target) {
            ranges.push(start..i);
            start = i;
            filled = 0;
        }
        filled += s;
    }
    ranges.push(start..rows.len());
    Ok(ranges)
}

/// Builds `rows` split by [`plan`] into the directories `dirs(k)` (k = 0, 1, …), up to
/// `opts.threads` at once. On any failure the shards already built are removed and the first
/// error is returned, so a batch is added whole or not at all.
pub fn build_parts(
    rows: &[RowTokens],
    vocab_size: u32,
    source: &BTreeMap<String, String>,
    opts: &BuildOptions,
    dirs: impl Fn(usize) -> PathBuf + Sync,
) -> Result<Vec<(PathBuf, ShardMeta)>> {
    let ranges = plan(rows, opts)?;
    let parts = ranges.len();
    // One part may use libsais's own threads; several parts run one thread each.
    let sa_threads = if parts == 1 { opts.threads.max(1) } else { 1 };
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<ShardMeta>>>> =
        Mutex::new((0..parts).map(|_| None).collect());
    let work = || loop {
        let k = {
            let mut n = next.lock().expect("part counter");
            let k = *n;
            *n += 1;
            k
        };
        if k >= parts {
            return;
        }
        let mut src = source.clone();
        if parts > 1 {
            src.insert("part".into(), format!("{}/{parts}", k + 1));
        }
        let first = ranges[k].start;
        let r = build_shard(
            &dirs(k),
            &rows[ranges[k].clone()],
            vocab_size,
            src,
            sa_threads,
        )
        .map_err(|e| match e {
            // Row numbers in errors count from the batch's first row, not the part's.
            IndexError::BadToken {
                row,
                token,
                vocab_size,
            } => IndexError::BadToken {
                row: first + row,
                token,
                vocab_size,
            },
            e => e,
        });
        results.lock().expect("part results")[k] = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 1..opts.threads.clamp(1, parts) {
            s.spawn(work);
        }
        work();
    });
    let results = results.into_inner().expect("part results");
    let mut built = Vec::with_capacity(parts);
    let mut first_err = None;
    for (k, r) in results.into_iter().enumerate() {
        match r.expect("every part ran") {
            Ok(meta) => built.push((dirs(k), meta)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for (dir, _) in &built {
            remove_quietly(dir);
        }
        return Err(e);
    }
    Ok(built)
}

/// Removes a shard built for a batch that failed; what cannot be removed is left (it is not in
/// the manifest, so it is never read).
pub(crate) fn remove_quietly(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    fn rows(lens: &[usize]) -> Vec<RowTokens> {
        lens.iter()
            .map(|&n| RowTokens {
                tokens: vec![1; n],
                contribution_id: 1,
                contributor: Address::ZERO,
            })
            .collect()
    }

    fn opts(max: u64, threads: usize) -> BuildOptions {
        BuildOptions {
            max_shard_tokens: max,
            threads,
        }
    }

    #[test]
    fn small_batches_stay_one_shard() {
        assert_eq!(
            plan(&rows(&[3, 4, 5]), &opts(1 << 30, 8)).unwrap(),
            vec![0..3]
        );
        assert_eq!(plan(&[], &opts(1 << 30, 8)).unwrap(), vec![0..0]);
    }

    #[test]
    fn parts_respect_the_maximum_and_cover_every_row_once() {
        let r = rows(&[9, 9, 9, 9, 9, 0, 9]);
        let ranges = plan(&r, &opts(25, 1)).unwrap();
        assert_eq!(ranges, vec![0..2, 2..4, 4..7]);
        for range in &ranges {
            let t: usize = r[range.clone()]
                .iter()
                .map(|x| x.tokens.len() + usize::from(!x.tokens.is_empty()))
                .sum();
            assert!(t <= 25);
        }
    }

    #[test]
    fn a_row_over_the_maximum_is_refused() {
        assert!(matches!(
            plan(&rows(&[3, 40]), &opts(25, 1)),
            Err(IndexError::RowTooLarge {
                row: 1,
                tokens: 41,
                max: 25
            })
        ));
    }

    #[test]
    fn large_batches_split_for_the_cores() {
        let r = rows(&vec![999; 10_000]);
        let ranges = plan(&r, &opts(1 << 30, 2)).unwrap();
        assert_eq!(ranges, vec![0..5000, 5000..10_000]);
        // Too small to be worth splitting on 2 cores.
        let r = rows(&vec![999; 3000]);
        assert_eq!(plan(&r, &opts(1 << 30, 2)).unwrap().len(), 1);
    }
}

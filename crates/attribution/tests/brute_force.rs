//! Every query against a brute-force scan of the rows, on random corpora (small alphabets, so
//! n-grams repeat): counts, occurrence positions, rows containing a span, next-token
//! distributions, ∞-gram probabilities and longest matches; for u16 and u32 token widths; and an
//! index grown shard by shard (one per datanet version) answers exactly as one built at once.

use alloy_primitives::Address;
use openledger_attribution::{BuildOptions, Index, RowTokens, TokenId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn rows_of(raw: &[Vec<TokenId>]) -> Vec<RowTokens> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| RowTokens {
            tokens: t.clone(),
            // Three rows per contribution.
            contribution_id: 1 + i as u64 / 3,
            contributor: Address::repeat_byte(1 + (i / 3) as u8),
        })
        .collect()
}

fn brute_count(rows: &[Vec<TokenId>], q: &[TokenId]) -> u64 {
    if q.is_empty() {
        return 0;
    }
    rows.iter()
        .map(|r| r.windows(q.len()).filter(|w| *w == q).count() as u64)
        .sum()
}

fn brute_longest(rows: &[Vec<TokenId>], text: &[TokenId]) -> Vec<usize> {
    (0..text.len())
        .map(|i| {
            (0..=text.len() - i)
                .rev()
                .find(|&l| l == 0 || brute_count(rows, &text[i..i + l]) > 0)
                .unwrap_or(0)
        })
        .collect()
}

fn brute_next(rows: &[Vec<TokenId>], ctx: &[TokenId]) -> BTreeMap<TokenId, u64> {
    let mut m = BTreeMap::new();
    for r in rows {
        for i in 0..r.len() {
            if r[i..].starts_with(ctx) && i + ctx.len() < r.len() {
                *m.entry(r[i + ctx.len()]).or_default() += 1;
            }
        }
    }
    m
}

fn corpus(alphabet: Vec<TokenId>) -> impl Strategy<Value = Vec<Vec<TokenId>>> {
    let n = alphabet.len();
    proptest::collection::vec(
        proptest::collection::vec((0..n).prop_map(move |i| alphabet[i]), 0..40),
        1..12,
    )
}

fn check_all(index: &Index, rows: &[Vec<TokenId>], queries: &[Vec<TokenId>]) {
    let contributions: Vec<u64> = rows_of(rows).iter().map(|r| r.contribution_id).collect();
    for q in queries {
        assert_eq!(index.count(q), brute_count(rows, q), "count of {q:?}");
        // Occurrences land on rows that really hold the n-gram there, each once.
        let occ = index.occurrences(q, usize::MAX);
        assert_eq!(occ.len() as u64, brute_count(rows, q));
        let hits = index.rows_containing(q, usize::MAX);
        let mut expected: BTreeSet<u64> = BTreeSet::new();
        for (i, r) in rows.iter().enumerate() {
            if !q.is_empty() && r.windows(q.len()).any(|w| w == &q[..]) {
                expected.insert(contributions[i]);
            }
        }
        let got: BTreeSet<u64> = hits.iter().map(|h| h.contribution_id).collect();
        assert_eq!(got, expected, "contributions holding {q:?}");
        for h in &hits {
            let toks = index.row_tokens(h.shard, h.row);
            assert_eq!(
                toks.windows(q.len()).filter(|w| *w == &q[..]).count() as u64,
                h.count
            );
        }
        let next: BTreeMap<TokenId, u64> = index.next_tokens(q).into_iter().collect();
        if !q.is_empty() {
            assert_eq!(next, brute_next(rows, q), "next tokens after {q:?}");
        }
        if let Some((&last, ctx)) = q.split_last() {
            let p = index.infgram_prob(ctx, last);
            // The longest suffix of the context that is continued somewhere.
            let l = (0..=ctx.len())
                .rev()
                .find(|&l| {
                    brute_next(rows, &ctx[ctx.len() - l..])
                        .values()
                        .sum::<u64>()
                        > 0
                })
                .unwrap_or(0);
            assert_eq!(p.suffix_len, l, "∞-gram suffix for {q:?}");
            let dist = brute_next(rows, &ctx[ctx.len() - l..]);
            let total: u64 = dist.values().sum();
            assert_eq!(p.context_count, total);
            assert_eq!(p.next_count, dist.get(&last).copied().unwrap_or(0));
        }
        assert_eq!(
            index.longest_matches(q),
            brute_longest(rows, q),
            "longest matches in {q:?}"
        );
    }
}

fn queries(rows: &[Vec<TokenId>], extra: &[Vec<TokenId>]) -> Vec<Vec<TokenId>> {
    let mut qs: Vec<Vec<TokenId>> = extra.to_vec();
    for r in rows.iter().take(4) {
        for (i, l) in [(0usize, 1usize), (1, 2), (2, 4), (0, 7)] {
            if i + l <= r.len() {
                qs.push(r[i..i + l].to_vec());
            }
        }
    }
    qs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn u16_index_answers_like_brute_force(
        rows in corpus(vec![0, 1, 2, 3, 4]),
        extra in proptest::collection::vec(proptest::collection::vec(0u32..6, 0..6), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::create(&dir.path().join("ix"), &rows_of(&rows), 6, BTreeMap::new(), &BuildOptions::default()).unwrap();
        check_all(&index, &rows, &queries(&rows, &extra));
    }

    #[test]
    fn u32_index_answers_like_brute_force(
        rows in corpus(vec![0, 7, 65_535, 65_536, 69_999]),
        extra in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(0u32), Just(65_535u32), Just(69_999u32)], 0..5),
            0..4,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let index =
            Index::create(&dir.path().join("ix"), &rows_of(&rows), 70_000, BTreeMap::new(), &BuildOptions::default()).unwrap();
        assert_eq!(index.shards()[0].meta().width, openledger_attribution::Width::U32);
        check_all(&index, &rows, &queries(&rows, &extra));
    }

    #[test]
    fn adding_versions_in_split_shards_equals_a_full_rebuild(
        rows in corpus(vec![0, 1, 2, 3]),
        split in 0usize..12,
        max_shard_tokens in 8u64..40,
        threads in 1usize..4,
        extra in proptest::collection::vec(proptest::collection::vec(0u32..4, 1..5), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let all = rows_of(&rows);
        let split = split.min(all.len());
        let full = Index::create(&dir.path().join("full"), &all, 4, BTreeMap::new(), &BuildOptions::default()).unwrap();
        // The grown index also splits each batch into small shards built side by side.
        let opts = BuildOptions { max_shard_tokens, threads };
        let longest = all.iter().map(|r| r.tokens.len() as u64 + 1).max().unwrap_or(0);
        prop_assume!(longest <= max_shard_tokens);
        let mut grown = Index::create(&dir.path().join("grown"), &all[..split], 4, BTreeMap::new(), &opts).unwrap();
        grown.add_rows(&all[split..], 4, BTreeMap::new(), &opts).unwrap();
        let grown = Index::open(&dir.path().join("grown")).unwrap();
        for q in queries(&rows, &extra) {
            prop_assert_eq!(grown.count(&q), full.count(&q));
            prop_assert_eq!(grown.next_tokens(&q), full.next_tokens(&q));
            prop_assert_eq!(grown.longest_matches(&q), full.longest_matches(&q));
            if let Some((&last, ctx)) = q.split_last() {
                prop_assert_eq!(grown.infgram_prob(ctx, last), full.infgram_prob(ctx, last));
            }
            let mut a: Vec<u64> = grown.rows_containing(&q, usize::MAX).iter().map(|h| h.contribution_id).collect();
            let mut b: Vec<u64> = full.rows_containing(&q, usize::MAX).iter().map(|h| h.contribution_id).collect();
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
        }
        check_all(&grown, &rows, &queries(&rows, &extra));
    }
}

#[test]
fn bad_tokens_and_damaged_shards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows_of(&[vec![1, 2, 9]]);
    let err = Index::create(
        &dir.path().join("a"),
        &rows,
        5,
        BTreeMap::new(),
        &BuildOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("token id 9 is outside the vocabulary of 5"),
        "{err}"
    );
    assert!(
        !dir.path().join("a").exists(),
        "a failed create leaves nothing"
    );
    let path = dir.path().join("b");
    let index = Index::create(
        &path,
        &rows_of(&[vec![1, 2, 3]]),
        5,
        BTreeMap::new(),
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(index.count(&[2, 3]), 1);
    assert!(Index::create(
        &path,
        &rows_of(&[vec![1]]),
        5,
        BTreeMap::new(),
        &BuildOptions::default()
    )
    .is_err());
    std::fs::write(path.join("shard-0000/shard.json"), b"{}").unwrap();
    let err = Index::open(&path).err().unwrap().to_string();
    assert!(err.contains("corrupt index"), "{err}");
}

#[test]
fn a_failing_part_leaves_the_index_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ix");
    let opts = BuildOptions {
        max_shard_tokens: 4,
        threads: 2,
    };
    let mut index = Index::create(
        &path,
        &rows_of(&[vec![1, 2], vec![2, 3]]),
        5,
        BTreeMap::new(),
        &opts,
    )
    .unwrap();
    assert_eq!(index.shards().len(), 2, "each 3-token row is its own shard");
    let before = index.root();
    // The third part holds an id outside the vocabulary: nothing of the batch may stay.
    let err = index
        .add_rows(
            &rows_of(&[vec![1, 1], vec![2, 2], vec![3, 9], vec![4, 4]]),
            5,
            BTreeMap::new(),
            &opts,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("row 2: token id 9"), "{err}");
    let reopened = Index::open(&path).unwrap();
    assert_eq!(reopened.root(), before);
    assert_eq!(reopened.count(&[1]), 1);
    let mut dirs: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["index.json", "shard-0000", "shard-0001"]);
}

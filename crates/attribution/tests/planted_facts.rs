//! Planted facts: contributions share a common vocabulary of filler, and each also carries facts
//! no other contribution has. A response quoting one contribution's fact amid common filler gives
//! at least 90% of the attributed weight to that contributor; quoting two contributions' facts
//! splits the weight between them; weights never sum past 1; filler alone earns little.

use alloy_primitives::Address;
use openledger_attribution::{attribute, BuildOptions, Index, Params, RowTokens, TokenId};
use std::collections::BTreeMap;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const FILLER: u64 = 60; // ids 0..60 are common words
const CONTRIBUTIONS: u64 = 8;

/// A contribution's fact: 10 ids from its own range.
fn fact(c: u64, k: u64) -> Vec<TokenId> {
    (0..10)
        .map(|i| (1000 + c * 100 + k * 10 + i) as TokenId)
        .collect()
}

fn filler(rng: &mut Rng, n: usize) -> Vec<TokenId> {
    (0..n).map(|_| rng.below(FILLER) as TokenId).collect()
}

fn corpus() -> (Index, tempfile::TempDir) {
    let mut rng = Rng(0x5eed);
    let mut rows = Vec::new();
    for c in 1..=CONTRIBUTIONS {
        for k in 0..20u64 {
            let mut t = filler(&mut rng, 30);
            if k < 5 {
                t.extend(fact(c, k));
                t.extend(filler(&mut rng, 10));
            }
            rows.push(RowTokens {
                tokens: t,
                contribution_id: c,
                contributor: Address::repeat_byte(c as u8),
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let index = Index::create(
        &dir.path().join("ix"),
        &rows,
        2000,
        BTreeMap::new(),
        &BuildOptions::default(),
    )
    .unwrap();
    (index, dir)
}

#[test]
fn a_response_quoting_one_contributions_fact_pays_that_contributor() {
    let (index, _dir) = corpus();
    let mut rng = Rng(77);
    let prompt = filler(&mut rng, 12);
    let mut response = filler(&mut rng, 40);
    response.extend(fact(3, 2));
    response.extend(filler(&mut rng, 40));
    let a = attribute(&index, &prompt, &response, &Params::default());
    let total: f64 = a.contributions.iter().map(|c| c.weight).sum();
    assert!(total <= 1.0 + 1e-9 && total > 0.0, "{total}");
    let top = &a.contributions[0];
    assert_eq!(top.contribution_id, 3, "{:#?}", a.contributions);
    assert_eq!(top.contributor, Address::repeat_byte(3));
    assert!(top.weight / total >= 0.9, "{:#?}", a.contributions);
    let span = a
        .spans
        .iter()
        .find(|s| s.start <= 40 && s.end >= 50)
        .expect("the fact is a kept span");
    assert_eq!(span.rows[0].contribution_id, 3);
}

#[test]
fn two_quoted_facts_split_the_weight_and_filler_earns_little() {
    let (index, _dir) = corpus();
    let mut rng = Rng(99);
    let mut response = filler(&mut rng, 30);
    response.extend(fact(5, 0));
    response.extend(filler(&mut rng, 30));
    response.extend(fact(7, 4));
    response.extend(filler(&mut rng, 30));
    let a = attribute(&index, &[], &response, &Params::default());
    let total: f64 = a.contributions.iter().map(|c| c.weight).sum();
    let w = |c: u64| {
        a.contributions
            .iter()
            .find(|x| x.contribution_id == c)
            .map_or(0.0, |x| x.weight)
    };
    assert!((w(5) + w(7)) / total >= 0.9, "{:#?}", a.contributions);
    assert!(
        w(5) > 0.2 * total && w(7) > 0.2 * total,
        "{:#?}",
        a.contributions
    );

    let only_filler = filler(&mut Rng(5), 100);
    let a = attribute(&index, &[], &only_filler, &Params::default());
    assert!(
        a.contributions.iter().all(|c| c.weight < 0.2),
        "{:#?}",
        a.contributions
    );
}

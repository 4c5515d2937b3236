//! The whole pipeline: duplicate floods, near-duplicates, scoring verdicts and Merkle proofs.

use alloy_primitives::B256;
use openledger_datanet::{
    ingest, row_hash, Contribution, DatanetIndex, DuplicateOf, Limits, Row, RowProof, Schema,
    SourceFile,
};
use std::collections::HashSet;

const PARAGRAPH: &str = "Proof of attribution ties every answer a specialised model gives back to the \
    rows that shaped it, so that the people who contributed those rows are paid each time the model \
    is used. The datanet keeps the rows, their hashes and a Merkle root on chain, and owners approve \
    contributions into immutable versions that fine-tuning jobs can cite by root. Contributors see \
    their score, their rows and the fees they earned, and anyone can check an inclusion proof for a \
    single row against the root recorded in the block where it was approved by the datanet owner.";

fn corpus(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "Row {i}: the validator set {i} rotates every epoch and stakers earn {} OPEN.",
                i * 7
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn run(files: &[SourceFile], index: &DatanetIndex) -> Contribution {
    ingest(files, Schema::Text, &Limits::default(), index).unwrap()
}

#[test]
fn duplicate_flood_gives_the_second_contributor_nothing() {
    let file = SourceFile::new("alice.txt", corpus(50));
    let mut index = DatanetIndex::default();
    let first = run(std::slice::from_ref(&file), &index);
    assert_eq!(first.row_count(), 50);
    assert!(first.files[0].score.accepted);
    assert_eq!(first.score_bps(), 10_000);
    index.add_contribution(&first);

    let again = SourceFile::new("mallory.txt", corpus(50));
    let second = run(&[again], &index);
    assert_eq!(second.row_count(), 0);
    assert_eq!(second.duplicates.len(), 50);
    assert!(second
        .duplicates
        .iter()
        .all(|d| d.of == DuplicateOf::Datanet));
    let report = &second.files[0];
    assert!(!report.score.accepted);
    assert_eq!(report.score.bps, 0);
    assert!(
        report.score.reasons.iter().any(|r| r.contains("50 exact")),
        "{:?}",
        report.score.reasons
    );
    assert_eq!(
        second.rows_root,
        openledger_types::merkle::zero_hashes()[32]
    );
}

#[test]
fn copies_within_a_contribution_count_once() {
    let a = SourceFile::new("a.txt", "one line here\n\ntwo lines here\n\none line here");
    let b = SourceFile::new(
        "b.jsonl",
        "{\"text\":\"two   lines here\"}\n{\"text\":\"three\"}",
    );
    let c = run(&[a, b], &DatanetIndex::default());
    let texts: Vec<&Row> = c.rows.iter().map(|r| &r.row).collect();
    assert_eq!(
        texts,
        vec![
            &Row::text("one line here"),
            &Row::text("two lines here"),
            &Row::text("three")
        ]
    );
    assert_eq!(c.duplicates.len(), 2);
    assert!(
        matches!(&c.duplicates[1].of, DuplicateOf::Contribution { file, .. } if file == "a.txt")
    );
    // 2 of 3 records in a.txt pass; b.txt's copy halves its score: both are still over 5000.
    assert_eq!(c.files[0].score.bps, 6_666);
    assert_eq!(c.files[1].score.bps, 5_000);
    let mut jsonl = Vec::new();
    c.write_jsonl(&mut jsonl).unwrap();
    assert_eq!(c.byte_size, jsonl.len() as u64);
    assert_eq!(
        String::from_utf8(jsonl).unwrap(),
        "{\"text\":\"one line here\"}\n{\"text\":\"two lines here\"}\n{\"text\":\"three\"}\n"
    );
}

#[test]
fn near_duplicates_are_found_and_unrelated_text_is_not() {
    let mut index = DatanetIndex::default();
    let first = run(
        &[SourceFile::new(
            "orig.txt",
            format!("{PARAGRAPH}\n\n{}", corpus(5)),
        )],
        &index,
    );
    index.add_contribution(&first);
    let original = row_hash(&Row::text(
        PARAGRAPH.split_whitespace().collect::<Vec<_>>().join(" "),
    ));
    assert_eq!(first.rows[0].hash, original);

    let edited = PARAGRAPH.replace("immutable", "permanent");
    let unrelated =
        "Rust's ownership rules let the compiler prove memory safety without a garbage \
        collector, and its trait system lets generic code compile to the same machine code as \
        hand-written specialised functions, which is why systems programmers adopted it quickly.";
    let c = run(
        &[SourceFile::new(
            "new.md",
            format!("{edited}\n\n{unrelated}"),
        )],
        &index,
    );
    assert_eq!(
        c.row_count(),
        2,
        "near-duplicates are kept by default, only reported"
    );
    assert_eq!(c.near_duplicates.len(), 1, "{:?}", c.near_duplicates);
    let nd = &c.near_duplicates[0];
    assert_eq!(nd.matched, original);
    assert_eq!(nd.hash, c.rows[0].hash);
    assert!(
        nd.similarity >= 0.8 && nd.similarity < 1.0,
        "{}",
        nd.similarity
    );
    assert!(c.files[0]
        .score
        .reasons
        .iter()
        .any(|r| r.contains("1 near-duplicates")));

    let strict = Limits {
        drop_near_duplicates: true,
        ..Limits::default()
    };
    let c = ingest(
        &[SourceFile::new(
            "new.md",
            format!("{edited}\n\n{unrelated}"),
        )],
        Schema::Text,
        &strict,
        &index,
    )
    .unwrap();
    assert_eq!(c.row_count(), 1);
    assert!(!c.near_duplicates[0].kept);
}

#[test]
fn low_scoring_file_is_rejected_with_reasons() {
    let limits = Limits {
        max_row_chars: 30,
        ..Limits::default()
    };
    let body = format!(
        "short ok\n\n{}\n\n{}\n\nbad \u{7} bell",
        "x".repeat(40),
        "y ".repeat(20)
    );
    let c = ingest(
        &[SourceFile::new("f.txt", body)],
        Schema::Text,
        &limits,
        &HashSet::new(),
    )
    .unwrap();
    let f = &c.files[0];
    assert_eq!(f.counts.too_long, 2);
    assert_eq!(f.counts.bad_encoding, 1);
    assert!(!f.score.accepted);
    assert_eq!(f.score.bps, 3_750, "(1 - 2/4) * (1 - 1/4)");
    assert!(f
        .score
        .reasons
        .last()
        .unwrap()
        .contains("below the minimum 5000"));
    assert_eq!(c.row_count(), 0);
    assert_eq!(c.dropped.len(), 3);
}

#[test]
fn merkle_proofs_verify_and_detect_tampering() {
    let c = run(
        &[SourceFile::new("r.txt", corpus(13))],
        &DatanetIndex::default(),
    );
    assert_eq!(c.row_count(), 13);
    for (i, row) in c.rows.iter().enumerate() {
        let p = c.proof(i).unwrap();
        assert_eq!(p.rows_root, c.rows_root);
        assert!(p.verify() && p.verify_row(&row.row));
        assert!(!p.verify_row(&Row::text("a different row")));

        let mut bad = p.clone();
        bad.row_hash = B256::from(c.rows[(i + 1) % 13].hash);
        assert!(!bad.verify(), "tampered row at {i}");
        let mut bad = p.clone();
        bad.index ^= 1;
        assert!(!bad.verify(), "tampered index at {i}");
        let mut bad = p.clone();
        bad.index += 1 << 20;
        assert!(!bad.verify(), "index past the rows at {i}");
        for k in 0..p.path.len() {
            let mut bad = p.clone();
            bad.path[k].0[0] ^= 1;
            assert!(!bad.verify(), "tampered path[{k}] at {i}");
        }
        let mut bad = p.clone();
        bad.path.pop();
        assert!(!bad.verify());
    }
    assert!(c.proof(13).is_none());
    let fresh = RowProof::new(&c.hashes(), 4).unwrap();
    assert_eq!(fresh, c.proof(4).unwrap());
}

#[test]
fn prompt_response_rows_flow_through() {
    let csv = "prompt,response\nWhat is OPEN?,The native currency.\nEmpty?,\n";
    let c = ingest(
        &[SourceFile::new("qa.csv", csv)],
        Schema::PromptResponse,
        &Limits::default(),
        &HashSet::new(),
    )
    .unwrap();
    assert_eq!(c.rows.len(), 1);
    assert_eq!(
        c.rows[0].row,
        Row::prompt_response("What is OPEN?", "The native currency.")
    );
    assert_eq!(
        c.dropped[0].problem.to_string(),
        "field \"response\" is empty"
    );
    assert_eq!(c.files[0].score.bps, 5_000);
}

//! The sample Datanet shipped in `datanets/sample/` goes through the pipeline as its contributors
//! would submit it, in order: every file is accepted, bob's three verbatim copies of alice's rows
//! earn him nothing, dave's two light edits of carol's rows are flagged, and each planted fact ends up
//! in exactly one accepted row (what the attribution tests rely on).

use openledger_datanet::{ingest, DatanetIndex, DuplicateOf, Limits, Row, Schema, SourceFile};
use std::path::PathBuf;

fn sample(name: &str) -> SourceFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datanets/sample")
        .join(name);
    SourceFile::read(&path, &Limits::default()).unwrap()
}

#[test]
fn sample_datanet_ingests_as_documented() {
    let mut index = DatanetIndex::default();
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut counts = Vec::new();
    for name in ["alice.jsonl", "bob.txt", "carol.md", "dave.csv"] {
        let c = ingest(&[sample(name)], Schema::Text, &Limits::default(), &index).unwrap();
        assert!(c.files[0].score.accepted, "{name}: {:?}", c.files[0].score);
        index.add_contribution(&c);
        for r in &c.rows {
            if let Row::Text { text } = &r.row {
                accepted.push((name.to_string(), text.clone()));
            }
        }
        counts.push((
            name,
            c.row_count(),
            c.duplicates.len(),
            c.near_duplicates.len(),
        ));
        match name {
            "bob.txt" => assert!(c.duplicates.iter().all(|d| d.of == DuplicateOf::Datanet)),
            "dave.csv" => assert!(c.near_duplicates.iter().all(|n| n.similarity >= 0.8)),
            _ => {}
        }
    }
    assert_eq!(
        counts,
        [
            ("alice.jsonl", 60, 0, 0),
            ("bob.txt", 57, 3, 0),
            ("carol.md", 64, 0, 0),
            ("dave.csv", 60, 0, 2),
        ]
    );
    for (owner, phrase) in [
        ("alice.jsonl", "Marlowe two-frame shake test"),
        ("alice.jsonl", "Penhallow brood-arc index"),
        ("bob.txt", "Hive Ledger rule of nineteen"),
        ("bob.txt", "Ashcombe candy board"),
        ("carol.md", "Orlin nine-square count"),
        ("carol.md", "Vessey mid-summer threshold"),
        ("dave.csv", "'Copperwick' sedum"),
        ("dave.csv", "Tillingham verge mix"),
    ] {
        let holders: Vec<&str> = accepted
            .iter()
            .filter(|(_, t)| t.contains(phrase))
            .map(|(f, _)| f.as_str())
            .collect();
        assert_eq!(holders, [owner], "{phrase}");
    }
    let qa = ingest(
        &[sample("qa/erin.jsonl")],
        Schema::PromptResponse,
        &Limits::default(),
        &DatanetIndex::default(),
    )
    .unwrap();
    assert_eq!(qa.row_count(), 60);
    assert!(qa.files[0].score.accepted);
}

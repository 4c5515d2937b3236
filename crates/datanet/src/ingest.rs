//! The ingestion pipeline: files → parsed records → normalised rows → validation → BLAKE3 hashes
//! and MinHash signatures, and the datanet's exact and near matches for each row (all of that in
//! parallel with rayon, files and rows) → deduplication within the contribution (in file and row
//! order, so results are the same on every machine; each file as soon as it and the files before
//! it are prepared) → per-file scores → the accepted rows' Merkle root. The result,
//! [`Contribution`], carries everything the chain's `contribute` call, the blob store and the
//! contributor's report need.

use crate::{
    budget::RequestBudget,
    dedup::{lsh::band_keys, signature_of_parts, KnownRows, LshIndex, Signature},
    error::Result,
    hash::{hash_canonical, BuildKeyHasher, RowHash},
    limits::Limits,
    merkle::{rows_root, RowProof},
    normalize::normalize_row_owned,
    parse::parse_file_in,
    row::{Location, Record, Row, Schema},
    score::{score, FileCounts, FileScore},
    source::SourceFile,
    validate::{check_row, row_fields, Check, Problem},
};
use alloy_primitives::B256;
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;

/// A row that made it into the contribution.
#[derive(Clone, Debug, PartialEq)]
pub struct AcceptedRow {
    /// BLAKE3 of the row's canonical JSON.
    pub hash: RowHash,
    /// The normalised row.
    pub row: Row,
    /// Index of its file in the input.
    pub file: usize,
    /// Where in that file.
    pub at: Location,
    /// Its MinHash signature (`None` when it has no words), for the datanet's near-duplicate index.
    pub signature: Option<Signature>,
}

/// Where the original of an exact duplicate is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DuplicateOf {
    /// Already in the datanet: the earlier contributor keeps the credit.
    Datanet,
    /// Earlier in this contribution.
    Contribution {
        /// File name.
        file: String,
        /// Where in it.
        at: Location,
    },
}

/// A row rejected as an exact copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExactDuplicate {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// The row's hash (the same as the original's).
    pub hash: RowHash,
    /// Where the original is.
    pub of: DuplicateOf,
}

/// A row whose shingles largely overlap an existing row's.
#[derive(Clone, Debug, PartialEq)]
pub struct NearDuplicate {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// The row's hash.
    pub hash: RowHash,
    /// The most similar existing row (in the datanet or earlier in the contribution).
    pub matched: RowHash,
    /// Estimated Jaccard similarity of their word 5-shingles.
    pub similarity: f64,
    /// Whether the row was kept (see [`Limits::drop_near_duplicates`]).
    pub kept: bool,
}

/// A row dropped by validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedRow {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// Why.
    pub problem: Problem,
}

/// The outcome for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// File name.
    pub name: String,
    /// What happened to its records.
    pub counts: FileCounts,
    /// Its score, reasons and verdict.
    pub score: FileScore,
}

/// The result of ingesting one contribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    /// The datanet's schema.
    pub schema: Schema,
    /// Accepted rows, in file and row order (the Merkle leaves' order).
    pub rows: Vec<AcceptedRow>,
    /// Rows rejected as exact duplicates.
    pub duplicates: Vec<ExactDuplicate>,
    /// Near-duplicates found (kept or dropped).
    pub near_duplicates: Vec<NearDuplicate>,
    /// Rows dropped by validation.
    pub dropped: Vec<DroppedRow>,
    /// Per-file scores and verdicts, in input order.
    pub files: Vec<FileReport>,
    /// Merkle root over the accepted rows' hashes (`rowsRoot`).
    pub rows_root: B256,
    /// Size of the JSONL export of the accepted rows, in bytes (`byteSize`).
    pub byte_size: u64,
}

impl Contribution {
    /// Number of accepted rows (`rowCount`).
    pub fn row_count(&self) -> u64 {
        self.rows.len() as u64
    }

    /// The accepted rows' hashes, in order.
    pub fn hashes(&self) -> Vec<RowHash> {
        self.rows.iter().map(|r| r.hash).collect()
    }

    /// The contribution's score (`score`): accepted files' scores weighted by their records.
    pub fn score_bps(&self) -> u16 {
        let accepted = self.files.iter().filter(|f| f.score.accepted);
        let (sum, n) = accepted.fold((0u64, 0u64), |(s, n), f| {
            let r = f.counts.records as u64;
            (s + f.score.bps as u64 * r, n + r)
        });
        sum.checked_div(n).unwrap_or(0) as u16
    }

    /// The inclusion proof of accepted row `index`.
    pub fn proof(&self, index: usize) -> Option<RowProof> {
        RowProof::new(&self.hashes(), index)
    }

    /// Writes the accepted rows as JSONL: one canonical JSON object per line.
    pub fn write_jsonl(&self, w: &mut impl Write) -> std::io::Result<()> {
        for r in &self.rows {
            w.write_all(&r.row.canonical_json())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// A record after normalisation, validation, hashing and signing, with the datanet's answers
/// about it (looked up here, in parallel, since the datanet does not change during ingestion).
struct Prepared {
    at: Location,
    row: Row,
    problem: Option<Problem>,
    hash: RowHash,
    json_len: usize,
    signature: Option<Signature>,
    /// Whether the datanet already holds this exact row.
    in_datanet: bool,
    /// The datanet's most similar row at or above the threshold, when not an exact copy.
    datanet_match: Option<(RowHash, f64)>,
}

thread_local! {
    /// Each worker thread's buffer for canonical JSON, reused from row to row.
    static JSON: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The row's hash and the length of its canonical JSON, serialised into a reused buffer.
fn hash_row(row: &Row) -> (RowHash, usize) {
    JSON.with_borrow_mut(|json| {
        json.clear();
        serde_json::to_writer(&mut *json, row).expect("a row of strings always serialises");
        (hash_canonical(json), json.len())
    })
}

fn prepare<K: KnownRows + ?Sized>(record: Record, limits: &Limits, existing: &K) -> Prepared {
    let row = normalize_row_owned(record.row);
    let problem = check_row(&row, limits);
    let mut prepared = Prepared {
        at: record.at,
        row,
        problem,
        hash: [0; 32],
        json_len: 0,
        signature: None,
        in_datanet: false,
        datanet_match: None,
    };
    if prepared.problem.is_none() {
        (prepared.hash, prepared.json_len) = hash_row(&prepared.row);
        prepared.signature = match row_fields(&prepared.row) {
            [Some(a), Some(b)] => signature_of_parts(&[a, b]),
            [Some(a), None] => signature_of_parts(&[a]),
            _ => None,
        };
        prepared.in_datanet = existing.contains(&prepared.hash);
        if !prepared.in_datanet {
            prepared.datanet_match = prepared
                .signature
                .as_ref()
                .and_then(|sig| existing.most_similar(sig, limits.near_duplicate_threshold));
        }
    }
    prepared
}

/// Parses every file, in parallel, against one expansion budget for the upload; fails on the
/// first file (in input order) that cannot be parsed.
fn parse_all(files: &[SourceFile], schema: Schema, limits: &Limits) -> Result<Vec<Vec<Record>>> {
    let budget = RequestBudget::for_limits(limits);
    let parsed: Vec<Result<Vec<Record>>> = files
        .par_iter()
        .map(|f| parse_file_in(f, schema, limits, &budget))
        .collect();
    parsed.into_iter().collect()
}

/// Prepares the files' records on rayon's pool (files and rows in parallel, driven from a helper
/// thread) while this thread hands each file's rows to `consume` in input order, as soon as that
/// file is ready: deduplication of early files overlaps preparation of later ones.
fn for_each_prepared<K: KnownRows + ?Sized>(
    parsed: Vec<Vec<Record>>,
    limits: &Limits,
    existing: &K,
    mut consume: impl FnMut(usize, Vec<Prepared>),
) {
    let files = parsed.len();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            parsed
                .into_par_iter()
                .enumerate()
                .for_each_with(tx, |tx, (i, records)| {
                    let rows = records
                        .into_par_iter()
                        .map(|r| prepare(r, limits, existing))
                        .collect();
                    tx.send((i, rows))
                        .expect("the receiver waits for every file");
                });
        });
        let mut ready: Vec<Option<Vec<Prepared>>> = (0..files).map(|_| None).collect();
        for next in 0..files {
            while ready[next].is_none() {
                let (i, rows) = rx.recv().expect("the preparing thread sends every file");
                ready[i] = Some(rows);
            }
            consume(next, ready[next].take().expect("received"));
        }
    });
}

/// The sequential deduplication state: the contribution so far, plus the rows kept from accepted
/// files and from the current file, in one hash map and one LSH index. When a file is rejected,
/// its rows are taken out of both (and out of the accepted rows) again, so later files only ever
/// match the datanet and accepted files (exactly as if each file had its own index, merged on
/// acceptance). The datanet's own matches come with each prepared row.
struct Dedup<'a> {
    files: &'a [SourceFile],
    limits: &'a Limits,
    out: Contribution,
    seen: HashMap<RowHash, (usize, Location), BuildKeyHasher>,
    near: LshIndex,
}

impl<'a> Dedup<'a> {
    fn new(files: &'a [SourceFile], schema: Schema, limits: &'a Limits) -> Self {
        Dedup {
            files,
            limits,
            out: Contribution {
                schema,
                rows: Vec::new(),
                duplicates: Vec::new(),
                near_duplicates: Vec::new(),
                dropped: Vec::new(),
                files: Vec::new(),
                rows_root: B256::ZERO,
                byte_size: 0,
            },
            seen: HashMap::default(),
            near: LshIndex::default(),
        }
    }

    /// Makes room for `records` rows at most.
    fn reserve(&mut self, records: usize) {
        self.seen.reserve(records);
        self.near.reserve(records);
        self.out.rows.reserve(records);
    }

    /// Deduplicates and scores one file's rows; keeps them if the file is accepted.
    fn add_file(&mut self, file_idx: usize, rows: Vec<Prepared>) {
        let name = &self.files[file_idx].name;
        let rows_before = self.out.rows.len();
        let near_before = self.near.len();
        let mut counts = FileCounts::default();
        let mut bytes = 0u64;
        for p in rows {
            counts.records += 1;
            if let Some(problem) = p.problem {
                count_problem(&mut counts, &problem);
                self.out.dropped.push(DroppedRow {
                    file: name.clone(),
                    at: p.at,
                    problem,
                });
                continue;
            }
            if let Some(of) = self.exact_original(&p) {
                counts.exact_duplicates += 1;
                self.out.duplicates.push(ExactDuplicate {
                    file: name.clone(),
                    at: p.at,
                    hash: p.hash,
                    of,
                });
                continue;
            }
            if let Some(sig) = &p.signature {
                if let Some((matched, similarity)) = self.insert_near(&p, sig) {
                    counts.near_duplicates += 1;
                    self.out.near_duplicates.push(NearDuplicate {
                        file: name.clone(),
                        at: p.at,
                        hash: p.hash,
                        matched,
                        similarity,
                        kept: !self.limits.drop_near_duplicates,
                    });
                    if self.limits.drop_near_duplicates {
                        self.near.truncate(self.near.len() - 1);
                        continue;
                    }
                }
            }
            self.seen.insert(p.hash, (file_idx, p.at));
            bytes += p.json_len as u64 + 1;
            self.out.rows.push(AcceptedRow {
                hash: p.hash,
                row: p.row,
                file: file_idx,
                at: p.at,
                signature: p.signature,
            });
        }
        counts.kept = self.out.rows.len() - rows_before;
        let score = score(&counts, self.limits);
        if score.accepted {
            self.out.byte_size += bytes;
        } else {
            for row in self.out.rows.drain(rows_before..) {
                self.seen.remove(&row.hash);
            }
            self.near.truncate(near_before);
        }
        self.out.files.push(FileReport {
            name: name.clone(),
            counts,
            score,
        });
    }

    /// Where the original of an exact copy is: the datanet first, then the contribution.
    fn exact_original(&self, p: &Prepared) -> Option<DuplicateOf> {
        if p.in_datanet {
            return Some(DuplicateOf::Datanet);
        }
        self.seen
            .get(&p.hash)
            .map(|(f, at)| DuplicateOf::Contribution {
                file: self.files[*f].name.clone(),
                at: *at,
            })
    }

    /// Adds the row to the LSH index (the caller takes it out again if it is dropped) and returns
    /// the most similar earlier row at or above the threshold. The datanet wins ties, then the
    /// earliest row of the contribution.
    fn insert_near(&mut self, p: &Prepared, sig: &Signature) -> Option<(RowHash, f64)> {
        let t = self.limits.near_duplicate_threshold;
        let keys = band_keys(sig);
        let contribution = self.near.insert_and_match(p.hash, sig.clone(), &keys, t);
        match (p.datanet_match, contribution) {
            (Some(d), Some(c)) if c.1 > d.1 => Some(c),
            (d, c) => d.or(c),
        }
    }
}

/// Counts a dropped row against the check it failed.
fn count_problem(counts: &mut FileCounts, problem: &Problem) {
    match (problem.check(), problem) {
        (Check::Schema, _) => counts.empty_field += 1,
        (Check::Length, Problem::TooShort { .. }) => counts.too_short += 1,
        (Check::Length, _) => counts.too_long += 1,
        (Check::Encoding, _) => counts.bad_encoding += 1,
    }
}

/// Runs the pipeline over a contribution's files. Fails on the first file (in input order) that
/// cannot be parsed; otherwise returns accepted rows and a report for every file.
///
/// Files are parsed and their rows prepared in parallel; deduplication runs in file and row
/// order (overlapping the preparation of later files), so results are the same on every machine.
pub fn ingest<K: KnownRows + ?Sized>(
    files: &[SourceFile],
    schema: Schema,
    limits: &Limits,
    existing: &K,
) -> Result<Contribution> {
    let parsed = parse_all(files, schema, limits)?;
    let mut dedup = Dedup::new(files, schema, limits);
    dedup.reserve(parsed.iter().map(Vec::len).sum());
    for_each_prepared(parsed, limits, existing, |i, rows| dedup.add_file(i, rows));
    let mut out = dedup.out;
    out.rows_root = rows_root(&out.hashes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hash::row_hash, DatanetIndex};

    const P: &str =
        "Owners approve contributions into immutable versions that fine-tuning jobs can \
        cite by root, and contributors see their score, their rows and the fees they earned, while \
        anyone can check an inclusion proof for a single row against the recorded root";

    #[test]
    fn a_rejected_files_rows_are_forgotten_by_later_files() {
        let edited = P.replace("recorded root", "recorded roots");
        let files = [
            SourceFile::new("a.txt", "The first file has one ordinary row."),
            SourceFile::new(
                "b.txt",
                format!("{P}\n\nbad \u{7} one\n\nbad \u{7} two\n\nbad \u{7} 3"),
            ),
            SourceFile::new("c.txt", format!("{P}\n\n{edited}")),
        ];
        let c = ingest(
            &files,
            Schema::Text,
            &Limits::default(),
            &DatanetIndex::default(),
        )
        .unwrap();
        let accepted: Vec<bool> = c.files.iter().map(|f| f.score.accepted).collect();
        assert_eq!(accepted, [true, false, true]);
        assert!(c.duplicates.is_empty(), "{:?}", c.duplicates);
        assert_eq!(c.near_duplicates.len(), 1, "{:?}", c.near_duplicates);
        let near = &c.near_duplicates[0];
        assert_eq!((near.file.as_str(), near.at), ("c.txt", Location::Line(3)));
        assert_eq!(near.matched, row_hash(&Row::text(P)));
        assert_eq!(c.row_count(), 3);
        assert_eq!(
            c.files[1].counts.kept, 1,
            "b's copy was kept until b was scored"
        );
    }

    #[test]
    fn the_first_unparsable_file_in_input_order_is_reported() {
        let good = || SourceFile::new("ok.txt", "A perfectly ordinary row of text.");
        for bad_at in 0..4 {
            let mut files: Vec<SourceFile> = (0..4).map(|_| good()).collect();
            files[bad_at] = SourceFile::new(format!("bad{bad_at}.xyz"), "x");
            files.push(SourceFile::new("later.xyz", "x"));
            let err = ingest(
                &files,
                Schema::Text,
                &Limits::default(),
                &DatanetIndex::default(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, crate::IngestError::UnknownFormat { file, .. } if *file == format!("bad{bad_at}.xyz")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_dropped_near_duplicate_is_no_match_for_later_rows() {
        let first_edit = P.replace("recorded root", "recorded roots");
        let second_edit = first_edit.replace("Owners approve", "Owners approved");
        let files = [SourceFile::new(
            "a.txt",
            format!("{P}\n\n{first_edit}\n\n{second_edit}"),
        )];
        let limits = Limits {
            drop_near_duplicates: true,
            ..Limits::default()
        };
        let c = ingest(&files, Schema::Text, &limits, &DatanetIndex::default()).unwrap();
        let matched: Vec<RowHash> = c.near_duplicates.iter().map(|n| n.matched).collect();
        assert_eq!(matched, [row_hash(&Row::text(P)); 2]);
    }
}

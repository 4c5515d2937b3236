//! An index on disk is untrusted input: a data file changed in place (same size, one byte), a
//! crafted `shard.json` (pointer widths outside the layout, counts whose sizes overflow or
//! disagree with the files, rows and contributions out of range) or a manifest whose shard paths
//! leave the index directory is refused with a reason naming what is wrong, and never panics.
//! Crafted indexes here are self-consistent (file hashes and roots recomputed after the change),
//! as an attacker publishing an index would make them, so only the bounds checks can catch them.

use alloy_primitives::Address;
use openledger_attribution::{BuildOptions, Index, RowTokens, TokenId};
use proptest::prelude::*;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    fs,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

const VOCAB: u32 = 50;

fn rows() -> Vec<RowTokens> {
    let raw: Vec<Vec<TokenId>> = vec![
        vec![1, 2, 3, 4, 5],
        vec![2, 3, 4],
        vec![7, 8, 9, 1, 2, 3],
        vec![4, 4, 4, 4],
        vec![10, 11, 12, 2, 3],
    ];
    raw.into_iter()
        .enumerate()
        .map(|(i, tokens)| RowTokens {
            tokens,
            contribution_id: 1 + i as u64 / 2,
            contributor: Address::repeat_byte(1 + (i / 2) as u8),
        })
        .collect()
}

/// A one-shard index at `path`.
fn build(path: &Path) -> Index {
    Index::create(
        path,
        &rows(),
        VOCAB,
        BTreeMap::new(),
        &BuildOptions::default(),
    )
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Recomputes the file hashes in `shard_dir/shard.json` from the files as they now are.
fn rehash_files(shard_dir: &Path) {
    let meta_path = shard_dir.join("shard.json");
    let mut meta = read_json(&meta_path);
    for name in ["tokens.bin", "sa.bin", "rows.bin"] {
        if let Ok(bytes) = fs::read(shard_dir.join(name)) {
            meta["files"][name] = Value::String(hex(blake3::hash(&bytes).as_bytes()));
        }
    }
    write_json(&meta_path, &meta);
}

/// Recomputes every shard root in `index_dir/index.json` from the shard.json it names, as a
/// crafted index would carry them.
fn reroot(index_dir: &Path) {
    let manifest_path = index_dir.join("index.json");
    let mut m = read_json(&manifest_path);
    for s in m["shards"].as_array_mut().unwrap() {
        let dir = index_dir.join(s["dir"].as_str().unwrap());
        if let Ok(bytes) = fs::read(dir.join("shard.json")) {
            s["root"] = Value::String(format!("0x{}", hex(blake3::hash(&bytes).as_bytes())));
        }
    }
    write_json(&manifest_path, &m);
}

/// Opens the index and, if it opens, runs every query over it; returns the open error. Panics
/// (failing the test) if anything panicked.
fn open_and_query(path: &Path) -> Option<String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| match Index::open(path) {
        Err(e) => Some(e.to_string()),
        Ok(ix) => {
            for q in [&[2, 3][..], &[4], &[1, 2, 3, 4, 5], &[49]] {
                ix.count(q);
                for o in ix.occurrences(q, 100) {
                    ix.row_tokens(o.shard, o.row);
                }
                ix.rows_containing(q, 100);
                ix.next_tokens(q);
                ix.infgram_prob(q, 3);
            }
            ix.next_tokens(&[]);
            ix.longest_matches(&[1, 2, 3, 4, 4, 4, 9, 1, 2]);
            ix.token_count();
            None
        }
    }));
    match outcome {
        Ok(r) => r,
        Err(p) => panic!(
            "opening or querying {} panicked: {:?}",
            path.display(),
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
        ),
    }
}

/// The refusal of the index at `path`, which must not open.
fn refused(path: &Path, what: &str) -> String {
    open_and_query(path).unwrap_or_else(|| panic!("{what}: the index opened"))
}

#[test]
fn a_data_file_changed_in_place_is_refused_naming_the_file() {
    for name in ["tokens.bin", "sa.bin", "rows.bin"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ix");
        let before = build(&path).root();
        let file = path.join("shard-0000").join(name);
        let mut bytes = fs::read(&file).unwrap();
        bytes[1] ^= 0x01;
        fs::write(&file, &bytes).unwrap();
        let err = refused(&path, name);
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains("BLAKE3"), "{name}: {err}");
        // Restoring the byte restores the index under its root.
        bytes[1] ^= 0x01;
        fs::write(&file, &bytes).unwrap();
        assert_eq!(Index::open(&path).unwrap().root(), before);
    }
}

#[test]
fn a_missing_or_extra_file_hash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ix");
    build(&path);
    let meta_path = path.join("shard-0000/shard.json");
    let good = read_json(&meta_path);
    let mut meta = good.clone();
    meta["files"].as_object_mut().unwrap().remove("sa.bin");
    write_json(&meta_path, &meta);
    reroot(&path);
    let err = refused(&path, "no hash for sa.bin");
    assert!(err.contains("sa.bin"), "{err}");

    let mut meta = good.clone();
    meta["files"]["../x"] = Value::String("00".repeat(32));
    write_json(&meta_path, &meta);
    reroot(&path);
    let err = refused(&path, "a hash of ../x");
    assert!(err.contains("../x"), "{err}");
}

/// Builds an index, applies `craft` to its shard directory's `shard.json` (and files), then
/// recomputes the file hashes and roots so only bounds checks stand between it and a query.
fn crafted(craft: impl FnOnce(&Path, &mut Value)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ix");
    build(&path);
    let shard = path.join("shard-0000");
    let meta_path = shard.join("shard.json");
    let mut meta = read_json(&meta_path);
    craft(&shard, &mut meta);
    write_json(&meta_path, &meta);
    rehash_files(&shard);
    reroot(&path);
    (dir, path)
}

fn u64_at(meta: &Value, key: &str) -> u64 {
    meta[key].as_u64().unwrap()
}

#[test]
fn crafted_shard_metadata_is_refused_with_a_reason() {
    type Craft = Box<dyn FnOnce(&Path, &mut Value)>;
    let cases: Vec<(&str, &str, Craft)> = vec![
        (
            "ptr_bytes 9, sa.bin sized to match",
            "ptr_bytes",
            Box::new(|dir, m| {
                let n = u64_at(m, "tokens") as usize;
                fs::write(dir.join("sa.bin"), vec![0u8; n * 9]).unwrap();
                m["ptr_bytes"] = 9.into();
            }),
        ),
        (
            "ptr_bytes 0, empty sa.bin",
            "ptr_bytes",
            Box::new(|dir, m| {
                fs::write(dir.join("sa.bin"), []).unwrap();
                m["ptr_bytes"] = 0.into();
            }),
        ),
        (
            "ptr_bytes too narrow for the positions",
            "ptr_bytes",
            Box::new(|dir, m| {
                // 1-byte pointers cannot address 300 tokens.
                let n = 300u64;
                m["tokens"] = n.into();
                fs::write(dir.join("tokens.bin"), vec![1u8; 600]).unwrap();
                fs::write(dir.join("sa.bin"), vec![0u8; 300]).unwrap();
                m["ptr_bytes"] = 1.into();
            }),
        ),
        (
            "n × width overflows",
            "tokens",
            Box::new(|_, m| {
                m["tokens"] = (u64::MAX / 2 + 7).into();
            }),
        ),
        (
            "tokens disagree with the file sizes",
            "tokens.bin",
            Box::new(|_, m| {
                let n = u64_at(m, "tokens");
                m["tokens"] = (n + 1).into();
            }),
        ),
        (
            "rows disagree with rows.bin",
            "rows.bin",
            Box::new(|_, m| {
                let r = u64_at(m, "rows");
                m["rows"] = (r + 1).into();
                let last = m["contributions"]
                    .as_array_mut()
                    .unwrap()
                    .last_mut()
                    .unwrap();
                last["rows"] = (last["rows"].as_u64().unwrap() + 1).into();
            }),
        ),
        (
            "more rows than tokens, files sized to match",
            "rows",
            Box::new(|dir, m| {
                let n = u64_at(m, "tokens");
                let rows: Vec<u8> = (0..n + 3).flat_map(|i| i.to_le_bytes()).collect();
                fs::write(dir.join("rows.bin"), rows).unwrap();
                m["rows"] = (n + 3).into();
            }),
        ),
        (
            "a row offset past the last token",
            "rows.bin",
            Box::new(|dir, _| {
                let mut rows = fs::read(dir.join("rows.bin")).unwrap();
                let last = rows.len() - 8;
                rows[last..].copy_from_slice(&u64::MAX.to_le_bytes());
                fs::write(dir.join("rows.bin"), rows).unwrap();
            }),
        ),
        (
            "row offsets out of order",
            "rows.bin",
            Box::new(|dir, _| {
                let mut rows = fs::read(dir.join("rows.bin")).unwrap();
                let (a, b) = rows.split_at_mut(16);
                a[8..16].swap_with_slice(&mut b[..8]);
                fs::write(dir.join("rows.bin"), rows).unwrap();
            }),
        ),
        (
            "a suffix-array pointer past the last token",
            "sa.bin",
            Box::new(|dir, _| {
                let mut sa = fs::read(dir.join("sa.bin")).unwrap();
                sa[0] = 0xff;
                fs::write(dir.join("sa.bin"), sa).unwrap();
            }),
        ),
        (
            "a token outside the vocabulary",
            "vocabulary",
            Box::new(|_, m| {
                m["vocab_size"] = 3.into();
            }),
        ),
        (
            "a width that does not fit the vocabulary",
            "width",
            Box::new(|_, m| {
                m["vocab_size"] = 100_000.into();
            }),
        ),
        (
            "an unknown format",
            "format",
            Box::new(|_, m| {
                m["format"] = 2.into();
            }),
        ),
        (
            "a contribution past the last row",
            "contribution",
            Box::new(|_, m| {
                m["contributions"][0]["first_row"] = 1000.into();
            }),
        ),
        (
            "contribution rows that overflow",
            "contribution",
            Box::new(|_, m| {
                m["contributions"][0]["rows"] = u64::MAX.into();
            }),
        ),
        (
            "contributions that leave rows unpaid",
            "contribution",
            Box::new(|_, m| {
                m["contributions"].as_array_mut().unwrap().pop();
            }),
        ),
    ];
    // Every case is tried, and every one that is not refused with its reason is reported.
    let mut wrong = Vec::new();
    for (what, reason, craft) in cases {
        let (_tmp, path) = crafted(craft);
        match catch_unwind(AssertUnwindSafe(|| refused(&path, what))) {
            Ok(err) if err.contains(reason) => {}
            Ok(err) => wrong.push(format!("{what}: refused without naming {reason}: {err}")),
            Err(_) => wrong.push(format!("{what}: opened, or panicked")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn shard_paths_that_leave_the_index_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ix");
    build(&path);
    // A valid shard outside the index directory, which a crafted manifest points at.
    let outside = dir.path().join("x");
    fs::rename(path.join("shard-0000"), &outside).unwrap();
    let manifest_path = path.join("index.json");
    let good = read_json(&manifest_path);
    for target in [
        "../x".to_string(),
        outside.to_str().unwrap().to_string(),
        "shard-0000/../../x".to_string(),
        String::new(),
        ".".to_string(),
    ] {
        let mut m = good.clone();
        m["shards"][0]["dir"] = Value::String(target.clone());
        write_json(&manifest_path, &m);
        reroot(&path);
        let err = refused(&path, &target);
        assert!(err.contains("index directory"), "{target:?}: {err}");
    }
    // A symlink inside the index that leads out of it.
    write_json(&manifest_path, &good);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, path.join("shard-0000")).unwrap();
        let err = refused(&path, "a symlink out of the index");
        assert!(err.contains("index directory"), "{err}");
        fs::remove_file(path.join("shard-0000")).unwrap();
        // The same data file reached through a symlink out of the shard is refused too.
        fs::create_dir(path.join("shard-0000")).unwrap();
        for name in ["shard.json", "tokens.bin", "rows.bin"] {
            fs::copy(outside.join(name), path.join("shard-0000").join(name)).unwrap();
        }
        std::os::unix::fs::symlink(outside.join("sa.bin"), path.join("shard-0000/sa.bin")).unwrap();
        let err = refused(&path, "a data file symlinked out of the index");
        assert!(err.contains("sa.bin"), "{err}");
        assert!(err.contains("index directory"), "{err}");
    }
}

/// One mutation of a `shard.json` field: a key (nested by `/`) and a replacement.
fn mutation() -> impl Strategy<Value = (String, Value)> {
    let key = prop_oneof![
        Just("format"),
        Just("width"),
        Just("vocab_size"),
        Just("tokens"),
        Just("rows"),
        Just("ptr_bytes"),
        Just("contributions/0/first_row"),
        Just("contributions/0/rows"),
        Just("contributions/1/first_row"),
        Just("contributions/1/rows"),
        Just("contributions/2/first_row"),
        Just("contributions/2/contribution_id"),
    ];
    let value = prop_oneof![
        (0u64..20).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(u64::MAX),
            Just(u64::MAX / 2 + 1),
            Just(u32::MAX as u64 + 1),
            Just(1 << 31),
            Just(255),
            Just(256),
        ]
        .prop_map(Value::from),
        Just(Value::from("u32")),
        Just(Value::from("u16")),
        Just(Value::from("u8")),
        Just(Value::from(-1)),
        Just(Value::Null),
    ];
    (key.prop_map(String::from), value)
}

/// A change to a data file's bytes: which file, at which offset (modulo its size), XOR what.
fn byte_flip() -> impl Strategy<Value = (usize, usize, u8)> {
    (0usize..3, any::<usize>(), 1u8..=255)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random field mutations and byte changes of a self-consistent crafted shard: opening and
    /// querying never panics, and what opens still answers every query.
    #[test]
    fn mutated_shards_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..4),
        flips in proptest::collection::vec(byte_flip(), 0..3),
    ) {
        let (_tmp, path) = crafted(|dir, meta| {
            for (key, value) in mutations {
                let mut at = &mut *meta;
                let parts: Vec<&str> = key.split('/').collect();
                for p in &parts[..parts.len() - 1] {
                    at = match p.parse::<usize>() {
                        Ok(i) => &mut at[i],
                        Err(_) => &mut at[*p],
                    };
                }
                at[*parts.last().unwrap()] = value;
            }
            for (file, offset, xor) in flips {
                let f = dir.join(["tokens.bin", "sa.bin", "rows.bin"][file]);
                let mut bytes = fs::read(&f).unwrap();
                if !bytes.is_empty() {
                    let i = offset % bytes.len();
                    bytes[i] ^= xor;
                    fs::write(&f, bytes).unwrap();
                }
            }
        });
        // Whether the crafted shard is refused or opens, nothing panics.
        open_and_query(&path);
    }
}

/// Pads the JSON file at `path` with trailing spaces (still valid JSON, same content) to one
/// byte past `cap`.
fn pad_past(path: &Path, cap: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes.resize(cap as usize + 1, b' ');
    fs::write(path, &bytes).unwrap();
}

#[test]
fn metadata_files_over_their_size_cap_are_refused() {
    use openledger_attribution::{build::MAX_META_BYTES, index::MAX_MANIFEST_BYTES};
    // A shard.json past the cap, its root recomputed so only the size check can refuse it.
    let (_dir, path) = crafted(|_, _| {});
    pad_past(&path.join("shard-0000/shard.json"), MAX_META_BYTES);
    reroot(&path);
    let err = refused(&path, "an oversized shard.json");
    assert!(
        err.contains("shard.json") && err.contains(&MAX_META_BYTES.to_string()),
        "{err}"
    );

    // An index.json past the cap.
    let (_dir, path) = crafted(|_, _| {});
    let before = Index::open(&path).unwrap().root();
    pad_past(&path.join("index.json"), MAX_MANIFEST_BYTES);
    let err = refused(&path, "an oversized index.json");
    assert!(
        err.contains("index.json") && err.contains(&MAX_MANIFEST_BYTES.to_string()),
        "{err}"
    );
    // At the cap exactly, it still opens, under the same root.
    let manifest = path.join("index.json");
    let mut bytes = fs::read(&manifest).unwrap();
    bytes.truncate(MAX_MANIFEST_BYTES as usize);
    fs::write(&manifest, &bytes).unwrap();
    assert_eq!(Index::open(&path).unwrap().root(), before);
}

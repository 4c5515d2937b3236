//! Parser behaviour: good files give the expected rows; bad files give clear errors and no rows;
//! arbitrary bytes never panic.

use openledger_datanet::{
    ingest, parse::parse_file, IngestError, Limits, Location, Row, Schema, SourceFile,
};
use proptest::prelude::*;
use std::collections::HashSet;

fn rows(name: &str, bytes: &[u8], schema: Schema) -> Result<Vec<Row>, IngestError> {
    let f = SourceFile::new(name, bytes);
    parse_file(&f, schema, &Limits::default()).map(|r| r.into_iter().map(|r| r.row).collect())
}

fn err(name: &str, bytes: &[u8], schema: Schema) -> String {
    let e = rows(name, bytes, schema)
        .expect_err("must fail")
        .to_string();
    let none: HashSet<[u8; 32]> = HashSet::new();
    let c = ingest(
        &[SourceFile::new(name, bytes)],
        schema,
        &Limits::default(),
        &none,
    );
    assert!(c.is_err(), "ingest must refuse what the parser refuses");
    e
}

#[test]
fn text_and_markdown_rows_are_paragraphs() {
    let got = rows(
        "notes.MD",
        b"# Title\n\nfirst para\nline two\r\n\r\n\n  second  \n",
        Schema::Text,
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            Row::text("# Title"),
            Row::text("first para\nline two"),
            Row::text("  second  ")
        ]
    );
    let f = SourceFile::new("a.txt", "x\n\ny".as_bytes());
    let recs = parse_file(&f, Schema::Text, &Limits::default()).unwrap();
    assert_eq!(recs[1].at, Location::Line(3));
}

#[test]
fn jsonl_and_csv_follow_the_schema() {
    let jl = b"{\"prompt\":\"2+2?\",\"response\":\"4\",\"extra\":1}\n\n{\"prompt\":\"hi\",\"response\":\"hello\"}\n";
    assert_eq!(
        rows("d.jsonl", jl, Schema::PromptResponse).unwrap(),
        vec![
            Row::prompt_response("2+2?", "4"),
            Row::prompt_response("hi", "hello")
        ]
    );
    let csv = b"id,Text\n1,\"a, quoted\nvalue\"\n2,plain\n";
    assert_eq!(
        rows("t.csv", csv, Schema::Text).unwrap(),
        vec![Row::text("a, quoted\nvalue"), Row::text("plain")]
    );
}

#[test]
fn malformed_jsonl_line_names_the_line() {
    let e = err(
        "data.jsonl",
        b"{\"text\":\"ok\"}\n{\"text\": oops}\n",
        Schema::Text,
    );
    assert!(e.starts_with("data.jsonl line 2: not a JSON object"), "{e}");
    let e = err("data.jsonl", b"{\"text\":\"ok\"}\n\n[1]\n", Schema::Text);
    assert!(e.contains("line 3") && e.contains("found an array"), "{e}");
}

#[test]
fn jsonl_missing_field_names_line_and_schema() {
    let mut body = String::new();
    for _ in 0..6 {
        body.push_str("{\"text\":\"fine\"}\n");
    }
    body.push_str("{\"prompt\":\"p\",\"response\":\"r\"}\n");
    let e = err("data.jsonl", body.as_bytes(), Schema::Text);
    assert_eq!(
        e,
        "data.jsonl line 7: missing field \"text\" (this datanet's schema is text)"
    );
    let e = err("d.jsonl", b"{\"text\":5}", Schema::Text);
    assert!(e.contains("must be a string"), "{e}");
}

#[test]
fn csv_missing_column_is_refused() {
    let e = err(
        "qa.csv",
        b"prompt,answer\nhi,there\n",
        Schema::PromptResponse,
    );
    assert!(
        e.starts_with("qa.csv header (columns found: prompt, answer): missing field \"response\""),
        "{e}"
    );
    let e = err("t.csv", b"text,n\nok,1\nbad\n", Schema::Text);
    assert!(e.contains("malformed CSV") && e.contains("line 3"), "{e}");
}

#[test]
fn bad_utf8_empty_and_unknown_files_are_refused() {
    let e = err("a.txt", b"fine\nstill fine\nbad \xff here", Schema::Text);
    assert_eq!(
        e,
        "a.txt line 3: invalid UTF-8 at byte 20; save the file as UTF-8"
    );
    let e = err("a.jsonl", b"", Schema::Text);
    assert!(e.contains("has no rows"), "{e}");
    let e = err("a.txt", b" \n\n \t\n", Schema::Text);
    assert!(e.contains("has no rows"), "{e}");
    let e = err("a.exe", b"MZ", Schema::Text);
    assert!(e.contains("unsupported file type \"exe\""), "{e}");
    let e = err("a.txt", b"hello", Schema::PromptResponse);
    assert!(e.contains("upload .jsonl or .csv"), "{e}");
    let e = err("x.pdf", b"%PDF-1.4 garbage", Schema::Text);
    assert!(e.starts_with("x.pdf: cannot read this PDF"), "{e}");
    let e = err("x.docx", b"PK\x03\x04 not really", Schema::Text);
    assert!(e.starts_with("x.docx: cannot read this DOCX"), "{e}");
}

#[test]
fn oversize_file_is_refused_before_reading() {
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, vec![b'a'; 1001]).unwrap();
    let e = SourceFile::read(&path, &limits).unwrap_err();
    assert!(
        matches!(
            e,
            IngestError::TooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("split it into smaller files"));
    let ok = dir.path().join("ok.txt");
    std::fs::write(&ok, vec![b'a'; 1000]).unwrap();
    assert_eq!(SourceFile::read(&ok, &limits).unwrap().bytes.len(), 1000);
    // In-memory uploads are held to the same limit.
    let e = parse_file(
        &SourceFile::new("big.txt", vec![b'a'; 1001]),
        Schema::Text,
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, IngestError::TooLarge { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for name in ["f.txt", "f.md", "f.jsonl", "f.csv", "f.pdf", "f.docx"] {
            for schema in [Schema::Text, Schema::PromptResponse] {
                let _ = rows(name, &bytes, schema);
            }
        }
    }

    #[test]
    fn pdf_and_docx_never_panic_on_mangled_headers(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut pdf = b"%PDF-1.5\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
        pdf.extend(&tail);
        pdf.extend(b"\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
        let _ = rows("m.pdf", &pdf, Schema::Text);
        let mut docx = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
        docx.extend(&tail);
        let _ = rows("m.docx", &docx, Schema::Text);
    }

    #[test]
    fn text_like_input_never_panics(s in "[a-z \\n\\r\\t{}\":,\\[\\]\\\\]{0,300}") {
        for name in ["f.txt", "f.jsonl", "f.csv"] {
            let _ = rows(name, s.as_bytes(), Schema::Text);
            let _ = rows(name, s.as_bytes(), Schema::PromptResponse);
        }
    }
}

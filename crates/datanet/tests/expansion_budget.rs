//! Decompression budgets: a PDF or DOCX may expand to at most `max_expanded_bytes` in all (every
//! stream it inflates, each time a page reads it), and the files of one upload share
//! `max_request_expanded_bytes`. A small PDF whose pages all reuse one content stream, each page
//! well under any per-page bound, is refused once the file's expansion passes the budget.

use openledger_datanet::{ingest, parse::parse_file, DatanetIndex, Limits, Schema, SourceFile};

mod common;

use common::docx;

/// A PDF of `pages` pages that all draw the same content stream, which shows `chars` letters.
fn shared_stream_pdf(pages: usize, chars: usize) -> Vec<u8> {
    let text = "Bees ".repeat(chars / 5);
    common::pdf(&[common::text_ops(&[&text])], &vec![0; pages])
}

#[test]
fn a_pdf_whose_pages_reuse_one_stream_is_held_to_one_budget_per_file() {
    // 200 pages x 100 KB: 20 MB of page content from a file of a few KB; every page alone is
    // far under the 1 MB budget.
    let bytes = shared_stream_pdf(200, 100_000);
    assert!(
        bytes.len() < 20_000,
        "the bomb is small: {} bytes",
        bytes.len()
    );
    let limits = Limits {
        max_expanded_bytes: 1_000_000,
        ..Limits::default()
    };
    let err = match parse_file(&SourceFile::new("bomb.pdf", bytes), Schema::Text, &limits) {
        Ok(records) => panic!(
            "a 20 MB expansion passed a 1 MB budget: {} rows",
            records.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("bomb.pdf") && err.contains("1000000-byte") && err.contains("per file"),
        "{err}"
    );

    // The same document with few enough pages fits, and its text comes out.
    let small = shared_stream_pdf(3, 1_000);
    let records = parse_file(&SourceFile::new("ok.pdf", small), Schema::Text, &limits).unwrap();
    assert_eq!(records.len(), 3);
}

#[test]
fn the_files_of_one_upload_share_one_budget() {
    // Each file expands to about 300 KB: alone each fits its 1 MB budget, and so do two of
    // them the 700 KB shared by one upload; all five do not.
    let limits = Limits {
        max_expanded_bytes: 1_000_000,
        max_request_expanded_bytes: 700_000,
        ..Limits::default()
    };
    let file = |i: usize| SourceFile::new(format!("f{i}.pdf"), shared_stream_pdf(3, 100_000));
    for i in 0..2 {
        parse_file(&file(i), Schema::Text, &limits).unwrap();
    }
    let files: Vec<SourceFile> = (0..5).map(file).collect();
    let err = match ingest(&files, Schema::Text, &limits, &DatanetIndex::default()) {
        Ok(c) => panic!(
            "five files passed the upload's budget: {} rows",
            c.row_count()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("700000-byte") && err.contains("per upload"),
        "{err}"
    );

    // DOCX parts draw on the same budget.
    let xml = format!("<w:p><w:t>{}</w:t></w:p>", "a".repeat(400_000));
    let mixed = [
        SourceFile::new("a.docx", docx(&xml)),
        SourceFile::new("b.docx", docx(&xml)),
    ];
    let err = match ingest(&mixed, Schema::Text, &limits, &DatanetIndex::default()) {
        Ok(c) => panic!(
            "two 400 KB parts passed a 700 KB budget: {} rows",
            c.row_count()
        ),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("per upload"), "{err}");
}

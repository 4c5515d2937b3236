//! PDF and DOCX fixtures built in the test (no binaries checked in): their text comes out as rows.

use openledger_datanet::{parse::parse_file, Limits, Location, Row, Schema, SourceFile};
use std::io::Write;

mod common;

use common::docx;

/// A PDF whose pages each show their lines.
fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    let streams: Vec<_> = pages.iter().map(|lines| common::text_ops(lines)).collect();
    common::pdf(&streams, &(0..pages.len()).collect::<Vec<_>>())
}

#[test]
fn pdf_pages_become_paragraph_rows() {
    let bytes = pdf(&[
        &["Datanets hold curated data", "for specialised models."],
        &["Every inference pays the", "contributors."],
    ]);
    let f = SourceFile::new("paper.PDF", bytes);
    let recs = parse_file(&f, Schema::Text, &Limits::default()).unwrap();
    let got: Vec<(Location, Row)> = recs.into_iter().map(|r| (r.at, r.row)).collect();
    assert_eq!(
        got,
        vec![
            (
                Location::Page(1),
                Row::text("Datanets hold curated data for specialised models.")
            ),
            (
                Location::Page(2),
                Row::text("Every inference pays the contributors.")
            ),
        ]
    );
}

#[test]
fn docx_paragraphs_become_rows() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>First </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">para &amp; more</w:t></w:r></w:p>
<w:p></w:p>
<w:p><w:r><w:t>Second</w:t><w:tab/><w:t>tabbed</w:t><w:br/><w:t>broken &#233;</w:t></w:r></w:p>
<w:p><w:r><w:instrText>PAGE</w:instrText></w:r></w:p>
</w:body></w:document>"#;
    let f = SourceFile::new("notes.docx", docx(xml));
    let recs = parse_file(&f, Schema::Text, &Limits::default()).unwrap();
    let got: Vec<(Location, Row)> = recs.into_iter().map(|r| (r.at, r.row)).collect();
    assert_eq!(
        got,
        vec![
            (Location::Paragraph(1), Row::text("First para & more")),
            (
                Location::Paragraph(3),
                Row::text("Second\ttabbed\nbroken \u{e9}")
            ),
        ]
    );
}

#[test]
fn docx_without_document_part_or_with_bad_xml_is_refused() {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    zip.start_file("other.xml", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"<x/>").unwrap();
    zip.finish().unwrap();
    let e = parse_file(
        &SourceFile::new("a.docx", buf.into_inner()),
        Schema::Text,
        &Limits::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("word/document.xml"), "{e}");
    let e = parse_file(
        &SourceFile::new("b.docx", docx("<w:p><w:t>x</w:p>")),
        Schema::Text,
        &Limits::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("b.docx: cannot read this DOCX"), "{e}");
}

#[test]
fn docx_zip_bomb_is_bounded() {
    let big = format!("<w:p><w:t>{}</w:t></w:p>", "a".repeat(100_000));
    let limits = Limits {
        max_expanded_bytes: 10_000,
        ..Limits::default()
    };
    let e = parse_file(
        &SourceFile::new("bomb.docx", docx(&big)),
        Schema::Text,
        &limits,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("expands past the 10000-byte budget per file"),
        "{e}"
    );
}

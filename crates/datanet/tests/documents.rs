//! PDF and DOCX fixtures built in the test (no binaries checked in): their text comes out as rows.

use openledger_datanet::{parse::parse_file, Limits, Location, Row, Schema, SourceFile};
use std::io::Write;

fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for lines in pages {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("TL", vec![14.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
        ];
        for line in *lines {
            ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            ops.push(Operation::new("T*", vec![]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn docx(document_xml: &str) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("[Content_Types].xml", opts).unwrap();
    zip.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#).unwrap();
    zip.start_file("word/document.xml", opts).unwrap();
    zip.write_all(document_xml.as_bytes()).unwrap();
    zip.finish().unwrap();
    buf.into_inner()
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

//! A real node under adversarial requests: a 1 MiB `eth_feeHistory` percentile list, 300 MiB
//! uploads (declared, and streamed chunked as one file or as many), a PDF bomb, 1,000 unsigned
//! staging requests and a replayed signed one. Each is answered with a clear error (status and
//! message), other clients are served in between, during and afterwards, and the node's peak
//! resident memory (VmHWM of its process) stays under 512 MiB. Every upload is generated on the
//! fly; nothing here holds more than a few MiB. 127.0.0.1 only, bounded loops.

mod common;

use alloy_primitives::keccak256;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use common::Env;
use openledger_types::request_auth;
use serde_json::Value;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const MIB: usize = 1024 * 1024;
const BOUNDARY: &str = "adversarial-boundary-5e1f";

struct Resp {
    status: u16,
    headers: String,
    body: String,
}

impl Resp {
    /// The `error` message of a JSON error body (empty when there is none).
    fn error(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Reads a response to its end; a reset after the answer (the node stops reading an upload it
/// refused) keeps what arrived.
fn read_response(s: &mut TcpStream) -> Resp {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A chunked answer: the JSON is the first chunk.
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map(|(_, rest)| rest.rsplit_once("\r\n0\r\n").map_or(rest, |(b, _)| b))
            .unwrap_or(body)
    } else {
        body
    };
    Resp {
        status: headers
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        headers: headers.to_string(),
        body: body.trim().to_string(),
    }
}

/// One request on a fresh connection (closed after the answer).
fn request(port: u16, head: &str, body: &[u8]) -> Resp {
    let mut s = connect(port);
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_response(&mut s)
}

/// Sends `head`, then the body piece by piece (as HTTP chunks when `chunked`), stopping at the
/// first write the node refuses; then reads the answer. Returns it and the bytes sent.
fn stream(
    port: u16,
    head: &str,
    pieces: impl Iterator<Item = Vec<u8>>,
    chunked: bool,
) -> (Resp, usize) {
    let mut s = connect(port);
    s.write_all(head.as_bytes()).unwrap();
    let mut sent = 0;
    let mut whole = true;
    for piece in pieces {
        let written = if chunked {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|_| s.write_all(&piece))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(&piece)
        };
        if written.is_err() {
            whole = false;
            break;
        }
        sent += piece.len();
    }
    if whole && chunked {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    (read_response(&mut s), sent)
}

fn rpc(port: u16, body: &str) -> Resp {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(port, &head, body.as_bytes())
}

/// Another client is served: eth_blockNumber and a GET of the datanet both succeed.
fn assert_serving(port: u16, when: &str) {
    let r = rpc(
        port,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
    );
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert!(
        r.status == 200 && v["result"].is_string(),
        "eth_blockNumber {when}: {} {}",
        r.status,
        r.body
    );
    let head = format!(
        "GET /v1/datanets/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let r = request(port, &head, b"");
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert!(
        r.status == 200 && v["name"] == "Bees",
        "GET /v1/datanets/1 {when}: {} {}",
        r.status,
        r.body
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn part_head(name: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend(part_head(name));
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Signs staging requests to datanet 1 of chain `chain`.
struct Stager {
    key: PrivateKeySigner,
    chain: u64,
    port: u16,
    nonce: u64,
}

impl Stager {
    /// The head of a staging request whose signature covers `body_hash`; `length` None for a
    /// chunked body.
    fn head(&mut self, body_hash: alloy_primitives::B256, length: Option<usize>) -> String {
        let path = "/v1/datanets/1/stage";
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.nonce += 1;
        let nonce = format!("adversary-{}", self.nonce);
        let msg = request_auth::message(self.chain, "POST", path, time, &nonce, &body_hash);
        let sig = self.key.sign_message_sync(msg.as_bytes()).unwrap();
        let auth = request_auth::header(self.key.address(), time, &nonce, &body_hash, &sig);
        let framing = match length {
            Some(n) => format!("Content-Length: {n}"),
            None => "Transfer-Encoding: chunked".to_string(),
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {auth}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\nConnection: close\r\n\r\n",
            self.port
        )
    }
}

/// `total` bytes of an upload, 1 MiB at a time: `files` parts of `total / files` bytes of text
/// each (no framing at the end: the node refuses before it).
fn generated_upload(total: usize, files: usize) -> impl Iterator<Item = Vec<u8>> {
    let per_file = total / files;
    (0..files).flat_map(move |i| {
        // Each part after the first starts on a new line, as multipart framing wants.
        let mut head = if i == 0 { Vec::new() } else { b"\r\n".to_vec() };
        head.extend(part_head(&format!("part{i}.txt")));
        let line = b"Bees forage within three kilometres of the hive.\n";
        let body = (0..per_file.div_ceil(MIB))
            .map(move |_| line.iter().copied().cycle().take(MIB).collect::<Vec<u8>>());
        std::iter::once(head).chain(body)
    })
}

// ---- a PDF bomb, built here: zlib with fixed-Huffman DEFLATE, a long run as length-258 matches

struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    /// `count` bits of `value`, least significant first (header fields, extra bits).
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.put(u64::from((code >> i) & 1), 1);
        }
    }

    fn literal(&mut self, byte: u8) {
        let v = u32::from(byte);
        if v < 144 {
            self.code(0x30 + v, 8);
        } else {
            self.code(0x190 + v - 144, 9);
        }
    }
}

/// zlib data that inflates to `prefix`, `run` copies of `byte`, then `suffix`.
fn zlib_run(prefix: &[u8], byte: u8, run: usize, suffix: &[u8]) -> Vec<u8> {
    assert_eq!(
        (run - 1) % 258,
        0,
        "the run is one literal and whole 258-byte matches"
    );
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman codes
    prefix.iter().for_each(|&c| b.literal(c));
    b.literal(byte);
    for _ in 0..(run - 1) / 258 {
        b.code(0xC5, 8); // length code 285: 258 bytes
        b.code(0, 5); // distance code 0: 1 byte back
    }
    suffix.iter().for_each(|&c| b.literal(c));
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    let (mut a, mut s) = (1u32, 0u32);
    let mut add = |c: u8| {
        a = (a + u32::from(c)) % 65521;
        s = (s + a) % 65521;
    };
    prefix.iter().for_each(|&c| add(c));
    (0..run).for_each(|_| add(byte));
    suffix.iter().for_each(|&c| add(c));
    b.out.extend_from_slice(&((s << 16) | a).to_be_bytes());
    b.out
}

/// A PDF of `pages` pages that all draw one content stream showing about `run` letters.
fn pdf_bomb(pages: usize, run: usize) -> Vec<u8> {
    let data = zlib_run(b"BT /F1 12 Tf 72 700 Td (", b'A', run, b") Tj ET");
    let content_id = 4 + pages;
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} /Resources << /Font << /F1 3 0 R >> >> /MediaBox [0 0 595 842] >>",
            (0..pages).map(|i| format!("{} 0 R", 4 + i)).collect::<Vec<_>>().join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    for _ in 0..pages {
        objects.push(
            format!("<< /Type /Page /Parent 2 0 R /Contents {content_id} 0 R >>").into_bytes(),
        );
    }
    let mut stream = format!(
        "<< /Length {} /Filter /FlateDecode >>\nstream\n",
        data.len()
    )
    .into_bytes();
    stream.extend_from_slice(&data);
    stream.extend_from_slice(b"\nendstream");
    objects.push(stream);
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(o);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

#[test]
fn adversarial_requests_get_clear_errors_and_the_node_keeps_serving_in_bounded_memory() {
    let env = Env::new();
    let node = env.start();
    let port = env.port;
    env.ok(&["--from", "dev0", "datanet", "create", "Bees"]);
    let chain_id = {
        let r = rpc(
            port,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
        );
        let v: Value = serde_json::from_str(&r.body).unwrap();
        u64::from_str_radix(v["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let mut stager = Stager {
        key: PrivateKeySigner::from_bytes(&keccak256("adversary")).unwrap(),
        chain: chain_id,
        port,
        nonce: 0,
    };
    assert_serving(port, "at the start");
    let blobs = env.blob_count();

    // 1. eth_feeHistory with a percentile list of about 1 MiB: an error, not a matrix.
    let mut body = String::from(
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_feeHistory","params":["0x400","latest",["#,
    );
    while body.len() < 1_000_000 {
        body.push_str("50,");
    }
    body.push_str("50]]}");
    let r = rpc(port, &body);
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| r.error());
    assert!(
        v.get("result").is_none() && !message.is_empty(),
        "eth_feeHistory with 333,000 percentiles: {} {}",
        r.status,
        &r.body[..r.body.len().min(300)]
    );
    eprintln!(
        "eth_feeHistory (1 MiB of percentiles): {} {message}",
        r.status
    );
    assert_serving(port, "after eth_feeHistory");

    // 2. 300 MiB uploads, while another client keeps asking.
    let total = 300 * MIB;
    let zero = alloy_primitives::B256::ZERO;
    let uploads: Vec<(String, bool, usize, &str)> = vec![
        // Declared 300 MiB: refused before a byte is read.
        (stager.head(zero, Some(total)), false, 1, "limit per upload"),
        // Streamed as one file: refused when it passes 5 MiB.
        (stager.head(zero, None), true, 1, "limit per file"),
        // Streamed as 4 MiB files: refused when the upload passes 64 MiB.
        (stager.head(zero, None), true, 75, "limit per upload"),
    ];
    for (head, chunked, files, expect) in uploads {
        let watcher = std::thread::spawn(move || {
            for _ in 0..5 {
                assert_serving(port, "during a 300 MiB upload");
            }
        });
        let (r, sent) = stream(port, &head, generated_upload(total, files), chunked);
        watcher.join().unwrap();
        assert_eq!(r.status, 413, "{expect}: {} {}", r.headers, r.body);
        assert!(r.error().contains(expect), "{expect}: {}", r.body);
        assert!(
            sent < 100 * MIB,
            "the node stopped the upload early: {sent} bytes sent"
        );
        eprintln!(
            "300 MiB upload, {sent} bytes sent: {} {}",
            r.status,
            r.error()
        );
        assert_serving(port, "after a 300 MiB upload");
    }

    // 3. A PDF bomb: ~130 KB whose twenty pages draw one stream of 20 MiB of text.
    let bomb = pdf_bomb(20, 1 + 258 * 81_280);
    assert!(
        bomb.len() < 200_000,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    let body = multipart(&[("bomb.pdf", &bomb)]);
    let head = stager.head(request_auth::body_hash(&body), Some(body.len()));
    let r = request(port, &head, &body);
    assert_eq!(r.status, 422, "{} {}", r.headers, r.body);
    let e = r.error();
    assert!(
        e.contains("bomb.pdf") && e.contains("budget per file"),
        "{e}"
    );
    eprintln!("PDF bomb of {} bytes: {} {e}", bomb.len(), r.status);
    assert_serving(port, "after the PDF bomb");

    // 4. 1,000 unsigned staging requests: each refused at once, nothing stored.
    let rows = b"Urban hives need water within reach on hot days.\n\nA shallow dish with stones lets bees drink without drowning.\n\nRooftop colonies swarm later in spring than rural ones.\n";
    let body = multipart(&[("rows.txt", rows)]);
    let unsigned = format!(
        "POST /v1/datanets/1/stage HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    for i in 0..1000 {
        let r = request(port, &unsigned, &body);
        assert_eq!(r.status, 401, "unsigned request {i}: {}", r.body);
        assert!(r.error().contains("--from"), "{}", r.body);
        if i % 250 == 0 {
            assert_serving(port, "among unsigned staging requests");
        }
    }
    assert_eq!(env.blob_count(), blobs, "unsigned requests stored nothing");

    // 5. A signed staging request goes through once; the same request again is refused.
    let head = stager.head(request_auth::body_hash(&body), Some(body.len()));
    let r = request(port, &head, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(port, &head, &body);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.error().contains("already used"), "{}", r.body);
    assert_serving(port, "at the end");

    let peak = peak_rss_kib(node.pid());
    assert!(
        peak < 512 * 1024,
        "the node's peak resident memory was {} MiB",
        peak / 1024
    );
    eprintln!("node peak RSS: {} MiB", peak / 1024);
}

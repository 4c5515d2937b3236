//! Child processes in end-to-end tests that run outside [`super::Env`] (a node on a free port, a
//! Python client): the workspace root, a free 127.0.0.1 port, a child killed when dropped and a
//! bounded wait, raw HTTP requests to the node, and log files read for failure messages.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

/// The workspace's root folder (where `.venv`, `models/` and `scripts/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root exists")
}

/// Kills (and reaps) a child process when dropped, so no node outlives the test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A file's text, or "" when it cannot be read (for failure messages).
pub fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for `child` for at most `limit`; kills it past that (returns `None`).
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One JSON-RPC call as a raw HTTP/1.1 POST; the whole response (headers and body) as text.
pub fn raw_rpc(addr: SocketAddr, body: &str) -> std::io::Result<String> {
    raw_post(addr, &format!("Host: {addr}\r\n"), body)
}

/// A raw HTTP/1.1 POST of `body` to `/` with the header lines `headers` (each ending in CRLF).
pub fn raw_post(addr: SocketAddr, headers: &str, body: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST / HTTP/1.1\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

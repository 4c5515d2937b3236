//! Shared by the CLI's end-to-end tests: a chain home with dev keys, a node started and killed
//! (SIGKILL) on demand, and the `openledger` binary run against it.

#![allow(dead_code)]

pub mod openlora;
pub mod process;

use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_openledger");

pub struct NodeProc(Child);

impl NodeProc {
    /// The node process's id (for reading its /proc status).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL on unix
        let _ = self.0.wait();
    }
}

pub struct Env {
    pub home: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

pub fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datanets/sample")
        .join(name)
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = Env {
            home: dir.path().join("home"),
            port,
            _dir: dir,
        };
        let out = env.ol(&["init", "--dev"]);
        assert!(out.status.success(), "{}", stderr(&out));
        env
    }

    pub fn ol(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--home")
            .arg(&self.home)
            .args(["--rpc", &format!("http://127.0.0.1:{}", self.port)])
            .args(args)
            .env_remove("OPENLEDGER_FROM")
            .env_remove("OPENLEDGER_RPC")
            .output()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ol(args);
        assert!(
            out.status.success(),
            "openledger {args:?} failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.ol(args);
        assert!(
            !out.status.success(),
            "openledger {args:?} should fail:\n{}",
            stdout(&out)
        );
        stderr(&out)
    }

    pub fn start(&self) -> NodeProc {
        self.start_with(&[])
    }

    /// Starts `openledger node --dev` with `extra` arguments (e.g. `--model PATH`).
    pub fn start_with(&self, extra: &[&str]) -> NodeProc {
        let child = Command::new(BIN)
            .arg("--home")
            .arg(&self.home)
            .args([
                "node",
                "--dev",
                "--rpc-addr",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(extra)
            .env_remove("OPENLEDGER_MODEL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = NodeProc(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ol(&["datanet", "list"]).status.success() {
            assert!(Instant::now() < deadline, "node did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn blob_count(&self) -> usize {
        walk(&self.home.join("data/blobs"))
    }
}

pub fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        if p.file_name().is_some_and(|n| n == "tmp") {
                            0
                        } else {
                            walk(&p)
                        }
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

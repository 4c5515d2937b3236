//! The real `openai` Python client against `openledger node --model` (OpenLoRA's OpenAI API on
//! the node's HTTP server, SmolLM2): `tests/openai_client.py` lists models (the base model and an
//! adapter published on chain), chats (whole and streamed with usage), completes with n = 2, gets
//! OpenAI's 404 and 400 errors, calls the adapter with an API key (attribution and receipt in the
//! answer) and is refused with an unknown key (401). Then the node, model loaded, must idle:
//! under 2 % of a core over 10 s without requests.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`) and the virtualenv with the openai client
//! (`./scripts/setup-python`).

mod common;

use common::{openlora::Served, stderr, stdout};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

fn workspace_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root exists")
}

#[test]
fn the_openai_python_client_works_unchanged_and_the_idle_node_idles() {
    let root = workspace_root();
    let model = root.join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        model.is_file(),
        "{} is missing: run ./scripts/fetch-model",
        model.display()
    );
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run ./scripts/setup-python",
        python.display()
    );
    let served = Served::start();
    served.publish("rainbow", 3, 0.5);
    let key = served.api_key("dev5", "10", "10");
    let (env, node) = (&served.env, served.node.as_ref().unwrap());

    // The model is loaded before the node listens, so it is served as soon as the node answers.
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(root.join("tests/openai_client.py"))
        .arg(format!("http://127.0.0.1:{}/v1", env.port))
        .arg(&key)
        .arg("rainbow")
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the client took too long"
    );
    assert!(
        out.status.success(),
        "openai client failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("openai client: all checks passed"),
        "{}",
        stdout(&out)
    );

    // An idle server must idle: the kernel threads sleep between requests.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds(node.pid());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds(node.pid()) - before;
    assert!(
        used < 0.2,
        "the idle node with a model loaded used {used:.3} s of CPU in 10 s (limit 2 % of a core)"
    );
}

/// User + system CPU time of process `pid`, in seconds (from /proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

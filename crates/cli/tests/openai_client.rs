//! The real `openai` Python client against `openledger node --model` (OpenLoRA's OpenAI API on
//! the node's HTTP server, SmolLM2): `tests/openai_client.py` lists models, chats (whole and
//! streamed with usage), completes with n = 2, and gets OpenAI's 404 and 400 errors.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`) and the virtualenv with the openai client
//! (`./scripts/setup-python`).

mod common;

use common::{stderr, stdout, Env};
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
fn the_openai_python_client_works_unchanged() {
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
    let env = Env::new();
    let _node = env.start_with(&["--model", model.to_str().unwrap()]);

    // The model is loaded before the node listens, so it is served as soon as the node answers.
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(root.join("tests/openai_client.py"))
        .arg(format!("http://127.0.0.1:{}/v1", env.port))
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
}

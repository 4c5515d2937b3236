//! The web dashboard in a real browser: `init --dev` (which picks up SmolLM2 from models/), ONE
//! `openledger node` on a free port of 127.0.0.1, then `python -m pytest -x
//! crates/cli/tests/browser/` — Playwright driving Debian's chromium headless — with the
//! dashboard's URL in `OPENLEDGER_DASHBOARD_URL` (and `OPENLEDGER_BIN`, `OPENLEDGER_HOME` for
//! tests that set things up with the CLI). One file per page (`test_<page>.py`); shared fixtures
//! in `browser/conftest.py`. Every wait there is bounded; the whole run is capped here.
//!
//! Needs `./scripts/setup-browser` (playwright + pytest in .venv, chromium from apt) and
//! `./scripts/fetch-model`. `OPENLEDGER_PYTEST_ARGS` replaces what pytest runs (default: the whole
//! directory), e.g. `crates/cli/tests/browser/test_governance.py` or `-k governance
//! crates/cli/tests/browser`.

mod common;

use common::process::{
    free_port, raw_rpc, read_or_empty, tail, wait_bounded, workspace_root, KillOnDrop,
};
use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_openledger");
/// How long the node may take to answer (it loads the model first).
const NODE_START: Duration = Duration::from_secs(120);
/// How long the whole browser suite may run.
const SUITE_LIMIT: Duration = Duration::from_secs(900);

#[test]
fn dashboard_pages_work_in_a_browser() {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    let chromium =
        std::env::var("OPENLEDGER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import playwright, pytest"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ready && Path::new(&chromium).exists(),
        "the browser tests need Playwright and pytest in {} and chromium at {chromium}: run \
         ./scripts/setup-browser (or ./scripts/test, which does it) from {}",
        python.display(),
        root.display()
    );
    let model = root.join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        model.is_file(),
        "{} is missing: run ./scripts/fetch-model",
        model.display()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    // From the workspace root, so that init --dev configures the model in models/.
    let init = Command::new(BIN)
        .current_dir(&root)
        .arg("--home")
        .arg(&home)
        .args(["init", "--dev"])
        .output()
        .expect("run openledger init");
    assert!(
        init.status.success(),
        "openledger init --dev failed ({}):\n{}\n{}",
        init.status,
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node_log = dir.path().join("node.log");
    let log = File::create(&node_log).expect("create node log");
    let mut node = KillOnDrop(
        Command::new(BIN)
            .arg("--home")
            .arg(&home)
            .args(["node", "--rpc-addr", &addr.to_string()])
            .env_remove("OPENLEDGER_MODEL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start openledger node"),
    );
    let start = Instant::now();
    loop {
        if raw_rpc(
            addr,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
        )
        .is_ok_and(|r| r.contains(r#""result":"0x"#))
        {
            break;
        }
        if let Some(status) = node.0.try_wait().expect("try_wait") {
            panic!(
                "the node exited early ({status}):\n{}",
                read_or_empty(&node_log)
            );
        }
        assert!(
            start.elapsed() < NODE_START,
            "the node did not answer on {addr} within {NODE_START:?}:\n{}",
            read_or_empty(&node_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out_path = dir.path().join("pytest.log");
    let out = File::create(&out_path).expect("create pytest log");
    let mut cmd = Command::new(&python);
    cmd.current_dir(&root)
        .args(["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]);
    match std::env::var("OPENLEDGER_PYTEST_ARGS") {
        Ok(args) if !args.trim().is_empty() => cmd.args(args.split_whitespace()),
        _ => cmd.arg(root.join("crates/cli/tests/browser")),
    };
    let mut suite = cmd
        .env("OPENLEDGER_DASHBOARD_URL", format!("http://{addr}/"))
        .env("OPENLEDGER_BIN", BIN)
        .env("OPENLEDGER_HOME", &home)
        .env("OPENLEDGER_CHROMIUM", &chromium)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENLEDGER_FROM")
        .env_remove("OPENLEDGER_RPC")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone log handle"))
        .stderr(out)
        .spawn()
        .expect("start pytest");
    let status = wait_bounded(&mut suite, SUITE_LIMIT);
    let report = read_or_empty(&out_path);
    println!("{report}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "the browser tests failed ({s}):\n{report}\n--- node log (tail) ---\n{}",
            tail(&read_or_empty(&node_log), 60)
        ),
        None => panic!(
            "the browser tests ran past {SUITE_LIMIT:?} and were stopped:\n{report}\n--- node log (tail) ---\n{}",
            tail(&read_or_empty(&node_log), 60)
        ),
    }
}

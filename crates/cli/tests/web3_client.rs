//! The real web3.py client against a dev node: `init --dev`, `node` on a free port, then
//! `tests/web3_client.py` sends a native OPEN transfer and a datanet module call and reads back
//! receipts, logs, blocks and transactions, the code of a module, the pending block and the fee
//! history with reward percentiles (see that script for every check). Before it, raw requests
//! check that the running node refuses a cross-origin POST and a foreign Host.
//!
//! Needs the virtualenv at `<workspace>/.venv` with web3 installed: `./scripts/setup-python`.

mod common;

use common::process::{
    free_port, raw_post, raw_rpc, read_or_empty, wait_bounded, workspace_root, KillOnDrop,
};
use std::{
    fs::File,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_openledger");
/// How long the node may take to answer `eth_chainId`.
const NODE_START: Duration = Duration::from_secs(30);
/// How long the Python client may run in all.
const CLIENT_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn web3_py_transfers_and_calls_a_module() {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: this test runs the real web3.py client. Run `./scripts/setup-python` \
         (or `./scripts/test`, which does it) from {} first.",
        python.display(),
        root.display()
    );
    let script = root.join("tests/web3_client.py");
    assert!(script.exists(), "{} is missing", script.display());

    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");

    // A dev chain; dev0's private key comes from the printed table ("  dev0  0xADDR  0xKEY").
    let init = Command::new(BIN)
        .arg("--home")
        .arg(&home)
        .args(["init", "--dev"])
        .output()
        .expect("run openledger init");
    let init_out = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "openledger init --dev failed ({}):\n{init_out}\n{}",
        init.status,
        String::from_utf8_lossy(&init.stderr)
    );
    let key = init_out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 3 && w[0] == "dev0")
        .map(|w| w[2].to_string())
        .unwrap_or_else(|| panic!("no dev0 line in the output of init --dev:\n{init_out}"));
    assert!(
        key.starts_with("0x") && key.len() == 66,
        "dev0 private key looks wrong: {key}"
    );

    // The node, on a free port; its output goes to a file shown on failure.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node_log = dir.path().join("node.log");
    let log = File::create(&node_log).expect("create node log");
    let mut node = KillOnDrop(
        Command::new(BIN)
            .arg("--home")
            .arg(&home)
            .args(["node", "--rpc-addr", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start openledger node"),
    );

    let start = Instant::now();
    loop {
        let reply = raw_rpc(
            addr,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
        );
        match reply {
            Ok(r) if r.contains(r#""result":"0x1a50""#) => break,
            Ok(r) if r.starts_with("HTTP/1.1 200") => panic!("unexpected eth_chainId answer:\n{r}"),
            _ => {}
        }
        if let Some(status) = node.0.try_wait().expect("try_wait") {
            panic!(
                "the node exited early ({status}):\n{}",
                read_or_empty(&node_log)
            );
        }
        assert!(
            start.elapsed() < NODE_START,
            "the node did not answer eth_chainId on {addr} within {NODE_START:?}:\n{}",
            read_or_empty(&node_log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A web page elsewhere cannot post to the node (CSRF), nor reach it under another name (DNS
    // rebinding).
    let chain_id = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let cross = raw_post(
        addr,
        &format!("Host: {addr}\r\nOrigin: http://evil.example\r\n"),
        chain_id,
    )
    .expect("cross-origin request");
    assert!(
        cross.starts_with("HTTP/1.1 403") && cross.contains("allowed_origins"),
        "a cross-origin POST must be refused:\n{cross}"
    );
    let port = addr.port();
    let rebound = raw_post(addr, &format!("Host: evil.example:{port}\r\n"), chain_id)
        .expect("foreign-host request");
    assert!(
        rebound.starts_with("HTTP/1.1 403") && rebound.contains("allowed_hosts"),
        "a foreign Host must be refused:\n{rebound}"
    );
    let own = raw_post(
        addr,
        &format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n"),
        chain_id,
    )
    .expect("same-origin request");
    assert!(
        own.starts_with("HTTP/1.1 200") && own.contains(r#""result":"0x1a50""#),
        "a same-origin POST must work:\n{own}"
    );

    // The web3.py client.
    let url = format!("http://{addr}");
    let (out_path, err_path) = (dir.path().join("client.out"), dir.path().join("client.err"));
    let mut client = Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg(&key)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create client stdout"))
        .stderr(File::create(&err_path).expect("create client stderr"))
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let status = wait_bounded(&mut client, CLIENT_LIMIT);
    let (stdout, stderr) = (read_or_empty(&out_path), read_or_empty(&err_path));
    let report = format!(
        "--- web3 client stdout ---\n{stdout}\n--- web3 client stderr ---\n{stderr}\n--- node log ---\n{}",
        read_or_empty(&node_log)
    );
    match status {
        None => panic!("the web3 client ran past {CLIENT_LIMIT:?} and was killed\n{report}"),
        Some(s) if !s.success() => panic!("the web3 client failed ({s})\n{report}"),
        Some(_) => {}
    }
    assert!(
        stdout.contains("web3 client: all checks passed"),
        "the web3 client exited 0 without finishing\n{report}"
    );
    println!("{stdout}");
    drop(node);
}

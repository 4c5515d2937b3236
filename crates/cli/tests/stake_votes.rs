//! `openledger stake delegate` and `stake votes` against a dev node: delegation moves votes,
//! `--at` reads the votes and total stake when a past timestamp ended, a timestamp not yet over
//! is refused, and `--history` lists the checkpoints.

mod common;

use common::Env;
use std::time::Duration;

/// The clock printed by `stake votes WHO` ("… (now, 1712345678)").
fn clock(env: &Env, who: &str) -> u64 {
    let out = env.ok(&["stake", "votes", who]);
    let at = out.find("(now, ").expect("stake votes prints the clock") + 6;
    out[at..]
        .split(')')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no clock in {out}"))
}

/// Waits until the node's clock has passed `t`.
fn after(env: &Env, t: u64) {
    while clock(env, "dev0") <= t {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn delegation_moves_votes_and_the_cli_reads_their_history() {
    let env = Env::new();
    let _node = env.start();
    env.ok(&["--from", "dev0", "stake", "add", "100"]);
    env.ok(&["--from", "dev1", "stake", "add", "10"]);
    let before = clock(&env, "dev0");
    assert!(env
        .ok(&["stake", "votes", "dev0"])
        .contains("votes      100 OPEN (now"));
    after(&env, before);

    let keys = env.ok(&["keys", "list"]);
    let dev1 = keys
        .lines()
        .find_map(|l| l.strip_prefix("dev1 "))
        .expect("keys list names dev1")
        .trim()
        .to_string();
    env.ok(&["--from", "dev0", "stake", "delegate", "dev1"]);
    let delegated = clock(&env, "dev0");
    let show = env.ok(&["stake", "show", "dev0"]);
    assert!(show.contains(&format!("delegates  {dev1}")), "{show}");
    assert!(show.contains("votes      0 OPEN"), "{show}");
    assert!(env
        .ok(&["stake", "votes", "dev1"])
        .contains("votes      110 OPEN (now"));
    after(&env, delegated);

    let at = |who: &str, t: u64| env.ok(&["stake", "votes", who, "--at", &t.to_string()]);
    let out = at("dev0", before);
    assert!(
        out.contains(&format!(
            "votes      100 OPEN at the end of {before} (of 110 OPEN staked then)"
        )),
        "{out}"
    );
    assert!(at("dev1", before).contains("votes      10 OPEN at the end"));
    assert!(at("dev1", delegated).contains("votes      110 OPEN at the end"));
    assert!(at("dev0", delegated).contains("votes      0 OPEN at the end"));

    let err = env.fails(&["stake", "votes", "dev1", "--at", "99999999999"]);
    assert!(err.contains("ERC5805FutureLookup"), "{err}");

    let history = env.ok(&["stake", "votes", "dev1", "--history"]);
    assert!(
        history.contains("checkpoints (2, from timestamp on)"),
        "{history}"
    );
    assert!(history.contains("110 OPEN"), "{history}");
}

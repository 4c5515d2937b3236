"""Rewards: a contributor, a model owner and a staker see what they earned, by role, in a table
and a chart, and each payment's transaction is found in the explorer. The chain state is made
with the CLI as real transactions (a datanet with an approved contribution, an adapter on it, an
inference receipt attributing half its output to that contribution, settled); a staker claims
its rewards through the page."""

import re
import secrets

from conftest import choose_account, expect, goto, wait_toast


def _id(out, name):
    m = re.search(rf"{name}: (\d+)", out)
    assert m, f"no {name} in:\n{out}"
    return m.group(1)


def _addr(cli, key):
    for line in cli("keys", "list").splitlines():
        words = line.split()
        if words and words[0] == key:
            return words[1]
    raise AssertionError(f"no key {key}")


def test_contributor_owner_and_staker_earnings(page, cli):
    rand = lambda: "0x" + secrets.token_hex(32)
    cli("--from", "dev1", "stake", "add", "50")
    datanet = _id(cli("--from", "dev4", "datanet", "create", "Rewards test", "--summary", "bees"), "datanetId")
    contribution = _id(cli("--from", "dev5", "datanet", "contribute", datanet, "datanets/sample/alice.jsonl"), "contributionId")
    version = _id(cli("--from", "dev4", "datanet", "approve", datanet), "version")
    base = _id(cli("--from", "dev6", "model", "register-base", "Rewards base", "--hash", rand()), "modelId")
    adapter = _id(cli("--from", "dev6", "model", "register-adapter", f"rewards-{secrets.token_hex(4)}", "--base", base,
                      "--datanet", f"{datanet}@{version}", "--config-hash", rand(), "--adapter-hash", rand()), "adapterId")
    caller, owner, contributor = _addr(cli, "dev8"), _addr(cli, "dev6"), _addr(cli, "dev5")
    cli("--from", "dev8", "inference", "deposit", "10")
    cli("--from", "dev8", "inference", "approve-operator", owner, "10")
    receipt = _id(cli("--from", "dev6", "inference", "record", "--caller", caller, "--adapter", adapter,
                      "--prompt-tokens", "1000", "--completion-tokens", "2000",
                      "--attribution", f"{contribution}:500000"), "receiptId")
    cli("--from", "dev6", "inference", "settle", receipt)

    # The contributor: a payment for the receipt, linked to its settlement in the explorer.
    goto(page, f"rewards/{contributor}")
    expect(page.locator("#earned-contributor")).not_to_have_text("0 OPEN")
    payment = page.locator("#rewards-payments tr[data-role='contributor']").first
    expect(payment).to_contain_text(f"contribution {contribution}, receipt {receipt}")
    expect(page.locator("#rewards-chart path[data-series='contributor']")).to_have_count(1)
    payment.locator("a[href^='#/explorer/tx/']").click()
    expect(page.locator("#tx-method")).to_have_text("IInference.settle")
    expect(page.locator("#tx-events .event[data-event='ContributorPaid']")).to_be_visible()

    # The model owner: the owner's share of its adapter's receipt.
    goto(page, f"rewards/{owner}")
    expect(page.locator("#earned-model-owner")).not_to_have_text("0 OPEN")
    expect(page.locator("#rewards-payments tr[data-role='model owner']").first).to_contain_text(f"receipt {receipt} of adapter {adapter}")

    # A staker: fees reached the stakers' pool; it claims them from the page.
    goto(page, "rewards")
    choose_account(page, "dev1")  # the page follows the chosen account
    expect(page.locator("#rewards-address")).to_have_value(re.compile(_addr(cli, "dev1"), re.I))
    expect(page.locator("#claim-rewards")).to_be_visible()
    page.click("#claim-rewards")
    wait_toast(page, "Rewards claimed")
    expect(page.locator("#earned-staker")).not_to_have_text("0 OPEN")
    claim = page.locator("#rewards-payments tr[data-role='staker']").first
    expect(claim).to_contain_text("rewards claimed")
    claim.locator("a[href^='#/explorer/tx/']").click()
    expect(page.locator("#tx-method")).to_have_text("IStaking.claimRewards")
    expect(page.locator("#tx-events .event[data-event='RewardsClaimed']")).to_be_visible()

    # Everyone paid as a contributor is listed, linked to their page.
    page.select_option("#account-select", "")  # read only
    goto(page, "rewards")
    expect(page.locator(f"#top-contributors a[href='#/rewards/{contributor}' i]")).to_be_visible()

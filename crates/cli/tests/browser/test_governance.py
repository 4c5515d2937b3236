"""Governance: stake for votes, propose a parameter change, vote with a reason, queue and execute
it through the browser (dev chain: 2 s voting delay, 20 s of voting, 2 s timelock), then find
every one of those transactions, decoded, in the explorer and the change in force."""

import json
import secrets

from conftest import TX_TIMEOUT_MS, choose_account, expect, goto, wait_toast

PARAM = "agent_free_tokens_per_day"


def test_a_parameter_proposal_passes_through_the_ui(page, cli):
    before = json.loads(cli("params"))[PARAM]
    new_value = before + 12345

    goto(page, "governance")
    choose_account(page, "dev2")
    expect(page.locator("#my-stake")).to_be_visible()
    staked_before = page.locator("#my-stake").inner_text()
    page.fill("#stake-amount", "1000")
    page.click("#stake-button")
    wait_toast(page, "Staked")
    expect(page.locator("#my-stake")).not_to_have_text(staked_before)
    staked = page.locator("#my-stake").inner_text()  # 1,000 OPEN on a fresh chain
    # Stake counts for proposals from the next second on.
    expect(page.locator("#my-proposal-votes")).to_have_attribute("data-enough", "1", timeout=TX_TIMEOUT_MS)

    page.fill("#param-changes .param-key", PARAM)
    expect(page.locator("#param-changes .param-now")).to_contain_text(str(before))
    page.fill("#param-changes .param-value", str(new_value))
    page.fill("#proposal-description", f"Raise the agents' free tokens to {new_value}\n\nBrowser test {secrets.token_hex(4)}.")
    page.click("#propose-button")
    wait_toast(page, "Proposal created")
    expect(page.locator("#proposal-id")).to_be_visible()
    proposal_id = page.locator("#proposal-id").inner_text()
    expect(page.locator("#proposal-calls")).to_contain_text("IParams.setParam")
    expect(page.locator("#proposal-calls")).to_contain_text(PARAM)

    # Voting opens after the voting delay.
    expect(page.locator("#proposal-state [data-state]")).to_have_attribute("data-state", "Active", timeout=TX_TIMEOUT_MS)
    page.select_option("#vote-support", "1")
    page.fill("#vote-reason", "more free tokens for agents")
    page.click("#vote-button")
    wait_toast(page, "Voted For")
    expect(page.locator("#votes-for")).to_have_text(staked)
    expect(page.locator("#proposal-votes")).to_contain_text("more free tokens for agents")

    # It succeeds when voting closes; queue, then execute after the timelock.
    expect(page.locator("#proposal-state [data-state]")).to_have_attribute("data-state", "Succeeded", timeout=TX_TIMEOUT_MS)
    page.click("#queue-button")
    wait_toast(page, "Queued")
    expect(page.locator("#proposal-state [data-state]")).to_have_attribute("data-state", "Queued")
    expect(page.locator("#execute-button")).to_be_enabled(timeout=TX_TIMEOUT_MS)
    page.click("#execute-button")
    wait_toast(page, "Executed")
    expect(page.locator("#proposal-state [data-state]")).to_have_attribute("data-state", "Executed")
    assert json.loads(cli("params"))[PARAM] == new_value

    # Every transaction of the proposal, found in the explorer with its call decoded.
    history = page.locator("#proposal-history tr[data-tx]")
    expect(history).to_have_count(4)
    txs = {history.nth(i).get_attribute("data-event"): history.nth(i).get_attribute("data-tx") for i in range(4)}
    assert set(txs) == {"ProposalCreated", "VoteCast", "ProposalQueued", "ProposalExecuted"}, txs
    expected = {
        "ProposalCreated": ("IGovernor.propose", "ProposalCreated"),
        "VoteCast": ("IGovernor.castVoteWithReason", "VoteCast"),
        "ProposalQueued": ("IGovernor.queue", "ProposalQueued"),
        "ProposalExecuted": ("IGovernor.execute", "ParamsChanged"),
    }
    for event, tx in txs.items():
        method, logged = expected[event]
        goto(page, f"explorer/tx/{tx}")
        expect(page.locator("#tx-status")).to_have_text("Success")
        expect(page.locator("#tx-method")).to_have_text(method)
        expect(page.locator(f"#tx-events .event[data-event='{logged}']")).to_be_visible()
    goto(page, f"explorer/tx/{txs['ProposalCreated']}")
    expect(page.locator("#tx-call")).to_contain_text("Raise the agents' free tokens")
    expect(page.locator("#tx-inner-calls")).to_contain_text("IParams.setParam")
    expect(page.locator("#tx-inner-calls")).to_contain_text(PARAM)

    # The list shows it as executed.
    goto(page, "governance")
    expect(page.locator(f"#proposals tr[data-proposal='{proposal_id}'] [data-state]")).to_have_attribute("data-state", "Executed")

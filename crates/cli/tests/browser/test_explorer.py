"""Explorer: the latest transactions and blocks, a transaction with its module call and events
decoded, a block, an address with its balance and transactions, and the search box."""

import re

from conftest import expect, goto

BEEF = "0x000000000000000000000000000000000000bEEF"


def _tx_hash(out):
    m = re.search(r"transaction (0x[0-9a-f]{64})", out)
    assert m, f"no transaction hash in:\n{out}"
    return m.group(1)


def test_a_transfer_and_a_module_call_are_found_and_decoded(page, cli, rpc, dev_accounts):
    transfer = _tx_hash(cli("--from", "dev7", "send", BEEF, "1.5"))
    stake = _tx_hash(cli("--from", "dev7", "stake", "add", "3"))

    # Both appear among the latest transactions, newest first.
    goto(page, "explorer")
    rows = page.locator("#latest-txs tr[data-tx]")
    expect(rows.first).to_have_attribute("data-tx", stake)
    expect(page.locator(f"#latest-txs tr[data-tx='{transfer}']")).to_contain_text("transfer")
    expect(page.locator(f"#latest-txs tr[data-tx='{stake}']")).to_contain_text("staking.stake")
    expect(page.locator("#latest-blocks tr[data-block]").first).to_be_visible()

    # The module call: decoded function, value and the Staked event with its arguments.
    page.locator(f"#latest-txs tr[data-tx='{stake}'] a[href^='#/explorer/tx/']").click()
    expect(page.locator("#tx-hash")).to_have_text(stake)
    expect(page.locator("#tx-status")).to_have_text("Success")
    expect(page.locator("#tx-method")).to_have_text("IStaking.stake")
    staked = page.locator("#tx-events .event[data-event='Staked']")
    expect(staked.locator(f"a[href$='{dev_accounts['dev7']}' i]")).to_be_visible()
    expect(staked).to_contain_text("3 OPEN")

    # The transfer: a plain transfer of 1.5 OPEN, with the bank's Transfer event.
    goto(page, f"explorer/tx/{transfer}")
    expect(page.locator("#tx-call")).to_contain_text("plain OPEN transfer")
    expect(page.locator("main")).to_contain_text("1.5 OPEN")
    expect(page.locator("#tx-events .event[data-event='Transfer']")).to_be_visible()

    # Its block lists it; the block page links back to the transaction.
    block = int(rpc("eth_getTransactionByHash", [transfer])["blockNumber"], 16)
    page.locator(f"a[href='#/explorer/block/{block}']").first.click()
    expect(page.locator("h1")).to_have_text(f"Block {block}")
    expect(page.locator(f"#block-txs tr[data-tx='{transfer}']")).to_be_visible()

    # The recipient's page: its balance and the transfer among its transactions.
    goto(page, f"explorer/address/{BEEF}")
    expect(page.locator("#address-balance")).to_contain_text("OPEN")
    expect(page.locator(f"#address-txs tr[data-tx='{transfer}']")).to_be_visible()
    expect(page.locator("#address-scan")).to_contain_text("down to genesis")

    # The search box finds a transaction by hash and an address.
    goto(page, "explorer")
    page.fill("#explorer-search", stake)
    page.press("#explorer-search", "Enter")
    expect(page.locator("#tx-hash")).to_have_text(stake)
    page.fill("#explorer-search", dev_accounts["dev7"])
    page.press("#explorer-search", "Enter")
    expect(page.locator(f"#address-txs tr[data-tx='{stake}']")).to_be_visible()


def test_a_missing_block_and_a_bad_address_say_so(page):
    goto(page, "explorer/block/99999999")
    expect(page.locator("main")).to_contain_text("does not exist yet")
    goto(page, "explorer/address/nope")
    expect(page.locator("main .error")).to_contain_text("is not an address")

"""Explorer: the latest transactions and blocks, a transaction with its module call and events
decoded, a block, an address with its balance and transactions, and the search box."""

import re

from conftest import expect, goto, wait_toast

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


# An EIP-1193 provider injected into the page, as a wallet extension does: it holds one key
# (dev6's, given by the test) and signs what the dashboard asks it to; every request it gets is
# recorded in window.__walletCalls.
WALLET = """
(() => {
  const KEY = %r;
  const calls = [];
  window.__walletCalls = calls;
  const rpc = async (method, params) => {
    const r = await fetch('/', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
    const j = await r.json();
    if (j.error) throw Object.assign(new Error(j.error.message), { code: j.error.code });
    return j.result;
  };
  window.ethereum = {
    on() {},
    async request({ method, params = [] }) {
      calls.push(method);
      const { ethers } = { ethers: await import('/dashboard/vendor/ethers-6.17.0.min.js') };
      const wallet = new ethers.Wallet(KEY);
      if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [wallet.address];
      if (method === 'eth_sendTransaction') {
        const t = params[0];
        const [chainId, nonce, gas, block] = await Promise.all([rpc('eth_chainId', []),
          rpc('eth_getTransactionCount', [wallet.address, 'pending']), rpc('eth_estimateGas', [t]),
          rpc('eth_getBlockByNumber', ['latest', false])]);
        const raw = await wallet.signTransaction({ type: 2, chainId: BigInt(chainId), nonce: Number(nonce),
          to: t.to, data: t.data, value: BigInt(t.value || 0), gasLimit: BigInt(gas),
          maxPriorityFeePerGas: 0n, maxFeePerGas: BigInt(block.baseFeePerGas || 0) * 2n + 1n });
        return rpc('eth_sendRawTransaction', [raw]);
      }
      return rpc(method, params);
    },
  };
})();
"""


def test_an_injected_wallet_signs_what_the_dashboard_sends(page, base_url):
    import json
    import urllib.request
    with urllib.request.urlopen(base_url + "dashboard/dev-accounts", timeout=30) as res:
        dev6 = next(a for a in json.load(res)["accounts"] if a["name"] == "dev6")
    page.add_init_script(WALLET % dev6["privateKey"])
    goto(page, "governance")
    page.select_option("#account-select", "injected")
    expect(page.locator("#balance a")).to_have_attribute("href", re.compile(dev6["address"], re.I))
    page.fill("#stake-amount", "2")
    page.click("#stake-button")
    toast = wait_toast(page, "Staked")
    calls = page.evaluate("window.__walletCalls")
    assert "eth_requestAccounts" in calls and "eth_sendTransaction" in calls, calls
    tx = re.search(r"tx (0x[0-9a-f]{6})", toast.inner_text())
    assert tx, toast.inner_text()
    goto(page, f"explorer/address/{dev6['address']}")
    row = page.locator("#address-txs tr[data-tx]", has_text="staking.stake").first
    expect(row).to_be_visible()
    expect(row).to_contain_text("2 OPEN")

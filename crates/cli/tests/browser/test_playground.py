"""Playground: chat with an on-chain adapter (paid: deposit, operator allowance and an API key
set up in the browser), the streamed answer's spans highlighted by the contribution they came
from, with the contributor on hover, the fee and its split, and the settled receipt."""

import os
import tempfile

from conftest import TX_TIMEOUT_MS, choose_account, expect, goto
from test_models import MODEL, approved_datanet, base_model_id

SENTENCE = ("Writing those four questions on the lid in chalk keeps the visit short "
            "and stops me pulling frames out of curiosity.")


def test_chat_shows_attributed_spans_fee_and_receipt(page, cli, base_url, dev_accounts):
    # An adapter on chain whose attribution index covers alice.jsonl (contributed by dev1).
    ds = approved_datanet(cli, base_url, "Playground bees")
    work = tempfile.mkdtemp(prefix="playground-")
    adapter, index = os.path.join(work, "adapter"), os.path.join(work, "index")
    cli("adapter", "init", "--model", MODEL, "--out", adapter)
    cli("index", "build", f"{ds}@1", "--tokenizer", MODEL, "--out", index)
    base = base_model_id(cli, base_url)
    cli("--from", "dev3", "model", "publish-adapter", adapter, "--name", "playground-bees",
        "--base", str(base), "--datanets", f"{ds}@1", "--index", index)

    goto(page, "playground?model=playground-bees")
    choose_account(page, "dev5")
    page.locator("#setup-key").click()
    expect(page.locator("#key-ready")).to_be_visible(timeout=TX_TIMEOUT_MS)
    page.locator("#prompt").fill("Repeat this sentence exactly: " + SENTENCE)
    page.locator("#send").click()
    answer = page.locator(".msg.assistant[data-done='1']")
    expect(answer).to_have_count(1, timeout=TX_TIMEOUT_MS)
    expect(answer.locator(".answer")).to_contain_text("four questions on the lid")

    # Spans: coloured by contributor, hover names the contributor and the contribution.
    mark = answer.locator("mark.span").first
    expect(mark).to_be_visible()
    assert mark.get_attribute("data-contributor").lower() == dev_accounts["dev1"].lower()
    title = mark.get_attribute("title")
    assert dev_accounts["dev1"].lower() in title.lower() and "contribution #" in title, title
    assert "src-c0" in mark.get_attribute("class")
    expect(answer.locator("#attribution-table")).to_contain_text("#")
    fee = answer.locator("#fee")
    expect(fee).to_contain_text("Fee")
    expect(fee).to_contain_text("contributors")
    # The node's recorder puts the call on chain and settles it; the contributor is paid.
    settlement = answer.locator("#settlement")
    expect(settlement).to_contain_text("settled.", timeout=TX_TIMEOUT_MS)
    expect(settlement.locator("table").last).to_contain_text("OPEN")

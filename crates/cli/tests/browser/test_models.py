"""Models: start a short ModelFactory training job from the train form and watch its loss chart
get points live from the job's event stream until it is done; publish it from the page (the node
prepares the bundle and the attribution index, the browser signs registerAdapter) and follow the
adapter's provenance back to the datanet version it was trained on.

Also the set-up helpers the playground test shares: a datanet with an approved version, and the
served base model registered on chain."""

import json
import os
import urllib.error
import urllib.request

from conftest import TX_TIMEOUT_MS, choose_account, expect, goto, wait_toast

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SAMPLE = os.path.join(ROOT, "datanets", "sample")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TRAIN_MS = 300_000


def get_json(base_url, path):
    with urllib.request.urlopen(base_url + path.lstrip("/"), timeout=30) as res:
        return json.load(res)


def approved_datanet(cli, base_url, name, file="alice.jsonl"):
    """Creates datanet `name` (dev0), contributes `file` (dev1) and approves it: version 1."""
    cli("--from", "dev0", "datanet", "create", name)
    ids = [d["id"] for d in get_json(base_url, "v1/datanets") if d["name"] == name]
    assert ids, f"datanet {name} was not created"
    ds = max(ids)
    cli("--from", "dev1", "datanet", "contribute", str(ds), os.path.join(SAMPLE, file))
    pending = [c["id"] for c in get_json(base_url, f"v1/datanets/{ds}/contributions") if c["status"] == "pending"]
    assert len(pending) == 1, pending
    cli("--from", "dev0", "datanet", "approve", str(pending[0]))
    return ds


def base_model_id(cli, base_url):
    """The on-chain id of the base model the node serves, registered (dev0) when missing."""
    want = get_json(base_url, "v1/openlora")["model_hash"].lower()
    for attempt in range(2):
        i = 1
        while True:
            try:
                out = cli("model", "show", str(i))
            except AssertionError:
                break
            if want in out.lower():
                return i
            i += 1
        if attempt == 0:
            cli("--from", "dev0", "model", "register-base", "SmolLM2", "--hash", want)
    raise AssertionError("the base model could not be registered")


def wait_points(page, chart, more_than, timeout_ms=TRAIN_MS):
    """Waits (bounded) until the chart holds more than `more_than` points; returns the count.
    (Polled from Python: the node's CSP forbids the eval that wait_for_function would need.)"""
    waited = 0
    while True:
        n = int(chart.get_attribute("data-points") or 0)
        if n > more_than:
            return n
        assert waited < timeout_ms, f"the loss chart stayed at {n} points for {timeout_ms} ms"
        page.wait_for_timeout(500)
        waited += 500


def test_train_watch_live_loss_then_provenance(page, cli, base_url):
    ds = approved_datanet(cli, base_url, "Train bees")
    goto(page, "models")
    choose_account(page, "dev3")
    form = page.locator("#train")
    form.locator("select[name=datanet]").select_option(str(ds))
    form.locator("input[name=version]").fill("1")
    for name, value in [("max_steps", "3"), ("per_device_train_batch_size", "1"), ("cutoff_len", "48"),
                        ("eval_steps", "2"), ("sample_prompts", "0")]:
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    wait_toast(page, "queued")

    # The chart gets points as the steps stream in, then the job ends.
    chart = page.locator("svg#loss-chart")
    first = wait_points(page, chart, 0)
    wait_points(page, chart, first)
    expect(page.locator("#job-status")).to_have_text("done", timeout=TRAIN_MS)
    assert int(chart.get_attribute("data-points")) >= 3  # three steps, one evaluation at least
    expect(page.locator("#job-progress")).to_contain_text("step 3 / 3")
    expect(page.locator("#publish-command")).to_contain_text("factory publish")

    # Nobody but the signed submitter may have the node prepare a publication.
    job = get_json(base_url, "v1/factory/jobs")[0]
    assert job["status"] == "done", job
    unsigned = urllib.request.Request(f"{base_url}v1/factory/jobs/{job['id']}/publish", method="POST",
                                      data=b'{"name": "x"}', headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(unsigned, timeout=30)
        raise AssertionError("an unsigned publish was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code

    # Publish it from the page; the adapter's provenance leads back to the datanet version.
    base_model_id(cli, base_url)
    page.locator("#job-publish input[name=adapter-name]").fill("browser-trained")
    page.locator("#job-publish-button").click()
    wait_toast(page, "published")
    expect(page.locator("#job-published")).to_contain_text("browser-trained")
    goto(page, "models/browser-trained")
    expect(page.locator("#provenance")).to_contain_text(f"datanet {ds}")
    expect(page.locator("#provenance")).to_contain_text("matches the chain")
    goto(page, "models")
    page.locator("#adapters tr", has_text="browser-trained").locator("a.provenance").first.click()
    page.wait_for_url(f"**/#/datanets/{ds}", timeout=TX_TIMEOUT_MS)
    expect(page.locator("h1")).to_contain_text("Train bees")

"""Datanets: create a datanet in the browser, upload a file (signed staging upload, then the
contribute transaction), see its validation report, approve it as the owner into version 1 and
find its rows and its contributor on the leaderboard; a second file that repeats rows gets them
refused as duplicates in its report."""

import os

from conftest import TX_TIMEOUT_MS, choose_account, expect, goto, wait_toast

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "datanets", "sample")


def test_create_upload_report_approve(page, dev_accounts):
    goto(page, "datanets")
    choose_account(page, "dev0")
    form = page.locator("#create-datanet")
    form.locator("input[name=name]").fill("Browser bees")
    form.locator("input[name=summary]").fill("made by the browser test")
    form.locator("button[type=submit]").click()
    wait_toast(page, "created")
    page.wait_for_url("**/#/datanets/*", timeout=TX_TIMEOUT_MS)
    expect(page.locator("main#page")).to_have_attribute("data-ready", "1")
    expect(page.locator("h1")).to_contain_text("Browser bees")

    # Upload: the node's report, then the contribution on chain.
    page.locator("#upload input[type=file]").set_input_files(os.path.join(SAMPLE, "alice.jsonl"))
    page.locator("#upload button[type=submit]").click()
    expect(page.locator("#contributed")).to_contain_text("recorded", timeout=TX_TIMEOUT_MS)
    report = page.locator("#upload-report")
    expect(report.locator(".report-files")).to_contain_text("alice.jsonl")
    expect(report.locator(".report-files td.good")).to_have_text("accepted")
    expect(report.locator(".stat", has_text="rows accepted")).to_contain_text("60")
    row = page.locator("#contributions tr[data-contribution]").first
    expect(row).to_contain_text("pending")

    # The owner approves it: version 1 with its 60 rows; the contributor leads the board.
    row.locator("button.approve").click()
    wait_toast(page, "approved")
    expect(page.locator("#versions")).to_contain_text("v1")
    expect(page.locator("#contributions tr[data-contribution]").first).to_contain_text("approved (v1)")
    expect(page.locator("#rows")).to_contain_text("version 1, rows 0–20")
    expect(page.locator("#rows table.rows tbody tr")).to_have_count(20)
    leader = page.locator("#contributors tbody tr").first.locator("a").first
    assert leader.get_attribute("title").lower() == dev_accounts["dev0"].lower()

    # Another contributor's file that repeats rows already in the datanet: refused as duplicates.
    choose_account(page, "dev1")
    page.locator("#upload input[type=file]").set_input_files(os.path.join(SAMPLE, "bob.txt"))
    page.locator("#upload input[name=dry-run]").check()
    page.locator("#upload button[type=submit]").click()
    expect(report).to_contain_text("dry run: nothing recorded on chain", timeout=TX_TIMEOUT_MS)
    dup = report.locator(".stat", has_text="duplicates refused").locator(".value")
    assert int(dup.inner_text()) >= 3, report.inner_text()

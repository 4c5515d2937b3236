"""Simulator: run a small scenario on the node and view its report: the classification with its
reasons, totals, the supply check and the daily series. (The node's limits on a run are tested
in crates/cli/src/sim_routes.rs: a refused request would log a console error here.)"""

from conftest import expect, goto

TINY = """name = "browser"
days = 12
seed = 4
[contributors]
max = 30
initial = 5
[users]
max = 30
initial = 5
[stakers]
count = 4
"""


def test_run_a_scenario_and_view_its_report(page):
    goto(page, "simulator")
    assert "[subsidy]" in page.locator("#scenario").input_value()  # the node's example to start from
    page.locator("#scenario").fill(TINY)
    page.locator("#run-sim").click()
    outcome = page.locator("#sim-outcome")
    expect(outcome).to_be_visible()
    assert outcome.inner_text() in ("take-off", "stall")
    report = page.locator("#sim-report")
    expect(report).to_contain_text("browser, seed 4")
    expect(report).to_contain_text("after 12 days")
    expect(report).to_contain_text("passed")  # supply check
    expect(page.locator("svg#sim-chart-0")).to_have_attribute("data-points", "12")
    expect(page.locator("img.sim-plot")).to_be_visible()
    expect(page.locator("#sim-download")).to_have_attribute("download", "report.html")


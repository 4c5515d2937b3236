"""Explorer: latest blocks, a block, a transaction with its decoded call and events, an address."""

from conftest import expect, goto


def test_shell_loads_without_errors_and_lists_blocks(page):
    goto(page, "explorer")
    expect(page.locator("nav.pages a.active")).to_have_text("Explorer")
    expect(page.locator("#chain")).to_contain_text("dev")

"""Shared fixtures of the dashboard's browser tests (run by crates/cli/tests/dashboard_browser.rs
against one dev node; see that file). Playwright drives Debian's chromium, headless.

Fixtures:
  base_url   the dashboard's URL (env OPENLEDGER_DASHBOARD_URL, e.g. http://127.0.0.1:PORT/)
  browser    one headless chromium for the session (OPENLEDGER_CHROMIUM, default /usr/bin/chromium)
  page       a fresh browser context + page per test; fails the test on any console error,
             uncaught page error or CSP violation (so the node's CSP and the pages stay honest)
  rpc        rpc(method, params) -> result, JSON-RPC from Python
  cli        cli(*args) -> stdout, the openledger binary against the node (OPENLEDGER_BIN, OPENLEDGER_HOME)
Development: OPENLEDGER_DASHBOARD_SRC=/path/to/dashboard serves the dashboard's files from the
working tree instead of the node's binary, so pages can be edited without rebuilding; run pytest
by hand against a running dev node (see crates/cli/tests/dashboard_browser.rs for the variables).
Helpers (import from conftest): goto(page, base_url, route), choose_account(page, name),
wait_toast(page, text), dev_address(name).
"""

import json
import os
import subprocess
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

# Bounded waits: every Playwright wait uses these (milliseconds).
TIMEOUT_MS = 20_000
TX_TIMEOUT_MS = 60_000

expect.set_options(timeout=TIMEOUT_MS)


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests through "
                    "`cargo test -p openledger-cli --test dashboard_browser`", returncode=2)
    return value


@pytest.fixture(scope="session")
def base_url():
    url = _env("OPENLEDGER_DASHBOARD_URL")
    return url if url.endswith("/") else url + "/"


def _rpc(base, method, params=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(base, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        reply = json.load(res)
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@pytest.fixture(scope="session")
def rpc(base_url):
    return lambda method, params=None: _rpc(base_url, method, params)


@pytest.fixture(scope="session")
def cli(base_url):
    binary = _env("OPENLEDGER_BIN")
    home = _env("OPENLEDGER_HOME")

    def run(*args):
        out = subprocess.run([binary, "--home", home, "--rpc", base_url.rstrip("/"), *args],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"openledger {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    return run


@pytest.fixture(scope="session")
def dev_accounts(base_url):
    with urllib.request.urlopen(base_url + "dashboard/dev-accounts", timeout=30) as res:
        return {a["name"]: a["address"] for a in json.load(res)["accounts"]}


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("OPENLEDGER_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    problems = []

    def on_console(msg):
        if msg.type == "error":
            problems.append(f"console error: {msg.text}")

    pg.on("console", on_console)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # Requests anywhere but the node are a bug (no CDN): record and block them.
    host = base_url.split("//", 1)[1].split("/", 1)[0]

    def guard(route):
        url = route.request.url
        if url.startswith("data:") or url.split("//", 1)[-1].split("/", 1)[0] == host:
            route.continue_()
        else:
            problems.append(f"request to another origin: {url}")
            route.abort()

    pg.route("**/*", guard)
    src = os.environ.get("OPENLEDGER_DASHBOARD_SRC")
    if src:
        # Development only: serve dashboard/ from the working tree (no rebuild per edit).
        pg.route("**/dashboard/**", lambda route: _serve_local(route, src, host, problems))
    pg.problems = problems
    yield pg
    context.close()
    assert not problems, "the browser reported problems:\n" + "\n".join(problems)


_TYPES = {"js": "text/javascript", "css": "text/css", "html": "text/html", "sol": "text/plain",
          "md": "text/plain", "json": "application/json", "svg": "image/svg+xml"}


def _serve_local(route, src, host, problems):
    url = route.request.url
    if url.split("//", 1)[-1].split("/", 1)[0] != host:
        problems.append(f"request to another origin: {url}")
        return route.abort()
    path = url.split("/dashboard/", 1)[1].split("?", 1)[0]
    file = os.path.join(src, path)
    if path.startswith(("contracts/", "dev-accounts")) or ".." in path or not os.path.isfile(file):
        return route.continue_()
    with open(file, "rb") as f:
        body = f.read()
    csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"
    route.fulfill(status=200, body=body, headers={
        "content-type": _TYPES.get(path.rsplit(".", 1)[-1], "application/octet-stream"),
        "content-security-policy": csp, "cache-control": "no-store"})


def goto(page, route):
    """Opens `#/<route>` and waits until its page has rendered (main#page[data-ready])."""
    page.goto("/#/" + route.lstrip("/"))
    page.wait_for_selector("body[data-booted='1']")
    expect(page.locator("main#page")).to_have_attribute("data-ready", "1")


def choose_account(page, name):
    """Picks a dev account (dev0…dev9) in the header's account picker; waits for its balance."""
    page.wait_for_selector("body[data-booted='1']")
    page.select_option("#account-select", name)
    expect(page.locator("#balance-amount")).to_contain_text("OPEN")


def wait_toast(page, text, timeout=TX_TIMEOUT_MS):
    """Waits for a toast containing `text`; fails at once on an error toast."""
    ok = page.locator(".toast", has_text=text)
    err = page.locator(".toast-error")
    ok.or_(err).first.wait_for(timeout=timeout)
    if err.count() and not ok.count():
        raise AssertionError("error toast: " + err.first.inner_text())
    return ok.first

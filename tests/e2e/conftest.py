"""Browser tests: Debian's headless Chromium driven by Playwright, and a loud note at the end of the
run when they could not run at all."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser_parts() -> list[str]:
    """What the browser tests lack on this machine (empty when they can run)."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"Debian's Chromium at {CHROMIUM} (as root: apt-get update && apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright; never `playwright install`)")
    return missing


_MISSING = missing_browser_parts()

#: ``pytestmark`` of a browser test module: skipped, naming what is missing, without a browser; under
#: ``make test`` (pytest-xdist ``--dist loadgroup``) every browser test runs in one worker, so that one
#: browser and one Airflow server run at a time and each module's fixtures are made once.
BROWSER_TESTS = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(bool(_MISSING), reason="BROWSER TESTS SKIPPED, missing: " + "; ".join(_MISSING)),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def viewport() -> dict[str, int]:
    """The size of a test's tab; a module overrides it when its pages need more room."""
    return {"width": 1280, "height": 900}


@pytest.fixture
def page(browser, viewport, tmp_path) -> Iterator[Any]:
    """A fresh browser tab; its last screenshot is kept in ``tmp_path`` for a failure's post-mortem."""
    context = browser.new_context(viewport=viewport)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    tab.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    context.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner after the results when the e2e tests were collected but skipped for want of a browser."""
    missing = missing_browser_parts()
    if not missing or not any("e2e" in report.nodeid for report in terminalreporter.stats.get("skipped", [])):
        return
    terminalreporter.write_sep("!", "BROWSER TESTS (tests/e2e) WERE SKIPPED", red=True, bold=True)
    for part in missing:
        terminalreporter.write_line(f"missing: {part}", red=True)

"""Browser tests: say loudly, at the end of the run, when they could not run at all."""

from __future__ import annotations

import importlib.util
import os

import pytest

CHROMIUM = "/usr/bin/chromium"


def missing_browser_parts() -> list[str]:
    """What the browser tests lack on this machine (empty when they can run)."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"Debian's Chromium at {CHROMIUM} (as root: apt-get update && apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright; never `playwright install`)")
    return missing


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner after the results when the e2e tests were collected but skipped for want of a browser."""
    missing = missing_browser_parts()
    if not missing or not any("e2e" in report.nodeid for report in terminalreporter.stats.get("skipped", [])):
        return
    terminalreporter.write_sep("!", "BROWSER TESTS (tests/e2e) WERE SKIPPED", red=True, bold=True)
    for part in missing:
        terminalreporter.write_line(f"missing: {part}", red=True)

"""The banner after the results that says which tests were skipped for want of a Debian package."""

from __future__ import annotations

import pytest


def banner(terminalreporter: pytest.TerminalReporter, reason: str, tests: str, missing: str) -> None:
    """Write a red banner when tests were skipped with ``reason``: the skips are counted from the
    reports, which pytest-xdist's workers send back, so it shows under ``make test`` too.

    :param reason: the text of their ``pytest.skip``.
    :param tests: what was skipped, in capitals (``"POSTGRESQL TESTS"``).
    :param missing: what to install.
    """
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if reason in str(report.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} {tests} WERE SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"missing: {missing}", red=True)

"""The code keeps one style: ruff's checks and formatting (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["airflow_provider_searchapi", "tests", "dags_examples", "scripts", "benchmarks"]


#: Formatted only: the Python examples in the user docs.
DOCS = ["README.md", "docs"]


def _ruff(*args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    targets = [t for t in [*TARGETS, *extra] if (ROOT / t).exists()]
    return subprocess.run([sys.executable, "-m", "ruff", *args, *targets], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    result = _ruff("check")
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_format():
    result = _ruff("format", "--check", extra=tuple(DOCS))
    assert result.returncode == 0, result.stdout[-4000:]

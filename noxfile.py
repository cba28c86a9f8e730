"""The compatibility matrix: the provider's compatibility subset on each Airflow 3 minor version.

    make test-matrix                   # every version (what CI runs)
    .venv/bin/nox -s "compat(3.1)"     # one version
    .venv/bin/nox -l                   # the sessions

Each session is a fresh virtualenv made by uv, with the provider installed from this checkout and the
test tools, and runs ``tests/compat`` and ``tests/operators/test_example_dags.py`` (every server on
127.0.0.1); the 3.1 session also drives the connection form in Chromium (``BROWSER``). The
versions below are pinned and resolution stops at ``EXCLUDE_NEWER``, so that a run installs the same
packages whenever it happens.

Refreshing: list the releases with ``.venv/bin/pip index versions apache-airflow``, put each minor
version's newest patch release in ``AIRFLOW``, set ``EXCLUDE_NEWER`` to today (UTC), and run
``make test-matrix``; then try each session without its ``AIRFLOW_BOUNDS`` and drop those it no
longer needs.
"""

from __future__ import annotations

import os
import time

import nox

# This machine's Python 3.11, never one uv would download.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

#: The newest patch release of each Airflow 3 minor version, as of EXCLUDE_NEWER.
AIRFLOW = {"3.0": "3.0.6", "3.1": "3.1.8", "3.2": "3.2.2", "3.3": "3.3.2"}
#: Nothing uploaded after this moment is installed (uv's --exclude-newer): the same set on every run.
EXCLUDE_NEWER = "2026-12-07T00:00:00Z"
#: The provider with its emulator extra, and its redis extra: the sharded example DAG shares its quota
#: through Redis (Debian's redis-server, started by the tests).
PROVIDER = ".[emulator,redis]"
#: What the subset needs besides: moto's S3 server and the storage and SQL providers of the example DAGs.
TEST_PACKAGES = [
    "pytest>=8",
    "pytest-asyncio>=0.23",
    "moto[server]>=5",
    "s3fs>=2024.2",
    "apache-airflow-providers-amazon>=9",
    "apache-airflow-providers-sqlite>=4",
]
#: Airflow 3.0 and 3.1 build the connection form from the hooks' wtforms widgets: the FAB provider
#: brings Flask-AppBuilder, which those widgets come from.
FORM_PACKAGES = {"3.0": ["apache-airflow-providers-fab"], "3.1": ["apache-airflow-providers-fab"]}
#: Airflow 3.1 (Yandex Managed Airflow's version) also runs the browser test of the connection form,
#: in Debian's /usr/bin/chromium driven by Playwright (skipped, loudly, without that browser).
BROWSER = {"3.1": ["playwright>=1.40"]}
BROWSER_TESTS = ["tests/e2e/test_connection_form.py"]
#: Newer releases of these break that Airflow release itself (Airflow's constraints file for the release
#: holds older ones); the failure each bound avoids, as this matrix found it:
AIRFLOW_BOUNDS = {
    "3.0": [
        # the in-process execution API answers every task start with 422 under fastapi 0.165 and
        # cadwyn 9 (the bound is Airflow 3.1.8's own)
        "fastapi<0.118",
        # ObjectStoragePath("s3://...") raises "detected protocol s3 which is incompatible"
        "universal-pathlib<0.3",
        # reading a connection fails: "'MultiFernet' object has no attribute 'is_encrypted'"
        "cryptography<51",
    ],
    "3.1": [
        # saving a connection with extras (the UI's form) fails with 500: "'MultiFernet' object has no
        # attribute 'is_encrypted'"
        "cryptography<51",
    ],
    "3.2": [
        # the execution API fails to build its routes: "Model 'TITerminalStatePayload' needs a
        # discriminator field" (Airflow 3.3.2 itself requires fastapi<0.137)
        "fastapi<0.137",
        # every task start fails inside the in-process execution API: "'State' object has no
        # attribute 'svcs_registry'"
        "svcs<26",
    ],
}
TESTS = ["tests/compat", "tests/operators/test_example_dags.py"]

nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["compat"]


@nox.session(python="3.11", venv_backend="uv")
@nox.parametrize("airflow", list(AIRFLOW), ids=list(AIRFLOW))
def compat(session: nox.Session, airflow: str) -> None:
    """The compatibility subset on the newest patch release of one Airflow minor version."""
    started = time.monotonic()
    session.install(
        f"--exclude-newer={EXCLUDE_NEWER}",
        f"apache-airflow=={AIRFLOW[airflow]}",
        PROVIDER,
        *TEST_PACKAGES,
        *FORM_PACKAGES.get(airflow, []),
        *BROWSER.get(airflow, []),
        *AIRFLOW_BOUNDS.get(airflow, []),
    )
    installed = time.monotonic()
    session.log(f"Airflow {AIRFLOW[airflow]}: installed in {installed - started:.0f} s")
    home = os.path.abspath(session.create_tmp())
    session.env.update(
        {
            "AIRFLOW_HOME": f"{home}/airflow-home",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        # tests/conftest.py is written for the newest Airflow (its masker reset fails before 3.3):
        # leave it out, and load the fixture plugins it names.
        "--confcutdir=tests/compat",
        "-p",
        "tests.airflow_env",
        "-p",
        "tests.storage",
        "-p",
        "tests.redis_server",
        # the browser tests' banner at the end of the run when they were skipped for want of Chromium
        *(["-p", "tests.e2e.conftest"] if airflow in BROWSER else []),
        *(session.posargs or ["-q", "--durations=5", *TESTS, *(BROWSER_TESTS if airflow in BROWSER else [])]),
    )
    session.log(f"Airflow {AIRFLOW[airflow]}: tests ran in {time.monotonic() - installed:.0f} s")

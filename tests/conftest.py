"""Test set-up: a private AIRFLOW_HOME, and small real images.

The emulator fixtures (``searchapi_emulator``, ``searchapi_connection`` …) come from the provider's
own pytest plugin, the same ones our users get.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile

_home = tempfile.mkdtemp(prefix="searchapi-tests-airflow-home-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def make_jpeg(seed: int = 0, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small real JPEG whose bytes differ with ``seed`` (distinct for seeds below 65,536)."""
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    for bit in range(16):  # the seed, drawn as a row of white pixels
        if seed >> bit & 1:
            image.putpixel((bit, 2), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_png(seed: int = 0) -> bytes:
    image = Image.new("RGB", (16, 16), (seed % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def jpeg() -> bytes:
    return make_jpeg(1)


@pytest.fixture
def make_hook(searchapi_emulator, monkeypatch):
    """Build a hook on a new connection pointing at the emulator, with the given credential."""
    import json

    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
    from airflow_provider_searchapi.retry import RetryPolicy

    hooks = []
    fast = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_max=0.05)

    def build(
        credential: str = "authorized_key",
        *,
        conn_id: str = "searchapi_test",
        retry_policy=fast,
        hook_kwargs: dict | None = None,
        **overrides,
    ):
        extras = {**searchapi_emulator.connection_extras(credential=credential), **overrides}
        extras = {k: v for k, v in extras.items() if v is not None}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "yandex_searchapi", "extra": extras})
        )
        hook = SearchApiHook(conn_id, retry_policy=retry_policy, **(hook_kwargs or {}))
        hooks.append(hook)
        return hook

    yield build
    for hook in hooks:
        hook.close()


@pytest.fixture(autouse=True)
def _fresh_secrets_masker():
    """Each test starts with an empty masker, as each Airflow task process does."""
    from airflow.sdk.log import _secrets_masker

    yield
    _secrets_masker().reset_masker()


pytest_plugins = ["tests.storage", "tests.airflow_env", "tests.redis_server", "tests.postgres_server"]


@pytest.fixture
def sqlite_conn_id(tmp_path, monkeypatch) -> str:
    """A ``sqlite`` connection to a new database file."""
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "results.db")})
    )
    return "results_db"


def write_images(folder, count: int, *, start: int = 0) -> list:
    """``count`` distinct small JPEGs in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(start, start + count):
        path = folder / f"img-{seed:04d}.jpg"
        path.write_bytes(make_jpeg(seed))
        paths.append(path)
    return paths


def sql_only_run(tmp_path, sql_conn_id: str, **kwargs) -> dict:
    """The operator over ``tmp_path/in/`` with only a SQL output (table ``found``); its summary."""
    from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator

    op = SearchByImageOperator(
        task_id="t",
        source=f"file://{tmp_path}/in/",
        sql_conn_id=sql_conn_id,
        sql_table="found",
        max_error_ratio=0.5,
        **kwargs,
    )
    return op.execute({})


def jsonl_rows(folder) -> list[dict]:
    """Every row of the JSON Lines parts in a local ``folder``, parts in name order."""
    import json

    return [json.loads(line) for part in sorted(folder.glob("*.jsonl")) for line in part.read_text().splitlines()]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` (seconds) that fall within any ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best

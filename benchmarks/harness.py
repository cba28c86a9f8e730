"""What ``run.py``'s scenarios and ``scenarios_more.py``'s share: table rows, the emulator in its own
process, the cached test images, repeated runs and fresh child processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
CONN_ID = "searchapi_bench"


@dataclass
class Row:
    measure: str
    result: str
    goal: str = "—"
    met: bool | None = None  # None: a figure for information


@dataclass
class Options:
    quick: bool  # small sizes
    runs: int  # runs per figure (medians are reported)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Emulator:
    url: str
    connection: dict[str, Any]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=30).json()

    def use(self, **extra: object) -> None:
        """Point the ``searchapi_bench`` connection (from the environment, as Airflow reads it) here."""
        connection = {**self.connection, "extra": {**self.connection["extra"], **extra}}
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)


@contextmanager
def emulator(*flags: str) -> Iterator[Emulator]:
    """``python -m airflow_provider_searchapi.testing.emulator`` with ``flags``, for the block's duration."""
    with tempfile.TemporaryDirectory() as work:
        conn, ready = Path(work, "conn.json"), Path(work, "ready")
        command = [sys.executable, "-m", "airflow_provider_searchapi.testing.emulator", "--conn-out", str(conn)]
        process = subprocess.Popen([*command, "--ready-file", str(ready), *flags], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (ready.exists() and ready.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start (flags {flags})")
                time.sleep(0.05)
            yield Emulator(ready.read_text(), json.loads(conn.read_text()))
        finally:
            process.terminate()
            process.wait(timeout=30)


def images(count: int, name: str = "small") -> str:
    """URL of a folder of ``count`` distinct small JPEGs in sub-folders of 1,000 (made once, cached);
    folders of other names hold other images."""
    folder, complete = CACHE / f"{name}-{count}", CACHE / f"{name}-{count}.complete"
    if not complete.exists():
        log(f"writing {count:,} small JPEGs into {folder} (once)")
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (120, 80, 40)).save(buffer, "JPEG", quality=80)
        jpeg = buffer.getvalue()
        for index in range(count):
            sub = folder / f"{index // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            comment = f"{name} image {index}".encode()  # a JPEG comment segment makes each file distinct
            segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
            (sub / f"{index}.jpg").write_bytes(jpeg[:2] + segment + jpeg[2:])
        complete.touch()
    return f"file://{folder}/"


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``). Not ``ru_maxrss``: a child inherits its parent's across exec."""
    status = Path("/proc/self/status").read_text()  # Linux only
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def run_child(name: str, *args: str) -> dict[str, Any]:
    """``run.py --child NAME ARGS…`` (``CHILDREN[name](*args)``) in a fresh process, with this one's
    connections: the JSON it printed last."""
    command = [sys.executable, str(HERE / "run.py"), "--child", name, *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the child process {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"a fresh process, {name} {' '.join(args)}: {result}")
    return result


def repeat(options: Options, once: Callable[[], dict[str, float]]) -> dict[str, list[float]]:
    """``once`` run ``options.runs`` times: each figure it returns, as a list over the runs."""
    results = [once() for _ in range(options.runs)]
    return {key: [result[key] for result in results] for key in results[0]}

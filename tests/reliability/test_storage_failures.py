"""A storage failure while writing results never leaves a part that looks committed."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images
from tests.conftest import write_images


@pytest.mark.parametrize("failing", ["pipe_file", "mv"])
def test_failure_mid_write_leaves_only_complete_parts(failing, make_hook, tmp_path, monkeypatch):
    """The sink writes a part with the filesystem's ``pipe_file`` into ``_tmp/``, then ``mv``s it."""
    write_images(tmp_path / "in", 24)
    hook = make_hook("api_key", requests_per_second=1000)
    original = getattr(LocalFileSystem, failing)
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            if failing == "pipe_file":  # half the bytes reach the store, then the connection breaks
                original(self, args[0], args[1][: len(args[1]) // 2])
            raise OSError(f"storage failed during {failing}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, failing, flaky)
    prefix = ObjectStoragePath(f"file://{tmp_path}/out/")
    settings = EnrichmentSettings(max_concurrency=4, batch_sources=2)
    with pytest.raises(OSError, match="storage failed"):
        Enricher(hook, [JsonLinesSink(prefix)], settings).run(list_images(f"file://{tmp_path}/in/"))
    monkeypatch.setattr(LocalFileSystem, failing, original)

    parts = sorted((tmp_path / "out" / "results").glob("*"))
    assert parts and all(part.suffix == ".jsonl" for part in parts)
    for part in parts:  # every committed part is whole: each line parses, each source complete
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        for uri in {row["source_uri"] for row in rows}:
            ranks = [row["rank"] for row in rows if row["source_uri"] == uri]
            assert ranks == list(range(len(ranks)))
    committed = JsonLinesSink(prefix).done_sources()
    summary = Enricher(hook, [JsonLinesSink(prefix)], settings).run(list_images(f"file://{tmp_path}/in/"))
    assert summary.skipped_done == len(committed) and summary.searched + len(committed) == 24
    rows = [
        json.loads(line)
        for part in (tmp_path / "out" / "results").glob("*.jsonl")
        for line in part.read_text().splitlines()
    ]
    assert len({row["source_uri"] for row in rows}) == 24
    assert len(rows) == len({(row["source_uri"], row["rank"]) for row in rows})

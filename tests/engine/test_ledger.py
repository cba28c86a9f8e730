"""The ledger of done images across runs: daily partitions, changed objects, reprocess rules, compaction."""

from __future__ import annotations

import functools
import json

import pytest
from airflow.sdk import ObjectStoragePath

import airflow_provider_searchapi.engine.ledger as ledger_module
from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images
from airflow_provider_searchapi.engine.ledger import Entry, Ledger, Reprocess, fingerprint
from airflow_provider_searchapi.engine.sources import images_from_paths
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from tests.conftest import jsonl_rows, make_jpeg, sql_only_run, write_images


@pytest.fixture
def hook(searchapi_connection):
    return SearchApiHook(searchapi_connection, requests_per_second=1000)


def searches(emulator) -> int:
    return emulator.stats.snapshot()["search_requests"]


def run_for_day(tmp_path, day: str, **kwargs):
    """The operator as a daily DAG has it: ``{{ ds }}`` in ``output_path``, rendered for ``day``."""
    op = SearchByImageOperator(
        task_id="enrich",
        source=f"file://{tmp_path}/in/",
        output_path=f"file://{tmp_path}/out/{{{{ ds }}}}/",
        max_error_ratio=0.5,
        **kwargs,
    )
    op.render_template_fields({"ds": day})
    return op.execute({})


def test_a_second_day_pays_for_nothing_already_done(tmp_path, searchapi_emulator, searchapi_connection):
    write_images(tmp_path / "in", 6)
    (tmp_path / "in" / "text.jpg").write_text("not an image")  # refused for good: done too
    first = run_for_day(tmp_path, "2026-12-01")
    assert (first["searched"], first["failed"], first["skipped_done"]) == (6, 1, 0)
    before = searches(searchapi_emulator)

    second = run_for_day(tmp_path, "2026-12-02")
    assert searches(searchapi_emulator) == before  # not one search request
    assert (second["listed"], second["skipped_done"], second["searched"], second["failed"]) == (7, 7, 0, 0)
    assert (second["changed"], second["retried"]) == (0, 0)
    # The ledger sits beside the daily partitions, at the static part of output_path.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2026-12-01", "2026-12-02", "_state"]

    write_images(tmp_path / "in", 2, start=50)  # new images arrive: only those are searched on day 3
    third = run_for_day(tmp_path, "2026-12-03")
    assert (third["skipped_done"], third["searched"]) == (7, 2)
    assert searches(searchapi_emulator) - before == 2


def _s3_run(hook, bucket, s3_conn_id, day: str, reprocess: str):
    out = ObjectStoragePath(f"{bucket}/results/{day}/", conn_id=s3_conn_id)
    ledger = Ledger(ObjectStoragePath(f"{bucket}/results/_state/", conn_id=s3_conn_id))
    settings = EnrichmentSettings(reprocess=reprocess)
    enricher = Enricher(hook, [JsonLinesSink(out)], settings, ledger)
    return enricher.run(list_images(f"{bucket}/images/", conn_id=s3_conn_id)), out


@pytest.mark.parametrize("reprocess, searched_again", [("changed", 1), ("never", 0), ("all", 5)])
def test_an_overwritten_object_is_searched_again_as_reprocess_says(
    hook, bucket, s3_conn_id, searchapi_emulator, reprocess, searched_again
):
    images = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    for seed in range(5):
        (images / f"{seed}.jpg").write_bytes(make_jpeg(seed))
    first, _ = _s3_run(hook, bucket, s3_conn_id, "day1", "changed")
    assert first.searched == 5
    (images / "3.jpg").write_bytes(make_jpeg(300))  # a new picture under the same key: a new ETag
    before = searches(searchapi_emulator)

    second, out = _s3_run(hook, bucket, s3_conn_id, "day2", reprocess)
    assert searches(searchapi_emulator) - before == searched_again
    assert second.searched == searched_again and second.skipped_done == 5 - searched_again
    assert second.changed == (1 if reprocess == "changed" else 0)
    if searched_again:
        rows = [json.loads(line) for part in (out / "results").iterdir() for line in part.read_text().splitlines()]
        searched = {row["source_uri"] for row in rows}
        assert f"{bucket}/images/3.jpg" in searched and len(searched) == searched_again
        new_etag = {row["source_etag"] for row in rows if row["source_uri"].endswith("/3.jpg")}
        assert new_etag == {(images / "3.jpg").stat()["ETag"].strip('"')}

    third, _ = _s3_run(hook, bucket, s3_conn_id, "day3", "changed")
    # After "changed" or "all" the ledger holds the new version; after "never" it still holds the old.
    assert third.changed == (1 if reprocess == "never" else 0)


def test_failed_searches_again_only_the_retryable_failures(hook, tmp_path, searchapi_emulator):
    folder = tmp_path / "in"
    write_images(folder, 4)
    missing = [folder / "late-0.jpg", folder / "late-1.jpg"]  # not there yet: a read error, retryable
    paths = [f"file://{p}" for p in [*sorted(folder.iterdir()), *missing]]
    state = ObjectStoragePath(f"file://{tmp_path}/state/")

    def run_once(reprocess: str, extra: list[str] = ()):
        sink = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out-{reprocess}/"))
        settings = EnrichmentSettings(reprocess=reprocess)
        return Enricher(hook, [sink], settings, Ledger(state)).run(images_from_paths([*paths, *extra]))

    first = run_once("changed")
    assert (first.searched, first.failed) == (4, 2)
    for seed, path in enumerate(missing):
        path.write_bytes(make_jpeg(100 + seed))
    (folder / "new.jpg").write_bytes(make_jpeg(200))  # never seen: "failed" leaves it for another run
    before = searches(searchapi_emulator)

    second = run_once("failed", [f"file://{folder}/new.jpg"])
    assert searches(searchapi_emulator) - before == 2
    assert (second.searched, second.retried, second.skipped_done, second.skipped_unseen) == (2, 2, 4, 1)
    third = run_once("never", [f"file://{folder}/new.jpg"])
    assert (third.searched, third.retried, third.skipped_done) == (1, 0, 6)


def test_reprocess_failed_needs_a_ledger_and_unknown_rules_are_refused(hook):
    with pytest.raises(ValueError, match="needs a ledger"):
        Enricher(hook, [], EnrichmentSettings(reprocess="failed"))
    with pytest.raises(ValueError, match="reprocess must be one of changed, never, all, failed"):
        EnrichmentSettings(reprocess="sometimes")
    with pytest.raises(ValueError, match="reprocess must be one of"):
        SearchByImageOperator(task_id="t", source="file:///x/", output="xcom", reprocess="everything")


def test_state_path_defaults_to_the_static_part_of_output_path():
    def state(**kwargs):
        return SearchByImageOperator(task_id="t", source="s3://b/in/", **kwargs).state_path

    assert state(output_path="s3://b/results/{{ ds }}/") == "s3://b/results/_state/"
    assert state(output_path="s3://b/results/") == "s3://b/results/_state/"
    assert state(output_path="{{ params.out }}{{ ds }}/") is None  # no static part: give state_path
    assert state(sql_conn_id="db", sql_table="t") is None
    assert state(output_path="s3://b/r/{{ ds }}/", state_path="s3://b/ledger/{{ params.x }}/") == (
        "s3://b/ledger/{{ params.x }}/"
    )


def test_parts_are_compacted_and_the_last_line_of_a_source_wins(tmp_path):
    prefix = ObjectStoragePath(f"file://{tmp_path}/state/")
    ledger = Ledger(prefix, compact_parts=4)
    for n in range(6):
        ledger.record([(f"s3://b/{n}.jpg", f"etag:{n}", "searched"), ("s3://b/same.jpg", f"etag:v{n}", "failed")])
    assert len(list((tmp_path / "state" / "parts").iterdir())) == 6
    reread = Ledger(prefix, compact_parts=4)
    reread.load()  # more than 4 parts: compacted into one
    (part,) = (tmp_path / "state" / "parts").iterdir()
    assert len(part.read_text().splitlines()) == 7
    assert reread.entries.get("s3://b/same.jpg") == Entry("etag:v5", "failed")
    assert reread.entries.get("s3://b/2.jpg") == Entry("etag:2", "searched")
    ledger.record([("s3://b/same.jpg", "etag:v6", "searched")])
    again = Ledger(prefix)
    again.load()
    assert again.entries.get("s3://b/same.jpg") == Entry("etag:v6", "searched") and len(again.entries) == 7
    assert not list((tmp_path / "state" / "_tmp").iterdir())


def test_a_part_named_before_another_run_compacts_but_committed_after_still_wins(tmp_path, monkeypatch):
    # Run B names its part (by the time), run C commits a newer one and run A compacts them all before
    # B's part lands: B's line is the last committed and must not be shadowed by A's compacted part.
    prefix = ObjectStoragePath(f"file://{tmp_path}/state/")
    Ledger(prefix).record([("s3://b/x.jpg", "etag:1", "failed")])
    late, other, compactor = Ledger(prefix), Ledger(prefix), Ledger(prefix, compact_parts=1)
    commit_lines = ledger_module.commit_lines
    interleaved = []

    def commit_after_the_others(*args):
        if not interleaved:  # B's own commit, its name already taken
            interleaved.append(True)
            other.record([("s3://b/y.jpg", "etag:1", "searched")])
            compactor.load()  # 2 parts listed (not B's): compacted into one
            assert len(compactor._parts) == 1
        return commit_lines(*args)

    monkeypatch.setattr(ledger_module, "commit_lines", commit_after_the_others)
    late.record([("s3://b/x.jpg", "etag:2", "searched")])
    monkeypatch.undo()
    reread = Ledger(prefix)
    reread.load()
    assert reread.entries == {
        "s3://b/x.jpg": Entry("etag:2", "searched"),
        "s3://b/y.jpg": Entry("etag:1", "searched"),
    }
    # and once compacted again, still so
    Ledger(prefix, compact_parts=1).load()
    again = Ledger(prefix)
    again.load()
    assert again.entries == reread.entries and len(again._parts) == 1


def test_a_run_reading_the_parts_while_another_compacts_them_reads_the_compacted_one(bucket, s3_conn_id, monkeypatch):
    prefix = ObjectStoragePath(f"{bucket}/state/", conn_id=s3_conn_id)
    writer = Ledger(prefix)
    for n in range(3):
        writer.record([(f"s3://b/{n}.jpg", f"etag:{n}", "searched"), ("s3://b/same.jpg", f"etag:v{n}", "failed")])
    read_jsonl = ledger_module.read_jsonl
    compacted = []

    def compact_after_the_first_part(fs, path):
        yield from read_jsonl(fs, path)
        if not compacted:  # the other parts listed are removed before they are read
            compacted.append(True)
            Ledger(prefix, compact_parts=1).load()

    monkeypatch.setattr(ledger_module, "read_jsonl", compact_after_the_first_part)
    reader = Ledger(prefix)
    reader.load()
    assert compacted and len(reader._parts) == 1
    assert reader.entries == {
        **{f"s3://b/{n}.jpg": Entry(f"etag:{n}", "searched") for n in range(3)},
        "s3://b/same.jpg": Entry("etag:v2", "failed"),
    }


def test_two_runs_removing_the_parts_they_compacted_at_once_both_succeed(tmp_path, monkeypatch):
    # Two shards on one machine compact the same parts; the other one's removals land between this
    # one's steps: the first part before this one's bulk removal, the second just before its own.
    prefix = ObjectStoragePath(f"file://{tmp_path}/state/")
    writer = Ledger(prefix)
    for n in range(3):
        writer.record([(f"s3://b/{n}.jpg", f"etag:{n}", "searched")])
    parts = sorted((tmp_path / "state" / "parts").iterdir())
    fs, rm_file = prefix.fs, prefix.fs.rm_file

    def rm(paths):
        parts[0].unlink()  # the other run's first removal
        return type(fs).rm(fs, paths)

    def removed_by_the_other_run_first(path):
        if path.endswith(parts[1].name):
            parts[1].unlink()
        return rm_file(path)

    monkeypatch.setattr(fs, "rm", rm)
    monkeypatch.setattr(fs, "rm_file", removed_by_the_other_run_first)
    compactor = Ledger(prefix, compact_parts=1)
    compactor.load()
    monkeypatch.undo()
    assert [part.name for part in (tmp_path / "state" / "parts").iterdir()] == [compactor._parts[0].rsplit("/")[-1]]
    reread = Ledger(prefix)
    reread.load()
    assert reread.entries == {f"s3://b/{n}.jpg": Entry(f"etag:{n}", "searched") for n in range(3)}


def test_a_compaction_committed_after_a_later_one_does_not_shadow_it(tmp_path):
    prefix = ObjectStoragePath(f"file://{tmp_path}/state/")
    writer = Ledger(prefix)
    for n in range(2):
        writer.record([("s3://b/same.jpg", f"etag:v{n}", "failed")])
    slow = Ledger(prefix, compact_parts=1)
    slow._read_parts()  # lists and reads 2 parts
    writer.record([("s3://b/same.jpg", "etag:v2", "searched")])
    Ledger(prefix, compact_parts=1).load()  # compacts the 3 parts and removes them
    slow.compact_if_many()  # then commits its compaction of the first 2
    reread = Ledger(prefix)
    reread.load()
    assert len(reread._parts) == 2 and reread.entries == {"s3://b/same.jpg": Entry("etag:v2", "searched")}


def test_shards_compacting_the_same_parts_at_once_leave_one(tmp_path):
    prefix = ObjectStoragePath(f"file://{tmp_path}/state/")
    writer = Ledger(prefix)
    for n in range(3):
        writer.record([(f"s3://b/{n}.jpg", f"etag:{n}", "searched")])
    shards = [Ledger(prefix, compact_parts=1) for _ in range(3)]
    for shard in shards:
        shard._read_parts()  # all list the same parts
    for shard in shards:
        shard.compact_if_many()
    assert len(list((tmp_path / "state" / "parts").iterdir())) == 1


def test_a_damaged_part_is_named(tmp_path):
    (tmp_path / "state" / "parts").mkdir(parents=True)
    (tmp_path / "state" / "parts" / "x.jsonl").write_text('{"source_uri": "a", "fingerprint": null}\n')
    with pytest.raises(ValueError, match=r"ledger part .*x.jsonl line 1"):
        Ledger(ObjectStoragePath(f"file://{tmp_path}/state/")).load()


def test_fingerprints():
    from airflow_provider_searchapi.engine.sources import SourceImage

    assert fingerprint(SourceImage("s3://b/a", etag="abc", size=3, mtime="t")) == "etag:abc"
    assert fingerprint(SourceImage("file:///a", size=3, mtime="2026-12-01T00:00:00+00:00")) == (
        "size:3,mtime:2026-12-01T00:00:00+00:00"
    )
    assert fingerprint(SourceImage("https://x/y.jpg")) is None
    assert Reprocess.parse("never") is Reprocess.NEVER


def _run_into_both(hook, tmp_path, sqlite_conn_id):
    """One run of ``tmp_path/in/`` into JSON Lines and SQLite outputs, with a ledger in ``tmp_path/state/``."""
    from airflow_provider_searchapi.engine import SqlSink

    sinks = [JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/")), SqlSink(sqlite_conn_id, "found")]
    ledger = Ledger(ObjectStoragePath(f"file://{tmp_path}/state/"))
    return Enricher(hook, sinks, EnrichmentSettings(), ledger).run(list_images(f"file://{tmp_path}/in/"))


def test_a_changed_source_gets_new_rows_beside_the_old_in_the_same_output(hook, tmp_path, sqlite_conn_id):
    import sqlite3

    write_images(tmp_path / "in", 3)

    def run_once():
        return _run_into_both(hook, tmp_path, sqlite_conn_id)

    assert run_once().searched == 3
    (tmp_path / "in" / "img-0001.jpg").write_bytes(make_jpeg(777))
    second = run_once()
    assert (second.searched, second.changed, second.skipped_done) == (1, 1, 2)
    with sqlite3.connect(tmp_path / "results.db") as db:
        sizes = db.execute("SELECT DISTINCT source_size FROM found WHERE source_uri LIKE '%img-0001.jpg'").fetchall()
    assert len(sizes) == 2  # both versions' rows, told apart by source_size / source_mtime
    assert run_once().searched == 0


def test_a_changed_source_whose_search_failed_gets_its_new_rows_when_retried(make_hook, searchapi_emulator, tmp_path):
    from airflow_provider_searchapi.retry import RetryPolicy

    write_images(tmp_path / "in", 3)
    state = ObjectStoragePath(f"file://{tmp_path}/state/")
    hook = make_hook("api_key", requests_per_second=1000, retry_policy=RetryPolicy(max_attempts=1))

    def run_once():
        sink = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/"))
        return Enricher(hook, [sink], EnrichmentSettings(), Ledger(state)).run(list_images(f"file://{tmp_path}/in/"))

    assert run_once().searched == 3
    changed = tmp_path / "in" / "img-0001.jpg"
    changed.write_bytes(make_jpeg(777))
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["500"]})
    assert run_once().failed == 1  # the new version's search failed: retryable
    searchapi_emulator.settings.update({"fault_rate": 0.0})
    third = run_once()
    assert (third.searched, third.retried, third.skipped_done) == (1, 1, 2)
    rows = jsonl_rows(tmp_path / "out" / "results")
    sizes = {row["source_size"] for row in rows if row["source_uri"].endswith("img-0001.jpg")}
    assert changed.stat().st_size in sizes and len(sizes) == 2  # the old version's rows, and the new one's


def test_with_only_a_sql_output_its_tables_are_the_ledger(
    tmp_path, searchapi_emulator, searchapi_connection, sqlite_conn_id
):
    write_images(tmp_path / "in", 4)
    (tmp_path / "in" / "text.jpg").write_text("not an image")

    run_once = functools.partial(sql_only_run, tmp_path, sqlite_conn_id)

    assert run_once()["searched"] == 4
    (tmp_path / "in" / "img-0002.jpg").write_bytes(make_jpeg(555))
    before = searches(searchapi_emulator)
    never = run_once(reprocess="never")
    assert (never["searched"], never["skipped_done"]) == (0, 5)
    changed = run_once()
    assert (changed["searched"], changed["changed"], changed["skipped_done"]) == (1, 1, 4)
    assert searches(searchapi_emulator) - before == 1
    assert run_once()["searched"] == 0  # the table now holds the new version


def test_a_run_with_only_a_sql_output_reads_each_table_once(
    tmp_path, searchapi_emulator, searchapi_connection, sqlite_conn_id, monkeypatch
):
    """What the sink holds comes from the ledger's one scan of the tables, not from a second one."""
    import re
    from collections import Counter

    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "text.jpg").write_text("not an image")
    sql_only_run(tmp_path, sqlite_conn_id)
    statements: list[str] = []
    connect = SqliteHook.get_conn

    def traced(self):
        conn = connect(self)
        conn.set_trace_callback(statements.append)  # every statement SQLite runs on this connection
        return conn

    monkeypatch.setattr(SqliteHook, "get_conn", traced)
    assert sql_only_run(tmp_path, sqlite_conn_id)["skipped_done"] == 4
    reads = Counter(
        table
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT")
        for table in re.findall(r"\bFROM\s+(\w+)", sql, re.IGNORECASE)
    )
    assert reads == {"found": 1, "found_errors": 1}


def test_the_sql_ledger_reads_what_its_sink_holds_as_the_sink_would(sqlite_conn_id):
    """Results, or a refusal, even one followed by a retryable error; not a retryable error alone."""
    from airflow_provider_searchapi.engine import SqlSink
    from airflow_provider_searchapi.engine.ledger import FAILED, REFUSED, SEARCHED, SqlLedger
    from airflow_provider_searchapi.engine.sinks import Batch

    sink = SqlSink(sqlite_conn_id, "found")
    found = [{"source_uri": uri, "searched_at": "2026-12-01"} for uri in ("a", "c")]
    errors = [
        {"source_uri": "b", "retryable": 0, "failed_at": "2026-12-01"},
        {"source_uri": "c", "retryable": 1, "failed_at": "2026-12-02"},
        {"source_uri": "d", "retryable": 1, "failed_at": "2026-12-02"},
    ]
    sink.write(Batch(results=found, errors=errors, sources=4))
    ledger = SqlLedger(sink)
    ledger.load()
    assert {uri: entry.outcome for uri, entry in ledger.entries.items()} == {
        "a": SEARCHED,
        "b": REFUSED,
        "c": FAILED,
        "d": FAILED,
    }
    assert ledger.done_sources(sink) == sink.done_sources() == {"a", "b", "c"}


def test_a_run_that_wrote_many_parts_leaves_one(hook, tmp_path):
    write_images(tmp_path / "in", 6)
    state = tmp_path / "state"
    sink = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/"))
    ledger = Ledger(ObjectStoragePath(f"file://{state}/"), compact_parts=2)
    settings = EnrichmentSettings(max_concurrency=2, commit_every=1)
    assert Enricher(hook, [sink], settings, ledger).run(list_images(f"file://{tmp_path}/in/")).searched == 6
    (part,) = (state / "parts").iterdir()
    assert part.name.endswith("~compacted.jsonl") and len(part.read_text().splitlines()) == 6


def test_sources_the_outputs_held_before_the_ledger_existed_are_added_to_it(
    hook, tmp_path, searchapi_emulator, monkeypatch
):
    from airflow_provider_searchapi.engine import pipeline

    monkeypatch.setattr(pipeline, "HELD_RECORD_CHUNK", 2)  # recorded while listing, a few at a time
    write_images(tmp_path / "in", 5)
    source = f"file://{tmp_path}/in/"

    def sink(day: str) -> JsonLinesSink:
        return JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/{day}/"))

    assert Enricher(hook, [sink("day1")]).run(list_images(source)).searched == 5  # no ledger yet
    state = ObjectStoragePath(f"file://{tmp_path}/state/")
    same_day = Enricher(hook, [sink("day1")], ledger=Ledger(state)).run(list_images(source))
    assert (same_day.skipped_done, same_day.searched) == (5, 0)
    before = searches(searchapi_emulator)
    next_day = Enricher(hook, [sink("day2")], ledger=Ledger(state)).run(list_images(source))
    assert (next_day.skipped_done, next_day.searched) == (5, 0)
    assert searches(searchapi_emulator) == before


@pytest.mark.parametrize("reuse", [False, True], ids=["ledger-per-run", "one-ledger-object"])
@pytest.mark.parametrize("case", ["changed", "retried"])
def test_a_crash_before_the_ledger_records_a_new_version_pays_and_writes_it_once(
    case, reuse, make_hook, searchapi_emulator, tmp_path, sqlite_conn_id, monkeypatch
):
    """A source the ledger knows, searched again (its object changed, or its last search failed), whose
    rows both outputs committed before the run died ahead of the ledger's write: the re-run neither
    pays for it again nor writes its rows twice, and records it. Alike when a program gives every run
    the same ledger object."""
    import sqlite3

    from airflow_provider_searchapi.engine import SqlSink
    from airflow_provider_searchapi.engine import ledger as ledger_module
    from airflow_provider_searchapi.retry import RetryPolicy

    write_images(tmp_path / "in", 3)
    state = ObjectStoragePath(f"file://{tmp_path}/state/")
    hook = make_hook("api_key", requests_per_second=1000, retry_policy=RetryPolicy(max_attempts=1))

    one_ledger = Ledger(state)

    def run_once():
        sinks = [JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/")), SqlSink(sqlite_conn_id, "found")]
        ledger = one_ledger if reuse else Ledger(state)
        return Enricher(hook, sinks, EnrichmentSettings(), ledger).run(list_images(f"file://{tmp_path}/in/"))

    if case == "retried":
        searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["500"]})
        assert run_once().failed == 3  # retryable: searched again by the next run
        searchapi_emulator.settings.update({"fault_rate": 0.0})
    else:
        assert run_once().searched == 3
        (tmp_path / "in" / "img-0001.jpg").write_bytes(make_jpeg(777))
    with monkeypatch.context() as patched:

        def die(*args, **kwargs):
            raise OSError("the process died before the ledger's write")

        patched.setattr(ledger_module, "commit_lines", die)  # the outputs commit; the ledger never hears
        with pytest.raises(OSError, match="died before the ledger"):
            run_once()
    before = searches(searchapi_emulator)

    rerun = run_once()
    assert searches(searchapi_emulator) == before  # the outputs hold the current version: nothing paid again
    assert (rerun.searched, rerun.changed, rerun.retried, rerun.skipped_done) == (0, 0, 0, 3)
    with sqlite3.connect(tmp_path / "results.db") as db:
        sql = db.execute("SELECT source_uri, source_size, source_mtime, searched_at FROM found").fetchall()
        (errors,) = db.execute("SELECT COUNT(*) FROM found_errors").fetchone()
    assert errors == (3 if case == "retried" else 0)  # the failures stay, as a log; the ledger says searched
    jsonl = [
        tuple(row[c] for c in ("source_uri", "source_size", "source_mtime", "searched_at"))
        for row in jsonl_rows(tmp_path / "out" / "results")
    ]
    for rows in (sql, jsonl):
        searched = {}  # each version of a source: when it was searched
        for uri, size, mtime, at in rows:
            searched.setdefault((uri, size, mtime), set()).add(at)
        assert all(len(times) == 1 for times in searched.values()), searched  # one search's rows, once
        assert len(searched) == (4 if case == "changed" else 3)
    after = Ledger(state)
    after.load()
    assert {entry.outcome for entry in after.entries.values()} == {"searched"}
    assert run_once().skipped_done == 3


def test_a_changed_source_committed_to_one_output_before_a_crash_is_written_only_to_the_other(
    hook, tmp_path, sqlite_conn_id, monkeypatch
):
    """The run died between the JSON Lines commit and the SQL one: the re-run searches the changed
    source again (the SQL output lacks it) and writes it there only."""
    import sqlite3

    from airflow_provider_searchapi.engine import SqlSink

    write_images(tmp_path / "in", 3)

    def run_once():
        return _run_into_both(hook, tmp_path, sqlite_conn_id)

    assert run_once().searched == 3
    (tmp_path / "in" / "img-0001.jpg").write_bytes(make_jpeg(777))
    with monkeypatch.context() as patched:

        def die(self, batch):
            raise OSError("the process died before the SQL commit")

        patched.setattr(SqlSink, "write", die)
        with pytest.raises(OSError, match="before the SQL commit"):
            run_once()

    assert (run_once().searched, run_once().searched) == (1, 0)
    with sqlite3.connect(tmp_path / "results.db") as db:
        sql = db.execute("SELECT source_uri, source_size, searched_at FROM found").fetchall()
    jsonl = [
        (row["source_uri"], row["source_size"], row["searched_at"]) for row in jsonl_rows(tmp_path / "out" / "results")
    ]
    for rows in (sql, jsonl):
        searched = {}  # each version of a source: when it was searched
        for uri, size, at in rows:
            searched.setdefault((uri, size), set()).add(at)
        assert len(searched) == 4 and all(len(times) == 1 for times in searched.values()), searched

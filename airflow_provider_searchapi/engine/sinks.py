"""Where the rows go: XCom (small runs), JSON Lines part files in object storage, or a SQL table.

A sink commits a batch whole or not at all, and can say which sources it already holds, so that a
re-run skips them (resume). A source is *done* when its result rows are committed, or an error that
no retry can mend (``retryable`` = 0: the image itself is refused); a source whose only trace is a
retryable error is searched again by the next run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow.providers.common.compat.sdk import BaseHook
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_searchapi.engine.records import ERROR_COLUMNS, RESULT_COLUMNS
from airflow_provider_searchapi.engine.sources import local_path, stable_uri
from airflow_provider_searchapi.jsonl import commit_lines, read_jsonl, write_and_remove

#: What tells one version of a source from another in its result rows.
VERSION_COLUMNS = ("source_uri", "source_etag", "source_size", "source_mtime")
Version = tuple[str, str | None, int | None, str | None]


@dataclass
class Batch:
    """Rows of whole sources, committed together."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    sources: int = 0

    def without(self, done: set[str]) -> Batch:
        """The batch less the sources in ``done`` (a sink that already holds them after a crash)."""
        return Batch(
            results=[row for row in self.results if row["source_uri"] not in done],
            errors=[row for row in self.errors if row["source_uri"] not in done],
            sources=self.sources,
        )


class Batches:
    """Finished sources in batches of ``size`` waiting to be committed, and the batch filling up.

    :param size: sources per batch.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.full: collections.deque[Batch] = collections.deque()
        self.filling = Batch()
        self.since = time.monotonic()  # when the filling batch got its first source

    def add(self, results: Iterable[dict[str, Any]] = (), errors: Iterable[dict[str, Any]] = ()) -> bool:
        """Add one source's rows; return whether that filled a batch."""
        if not self.filling.sources:
            self.since = time.monotonic()
        self.filling.results.extend(results)
        self.filling.errors.extend(errors)
        self.filling.sources += 1
        if self.filling.sources < self.size:
            return False
        self.full.append(self.filling)
        self.filling = Batch()
        return True

    def take(self, max_age: float) -> Batch | None:
        """The next batch to commit: a full one, else the one filling up once its first source waited
        ``max_age`` seconds."""
        if self.full:
            return self.full.popleft()
        if self.filling.sources and time.monotonic() - self.since >= max_age:
            batch, self.filling = self.filling, Batch()
            return batch
        return None


class Sink(Protocol):
    """What the engine needs of an output, called from worker threads one call at a time. A sink
    that subclasses it inherits the defaults: nothing done yet, nothing to finish. The built-in sinks
    also tell which versions they hold (``done_versions``), which a ledger needs after a crash."""

    def check_writable(self) -> None:
        """Fail, naming the output, if no batch could be committed here: called before any search."""

    def done_sources(self) -> set[str]:
        """URIs of the sources whose results are already committed here."""
        return set()

    def write(self, batch: Batch) -> None:
        """Commit a batch (all of it or nothing)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Record the end of the run (e.g. a manifest)."""

    def location(self) -> dict[str, Any]:
        """Where the rows are, for the summary."""


class XComSink(Sink):
    """Keeps the rows in memory, to be returned through XCom (small runs only)."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def write(self, batch: Batch) -> None:
        self.results.extend(batch.results)
        self.errors.extend(batch.errors)

    def location(self) -> dict[str, Any]:
        return {"xcom": "return value: records, errors"}


class JsonLinesSink(Sink):
    """JSON Lines part files under a prefix, committed by writing a temporary object and renaming it.

    Layout: ``results/part-<run>-<n>.jsonl``, ``errors/part-<run>-<n>.jsonl``, ``_manifest/<run>.json``
    and ``_tmp/`` for parts being written (never read as results).

    :param prefix: the output folder (an ``ObjectStoragePath`` with its connection).
    :param on_write: called with each batch once its parts are committed (e.g. the run's report).
    """

    def __init__(self, prefix: ObjectStoragePath, *, on_write: Callable[[Batch], None] | None = None) -> None:
        if ".." in prefix.path.split("/"):
            raise ValueError(
                f"output_path {stable_uri(prefix)!r} has a '..' segment: give the output folder itself, "
                "so that no part can land outside it"
            )
        if isinstance(prefix.fs, LocalFileSystem):
            # One folder for writing parts and for resume's listing: a path without a scheme is a
            # pathlib path, which takes "~" literally where fsspec expands it.
            prefix = ObjectStoragePath(f"file://{local_path(prefix.path)}/")
        self.prefix = prefix
        # Mapped shards start together: 64 random bits keep two runs in one second from sharing parts.
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(8)
        self._sequence = 0
        self.parts: list[str] = []
        self.on_write = on_write

    def check_writable(self) -> None:
        with writable(f"output_path {stable_uri(self.prefix).rstrip('/') + '/'!r}"):
            write_and_remove(self.prefix.fs, self.prefix.path.rstrip("/"))

    def done_sources(self) -> set[str]:
        return {version[0] for version in self.done_versions()}

    def done_versions(self) -> Iterator[Version]:
        """The ``VERSION_COLUMNS`` of each result row committed here, and of each refusal (no version)."""
        for kind in ("results", "errors"):
            folder = self.prefix / kind
            for part in folder.iterdir() if folder.exists() else ():
                if part.name.endswith(".jsonl"):
                    for _, row in read_jsonl(self.prefix.fs, part.path):
                        if kind == "results" or row.get("retryable") == 0:
                            yield tuple(row.get(column) for column in VERSION_COLUMNS)

    def write(self, batch: Batch) -> None:
        self._sequence += 1
        name = f"part-{self.run_id}-{self._sequence:05d}.jsonl"
        # Errors first: if the run dies between the two, the sources are not done and are searched again.
        for kind, rows, columns in (
            ("errors", batch.errors, ERROR_COLUMNS),
            ("results", batch.results, RESULT_COLUMNS),
        ):
            if rows:
                self._commit(f"{kind}/{name}", (_line(row, columns) for row in rows))
        if self.on_write is not None:
            self.on_write(batch)

    def _commit(self, relative: str, lines: Iterable[str]) -> None:
        """Commit a file through the filesystem itself: each ObjectStoragePath call would be recorded
        as lineage (the operator declares the output as its outlet instead)."""
        final = commit_lines(self.prefix.fs, self.prefix.path.rstrip("/"), relative, lines)
        self.parts.append(f"{self.prefix.protocol}://{final}")

    def finish(self, summary: dict[str, Any]) -> None:
        manifest = {"run_id": self.run_id, "parts": self.parts, "summary": summary}
        self._commit(f"_manifest/{self.run_id}.json", [json.dumps(manifest, indent=2, default=str)])

    def location(self) -> dict[str, Any]:
        base = stable_uri(self.prefix).rstrip("/")
        return {
            "results": f"{base}/results/",
            "errors": f"{base}/errors/",
            "manifest": f"{base}/_manifest/{self.run_id}.json",
        }


@contextlib.contextmanager
def writable(name: str) -> Iterator[None]:
    """Raise what fails inside as an ``OSError`` naming the output at fault and why:
    ``output_path 's3://b/out/': cannot write there (FileNotFoundError: …bucket does not exist)``."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - raised again, naming the output
        raise OSError(f"{name}: cannot write there ({type(err).__name__}: {err})") from None


def _line(row: dict[str, Any], columns: tuple[str, ...]) -> str:
    """One JSON object, keys in the order of ``columns``, as a line."""
    return json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n"


_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")

_RESULT_TYPES = {"source_size": "BIGINT", "page": "INTEGER", "rank": "INTEGER", "width": "INTEGER", "height": "INTEGER"}
_ERROR_TYPES = {"http_status": "INTEGER", "retryable": "INTEGER"}


class SqlSink(Sink):
    """Rows in a SQL table (and errors in ``<table>_errors``) through common-sql's ``DbApiHook``.

    Each batch is one transaction holding its results and its errors.

    :param conn_id: any connection whose hook is a ``DbApiHook`` (SQLite, PostgreSQL, …).
    :param table: the results table; ``<table>_errors`` holds the errors.
    :param create_table: create both tables (and an index on ``source_uri``) when missing.
    """

    def __init__(self, conn_id: str, table: str, *, create_table: bool = True) -> None:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"sql_table {table!r}: use letters, digits and _ (optionally schema.table)")
        hook = BaseHook.get_connection(conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise ValueError(
                f"sql_conn_id {conn_id!r}: its hook {type(hook).__name__} is not a DbApiHook (SQL database)"
            )
        self.hook = hook
        self.conn_id = conn_id
        self.table = table
        self.name = f"sql_table {table!r} (sql_conn_id {conn_id!r})"
        self.errors_table = f"{table}_errors"
        if create_table:
            self._create_tables()

    def _create_tables(self) -> None:
        schema, _, name = self.table.rpartition(".")
        dialect = getattr(self.hook, "conn_type", None)
        if schema and dialect == "sqlite":  # SQLite qualifies the index, not the table
            index = f"CREATE INDEX IF NOT EXISTS {schema}.{name}_source_uri_idx ON {name} (source_uri)"
        else:  # PostgreSQL's B-tree refuses keys over 2,704 bytes; a local path may be 4,096: hash it
            using = "USING hash " if dialect == "postgres" else ""
            index = f"CREATE INDEX IF NOT EXISTS {name}_source_uri_idx ON {self.table} {using}(source_uri)"
        self.hook.run(
            [
                _create_table_sql(self.table, RESULT_COLUMNS, _RESULT_TYPES),
                _create_table_sql(self.errors_table, ERROR_COLUMNS, _ERROR_TYPES),
                index,
            ]
        )

    def done_sources(self) -> set[str]:
        return {version[0] for version in self.done_versions()}

    def done_versions(self) -> Iterator[Version]:
        """The ``VERSION_COLUMNS`` of each version with results here, and of each refused source (no version)."""
        yield from self.hook.get_records(f"SELECT DISTINCT {', '.join(VERSION_COLUMNS)} FROM {self.table}")
        refused = self.hook.get_records(f"SELECT DISTINCT source_uri FROM {self.errors_table} WHERE retryable = 0")
        yield from ((row[0], None, None, None) for row in refused)

    # No check_writable: an insert rolled back is no check on databases without transactions (BigQuery,
    # Databricks); the tables are created when the sink is built and read before any search.
    def write(self, batch: Batch) -> None:
        with writable(self.name), closing(self.hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            if self.hook.supports_autocommit:  # as DbApiHook.run: sessions may autocommit (Snowflake's do)
                self.hook.set_autocommit(conn, False)
            for table, rows, columns in (
                (self.table, batch.results, RESULT_COLUMNS),
                (self.errors_table, batch.errors, ERROR_COLUMNS),
            ):
                if rows:
                    values = ", ".join([self.hook.placeholder] * len(columns))
                    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
                    cursor.executemany(sql, [tuple(_storable(row.get(c)) for c in columns) for row in rows])
            conn.commit()

    def location(self) -> dict[str, Any]:
        return {"sql_conn_id": self.conn_id, "table": self.table, "errors_table": self.errors_table}


def _storable(value: Any) -> Any:
    """Text with U+FFFD for each NUL character, which PostgreSQL's text refuses (a server's answer or
    a URL may carry one)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _create_table_sql(table: str, columns: tuple[str, ...], types: dict[str, str]) -> str:
    body = ", ".join(
        f"{name} {types.get(name, 'TEXT')}{' NOT NULL' if name == 'source_uri' else ''}" for name in columns
    )
    return f"CREATE TABLE IF NOT EXISTS {table} ({body})"

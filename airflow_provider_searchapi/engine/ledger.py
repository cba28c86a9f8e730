"""The ledger of done sources kept across runs: which version of each was searched, and how it ended.

Its parts (``parts/<UTC time>-<random>.jsonl``, one ``{"source_uri", "fingerprint", "outcome"}`` line
per source; see ``docs/operator.md``) are written under ``_tmp/`` and moved into place once their batch
is in every output, and read in name order: a source's last line wins. Past ``compact_parts`` parts,
one holding each source's last line replaces them, ``parts/0-<parts replaced>-<hash of names>~compacted.jsonl``:
it sorts before every timed part, as any part it does not hold was committed after it was listed (even
one named earlier, by a run that took its time before the move), and after the compacted parts it holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterable
from contextlib import closing, suppress
from datetime import datetime, timezone
from enum import Enum
from typing import NamedTuple

from airflow.sdk import ObjectStoragePath
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from airflow_provider_searchapi.engine.sinks import Batch, Sink, SqlSink, writable
from airflow_provider_searchapi.engine.sources import SourceImage, stable_uri
from airflow_provider_searchapi.jsonl import commit_lines, read_jsonl, write_and_remove

log = logging.getLogger(__name__)

#: Outcomes of a source: result rows committed, refused for good (the image itself), or failed for now.
SEARCHED, REFUSED, FAILED = "searched", "refused", "failed"
_OUTCOMES = {SEARCHED: SEARCHED, REFUSED: REFUSED, FAILED: FAILED}  # one string object each in memory
#: Parts at most before they are compacted into one.
COMPACT_PARTS = 64

Row = tuple[str, str | None, str]  # (source_uri, fingerprint, outcome)


class Reprocess(str, Enum):
    """Which sources the ledger holds a run searches again.

    ``changed``: those whose ETag (or size and modification time, where the store has no ETag) differs
    from the ledger's, and those whose last outcome was a retryable error. ``never``: only the
    retryable errors. ``all``: every source (the ledger and the outputs are not asked). ``failed``:
    only the retryable errors, and no source the ledger has not seen.
    """

    CHANGED = "changed"
    NEVER = "never"
    ALL = "all"
    FAILED = "failed"

    @classmethod
    def parse(cls, value: Reprocess | str) -> Reprocess:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"reprocess must be one of {', '.join(m.value for m in cls)} (got {value!r})") from None


class Plan(str, Enum):
    """What a run does with one listed source."""

    SEARCH = "search"  # not done yet (or reprocess="all")
    CHANGED = "changed"  # done, but its object changed since
    RETRY = "retry"  # its last outcome was a retryable error
    SKIP_DONE = "skip_done"  # done, unchanged
    SKIP_UNSEEN = "skip_unseen"  # reprocess="failed" and the ledger has never seen it

    @property
    def skips(self) -> bool:
        return self in (Plan.SKIP_DONE, Plan.SKIP_UNSEEN)


class Entry(NamedTuple):
    """What the ledger holds of one source."""

    fingerprint: str | None
    outcome: str


def fingerprint(source: SourceImage) -> str | None:
    """The version of a source as its listing tells it: ``etag:<ETag>``, else ``size:<bytes>,mtime:<time>``,
    else ``None`` (public URLs, paths given without a listing)."""
    return _fingerprint(source.etag, source.size, source.mtime)


def _fingerprint(etag: str | None, size: int | None, mtime: str | None) -> str | None:
    if etag:
        return f"etag:{etag}"
    if size is not None and mtime:
        return f"size:{size},mtime:{mtime}"
    return None


class BaseLedger:
    """The entries in memory and what a run has yet to record of its sources; blocking methods are
    called from worker threads, one at a time."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.start_run()

    def start_run(self) -> None:
        """Forget what the last run noted (the object may serve one run after another)."""
        self._searching: dict[str, str | None] = {}  # fingerprints of the sources being searched
        self.held: list[Row] = []  # sources every output holds that the ledger does not record yet
        # Per output: the sources it holds (the run's set), and the versions it holds of those the ledger
        # records with another version or a retryable error.
        self._outputs: list[tuple[set[str], set[tuple[str, str | None]]]] = []

    def plan(self, source: SourceImage, reprocess: Reprocess, *, held: bool) -> Plan:
        """Decide for one listed source, and note what to record of it.

        :param source: the source as listed now.
        :param reprocess: the run's rule.
        :param held: every output of this run already holds the source.
        """
        entry, current = self.entries.get(source.uri), fingerprint(source)
        if reprocess is Reprocess.ALL:
            decision = Plan.SEARCH
        elif held and (entry is None or all((source.uri, current) in versions for _, versions in self._outputs)):
            # Every output holds the source, or this version of it, and the ledger does not record it:
            # a run committed it and died before the ledger's write.
            self.held.append((source.uri, current, SEARCHED))
            decision = Plan.SKIP_DONE
        elif entry is None:
            decision = Plan.SKIP_UNSEEN if reprocess is Reprocess.FAILED else Plan.SEARCH
        elif entry.outcome == FAILED:
            decision = Plan.RETRY
        elif reprocess is Reprocess.CHANGED and current and entry.fingerprint not in (None, current):
            decision = Plan.CHANGED
        else:
            decision = Plan.SKIP_DONE
        if not decision.skips:
            self._searching[source.uri] = current
        if decision in (Plan.CHANGED, Plan.RETRY):  # its new rows go to each output lacking them, beside the old
            for done, versions in self._outputs:
                if (source.uri, current) not in versions:
                    done.discard(source.uri)
        return decision

    def rows(self, batch: Batch) -> list[Row]:
        """The rows to record of a committed batch, and of the held sources noted since the last call."""
        ended = {row["source_uri"]: SEARCHED for row in batch.results}
        ended.update((row["source_uri"], REFUSED if row.get("retryable") == 0 else FAILED) for row in batch.errors)
        rows = [(uri, self._searching.pop(uri, None), outcome) for uri, outcome in ended.items()]
        rows += self.held
        self.held = []
        return rows

    def check_writable(self) -> None:
        """Fail, naming the state folder, if the ledger could not be written: called before any search."""

    def load(self) -> None:
        """Read the entries."""

    def done_sources(self, sink: Sink) -> set[str]:
        """The sources ``sink`` holds, asked once per output after :meth:`load` (which may have read
        them already). :meth:`plan` takes a source out of the set when it is to be written there again."""
        if not hasattr(sink, "done_versions"):  # a sink of one's own tells no versions
            self._outputs.append((done := sink.done_sources(), set()))
            return done
        done, versions = set(), set()
        for uri, etag, size, mtime in sink.done_versions():
            done.add(uri)
            if (entry := self.entries.get(uri)) is None:
                continue
            version = _fingerprint(etag, size, mtime)
            if entry.outcome == FAILED or entry.fingerprint != version:
                versions.add((uri, version))
        self._outputs.append((done, versions))
        return done

    def record(self, rows: Iterable[Row]) -> None:
        """Note rows the outputs have committed."""
        for uri, fp, outcome in rows:
            self.entries[uri] = Entry(fp, _OUTCOMES[outcome])

    def finish(self) -> None:
        """Tidy up at the end of a run."""


class Ledger(BaseLedger):
    """The ledger in object storage.

    :param prefix: the state folder (an ``ObjectStoragePath`` with its connection).
    :param compact_parts: parts at most before they are compacted into one.
    """

    def __init__(self, prefix: ObjectStoragePath, *, compact_parts: int = COMPACT_PARTS) -> None:
        if ".." in prefix.path.split("/"):
            raise ValueError(f"state_path {stable_uri(prefix)!r} has a '..' segment: give the state folder itself")
        super().__init__()
        self.prefix = prefix
        self.compact_parts = compact_parts
        self._base = prefix.path.rstrip("/")
        self._parts: list[str] = []  # the committed parts last listed
        self._written = 0  # parts this object wrote

    def check_writable(self) -> None:
        with writable(f"state_path {self.location()!r}"):
            write_and_remove(self.prefix.fs, self._base)

    def load(self) -> None:
        """Read every part (streamed, line by line); compact them when there are many."""
        self._read_parts()
        log.info("Ledger %s: %d sources in %d parts", self.location(), len(self.entries), len(self._parts))
        self.compact_if_many()

    # Another run may compact the parts while they are read: read the new ones.
    @retry(retry=retry_if_exception_type(FileNotFoundError), stop=stop_after_attempt(3), reraise=True)
    def _read_parts(self) -> None:
        self.entries, self._parts = {}, self._list_parts()
        for part in self._parts:
            for number, row in read_jsonl(self.prefix.fs, part):
                try:
                    self.entries[row["source_uri"]] = Entry(row["fingerprint"], _OUTCOMES[row["outcome"]])
                except (KeyError, TypeError) as err:
                    raise ValueError(f"ledger part {part} line {number}: not a ledger row ({err!r})") from None

    def record(self, rows: Iterable[Row]) -> None:
        """Commit rows as one part; call it only once the outputs hold them."""
        rows = list(rows)
        if not rows:
            return
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"parts/{now}-{secrets.token_hex(3)}.jsonl"
        commit_lines(self.prefix.fs, self._base, name, (_line(*row) for row in rows))
        self._written += 1
        super().record(rows)

    def finish(self) -> None:
        """After a run that wrote more than ``compact_parts`` parts: read the parts again and compact them."""
        if self._written > self.compact_parts:
            self._written = 0
            self.load()

    def compact_if_many(self) -> None:
        """Replace the parts last listed by one holding each source's last line, when there are more
        than ``compact_parts``."""
        if len(self._parts) <= self.compact_parts:
            return
        replaced = sum(map(_replaced, self._parts))
        lines = (_line(uri, *entry) for uri, entry in self.entries.items())
        listed = hashlib.sha256("\n".join(self._parts).encode()).hexdigest()[:12]  # runs listing alike: one part
        name = f"parts/0-{replaced:012d}-{listed}~compacted.jsonl"
        final = commit_lines(self.prefix.fs, self._base, name, lines)
        # Read before the parts it replaces, the new part changes no entry: removing those is safe at
        # any moment, and another run may be removing them too.
        fs = self.prefix.fs
        try:
            fs.rm(self._parts)
        except FileNotFoundError:  # the local disk's removes stop at the first part gone
            for part in self._parts:
                with suppress(FileNotFoundError):  # gone since, too
                    fs.rm_file(part)
        log.info("Ledger %s: %d parts compacted into one", self.location(), len(self._parts))
        self._parts = [final]

    def location(self) -> str:
        return stable_uri(self.prefix).rstrip("/") + "/"

    def _list_parts(self) -> list[str]:
        fs, folder = self.prefix.fs, f"{self._base}/parts"
        fs.invalidate_cache(folder)
        try:
            names = fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if name.endswith(".jsonl"))


def _replaced(part: str) -> int:
    """How many timed parts a part stands for: a compacted one, those it replaced; any other, itself.
    A later listing holds more of them, so its compacted part sorts after an earlier one's."""
    name = part.rsplit("/", 1)[1]
    return int(name.split("-")[1]) if name.startswith("0-") else 1


def _line(uri: str, fp: str | None, outcome: str) -> str:
    return json.dumps({"source_uri": uri, "fingerprint": fp, "outcome": outcome}, ensure_ascii=False) + "\n"


class SqlLedger(BaseLedger):
    """The ledger read from a :class:`SqlSink`'s tables: each source's latest version searched (its
    ``source_etag``, ``source_size``, ``source_mtime``) or error, by time. The sink's commit of a
    batch is its record.

    :param sink: the SQL output of the run.
    """

    #: Rows fetched from the database at a time.
    FETCH = 10_000

    def __init__(self, sink: SqlSink) -> None:
        super().__init__()
        self.sink = sink
        self._sink_done: set[str] | None = None  # what the sink's done_sources would read again

    def load(self) -> None:
        """Stream one row per source version and per error kind, oldest first; the latest wins. On the
        way, note the sources with results or a refusal: the sink's done sources."""
        table, errors = self.sink.table, self.sink.errors_table
        sql = (
            f"SELECT source_uri, source_etag, source_size, source_mtime, 0 AS kind, MAX(searched_at) AS at "
            f"FROM {table} GROUP BY source_uri, source_etag, source_size, source_mtime "
            f"UNION ALL SELECT source_uri, NULL, NULL, NULL, CASE WHEN retryable = 0 THEN 1 ELSE 2 END, "
            f"MAX(failed_at) FROM {errors} GROUP BY source_uri, retryable ORDER BY at"
        )
        kinds = (SEARCHED, REFUSED, FAILED)
        self._sink_done = set()
        with closing(self.sink.hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql)
            while rows := cursor.fetchmany(self.FETCH):
                for uri, etag, size, mtime, kind, _at in rows:
                    self.entries[uri] = Entry(_fingerprint(etag, size, mtime), kinds[kind])
                    if kinds[kind] != FAILED:
                        self._sink_done.add(uri)
        log.info("Ledger %s: %d sources", self.location(), len(self.entries))

    def done_sources(self, sink: Sink) -> set[str]:
        if sink is self.sink and self._sink_done is not None:
            self._outputs.append((self._sink_done, set()))  # the tables are the ledger: nothing unrecorded
            return self._sink_done
        return super().done_sources(sink)

    def location(self) -> str:
        return f"sql {self.sink.conn_id}: {self.sink.table}, {self.sink.errors_table}"

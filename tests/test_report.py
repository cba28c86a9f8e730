"""The HTML report: what the operator writes beside its manifest, what ``report`` builds from parts,
and that hostile strings in results stay text."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from airflow_provider_searchapi.cli import main
from airflow_provider_searchapi.engine.sinks import JsonLinesSink
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.report import TOP_RESULTS, Report, thumbnail
from tests.conftest import jsonl_rows, write_images


class Page(HTMLParser):
    """The tags of a page, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def test_the_operator_writes_the_report_beside_its_manifest(tmp_path, searchapi_connection):
    write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.jpg").write_text("not an image")
    out = tmp_path / "out"
    result = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{out}/", max_error_ratio=0.5
    ).execute({})
    manifest = Path(result["outputs"][0]["manifest"].removeprefix("file://"))
    assert result["report"] == f"file://{manifest.with_suffix('.html')}"
    page = Page(manifest.with_suffix(".html").read_text())
    text = "".join(page.text)

    sections = page.all("section")
    assert len(sections) == 4  # 3 searched, 1 refused
    thumbnails = [a["src"] for a in page.all("img") if a["src"].startswith("data:image/jpeg;base64,")]
    assert len(thumbnails) == 3  # the refused file has no preview
    rows = jsonl_rows(out / "results")
    shown = {(r["url"], r["page_url"]) for r in rows if r["rank"] < TOP_RESULTS}
    links = [a for a in page.all("a")]
    assert {a["href"] for a in links} == {page_url for _, page_url in shown}
    assert {a["src"] for a in page.all("img", loading="lazy")} == {url for url, _ in shown}
    assert all(a["rel"] == "noopener noreferrer" for a in links)
    assert "validate: InvalidImageError" in text and "bad.jpg" in text  # the error, its stage and cause
    assert f"{result['requests']:,}" in text and "Source images" in text and "429 answers" in text
    assert not page.all("script") and not page.all("link")  # no script, no external stylesheet


def test_a_page_that_cannot_be_made_fails_nothing(tmp_path, searchapi_connection, monkeypatch, capfd):
    def broken(self, row):
        raise RuntimeError("a bug in the page")

    monkeypatch.setattr(Report, "add_result", broken)
    write_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    result = SearchByImageOperator(task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{out}/").execute(
        {}
    )
    assert result["searched"] == 3 and result["report"] is None
    assert len({row["source_uri"] for row in jsonl_rows(out / "results")}) == 3  # every row committed
    logged = "".join(capfd.readouterr())  # the operator logs through structlog
    assert "html_report: the page of run" in logged and "a bug in the page" in logged


def test_the_run_page_is_made_of_the_rows_it_committed_without_reading_its_parts_back(
    tmp_path, searchapi_connection, monkeypatch
):
    """On S3 a read-back is one GET per part and every row read twice: the run's parts are gone before its
    page is written, and the page is still the one their rows make (of this run only, on a resumed run)."""
    write_images(tmp_path / "in", 2)
    (tmp_path / "in" / "bad-1.jpg").write_text("not an image")
    out = tmp_path / "out"
    operator = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{out}/", max_error_ratio=1
    )
    operator.execute({})
    write_images(tmp_path / "in", 1, start=2)
    (tmp_path / "in" / "bad-2.jpg").write_text("not an image")
    from_parts, finish = Report(), JsonLinesSink.finish

    def finish_then_remove_the_parts(sink: JsonLinesSink, summary: dict) -> None:
        finish(sink, summary)
        for part in map(Path, (uri.removeprefix("file://") for uri in sink.parts)):
            if part.parent.name in ("results", "errors"):  # the page as it was built: from the parts
                for row in map(json.loads, part.read_text().splitlines()):
                    (from_parts.add_error if part.parent.name == "errors" else from_parts.add_result)(row)
                part.unlink()

    monkeypatch.setattr(JsonLinesSink, "finish", finish_then_remove_the_parts)
    result = operator.execute({})  # resumes: the first run's sources are done

    assert result["report"] is not None
    manifest = Path(result["outputs"][0]["manifest"].removeprefix("file://"))
    page = manifest.with_suffix(".html").read_text()
    title = f"Search by image: run {manifest.stem}"
    assert page == "".join(from_parts.render(title=title, where=f"file://{out}", figures=result))
    assert len(Page(page).all("section")) == 2 and "bad-2.jpg" in page and "bad-1.jpg" not in page
    assert "img-0002.jpg" in page and "img-0000.jpg" not in page


def test_html_report_can_be_turned_off_and_needs_output_path(tmp_path, searchapi_connection, sqlite_conn_id):
    write_images(tmp_path / "in", 1)
    result = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{tmp_path}/out/", html_report=False
    ).execute({})
    assert "report" not in result and not list((tmp_path / "out").rglob("*.html"))
    with pytest.raises(ValueError, match="html_report=True needs output_path"):
        SearchByImageOperator(
            task_id="t", source="file:///x/", sql_conn_id=sqlite_conn_id, sql_table="t", html_report=True
        )
    only_sql = SearchByImageOperator(task_id="t", source="file:///x/", sql_conn_id=sqlite_conn_id, sql_table="t")
    assert only_sql.html_report is False


HOSTILE = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    'https://ok.example/"><script>alert(1)</script>',
]


def test_hostile_strings_in_results_stay_text():
    report = Report()
    for rank, url in enumerate(HOSTILE):
        report.add_result(
            {
                "source_uri": "https://x.example/<b>source</b>.jpg",
                "rank": rank,
                "url": url,
                "page_url": url,
                "page_title": "<script>alert('title')</script><img src=x onerror=alert(1)>",
                "host": "<i>host</i>",
                "width": "<w>",
                "height": 1,
            }
        )
    report.add_error({"source_uri": "<svg onload=alert(1)>", "stage": "<s>", "error_class": "<e>", "message": "<m>"})
    text = "".join(report.render(title="<title>", where="<where>", figures={}))
    page = Page(text)
    assert not page.all("script") and not page.all("svg") and not page.all("b") and not page.all("i")
    hrefs = [a["href"] for a in page.all("a")]
    sources = [a["src"] for a in page.all("img")]
    assert hrefs == ['https://ok.example/"><script>alert(1)</script>']  # the only http(s) URL, as an attribute
    assert sources == ["https://x.example/<b>source</b>.jpg", hrefs[0]]
    assert all(not any(key.startswith("on") for key in attrs) for _, attrs in page.tags)
    assert "<script>alert('title')</script>" in "".join(page.text)  # shown as text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_thumbnails_are_small_jpegs_of_regular_image_files_only(tmp_path):
    import base64

    from PIL import Image

    from tests.conftest import make_jpeg

    (tmp_path / "big.jpg").write_bytes(make_jpeg(1, size=(640, 320)))
    (tmp_path / "text.jpg").write_text("not an image")
    made = thumbnail(f"file://{tmp_path}/big.jpg")
    assert made is not None and made.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(made.split(",", 1)[1]))).size == (120, 60)
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would wait for a writer forever
    for uri in (f"file://{tmp_path}/text.jpg", f"file://{tmp_path}/", f"file://{tmp_path}/pipe.jpg", "https://x/a.jpg"):
        assert thumbnail(uri) is None, uri


def test_the_page_keeps_the_first_sources_and_counts_the_rest():
    report = Report(max_sources=2, top=3)
    for source in range(5):
        for rank in range(6):
            report.add_result(
                {"source_uri": f"https://x.example/{source}.jpg", "rank": rank, "url": f"https://i/{rank}"}
            )
    page = Page("".join(report.render(title="t", where="w", figures={"requests": 1234, "elapsed_seconds": 75})))
    text = "".join(page.text)
    assert len(page.all("section")) == 2 and len(page.all("li")) == 6
    assert "…and 3 more source images" in text and "1,234" in text and "1 min 15 s" in text
    assert (len(report.all_sources), report.found) == (5, 30)


def test_cli_report_builds_the_page_from_existing_parts(tmp_path, searchapi_connection):
    write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    for _ in range(2):  # two runs: the second adds the third image
        SearchByImageOperator(task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{out}/").execute({})
        write_images(tmp_path / "in", 1, start=2)
    stdout, stderr = io.StringIO(), io.StringIO()
    assert main(["report", str(out), "--html", str(tmp_path / "page.html")], stdout, stderr) == 0, stderr.getvalue()
    rows = jsonl_rows(out / "results")
    assert stdout.getvalue() == f"{tmp_path / 'page.html'}: 3 source images, {len(rows)} found images\n"
    page = Page((tmp_path / "page.html").read_text())
    assert len(page.all("section")) == 3 and "2 runs" in "".join(page.text)
    assert {a["href"] for a in page.all("a")} == {r["page_url"] for r in rows if r["rank"] < TOP_RESULTS}


def test_cli_report_names_what_is_wrong(tmp_path):
    stdout, stderr = io.StringIO(), io.StringIO()
    assert main(["report", str(tmp_path / "nowhere"), "--html", str(tmp_path / "p.html")], stdout, stderr) == 2
    assert (
        stderr.getvalue() == f"error: {tmp_path / 'nowhere'}: no results/ or errors/ folder of JSON Lines parts here\n"
    )
    part = tmp_path / "out" / "results" / "part-1.jsonl"
    part.parent.mkdir(parents=True)
    part.write_text('{"source_uri": "s", "url": null}\n{"source_uri": \n')
    stderr = io.StringIO()
    assert main(["report", str(tmp_path / "out"), "--html", str(tmp_path / "p.html")], stdout, stderr) == 2
    assert f"{part}, line 2: not JSON" in stderr.getvalue()


def test_cli_report_without_a_connection_imports_no_airflow(tmp_path):
    """Without ``--conn-id``, ``report`` reads parts and sources through fsspec alone: importing Airflow
    would take more memory than the whole report of 10^5 rows."""
    (image,) = write_images(tmp_path / "in", 1)
    part = tmp_path / "out" / "results" / "part-1.jsonl"
    part.parent.mkdir(parents=True)
    part.write_text(json.dumps({"source_uri": f"file://{image}", "rank": 0, "url": "https://i.example/0.jpg"}) + "\n")
    page = tmp_path / "page.html"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airflow_provider_searchapi", "report", str(part.parent.parent)]
        + ["--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "airflow_provider_searchapi.report" in imported
    assert [name for name in imported if name.split(".")[0] == "airflow"] == []
    assert "data:image/jpeg;base64," in page.read_text()  # the source's thumbnail, read without Airflow


def test_the_report_of_a_run_on_s3_and_the_cli_over_s3(bucket, s3_conn_id, searchapi_connection, tmp_path):
    from airflow.sdk import ObjectStoragePath

    from tests.conftest import make_jpeg

    images = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    for seed in range(2):
        (images / f"{seed}.jpg").write_bytes(make_jpeg(seed))
    result = SearchByImageOperator(
        task_id="t",
        source=f"{bucket}/images/",
        source_conn_id=s3_conn_id,
        output_path=f"{bucket}/out/",
        output_conn_id=s3_conn_id,
    ).execute({})
    assert result["report"].startswith(f"{bucket}/out/_manifest/") and result["report"].endswith(".html")
    page = Page(ObjectStoragePath(result["report"], conn_id=s3_conn_id).read_text())
    thumbnails = [a["src"] for a in page.all("img") if a["src"].startswith("data:image/jpeg;base64,")]
    assert len(page.all("section")) == 2 and len(thumbnails) == 2  # read from S3 with source_conn_id

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["report", f"{bucket}/out/", "--html", f"{bucket}/page.html", "--conn-id", s3_conn_id]
    assert main([*argv, "--source-conn-id", s3_conn_id], stdout, stderr) == 0, stderr.getvalue()
    again = Page(ObjectStoragePath(f"{bucket}/page.html", conn_id=s3_conn_id).read_text())
    assert {a["href"] for a in again.all("a")} == {a["href"] for a in page.all("a")}
    assert "1 run" in "".join(again.text)
    # the connection named in the URL (s3://conn_id@bucket/…) is used as Airflow's ObjectStoragePath uses it
    in_url = bucket.replace("s3://", f"s3://{s3_conn_id}@")
    argv = ["report", f"{in_url}/out/", "--html", str(tmp_path / "page.html"), "--source-conn-id", s3_conn_id]
    assert main(argv, stdout, stderr) == 0, stderr.getvalue()
    assert {a["href"] for a in Page((tmp_path / "page.html").read_text()).all("a")} == {
        a["href"] for a in page.all("a")
    }

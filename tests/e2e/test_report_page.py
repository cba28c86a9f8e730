"""The HTML report as a person sees it, in Debian's headless Chromium.

The operator searches the bundled sample images against the emulator (which serves the found images
on 127.0.0.1) and writes its page; ``report`` rebuilds a page from the same parts plus a part of
hostile rows. In the browser: every thumbnail loads, every link goes where its row says, and a
``<script>`` or ``javascript:`` URL in a result does nothing.

``SEARCHAPI_UPDATE_SCREENSHOTS=1`` refreshes ``docs/img/report.png`` from the run's page. Skipped,
loudly, without Chromium or Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_searchapi.cli import main
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.report import TOP_RESULTS
from airflow_provider_searchapi.testing.emulator import Emulator
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR
from tests.airflow_env import ROOT
from tests.e2e.conftest import BROWSER_TESTS

SCREENSHOT = ROOT / "docs" / "img" / "report.png"

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The sample images searched by the operator (2 pages each) into ``out``; the emulator keeps
    serving the found images until the module's tests end."""
    out = tmp_path_factory.mktemp("report") / "out"
    with Emulator().start() as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_SEARCHAPI_DEFAULT", emulator.connection_json())
        summary = SearchByImageOperator(
            task_id="enrich_images", source=f"file://{SAMPLE_DIR}/", output_path=f"file://{out}/", max_pages=2
        ).execute({})
        rows = [json.loads(line) for part in (out / "results").glob("*.jsonl") for line in part.open()]
        yield {"emulator": emulator, "out": out, "summary": summary, "rows": rows}


def _open(page, path: Path) -> None:
    """Open the page and scroll every picture into view (found images load lazily), until all loaded."""
    page.goto(path.as_uri(), wait_until="load")
    for image in page.locator("img").all():
        image.scroll_into_view_if_needed()
    page.wait_for_function("[...document.images].every(image => image.complete)")
    page.evaluate("window.scrollTo(0, 0)")


def test_the_run_report_shows_every_thumbnail_and_links_where_the_rows_say(run, page, tmp_path):
    report = Path(run["summary"]["report"].removeprefix("file://"))
    _open(page, report)
    images = page.evaluate("[...document.images].map(i => ({src: i.src, width: i.naturalWidth}))")
    unloaded = [image["src"][:80] for image in images if image["width"] == 0]
    assert not unloaded, f"thumbnails that did not load: {unloaded}"
    sources = [image for image in images if image["src"].startswith("data:image/jpeg")]
    assert len(sources) == len(list(SAMPLE_DIR.iterdir())) == len(page.locator("section").all())

    rows = [row for row in run["rows"] if row["rank"] < TOP_RESULTS]
    links = page.evaluate(
        "[...document.querySelectorAll('section a')].map(a => ({href: a.href, src: a.querySelector('img').src,"
        " title: a.querySelector('.title').textContent,"
        " meta: [...a.querySelectorAll('.meta')].map(m => m.textContent).join(' ')}))"
    )
    assert sorted((link["href"], link["src"], link["title"], link["meta"]) for link in links) == sorted(
        (row["page_url"], row["url"], row["page_title"], f"{row['host']} {row['width']}×{row['height']}")
        for row in rows
    )
    assert links and all(link["src"].startswith(f"{run['emulator'].url}/img/") for link in links)
    header = page.locator("header").inner_text()
    assert f"Requests\n{run['summary']['requests']}" in header and "Source images\n8" in header

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000  # pictures, not an empty page
    if os.environ.get("SEARCHAPI_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, SCREENSHOT)


def test_script_and_javascript_urls_in_results_are_inert(run, page, tmp_path):
    out, picture = run["out"], run["rows"][0]["url"]
    hostile = [
        ("javascript:window.pwned=1", "javascript:window.pwned=2", "<script>window.pwned=3</script>"),
        (picture, "javascript:window.pwned=4", '<img src=x onerror="window.pwned=5">'),
        (picture, 'https://ok.example/"onmouseover="window.pwned=6', "quoted"),
        (picture, " javascript:window.pwned=7", "</a><a href=javascript:window.pwned=8>click</a>"),
    ]
    part = out / "results" / "part-zz-hostile-00001.jsonl"
    part.write_text(
        "".join(
            json.dumps(
                {
                    "source_uri": "file:///nowhere/hostile.jpg",
                    "rank": rank,
                    "url": url,
                    "page_url": page_url,
                    "page_title": title,
                    "host": "<b>host</b>",
                    "width": 1,
                    "height": 1,
                }
            )
            + "\n"
            for rank, (url, page_url, title) in enumerate(hostile)
        )
    )
    try:
        html = tmp_path / "page.html"
        assert main(["report", str(out), "--html", str(html)]) == 0
    finally:
        part.unlink()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _open(page, html)
    section = page.locator("section", has_text="hostile.jpg")
    for item in section.locator("li").all():
        item.hover()
        if not item.locator("a").count():
            item.click()  # not a link: nothing happens
    assert page.evaluate("window.pwned") is None and not dialogs
    assert page.evaluate("document.scripts.length") == 0
    hrefs = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert all(href.startswith(("http://", "https://")) for href in hrefs)
    assert section.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))") == [hostile[2][1]]
    titles = section.locator(".title").all_inner_texts()
    assert titles == [title for *_, title in hostile]  # shown as text
    assert section.locator("img").count() == 3  # the javascript: picture is not loaded
    assert page.url == html.as_uri()

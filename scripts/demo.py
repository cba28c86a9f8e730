"""`make demo`: search the bundled sample images through SearchApiHook against the local emulator.

Everything runs on 127.0.0.1; no cloud account is needed. Prints the results and where they are saved.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(DEMO / "airflow-home"))

    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
    from airflow_provider_searchapi.testing import Emulator
    from airflow_provider_searchapi.testing.samples import sample_images

    with Emulator().start() as emulator:
        os.environ["AIRFLOW_CONN_SEARCHAPI_DEFAULT"] = emulator.connection_json(credential="authorized_key")
        print(f"Emulator of IAM and Search API on {emulator.url}")
        hook = SearchApiHook()
        records = []
        for path in sample_images():
            pages = list(hook.iter_pages(image=path.read_bytes(), max_pages=2))
            found = [image for page in pages for image in page.images]
            print(f"  {path.name:<12} {len(found):>3} similar images in {len(pages)} page(s); first: {found[0].url}")
            records.append(
                {"source": path.name, "cbir_id": pages[0].cbir_id, "images": [i.model_dump() for i in found]}
            )
        hook.close()
        stats = emulator.stats.snapshot()
    out = DEMO / "results.json"
    out.write_text(json.dumps(records, indent=2, default=str))
    print(f"{stats['search_requests']} searches, {stats['token_exchanges']} IAM token exchange(s).")
    print(f"Results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

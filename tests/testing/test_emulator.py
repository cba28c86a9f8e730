"""The emulator keeps to the wire contract, so that tests against it mean something."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time

import httpx
import jwt
import pytest

from airflow_provider_searchapi.config import IAM_AUDIENCE, AuthorizedKey
from airflow_provider_searchapi.testing import Emulator, generate_authorized_key
from tests.conftest import make_jpeg


@pytest.fixture
def key(searchapi_emulator):
    key = generate_authorized_key()
    searchapi_emulator.add_authorized_key(key)
    return key


def _jwt(key: dict, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": key["service_account_id"], "aud": IAM_AUDIENCE, "iat": now, "exp": now + 3600, **overrides}
    private = AuthorizedKey.from_json(json.dumps(key)).load_private_key()
    return jwt.encode(claims, private, algorithm="PS256", headers={"kid": key["id"]})


def test_token_exchange_accepts_a_good_jwt(searchapi_emulator, key):
    response = httpx.post(f"{searchapi_emulator.url}/iam/v1/tokens", json={"jwt": _jwt(key)})
    assert response.status_code == 200
    body = response.json()
    assert body["iamToken"].startswith("t1.") and body["expiresAt"].endswith("Z")


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"aud": "https://elsewhere"}, "audience"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"iss": "someone-else"}, "issuer"),
        ({"exp": int(time.time()) + 7200}, "lifetime"),
    ],
)
def test_token_exchange_refuses_bad_claims(searchapi_emulator, key, overrides, words):
    response = httpx.post(f"{searchapi_emulator.url}/iam/v1/tokens", json={"jwt": _jwt(key, **overrides)})
    assert response.status_code == 401
    assert words in response.json()["message"].lower()


def test_token_exchange_refuses_a_jwt_signed_by_another_key(searchapi_emulator, key):
    impostor = {**generate_authorized_key(), "id": key["id"], "service_account_id": key["service_account_id"]}
    response = httpx.post(f"{searchapi_emulator.url}/iam/v1/tokens", json={"jwt": _jwt(impostor)})
    assert response.status_code == 401 and "signature" in response.json()["message"].lower()


def _search(emulator: Emulator, body: dict, auth: str | None = None) -> httpx.Response:
    headers = {"Authorization": auth or f"Bearer {emulator.issue_token()}"}
    return httpx.post(f"{emulator.url}/v2/image/search_by_image", json=body, headers=headers)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"folderId": "other", "url": "https://x/y.jpg"}, 403, 7),
        ({"url": "https://x/y.jpg", "data": "AAAA"}, 400, 3),
        ({}, 400, 3),
        ({"data": "not base64!"}, 400, 3),
        ({"data": base64.b64encode(b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024)).decode()}, 400, 3),
        ({"data": base64.b64encode(b"plain text").decode()}, 400, 3),
        ({"url": "https://x/y.jpg", "page": "-1"}, 400, 3),
        ({"id": "1/never-issued"}, 404, 5),
        ({"url": "https://x/" + "y" * 1015}, 400, 3),  # 1,025 characters: one too many
        ({"id": "1/" + "x" * 1023}, 400, 3),
        ({"url": "https://x/y.jpg", "site": "s" * 1025}, 400, 3),
    ],
)
def test_search_refuses_what_the_api_refuses(searchapi_emulator, body, status, code):
    body = {"folderId": searchapi_emulator.folder_id, **body}
    response = _search(searchapi_emulator, body)
    assert response.status_code == status
    error = response.json()
    assert error["code"] == code and error["message"]
    assert error["details"][0]["requestId"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"folderId": "b1g", "url": ', "not valid JSON"),
        (b'{"folderId": "b1g\xff\xfe"}', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'["folderId"]', "must be a JSON object"),
    ],
    ids=["cut-short", "not-utf8", "empty", "an-array"],
)
def test_search_refuses_a_body_that_is_not_a_json_object(searchapi_emulator, content, words):
    response = httpx.post(
        f"{searchapi_emulator.url}/v2/image/search_by_image",
        content=content,
        headers={"Authorization": f"Bearer {searchapi_emulator.issue_token()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["code"] == 3
    assert words in response.json()["message"]


def test_a_large_image_is_read_from_its_json_body(searchapi_emulator):
    image = make_jpeg(3) + b"\0" * (2 * 1024 * 1024)  # padded past 2 MiB: still a JPEG
    body = {"folderId": searchapi_emulator.folder_id, "data": base64.b64encode(image).decode()}
    assert _search(searchapi_emulator, body).status_code == 200
    assert searchapi_emulator.stats.snapshot()["uploads"] == 1


@pytest.mark.parametrize("auth", ["", "Bearer t1.forged", "Api-Key unknown", "Basic abc"])
def test_search_needs_a_valid_credential(searchapi_emulator, auth):
    response = httpx.post(
        f"{searchapi_emulator.url}/v2/image/search_by_image",
        json={"folderId": searchapi_emulator.folder_id, "url": "https://x/y.jpg"},
        headers={"Authorization": auth} if auth else {},
    )
    assert response.status_code == 401 and response.json()["code"] == 16


def test_results_are_deterministic_paged_and_proto3_shaped(searchapi_emulator):
    body = {"folderId": searchapi_emulator.folder_id, "data": base64.b64encode(make_jpeg(3)).decode()}
    first = _search(searchapi_emulator, body).json()
    assert "page" not in first  # proto3 JSON drops page 0
    assert first == _search(searchapi_emulator, body).json()
    assert isinstance(first["images"][0]["width"], str)  # int64 as a string
    last = int(first.get("maxPage", 0))
    beyond = _search(
        searchapi_emulator, {"folderId": searchapi_emulator.folder_id, "id": first["id"], "page": str(last + 1)}
    ).json()
    assert "images" not in beyond and beyond["page"] == str(last + 1)


def test_a_single_page_of_results_carries_no_max_page(searchapi_emulator):
    searchapi_emulator.settings.max_result_pages = 1
    body = {"folderId": searchapi_emulator.folder_id, "data": base64.b64encode(make_jpeg(3)).decode()}
    assert "maxPage" not in _search(searchapi_emulator, body).json()  # proto3 JSON drops the default 0


def test_found_images_are_served_by_the_emulator_as_real_pictures(searchapi_emulator):
    from PIL import Image

    body = {"folderId": searchapi_emulator.folder_id, "data": base64.b64encode(make_jpeg(4)).decode()}
    found = _search(searchapi_emulator, body).json()["images"]
    formats = {"IMAGE_FORMAT_JPEG": "JPEG", "IMAGE_FORMAT_PNG": "PNG", "IMAGE_FORMAT_GIF": "GIF"}
    for image in found:
        assert image["url"].startswith(f"{searchapi_emulator.url}/img/")
        answer = httpx.get(image["url"])
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/")
        picture = Image.open(io.BytesIO(answer.content))
        assert picture.format == formats[image["format"]] and max(picture.size) == 160
        width, height = int(image["width"]), int(image["height"])
        assert abs(picture.size[0] / picture.size[1] - width / height) < 0.1  # the aspect the result gives
    for name in ("nothing.jpg", "0123456789ab-0x10.jpg", "0123456789ab-10x10.svg", "..%2Fsecret"):
        assert httpx.get(f"{searchapi_emulator.url}/img/{name}").status_code == 404


def test_quota_answers_429_with_retry_after(searchapi_emulator):
    searchapi_emulator.settings.update({"quota_rps": 2, "retry_after": 3})
    body = {"folderId": searchapi_emulator.folder_id, "url": "https://x/y.jpg"}
    statuses = [_search(searchapi_emulator, body) for _ in range(5)]
    limited = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses][:2] == [200, 200] and limited
    assert limited[0].headers["Retry-After"] == "3" and limited[0].json()["code"] == 8


def test_faults_are_deterministic_per_query_and_attempt(searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 0.5, "fault_kinds": ["500"]})
    bodies = [{"folderId": searchapi_emulator.folder_id, "url": f"https://x/{i}.jpg"} for i in range(40)]
    first = [_search(searchapi_emulator, b).status_code for b in bodies]
    second = [_search(searchapi_emulator, b).status_code for b in bodies]
    assert 5 < first.count(500) < 35
    assert set(second) == {200}  # faults hit only the first attempt (fault_attempts=1)
    other = Emulator(searchapi_emulator.folder_id).start()
    try:
        other.settings.update({"fault_rate": 0.5, "fault_kinds": ["500"]})
        again = [_search(other, b).status_code for b in bodies]
    finally:
        other.stop()
    assert again == first


def test_admin_endpoints(searchapi_emulator):
    url = searchapi_emulator.url
    assert httpx.post(f"{url}/_emulator/settings", json={"latency": 0.01}).json()["latency"] == 0.01
    assert httpx.post(f"{url}/_emulator/settings", json={"nonsense": 1}).status_code == 400
    _search(searchapi_emulator, {"folderId": searchapi_emulator.folder_id, "url": "https://x/y.jpg"})
    assert httpx.get(f"{url}/_emulator/stats").json()["search_requests"] == 1
    httpx.post(f"{url}/_emulator/reset")
    assert httpx.get(f"{url}/_emulator/stats").json()["search_requests"] == 0


def test_runs_as_a_module_and_writes_a_working_connection(tmp_path):
    conn_file, ready = tmp_path / "conn.json", tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_searchapi.testing.emulator",
            "--conn-out",
            str(conn_file),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        url = ready.read_text()
        assert url.startswith("http://127.0.0.1:")
        extras = json.loads(conn_file.read_text())["extra"]
        token = httpx.post(extras["iam_endpoint"], json={"jwt": _jwt(json.loads(extras["service_account_json"]))})
        assert token.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0

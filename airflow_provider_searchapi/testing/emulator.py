"""A local emulator of Yandex Cloud IAM and Search API v2 *search by image*, over real HTTP.

It speaks the wire contract: the IAM token exchange (PS256 JWT checked against the registered public
key, ``aud``, ``exp``; or a registered OAuth token), the VM metadata token, and
``POST /v2/image/search_by_image`` with its checks (Authorization, folderId, one-of, lengths, base64, 3 MiB,
image format). Results are derived from the image bytes, so they are the same on every run: several
pages and a CBIR id that works for later pages. Found images' URLs point back at the emulator
(``/img/…``), which serves a small picture drawn for each, so that reports show real thumbnails.

Knobs (:class:`EmulatorSettings`) add latency, a quota answered with 429, and injected faults; the
counters in :attr:`Emulator.stats` let tests see what really reached the server.

Run it alone: ``python -m airflow_provider_searchapi.testing.emulator --help``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import gzip
import hashlib
import io
import json
import re
import secrets
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import jwt
import pydantic_core
from cryptography.hazmat.primitives import serialization
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_searchapi.config import IAM_AUDIENCE
from airflow_provider_searchapi.images import sniff_format
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES, MAX_TEXT_FIELD_CHARS
from airflow_provider_searchapi.testing.emulator_state import (
    EmulatorSettings,
    EmulatorStats,
    SearchOutcome,
)
from airflow_provider_searchapi.testing.server import ServerThread

DEFAULT_FOLDER_ID = "b1gemulatorfolder000"


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    outcome = SearchOutcome.error(status, code, message, headers)
    return JSONResponse(outcome.body, status_code=status, headers=outcome.headers)


class _DropConnection(Response):
    """Starts an answer, then fails: the server closes the connection mid-response."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
        raise ConnectionAbortedError("emulator: injected dropped connection")


_MALFORMED = {
    "garbage": lambda: b"<html>502 Bad Gateway</html>",
    "wrong-types": lambda: b'{"images": [{"url": "x", "width": "wide"}], "page": {"n": 1}}',
    "giant": lambda: b'{"images": [], "padding": "' + b"x" * (16 * 1024 * 1024) + b'"}',
}


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unit(*parts: object) -> float:
    """A number in [0, 1) derived from the parts: the same on every run."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Emulator:
    """IAM + Search API emulator. Start it with :meth:`start` (or use it as a context manager).

    :param folder_id: the only folder the emulator accepts.
    :param settings: knobs; defaults answer at once with no faults and no quota.
    """

    def __init__(self, folder_id: str = DEFAULT_FOLDER_ID, settings: EmulatorSettings | None = None) -> None:
        self.folder_id = folder_id
        self.settings = settings or EmulatorSettings()
        self.stats = EmulatorStats()
        self._public_keys: dict[str, tuple[str, Any]] = {}
        self._api_keys: set[str] = set()
        self._oauth_tokens: set[str] = set()
        self._tokens: dict[str, float] = {}
        self._cbir: dict[str, tuple[str, float]] = {}
        self._attempts: dict[str, int] = {}
        self._bucket_level = 0.0
        self._bucket_time = 0.0
        self._server: ServerThread | None = None
        self._grpc: Any = None
        self.app = Starlette(
            routes=[
                Route("/iam/v1/tokens", self._iam_tokens, methods=["POST"]),
                Route(
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                    self._metadata_token,
                    methods=["GET"],
                ),
                Route("/v2/image/search_by_image", self._search_by_image, methods=["POST"]),
                Route("/img/{name}", self._image, methods=["GET"]),
                Route("/_emulator/stats", self._get_stats, methods=["GET"]),
                Route("/_emulator/settings", self._put_settings, methods=["POST"]),
                Route("/_emulator/reset", self._reset, methods=["POST"]),
            ]
        )

    # -- credentials --------------------------------------------------------------------------
    def add_authorized_key(self, key: dict[str, Any]) -> None:
        """Accept JWTs signed by this authorized key (as :func:`generate_authorized_key` makes)."""
        public = serialization.load_pem_public_key(key["public_key"].encode())
        self._public_keys[key["id"]] = (key["service_account_id"], public)

    def add_api_key(self, api_key: str) -> None:
        """Accept ``Authorization: Api-Key <api_key>``."""
        self._api_keys.add(api_key)

    def add_oauth_token(self, oauth_token: str) -> None:
        """Accept this user OAuth token at the IAM exchange (``{"yandexPassportOauthToken": …}``)."""
        self._oauth_tokens.add(oauth_token)

    def issue_token(self, ttl: float | None = None) -> str:
        """Mint an IAM token directly (what a user would paste as a static token)."""
        token = "t1.emu." + secrets.token_urlsafe(32)
        self._tokens[token] = time.time() + (ttl if ttl is not None else self.settings.token_ttl)
        return token

    def revoke_tokens(self) -> None:
        """Make every IAM token minted so far invalid (the next call with one gets 401)."""
        self._tokens.clear()

    # -- server -------------------------------------------------------------------------------
    def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "critical",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> Emulator:
        """Serve on ``host:port`` (port 0: a free one) in a background thread; HTTPS with a cert and key."""
        self._server = ServerThread(self.app, host, port, log_level, ssl_certfile, ssl_keyfile)
        return self

    def start_grpc(self) -> str:
        """Serve gRPC too (needs ``grpcio``); returns its ``grpc_endpoint`` (``http://127.0.0.1:PORT``)."""
        if self._grpc is None:
            from airflow_provider_searchapi.testing.grpc_server import GrpcFrontEnd

            self._grpc = GrpcFrontEnd(self).start()
        return self._grpc.endpoint

    def stop(self) -> None:
        """Stop serving."""
        if self._grpc is not None:
            self._grpc.stop()
            self._grpc = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Emulator:
        return self if self._server else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.url

    def connection_extras(
        self,
        *,
        credential: str = "authorized_key",
        key: dict[str, Any] | None = None,
        transport: str = "rest",
        conn_type: str = "yandex_searchapi",
    ) -> dict[str, Any]:
        """Extras of a connection pointing here, with a new credential.

        :param credential: ``authorized_key``, ``api_key``, ``iam_token``, ``oauth`` or ``metadata``.
        :param key: the authorized key to use (a new one is generated and registered if not given).
        :param transport: ``rest`` or ``grpc`` (starts the gRPC front end if needed).
        :param conn_type: ``yandex_searchapi``, or ``yandexcloud`` (the yandex provider's type: the
            Search API's address goes in ``searchapi_endpoint``; credentials ``authorized_key``, ``oauth``
            or ``metadata``; REST only). OAuth tokens are for ``yandexcloud`` only.
        """
        from airflow_provider_searchapi.testing.keys import generate_authorized_key

        allowed = {
            "yandex_searchapi": ("authorized_key", "api_key", "iam_token", "metadata"),
            "yandexcloud": ("authorized_key", "oauth", "metadata"),
        }
        if credential not in allowed.get(conn_type, ()) or (conn_type == "yandexcloud" and transport != "rest"):
            raise ValueError(f"no {credential!r} credential over {transport} for a {conn_type!r} connection")
        endpoint = "searchapi_endpoint" if conn_type == "yandexcloud" else "endpoint"
        extras: dict[str, Any] = {
            "folder_id": self.folder_id,
            endpoint: self.url,
            "iam_endpoint": f"{self.url}/iam/v1/tokens",
            "metadata_endpoint": f"{self.url}/computeMetadata/v1/instance/service-accounts/default/token",
        }
        if credential == "authorized_key":
            key = key or generate_authorized_key()
            self.add_authorized_key(key)
            extras["service_account_json"] = json.dumps(key)
        elif credential == "api_key":
            api_key = "AQVN" + secrets.token_urlsafe(30)
            self.add_api_key(api_key)
            extras["api_key"] = api_key
        elif credential == "iam_token":
            extras["iam_token"] = self.issue_token()
        elif credential == "oauth":
            extras["oauth"] = "y0_" + secrets.token_urlsafe(40)
            self.add_oauth_token(extras["oauth"])
        if transport == "grpc":
            extras.update(transport="grpc", grpc_endpoint=self.start_grpc())
        return extras

    def connection_json(self, **kwargs: Any) -> str:
        """``AIRFLOW_CONN_…`` value (JSON) of a connection pointing here; see :meth:`connection_extras`."""
        conn_type = kwargs.get("conn_type", "yandex_searchapi")
        return json.dumps({"conn_type": conn_type, "extra": self.connection_extras(**kwargs)})

    # -- IAM ----------------------------------------------------------------------------------
    async def _iam_tokens(self, request: Request) -> Response:
        with self.stats.lock:
            self.stats.iam_authorization_headers += int("authorization" in request.headers)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "yandexPassportOauthToken" in body:
            if body["yandexPassportOauthToken"] not in self._oauth_tokens:
                return _error(401, 16, "unknown OAuth token")
        elif refused := self._check_jwt(body):
            return refused
        token = self.issue_token()
        with self.stats.lock:
            self.stats.token_exchanges += 1
        return JSONResponse({"iamToken": token, "expiresAt": _rfc3339(self._tokens[token])})

    def _check_jwt(self, body: Any) -> Response | None:
        """The error answer for a body that is not a JWT of a registered key; ``None`` if it is one."""
        try:
            signed = body["jwt"]
            kid = jwt.get_unverified_header(signed).get("kid")
        except (KeyError, TypeError, jwt.PyJWTError):
            return _error(400, 3, 'body must be {"jwt": <signed JWT>} or {"yandexPassportOauthToken": <token>}')
        if kid not in self._public_keys:
            return _error(401, 16, f"unknown key id {kid!r}")
        service_account_id, public_key = self._public_keys[kid]
        try:
            claims = jwt.decode(
                signed,
                public_key,
                algorithms=["PS256"],
                audience=IAM_AUDIENCE,
                issuer=service_account_id,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as err:
            return _error(401, 16, f"JWT rejected: {err}")
        if claims["exp"] - claims["iat"] > 3600:
            return _error(401, 16, "JWT lifetime exceeds one hour")
        return None

    async def _metadata_token(self, request: Request) -> Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return Response("Metadata-Flavor: Google header required", status_code=403)
        token = self.issue_token()
        with self.stats.lock:
            self.stats.metadata_tokens += 1
        return JSONResponse({"access_token": token, "expires_in": int(self.settings.token_ttl), "token_type": "Bearer"})

    def _authorized(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind == "Bearer":
            expires = self._tokens.get(value)
            return expires is not None and expires > time.time()
        return kind == "Api-Key" and value in self._api_keys

    # -- search -------------------------------------------------------------------------------
    def _over_quota(self) -> bool:
        rate = self.settings.quota_rps
        if not rate:
            return False
        now = time.monotonic()
        self._bucket_level = min(rate, self._bucket_level + (now - self._bucket_time) * rate)
        self._bucket_time = now
        if self._bucket_level < 1.0:
            return True
        self._bucket_level -= 1.0
        return False

    async def _search_by_image(self, request: Request) -> Response:
        if request.client is not None:
            with self.stats.lock:
                self.stats.rest_connections.add((request.client.host, request.client.port))
        try:
            body: Any = pydantic_core.from_json(await request.body())
        except ValueError:
            body = None
        outcome = await self.search(request.headers.get("authorization", ""), body)
        if outcome.drop:
            return _DropConnection()
        if outcome.raw is not None:
            answer = Response(outcome.raw, status_code=outcome.status, media_type="application/json")
        else:
            answer = JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)
        if self.settings.gzip_answers and "gzip" in request.headers.get("accept-encoding", ""):
            headers = {**outcome.headers, "Content-Encoding": "gzip"}
            return Response(gzip.compress(answer.body, 1), answer.status_code, headers, "application/json")
        return answer

    async def search(self, authorization: str, body: Any) -> SearchOutcome:
        """Answer one search request, counting it; REST and gRPC front ends both call this.

        :param authorization: the ``Authorization`` header (or gRPC metadata) value.
        :param body: the request in proto3 JSON shape (``None`` if it was unreadable).
        """
        stats = self.stats
        with stats.lock:
            stats.search_requests += 1
            stats.arrivals.append(time.monotonic())
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.authorization_headers[authorization.partition(" ")[0]] += 1
        try:
            outcome = await self._answer(authorization, body)
        finally:
            with stats.lock:
                stats.in_flight -= 1
        with stats.lock:
            stats.responses[0 if outcome.drop else outcome.status] += 1
        return outcome

    async def _answer(self, authorization: str, body: Any) -> SearchOutcome:
        settings = self.settings
        if not self._authorized(authorization):
            return SearchOutcome.error(401, 16, "Token is invalid or has expired.")
        if self._over_quota():
            headers = {"Retry-After": f"{settings.retry_after:g}"} if settings.retry_after is not None else {}
            return SearchOutcome.error(429, 8, "Quota exceeded: too many requests per second.", headers)
        if body is None:
            return SearchOutcome.error(400, 3, "Request body is not valid JSON.")
        if not isinstance(body, dict):
            return SearchOutcome.error(400, 3, "Request body must be a JSON object.")
        if body.get("folderId") != self.folder_id:
            return SearchOutcome.error(403, 7, f"Permission denied to folder {body.get('folderId')!r}.")
        given = [name for name in ("url", "data", "id") if body.get(name)]
        if len(given) != 1:
            return SearchOutcome.error(400, 3, f"Exactly one of url, data, id must be set (got {given or 'none'}).")
        for name in ("url", "id", "site"):
            if len(str(body.get(name) or "")) > MAX_TEXT_FIELD_CHARS:
                return SearchOutcome.error(400, 3, f"{name} is longer than {MAX_TEXT_FIELD_CHARS} characters.")
        try:
            page = int(body.get("page", 0))
        except (TypeError, ValueError):
            return SearchOutcome.error(400, 3, "page must be an integer.")
        if page < 0:
            return SearchOutcome.error(400, 3, "page must be >= 0.")

        if "data" in given:
            try:
                data = base64.b64decode(body["data"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                return SearchOutcome.error(400, 3, "data is not valid base64.")
            if len(data) > MAX_IMAGE_BYTES:
                return SearchOutcome.error(400, 3, f"Image is larger than {MAX_IMAGE_BYTES} bytes.")
            if not _decodable(data):
                return SearchOutcome.error(400, 3, "Image could not be decoded.")
            query = hashlib.sha256(data).hexdigest()
            with self.stats.lock:
                self.stats.uploads += 1
        elif "url" in given:
            query = hashlib.sha256(str(body["url"]).encode()).hexdigest()
        else:
            query, created = self._cbir.get(str(body["id"]), ("", 0.0))
            ttl = settings.cbir_ttl
            if not query or (ttl is not None and time.monotonic() - created >= ttl):
                return SearchOutcome.error(404, 5, "Unknown or expired CBIR id.")

        attempt = self._count_attempt(query, page)
        fault = self._fault(query, page, attempt)
        if fault is not None:
            return await self._inject(fault)
        if settings.latency:
            await asyncio.sleep(settings.latency)
        with self.stats.lock:
            self.stats.searches_by_query[f"{query}:{page}"] += 1
        return SearchOutcome(200, self._results(query, page, site=body.get("site")))

    def _count_attempt(self, query: str, page: int) -> int:
        key = f"attempt:{query}:{page}"
        n = self._attempts.get(key, 0)
        self._attempts[key] = n + 1
        return n

    def _fault(self, query: str, page: int, attempt: int) -> str | None:
        settings = self.settings
        if settings.fault_rate <= 0 or attempt >= settings.fault_attempts or not settings.fault_kinds:
            return None
        if _unit("fault", query, page, attempt) >= settings.fault_rate:
            return None
        kinds = settings.fault_kinds
        return kinds[int(_unit("kind", query, page, attempt) * len(kinds))]

    async def _inject(self, fault: str) -> SearchOutcome:
        with self.stats.lock:
            self.stats.faults[fault] += 1
        if fault == "429":
            return SearchOutcome.error(429, 8, "Too many requests.", {"Retry-After": "0.05"})
        if fault == "429-no-retry-after":
            return SearchOutcome.error(429, 8, "Too many requests.")
        if fault == "stall":
            await asyncio.sleep(self.settings.stall_seconds)
            return SearchOutcome.error(504, 4, "Deadline exceeded.")
        if fault == "drop":
            return SearchOutcome(0, drop=True)
        if fault in _MALFORMED:
            return SearchOutcome(200, raw=_MALFORMED[fault]())
        status = int(fault)
        return SearchOutcome.error(status, 13 if status == 500 else 14, "Injected transient failure.")

    def _results(self, query: str, page: int, site: str | None) -> dict[str, Any]:
        digest = bytes.fromhex(query)
        pages = 1 + digest[0] % max(1, self.settings.max_result_pages)
        if _unit("empty", query) < self.settings.no_results_rate:
            pages = 0
        shard = int.from_bytes(digest[1:4], "big") % 9_000_000 + 1_000_000
        cbir_id = f"{shard}/{base64.urlsafe_b64encode(digest[4:16]).decode().rstrip('=')}"
        self._cbir[cbir_id] = (query, time.monotonic())
        body: dict[str, Any] = {"id": cbir_id}
        if pages > 1:  # proto3 JSON drops the default 0, of maxPage and of page
            body["maxPage"] = str(pages - 1)
        if page:
            body["page"] = str(page)
        if page >= pages:
            return body
        host = site or f"site{digest[5] % 50}.example.com"
        base = self._server.url if self._server is not None else f"https://{host}"
        images = []
        for rank in range(self.settings.images_per_page):
            h = hashlib.sha256(digest + bytes([page % 256, rank % 256])).digest()
            width, height = 200 + int.from_bytes(h[7:9], "big") % 1800, 200 + int.from_bytes(h[9:11], "big") % 1400
            kind = h[6] % 3
            image: dict[str, Any] = {
                "url": f"{base}/img/{h[:6].hex()}-{width}x{height}.{('jpg', 'png', 'gif')[kind]}",
                "format": ("IMAGE_FORMAT_JPEG", "IMAGE_FORMAT_PNG", "IMAGE_FORMAT_GIF")[kind],
                "width": str(width),
                "height": str(height),
                "host": host,
                "pageTitle": f"Page {h[11]} about image {query[:8]}",
                "pageUrl": f"https://{host}/page/{h[12:16].hex()}",
            }
            if h[16] % 4:  # proto3 JSON omits empty strings: some results have no passage
                image["passage"] = f"A passage mentioning image {query[:8]}, result {page}.{rank}."
            images.append(image)
        body["images"] = images
        return body

    async def _image(self, request: Request) -> Response:
        """A found image: a small picture drawn from its name, of the aspect and format the name gives."""
        picture = _picture(request.path_params["name"])
        if picture is None:
            return Response("no such image", status_code=404, media_type="text/plain")
        data, media_type = picture
        return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    # -- admin ----------------------------------------------------------------------------------
    async def _get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def _put_settings(self, request: Request) -> Response:
        try:
            self.settings.update(await request.json())
        except (ValueError, TypeError) as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse(asdict(self.settings))

    async def _reset(self, request: Request) -> Response:
        self.stats.reset()
        self._attempts.clear()
        return JSONResponse({"ok": True})


_PICTURE_NAME = re.compile(r"([0-9a-f]{12})-([0-9]{1,4})x([0-9]{1,4})\.(jpg|png|gif)")
_PICTURE_FORMATS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "gif": ("GIF", "image/gif")}


@functools.lru_cache(maxsize=1024)
def _picture(name: str) -> tuple[bytes, str] | None:
    """The picture served at ``/img/<name>`` (``<12 hex>-<W>x<H>.<jpg|png|gif>``): at most 160 pixels
    a side, of W:H, coloured and drawn from the hex; ``None`` for any other name."""
    match = _PICTURE_NAME.fullmatch(name)
    if match is None or not int(match[2]) or not int(match[3]):
        return None
    seed, (pillow_format, media_type) = bytes.fromhex(match[1]), _PICTURE_FORMATS[match[4]]
    scale = 160 / max(int(match[2]), int(match[3]))
    size = (max(8, round(int(match[2]) * scale)), max(8, round(int(match[3]) * scale)))
    image = Image.new("RGB", size, (seed[0], seed[1], seed[2]))
    draw = ImageDraw.Draw(image)
    for i in range(3):
        x, y = seed[3 + i] % size[0], seed[(4 + i) % 6] % size[1]
        radius = 12 + seed[(5 + i) % 6] % 40
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(seed[i + 3], seed[i], 255 - seed[i]))
    buffer = io.BytesIO()
    image.save(buffer, pillow_format)
    return buffer.getvalue(), media_type


def _decodable(data: bytes) -> bool:
    """Stand-in for the real service's decoder: known format and not visibly truncated."""
    kind = sniff_format(data[:16])
    if kind == "jpeg":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if kind == "png":
        return b"IEND" in data[-16:]
    return kind is not None


def main(argv: list[str] | None = None) -> None:
    """Serve the emulator until interrupted; print its endpoints and a connection for Airflow."""
    import argparse
    import signal

    from airflow_provider_searchapi.testing.keys import generate_authorized_key

    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_searchapi.testing.emulator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--folder-id", default=DEFAULT_FOLDER_ID)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per search")
    parser.add_argument("--quota-rps", type=float, default=None, help="answer 429 above this many searches per second")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of attempts that fail transiently")
    parser.add_argument("--key-out", help="write a new authorized key JSON here and accept it")
    parser.add_argument("--conn-out", help="write an AIRFLOW_CONN_* JSON value (authorized key) here")
    parser.add_argument("--ready-file", help="write the base URL here once serving (for scripts)")
    parser.add_argument("--grpc", action="store_true", help="serve gRPC too; --conn-out then names its endpoint")
    args = parser.parse_args(argv)

    emulator = Emulator(
        args.folder_id,
        EmulatorSettings(latency=args.latency, quota_rps=args.quota_rps, fault_rate=args.fault_rate),
    )
    emulator.start(args.host, args.port, log_level="warning")
    grpc_endpoint = emulator.start_grpc() if args.grpc else None
    key = generate_authorized_key()
    if args.key_out:
        with open(args.key_out, "w", encoding="utf-8") as handle:
            json.dump(key, handle)
    if args.conn_out:
        with open(args.conn_out, "w", encoding="utf-8") as handle:
            connection = json.loads(emulator.connection_json(key=key))
            if grpc_endpoint:  # transport stays "rest": set "transport": "grpc" to use it
                connection["extra"]["grpc_endpoint"] = grpc_endpoint
            handle.write(json.dumps(connection))
    else:
        emulator.add_authorized_key(key)
    print(f"Search API emulator on {emulator.url} (folder {emulator.folder_id})", flush=True)
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as handle:
            handle.write(emulator.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    emulator.stop()


if __name__ == "__main__":
    main()

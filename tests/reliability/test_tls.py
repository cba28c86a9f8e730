"""TLS verification is on by default; turning it off is explicit and logged."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiHTTPError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.testing import Emulator
from tests.conftest import make_jpeg


@pytest.fixture
def https_emulator(tmp_path):
    """The emulator over HTTPS with a self-signed certificate for 127.0.0.1 (no CA trusts it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with Emulator().start(ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as emulator:
        yield emulator


def _hook(emulator, monkeypatch, credential: str, **extra) -> SearchApiHook:
    extras = {**emulator.connection_extras(credential=credential), **extra}
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_TLS", json.dumps({"conn_type": "yandex_searchapi", "extra": extras}))
    return SearchApiHook("searchapi_tls")


def test_an_untrusted_certificate_is_refused_at_once(https_emulator, monkeypatch):
    assert https_emulator.url.startswith("https://")
    hook = _hook(https_emulator, monkeypatch, "api_key")
    assert hook.config.verify_tls is True
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(1))
    assert "certificate" in info.value.message and not info.value.retryable
    assert hook.stats.attempts == 1  # not retried: a bad certificate does not heal
    assert https_emulator.stats.snapshot()["search_requests"] == 0


def test_the_iam_exchange_verifies_certificates_too(https_emulator, monkeypatch):
    hook = _hook(https_emulator, monkeypatch, "authorized_key")
    with pytest.raises(
        SearchApiAuthError, match=r"TLS certificate of the IAM endpoint https://127.0.0.1:\d+/\S+ could not be verified"
    ):
        hook.search_by_image(image=make_jpeg(1))
    assert https_emulator.stats.snapshot()["token_exchanges"] == 0


def test_turning_verification_off_is_explicit_and_logged(https_emulator, monkeypatch, caplog, capsys):
    hook = _hook(https_emulator, monkeypatch, "authorized_key", verify_tls="false")
    with caplog.at_level(logging.WARNING):
        result = hook.search_by_image(image=make_jpeg(1))
    assert result.images
    logged = capsys.readouterr().out + "".join(record.getMessage() for record in caplog.records)
    assert "verify_tls=false: TLS certificates are NOT checked" in logged


async def test_the_async_path_refuses_an_untrusted_certificate_at_once_too(https_emulator, monkeypatch):
    hook = _hook(https_emulator, monkeypatch, "api_key")
    with pytest.raises(SearchApiHTTPError) as info:
        await hook.asearch_by_image(image=make_jpeg(1))
    assert "TLS certificate of 127.0.0.1 could not be verified" in info.value.message and not info.value.retryable
    assert hook.stats.attempts == 1
    assert https_emulator.stats.snapshot()["search_requests"] == 0


async def test_the_async_path_speaks_tls_when_verification_is_off(https_emulator, monkeypatch):
    hook = _hook(https_emulator, monkeypatch, "authorized_key", verify_tls="false")
    results = await asyncio.gather(*(hook.asearch_by_image(image=make_jpeg(seed)) for seed in range(6)))
    assert all(result.images for result in results)
    assert https_emulator.stats.snapshot()["search_requests"] == 6
    await hook.aclose()

"""Throw-away service-account authorized keys, shaped like the files ``yc iam key create`` writes."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _cloud_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuv0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(17))


def generate_authorized_key(
    *, service_account_id: str | None = None, key_id: str | None = None, key_size: int = 2048
) -> dict[str, Any]:
    """A new RSA authorized key as a dict (``json.dumps`` it to get the key file's text).

    The private key is preceded by the comment line that real key files carry.

    :param service_account_id: the service account it belongs to (random if not given).
    :param key_id: the key's id (random if not given).
    :param key_size: RSA modulus size in bits (2048 or 4096).
    """
    key_id = key_id or _cloud_id("ajekey")
    private = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "id": key_id,
        "service_account_id": service_account_id or _cloud_id("ajesa"),
        "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "key_algorithm": f"RSA_{key_size}",
        "public_key": public_pem,
        "private_key": f"PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <{key_id}>\n{private_pem}",
    }

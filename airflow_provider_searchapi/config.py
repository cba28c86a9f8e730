"""The ``yandex_searchapi`` connection's settings (or a ``yandexcloud`` connection's), validated once
into an immutable object.

Every error is a :class:`SearchApiConfigError` naming the connection field at fault, never repeating a
secret: pydantic's own messages carry the input value, so they are rebuilt from location and message.
"""

from __future__ import annotations

import enum
import functools
import json
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from airflow_provider_searchapi.connection_fields import (
    DEFAULT_ENDPOINT,
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_IAM_ENDPOINT,
    DEFAULT_METADATA_ENDPOINT,
    DEFAULT_REQUESTS_PER_SECOND,
    DEFAULT_TIMEOUT_SECONDS,
    FIELD_NAMES,
)
from airflow_provider_searchapi.exceptions import SearchApiConfigError
from airflow_provider_searchapi.models import MAX_FOLDER_ID_CHARS

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_GRPC_ENDPOINT",
    "DEFAULT_IAM_ENDPOINT",
    "DEFAULT_METADATA_ENDPOINT",
    "DEFAULT_REQUESTS_PER_SECOND",
    "DEFAULT_TIMEOUT_SECONDS",
    "IAM_AUDIENCE",
    "AuthorizedKey",
    "CredentialKind",
    "SearchApiConfig",
]

#: The ``aud`` claim IAM expects in a service-account JWT, whatever address the exchange goes to.
IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"


class CredentialKind(str, enum.Enum):
    """Where the Authorization header comes from."""

    AUTHORIZED_KEY = "authorized_key"
    API_KEY = "api_key"
    IAM_TOKEN = "iam_token"
    OAUTH = "oauth"
    METADATA = "metadata"


class AuthorizedKey(BaseModel):
    """A service account's authorized key, as ``yc iam key create`` writes it.

    :param id: key id (the JWT's ``kid``).
    :param service_account_id: the service account (the JWT's ``iss``).
    :param private_key: the PEM private key, without the comment line ``yc`` puts before it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1)
    service_account_id: str = Field(min_length=1)
    private_key: SecretStr
    key_algorithm: str | None = None

    @field_validator("private_key", mode="before")
    @classmethod
    def _strip_comment(cls, value: Any) -> Any:
        if isinstance(value, str) and "-----BEGIN" in value:
            return value[value.index("-----BEGIN") :]
        return value

    @classmethod
    def from_json(cls, text: str, *, field: str = "service_account_json") -> AuthorizedKey:
        """Parse the key file's JSON text; errors name ``field`` and never show the key."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SearchApiConfigError(
                field,
                f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                "paste the whole file `yc iam key create --output key.json` wrote",
            ) from None
        if not isinstance(data, dict):
            raise SearchApiConfigError(field, "must be a JSON object with id, service_account_id, private_key")
        try:
            key = cls.model_validate(data)
        except ValidationError as err:
            raise _config_error(err, prefix=field) from None
        key.load_private_key(field=field)
        return key

    def load_private_key(self, *, field: str = "service_account_json") -> RSAPrivateKey:
        """Load the PEM into a key object; raise a config error naming ``field`` if it is not an RSA key."""
        pem = self.private_key.get_secret_value()
        if "-----BEGIN" not in pem:
            raise SearchApiConfigError(f"{field}.private_key", "is not a PEM private key (no -----BEGIN line)")
        try:
            key = _load_pem_private_key(pem)
        except (ValueError, TypeError):
            raise SearchApiConfigError(
                f"{field}.private_key", "could not be loaded as an unencrypted PEM private key"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise SearchApiConfigError(f"{field}.private_key", "must be an RSA key (PS256 signs with RSA)")
        return key


@functools.lru_cache(maxsize=8)
def _load_pem_private_key(pem: str) -> PrivateKeyTypes:
    """The key object of a PEM, loaded once per process (the last 8 are kept; failures are not).

    Loading tests an RSA key's primes: ~50 ms of CPU for 2,048 bits, which every hook and every
    signature would otherwise pay. The check is kept: an invalid key used unchecked can crash OpenSSL.
    """
    return serialization.load_pem_private_key(pem.encode(), password=None)


#: Extras that carry a credential, and the kind each one gives.
_CREDENTIALS = {
    "service_account_json": CredentialKind.AUTHORIZED_KEY,
    "service_account_json_path": CredentialKind.AUTHORIZED_KEY,
    "api_key": CredentialKind.API_KEY,
    "iam_token": CredentialKind.IAM_TOKEN,
    "oauth": CredentialKind.OAUTH,
}


class SearchApiConfig(BaseModel):
    """Everything a hook needs from its connection.

    Build it with :meth:`from_connection` (or :meth:`from_extras` for a ``yandex_searchapi``
    connection). At most one credential may be given; with none, the token comes from the VM metadata
    service (inside Yandex Cloud).

    :param folder_id: the folder billed for the calls.
    :param credential: which credential source is in use.
    :param authorized_key: the service account's authorized key.
    :param api_key: a service-account API key (scope ``yc.search-api.execute``).
    :param iam_token: a static IAM token (lives at most 12 hours).
    :param oauth_token: a user's OAuth token, exchanged for IAM tokens (``yandexcloud`` connections).
    :param endpoint: base URL of the Search API.
    :param iam_endpoint: URL of the IAM token exchange.
    :param metadata_endpoint: URL of the VM metadata token.
    :param timeout: seconds to wait for one HTTP request.
    :param requests_per_second: client-side cap on calls per second (the quota, or your share of it).
    :param rate_limit_conn_id: an Airflow ``redis`` connection keeping the rate limit shared by every
        process that uses the folder (``None``: each process limits itself).
    :param verify_tls: verify server certificates (on by default).
    :param transport: ``rest`` (default) or ``grpc`` (the ``grpc`` extra).
    :param grpc_endpoint: ``host:port`` of the gRPC service (``http://host:port`` for plaintext).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder_id: str = Field(min_length=1, max_length=MAX_FOLDER_ID_CHARS)
    credential: CredentialKind
    authorized_key: AuthorizedKey | None = None
    api_key: SecretStr | None = None
    iam_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    endpoint: str = DEFAULT_ENDPOINT
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT
    timeout: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, allow_inf_nan=False)
    requests_per_second: float = Field(default=DEFAULT_REQUESTS_PER_SECOND, gt=0, allow_inf_nan=False)
    rate_limit_conn_id: str | None = None
    verify_tls: bool = True
    transport: Literal["rest", "grpc"] = "rest"
    grpc_endpoint: str = DEFAULT_GRPC_ENDPOINT

    @model_validator(mode="before")
    @classmethod
    def _choose_credential(cls, data: Any) -> Any:
        """Turn extras (credential extras by their own names) into fields; empty strings are absent."""
        if not isinstance(data, dict) or "credential" in data:
            return data
        values = {name: value for name, value in data.items() if value is not None and value != ""}
        given = [name for name in _CREDENTIALS if name in values]
        if len(given) > 1:
            raise SearchApiConfigError(given[1], f"give only one credential; found {' and '.join(given)}")
        if "folder_id" not in values:
            raise SearchApiConfigError("folder_id", "is required: the ID of the folder billed for searches")
        fields = {name: value for name, value in values.items() if name not in _CREDENTIALS}
        source = given[0] if given else None
        fields["credential"] = _CREDENTIALS[source] if source else CredentialKind.METADATA
        if source == "service_account_json":
            fields["authorized_key"] = _key_from_extra(values[source], source)
        elif source == "service_account_json_path":
            fields["authorized_key"] = _key_from_path(values[source])
        elif source is not None:
            fields["oauth_token" if source == "oauth" else source] = _secret_text(values[source], source)
        return fields

    @field_validator("grpc_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        bare = value.removeprefix("http://").removeprefix("https://").rstrip("/")
        host, _, port = bare.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be host:port (or http://host:port for plaintext)")
        return value

    @field_validator("endpoint", "iam_endpoint", "metadata_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @classmethod
    def from_extras(cls, extras: dict[str, Any]) -> SearchApiConfig:
        """Validate a ``yandex_searchapi`` connection's extras (as Airflow stores them) into a config.

        Empty strings count as absent, since the connection form saves untouched fields as ``""``.
        """
        unknown = sorted(name for name, value in extras.items() if name not in FIELD_NAMES and value not in (None, ""))
        if unknown:
            known = ", ".join(sorted(FIELD_NAMES))
            raise SearchApiConfigError(unknown[0], f"is not a setting of this connection type; known: {known}")
        return cls._validated(extras)

    @classmethod
    def from_connection(
        cls, conn_type: str, extras: dict[str, Any], *, folder_id: str | None = None
    ) -> SearchApiConfig:
        """Validate a connection of type ``yandex_searchapi`` or ``yandexcloud`` into a config.

        A ``yandexcloud`` connection (the yandex provider's) is read as that provider reads it: its
        OAuth token first, else its key (a path before inline JSON), else the VM metadata service. Its
        ``endpoint`` is the SDK's gRPC endpoint and is ignored; ``searchapi_endpoint``,
        ``iam_endpoint`` and ``metadata_endpoint`` override our defaults; other extras are ignored.

        :param conn_type: the connection's type.
        :param extras: the connection's extras.
        :param folder_id: the folder billed when the connection names none.
        """
        if conn_type == "yandexcloud":
            values = _yandexcloud_values(extras)
        elif conn_type == "yandex_searchapi":
            values = dict(extras)
        else:
            raise SearchApiConfigError(
                "conn_type", f"is {conn_type!r}; use a yandex_searchapi or yandexcloud connection"
            )
        if values.get("folder_id") in (None, ""):
            if not folder_id:
                raise SearchApiConfigError(
                    "folder_id",
                    f"the {conn_type} connection has none; give folder_id= to the hook/operator "
                    "or set the connection's folder_id",
                )
            values["folder_id"] = folder_id
        return cls._validated(values) if conn_type == "yandexcloud" else cls.from_extras(values)

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> SearchApiConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise _config_error(err) from None

    def secret_values(self) -> list[str]:
        """Every text to register with a secrets masker: each credential as given, and for a key the
        PEM whole and its base64 body; each also as it reads inside JSON text."""
        secrets = [s.get_secret_value() for s in (self.api_key, self.iam_token, self.oauth_token) if s is not None]
        if self.authorized_key is not None:
            pem = self.authorized_key.private_key.get_secret_value()
            secrets += [pem, "\n".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))]
        return list(dict.fromkeys(form for secret in secrets for form in (secret, json.dumps(secret)[1:-1])))


def _yandexcloud_values(extras: dict[str, Any]) -> dict[str, Any]:
    """Our settings from a ``yandexcloud`` connection's extras (plain or ``extra__yandexcloud__`` keys)."""

    def get(name: str) -> Any:
        for key in (name, f"extra__yandexcloud__{name}"):
            if extras.get(key) not in (None, ""):
                return extras[key]
        return None

    values = {ours: get(theirs) for theirs, ours in _YANDEXCLOUD_SETTINGS.items()}
    for credential in ("oauth", "service_account_json_path", "service_account_json"):  # that provider's order
        if get(credential) is not None:
            values[credential] = get(credential)
            break
    return {name: value for name, value in values.items() if value is not None}


#: The ``yandexcloud`` extras we read, and our settings they give.
_YANDEXCLOUD_SETTINGS = {
    "folder_id": "folder_id",
    "searchapi_endpoint": "endpoint",
    "iam_endpoint": "iam_endpoint",
    "metadata_endpoint": "metadata_endpoint",
}


def _config_error(err: ValidationError, prefix: str | None = None) -> SearchApiConfigError:
    """The first pydantic error as a config error, without the offending input (it may be a secret)."""
    first = err.errors(include_input=False, include_url=False)[0]
    raised = first.get("ctx", {}).get("error")
    if isinstance(raised, SearchApiConfigError):
        return raised
    location = ".".join(str(part) for part in first["loc"]) or "value"
    field = f"{prefix}.{location}" if prefix else location
    return SearchApiConfigError(field, str(raised) if isinstance(raised, ValueError) else first["msg"].lower())


def _secret_text(value: Any, field: str) -> SecretStr:
    if not isinstance(value, str) or not value.strip():
        raise SearchApiConfigError(field, "must be a non-empty string")
    text = value.strip()
    if any(character.isspace() or not character.isprintable() for character in text):
        # it goes into an HTTP header, where these are not allowed; the value is not shown
        raise SearchApiConfigError(field, "holds a space, line break or control character inside; paste it again")
    return SecretStr(text)


def _key_from_extra(value: Any, field: str) -> AuthorizedKey:
    if isinstance(value, dict):  # an env-var JSON connection may carry the key as an object
        value = json.dumps(value)
    if not isinstance(value, str):
        raise SearchApiConfigError(field, "must be the authorized key file's JSON text")
    return AuthorizedKey.from_json(value, field=field)


def _key_from_path(value: Any) -> AuthorizedKey:
    field = "service_account_json_path"
    if not isinstance(value, str):
        raise SearchApiConfigError(field, "must be a file path")
    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SearchApiConfigError(field, f"no file at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SearchApiConfigError(field, f"cannot read {path}: {type(err).__name__}") from None
    except ValueError:  # e.g. a NUL character in the path
        raise SearchApiConfigError(field, "is not a valid file path") from None
    return AuthorizedKey.from_json(text, field=f"{field} ({path})")

"""The ``yandex_searchapi`` connection's settings, validated once into an immutable object.

Every error names the connection field at fault and never repeats a secret: pydantic's own messages
carry the input value, so they are rebuilt here from the location and the message only.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from airflow_provider_searchapi.exceptions import SearchApiConfigError
from airflow_provider_searchapi.models import MAX_FOLDER_ID_CHARS

DEFAULT_ENDPOINT = "https://searchapi.api.cloud.yandex.net"
DEFAULT_IAM_ENDPOINT = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
DEFAULT_GRPC_ENDPOINT = "searchapi.api.cloud.yandex.net:443"
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
#: The ``aud`` claim IAM expects in a service-account JWT, whatever address the exchange goes to.
IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
#: The default quota of search-by-image calls per second (per cloud).
DEFAULT_REQUESTS_PER_SECOND = 10.0
DEFAULT_TIMEOUT_SECONDS = 60.0

#: Extras whose values are credentials: never logged, shown as password inputs.
SECRET_FIELDS = ("service_account_json", "api_key", "iam_token")


class CredentialKind(str, enum.Enum):
    """Where the Authorization header comes from."""

    AUTHORIZED_KEY = "authorized_key"
    API_KEY = "api_key"
    IAM_TOKEN = "iam_token"
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
    """The key object of a PEM, loaded once per process while it is among the last 8 loaded (two
    threads asking for a new one at once may both load it); a failure is not remembered.

    Loading checks an RSA key thoroughly (its primes are tested): 50 ms of CPU for 2,048 bits and
    350 ms for 4,096 on a 2-core VM. Every hook parses its connection, and every token exchange
    signs, so without this a task paid it once per hook and once more per exchange. The check is kept
    (``unsafe_skip_rsa_key_validation`` would skip it): cryptography warns that an invalid key used
    unchecked can hang or crash OpenSSL, and these keys come from users.
    """
    return serialization.load_pem_private_key(pem.encode(), password=None)


class SearchApiConfig(BaseModel):
    """Everything a hook needs from a ``yandex_searchapi`` connection.

    Build it with :meth:`from_extras`. Exactly one credential source may be given; with none, the
    token comes from the VM metadata service (inside Yandex Cloud).

    :param folder_id: the folder billed for the calls.
    :param credential: which credential source is in use.
    :param authorized_key: the service account's authorized key.
    :param api_key: a service-account API key (scope ``yc.search-api.execute``).
    :param iam_token: a static IAM token (lives at most 12 hours).
    :param endpoint: base URL of the Search API.
    :param iam_endpoint: URL of the IAM token exchange.
    :param metadata_endpoint: URL of the VM metadata token.
    :param timeout: seconds to wait for one HTTP request.
    :param requests_per_second: client-side cap on calls per second (the quota, or your share of it).
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
    endpoint: str = DEFAULT_ENDPOINT
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT
    timeout: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0)
    requests_per_second: float = Field(default=DEFAULT_REQUESTS_PER_SECOND, gt=0)
    verify_tls: bool = True
    transport: Literal["rest", "grpc"] = "rest"
    grpc_endpoint: str = DEFAULT_GRPC_ENDPOINT

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

    @field_validator("timeout", "requests_per_second")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @classmethod
    def from_extras(cls, extras: dict[str, Any]) -> SearchApiConfig:
        """Validate a connection's extras (as Airflow stores them) into a config.

        Empty strings count as absent, since the connection form saves untouched fields as ``""``.
        """
        values = {k: v for k, v in extras.items() if v is not None and v != ""}
        unknown = sorted(set(values) - _EXTRA_NAMES)
        if unknown:
            raise SearchApiConfigError(
                unknown[0], f"is not a setting of this connection type; known: {', '.join(sorted(_EXTRA_NAMES))}"
            )
        sources = [name for name in _CREDENTIAL_EXTRAS if name in values]
        if len(sources) > 1:
            raise SearchApiConfigError(sources[1], f"give only one credential; found {' and '.join(sources)}")
        if "folder_id" not in values:
            raise SearchApiConfigError("folder_id", "is required: the ID of the folder billed for searches")
        fields: dict[str, Any] = {k: v for k, v in values.items() if k not in _CREDENTIAL_EXTRAS}
        if "verify_tls" in fields:
            fields["verify_tls"] = _parse_bool(fields["verify_tls"], "verify_tls")
        source = sources[0] if sources else None
        if source == "service_account_json":
            fields["credential"] = CredentialKind.AUTHORIZED_KEY
            fields["authorized_key"] = _key_from_extra(values[source], source)
        elif source == "service_account_json_path":
            fields["credential"] = CredentialKind.AUTHORIZED_KEY
            fields["authorized_key"] = _key_from_path(values[source])
        elif source == "api_key":
            fields["credential"] = CredentialKind.API_KEY
            fields["api_key"] = _secret_text(values[source], source)
        elif source == "iam_token":
            fields["credential"] = CredentialKind.IAM_TOKEN
            fields["iam_token"] = _secret_text(values[source], source)
        else:
            fields["credential"] = CredentialKind.METADATA
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise _config_error(err) from None


_CREDENTIAL_EXTRAS = ("service_account_json", "service_account_json_path", "api_key", "iam_token")
_EXTRA_NAMES = frozenset(
    {
        "folder_id",
        *_CREDENTIAL_EXTRAS,
        "endpoint",
        "iam_endpoint",
        "metadata_endpoint",
        "timeout",
        "requests_per_second",
        "verify_tls",
        "transport",
        "grpc_endpoint",
    }
)


def _config_error(err: ValidationError, prefix: str | None = None) -> SearchApiConfigError:
    """The first pydantic error as a config error, without the offending input (it may be a secret)."""
    first = err.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "value"
    field = f"{prefix}.{location}" if prefix else location
    return SearchApiConfigError(field, first["msg"].lower())


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


def _parse_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise SearchApiConfigError(field, f"must be true or false (got {value!r})")

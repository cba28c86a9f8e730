"""The settings of a ``yandex_searchapi`` (or ``yandexcloud``) connection, validated into one immutable model.

Every error is a :class:`SearchApiConfigError` naming the field at fault and never repeating a secret:
pydantic's messages are rebuilt from location and message, without the input.
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
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_provider_searchapi.connection_fields import (
    DEFAULT_ENDPOINT,
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_IAM_ENDPOINT,
    DEFAULT_METADATA_ENDPOINT,
    DEFAULT_REQUESTS_PER_SECOND,
    DEFAULT_TIMEOUT_SECONDS,
    FIELD_NAMES,
)
from airflow_provider_searchapi.exceptions import SearchApiConfigError, redact
from airflow_provider_searchapi.models import MAX_FOLDER_ID_CHARS

#: The ``aud`` claim IAM expects in a service-account JWT, whatever address the exchange goes to.
IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"


class CredentialKind(str, enum.Enum):
    """Where the Authorization header comes from."""

    AUTHORIZED_KEY = "authorized_key"
    API_KEY = "api_key"
    IAM_TOKEN = "iam_token"
    OAUTH = "oauth"
    METADATA = "metadata"


@functools.lru_cache(maxsize=8)
def _load_pem_private_key(pem: str) -> PrivateKeyTypes:
    """A PEM's key object, loaded once per process: loading checks an RSA key's primes (costly CPU).
    Failures are not cached."""
    return serialization.load_pem_private_key(pem.encode(), password=None)


class AuthorizedKey(BaseModel):
    """A service account's authorized key, as ``yc iam key create`` writes it.

    :param id: key id (the JWT's ``kid``).
    :param service_account_id: the service account (the JWT's ``iss``).
    :param private_key: the PEM private key (an RSA key), without the comment line ``yc`` puts before it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1)
    service_account_id: str = Field(min_length=1)
    private_key: SecretStr

    @field_validator("private_key", mode="before")
    @classmethod
    def _rsa_pem(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # pydantic names the wrong type
        if "-----BEGIN" not in value:
            raise ValueError("is not a PEM private key (no -----BEGIN line)")
        pem = value[value.index("-----BEGIN") :]
        try:
            key = _load_pem_private_key(pem)
        except (ValueError, TypeError):
            raise ValueError("could not be loaded as an unencrypted PEM private key") from None
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("must be an RSA key (PS256 signs with RSA)")
        return pem

    @classmethod
    def from_json(cls, text: Any, *, field: str = "service_account_json") -> AuthorizedKey:
        """Parse the key file's JSON text (or, from an env-var connection, that JSON as an object).

        :param text: the JSON.
        :param field: the setting named in errors (which never show the key).
        """
        try:
            return cls.model_validate_json(text) if isinstance(text, str) else cls.model_validate(text)
        except ValidationError as err:
            raise _config_error(err, prefix=field) from None

    def load_private_key(self) -> RSAPrivateKey:
        """The key object (validation made sure it is RSA)."""
        return _load_pem_private_key(self.private_key.get_secret_value())  # type: ignore[return-value]


#: Extras that carry a credential, and the kind each one gives.
_CREDENTIALS = {
    "service_account_json": CredentialKind.AUTHORIZED_KEY,
    "service_account_json_path": CredentialKind.AUTHORIZED_KEY,
    "api_key": CredentialKind.API_KEY,
    "iam_token": CredentialKind.IAM_TOKEN,
    "oauth": CredentialKind.OAUTH,
}


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` of a ``grpc_endpoint``, and whether it is reached over TLS (not ``http://``)."""
    return endpoint.removeprefix("http://").removeprefix("https://").rstrip("/"), not endpoint.startswith("http://")


class SearchApiConfig(BaseModel):
    """Everything a hook needs from its connection; build it with :meth:`from_connection`.

    The other fields are the connection's extras, described once in
    :data:`~airflow_provider_searchapi.connection_fields.FIELDS` (and ``docs/connection.md``). At most
    one credential may be given; with none, the token comes from the VM metadata service.

    :param credential: which credential is in use.
    :param authorized_key: the service account's authorized key (from ``service_account_json[_path]``).
    :param oauth_token: a user's OAuth token, exchanged for IAM tokens (``yandexcloud`` extra ``oauth``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder_id: str = Field(min_length=1, max_length=MAX_FOLDER_ID_CHARS)
    credential: CredentialKind
    authorized_key: AuthorizedKey | None = None
    api_key: SecretStr | None = None
    iam_token: SecretStr | None = None
    oauth_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("oauth", "oauth_token"))
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
        """The one credential extra given (none: the VM metadata service) becomes ``credential`` and,
        for a key, ``authorized_key``."""
        if not isinstance(data, dict) or "credential" in data:
            return data
        given = [name for name in _CREDENTIALS if name in data]
        if len(given) > 1:
            raise SearchApiConfigError(given[1], f"give only one credential; found {' and '.join(given)}")
        key_extras = ("service_account_json", "service_account_json_path")
        fields = {name: value for name, value in data.items() if name not in key_extras}
        fields["credential"] = _CREDENTIALS[given[0]] if given else CredentialKind.METADATA
        if "service_account_json" in data:
            fields["authorized_key"] = AuthorizedKey.from_json(data["service_account_json"])
        elif "service_account_json_path" in data:
            fields["authorized_key"] = _key_from_path(data["service_account_json_path"])
        return fields

    @field_validator("api_key", "iam_token", "oauth_token", mode="before")
    @classmethod
    def _header_safe(cls, value: Any) -> Any:
        """A credential goes into an HTTP header: trimmed, and refused unless printable ASCII without spaces."""
        if not isinstance(value, str):
            return value  # pydantic names the wrong type
        text = value.strip()
        if not text:
            raise ValueError("must be a non-empty string")
        if " " in text or not (text.isascii() and text.isprintable()):
            raise ValueError("holds a space, line break, control or non-ASCII character inside; paste it again")
        return text

    @field_validator("grpc_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = grpc_target(value)[0].rpartition(":")
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
    def from_connection(
        cls, conn_type: str, extras: dict[str, Any], *, folder_id: str | None = None
    ) -> SearchApiConfig:
        """Validate a connection of type ``yandex_searchapi`` or ``yandexcloud`` into a config.

        A ``yandexcloud`` connection is read as the yandex provider reads it: its OAuth token first,
        else its key (a path before inline JSON), else the VM metadata service. Its ``endpoint`` is the
        SDK's and is ignored; ``searchapi_endpoint``, ``iam_endpoint`` and ``metadata_endpoint`` are ours.

        :param conn_type: the connection's type.
        :param extras: the connection's extras, trimmed; blank ones (the form's untouched fields) count as absent.
        :param folder_id: the folder billed when the connection names none.
        """
        if conn_type == "yandexcloud":
            values = _yandexcloud_values(extras)
        elif conn_type == "yandex_searchapi":
            values = _given(extras)
            unknown = sorted(values.keys() - FIELD_NAMES)
            if unknown:
                known = ", ".join(sorted(FIELD_NAMES))
                raise SearchApiConfigError(unknown[0], f"is not a setting of this connection type; known: {known}")
        else:
            raise SearchApiConfigError(
                "conn_type", f"is {conn_type!r}; use a yandex_searchapi or yandexcloud connection"
            )
        values.setdefault("folder_id", folder_id)
        if not values["folder_id"]:
            raise SearchApiConfigError(
                "folder_id",
                f"is required: the {conn_type} connection has none; give folder_id= to the hook/operator "
                "or set the connection's folder_id",
            )
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


def _given(extras: dict[str, Any]) -> dict[str, Any]:
    """The extras set: text trimmed (what is pasted into the form may bring a space or line break along),
    and blank ones (the form's untouched fields) dropped."""
    trimmed = {name: value.strip() if isinstance(value, str) else value for name, value in extras.items()}
    return {name: value for name, value in trimmed.items() if value not in (None, "")}


def _yandexcloud_values(extras: dict[str, Any]) -> dict[str, Any]:
    """Our settings from a ``yandexcloud`` connection's extras (plain, else ``extra__yandexcloud__`` keys):
    its folder, our endpoints, and its one credential in that provider's order of precedence."""
    given = _given(extras)

    def get(name: str) -> Any:
        return given.get(name, given.get(f"extra__yandexcloud__{name}"))

    values = {name: get(name) for name in ("folder_id", "iam_endpoint", "metadata_endpoint")}
    values["endpoint"] = get("searchapi_endpoint")
    for credential in ("oauth", "service_account_json_path", "service_account_json"):
        if get(credential) is not None:
            values[credential] = get(credential)
            break
    return {name: value for name, value in values.items() if value is not None}


#: Our words for the pydantic errors whose own would not help here.
_MESSAGES = {
    "json_invalid": "is not valid JSON ({error}); paste the whole file `yc iam key create --output key.json` wrote",
    "model_type": "must be the key file's JSON object, with id, service_account_id, private_key",
}


def _config_error(err: ValidationError, prefix: str | None = None) -> SearchApiConfigError:
    """The first pydantic error as a config error, without the offending input (it may be a secret)."""
    first = err.errors(include_input=False, include_url=False)[0]
    context = first.get("ctx", {})
    raised = context.get("error")  # what a validator of ours raised
    if isinstance(raised, SearchApiConfigError):
        return raised
    field = ".".join(str(part) for part in (prefix, *first["loc"]) if part is not None) or "value"
    if first["type"] in _MESSAGES:
        return SearchApiConfigError(field, _MESSAGES[first["type"]].format(**context))
    return SearchApiConfigError(field, str(raised) if isinstance(raised, ValueError) else first["msg"].lower())


def _key_from_path(value: Any) -> AuthorizedKey:
    field = "service_account_json_path"
    if not isinstance(value, str):
        raise SearchApiConfigError(field, "must be a file path")
    if "PRIVATE KEY" in value or "\n" in value:  # a pasted key: errors below would quote it as the path
        raise SearchApiConfigError(field, "holds a key, not a path; put the key file's JSON in service_account_json")
    path = Path(value).expanduser()
    shown = redact(str(path))  # an API key or OAuth token pasted here is not quoted
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write, is skipped
    except FileNotFoundError:
        raise SearchApiConfigError(field, f"no file at {shown}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SearchApiConfigError(field, f"cannot read {shown}: {type(err).__name__}") from None
    except ValueError:  # e.g. a NUL character in the path
        raise SearchApiConfigError(field, "is not a valid file path") from None
    return AuthorizedKey.from_json(text, field=f"{field} ({shown})")

"""``yandexcloud`` connections (the yandex provider's type): read without that provider, their
credentials minting tokens at the emulator's IAM, that provider's precedence, and folder_id."""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_provider_searchapi.auth import RefreshingTokenAuth, build_auth
from airflow_provider_searchapi.config import DEFAULT_ENDPOINT, CredentialKind, SearchApiConfig
from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiConfigError
from airflow_provider_searchapi.testing.keys import generate_authorized_key

LEGACY = "extra__yandexcloud__"


def _search(config: SearchApiConfig) -> httpx.Response:
    """One search with the config's credential, through its httpx auth flow."""
    with httpx.Client(auth=build_auth(config)) as client:
        body = {"folderId": config.folder_id, "url": "https://example.com/cat.jpg"}
        return client.post(f"{config.endpoint}/v2/image/search_by_image", json=body)


def _legacy(extras: dict) -> dict:
    """The same extras under the keys older yandex providers wrote."""
    renamed = ("folder_id", "service_account_json", "oauth")
    return {(LEGACY + name if name in renamed else name): value for name, value in extras.items()}


@pytest.mark.parametrize(
    "credential, kind, legacy",
    [
        ("authorized_key", CredentialKind.AUTHORIZED_KEY, False),
        ("authorized_key", CredentialKind.AUTHORIZED_KEY, True),
        ("oauth", CredentialKind.OAUTH, False),
        ("oauth", CredentialKind.OAUTH, True),
        ("metadata", CredentialKind.METADATA, False),
    ],
)
def test_a_yandexcloud_connection_mints_a_token_and_searches(searchapi_emulator, credential, kind, legacy):
    extras = searchapi_emulator.connection_extras(credential=credential, conn_type="yandexcloud")
    extras |= {"endpoint": "api.cloud.yandex.net:443", "public_ssh_key": "ssh-ed25519 AAAA"}  # the SDK's: ignored
    config = SearchApiConfig.from_connection("yandexcloud", _legacy(extras) if legacy else extras)
    assert (config.credential, config.endpoint, config.folder_id) == (kind, searchapi_emulator.url, extras["folder_id"])
    response = _search(config)
    assert response.status_code == 200, response.text
    assert response.json()["images"]
    stats = searchapi_emulator.stats.snapshot()
    assert stats["token_exchanges" if kind is not CredentialKind.METADATA else "metadata_tokens"] == 1
    assert searchapi_emulator.stats.authorization_headers == {"Bearer": 1}


def test_the_endpoint_extra_is_the_sdks_and_never_ours():
    extras = {"folder_id": "b1g", "endpoint": "https://searchapi.example.net"}
    assert SearchApiConfig.from_connection("yandexcloud", extras).endpoint == DEFAULT_ENDPOINT


def test_precedence_oauth_then_key_path_then_inline_key_then_metadata(tmp_path, searchapi_emulator):
    inline, on_disk = generate_authorized_key(), generate_authorized_key()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(on_disk))
    every = {"folder_id": "b1g", "oauth": "y0_user", "service_account_json_path": str(path)}
    every |= {"service_account_json": json.dumps(inline)}

    def chosen(**overrides) -> SearchApiConfig:
        return SearchApiConfig.from_connection("yandexcloud", {**every, **overrides})

    assert chosen().credential is CredentialKind.OAUTH
    assert chosen(oauth="").authorized_key.id == on_disk["id"]  # the form's empty field counts as absent
    assert chosen(oauth=None, service_account_json_path="").authorized_key.id == inline["id"]
    assert chosen(oauth="", service_account_json_path="", service_account_json="").credential is CredentialKind.METADATA
    # a plain key wins over its legacy twin, which is read when the plain one is empty
    assert chosen(**{LEGACY + "oauth": "y0_legacy"}).oauth_token.get_secret_value() == "y0_user"
    assert chosen(oauth="", **{LEGACY + "oauth": "y0_legacy"}).oauth_token.get_secret_value() == "y0_legacy"
    legacy_folder = {"folder_id": "", LEGACY + "folder_id": "b1glegacy"}
    assert SearchApiConfig.from_connection("yandexcloud", legacy_folder).folder_id == "b1glegacy"


def test_folder_id_argument_fills_in_when_the_connection_has_none():
    assert SearchApiConfig.from_connection("yandexcloud", {}, folder_id="b1garg").folder_id == "b1garg"
    assert SearchApiConfig.from_connection("yandexcloud", {"folder_id": "b1gconn"}, folder_id="b1garg").folder_id == (
        "b1gconn"
    )
    searchapi = SearchApiConfig.from_connection("yandex_searchapi", {"api_key": "AQVNkey"}, folder_id="b1garg")
    assert (searchapi.folder_id, searchapi.credential) == ("b1garg", CredentialKind.API_KEY)
    for conn_type in ("yandexcloud", "yandex_searchapi"):
        with pytest.raises(SearchApiConfigError) as info:
            SearchApiConfig.from_connection(conn_type, {"folder_id": ""})
        assert info.value.field == "folder_id"
        assert f"the {conn_type} connection has none; give folder_id= to the hook/operator" in str(info.value)


def test_bad_yandexcloud_settings_are_named_without_the_secret():
    cases = [
        ({"oauth": "y0_secret part\n"}, "oauth", "line break"),
        ({"service_account_json": '{"private_key": "y0_secret'}, "service_account_json", "not valid JSON"),
        ({"service_account_json_path": "/nonexistent/key.json"}, "service_account_json_path", "no file"),
        ({"searchapi_endpoint": "ftp://y0_secret"}, "endpoint", "http"),
    ]
    for extras, field, words in cases:
        with pytest.raises(SearchApiConfigError) as info:
            SearchApiConfig.from_connection("yandexcloud", {"folder_id": "b1g", **extras})
        assert (info.value.field, words in str(info.value)) == (field, True)
        assert "y0_secret" not in str(info.value) or field == "endpoint"
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection("aws", {"folder_id": "b1g"})
    assert info.value.field == "conn_type" and "yandexcloud" in str(info.value)


def test_an_unknown_oauth_token_is_refused_without_showing_it(searchapi_emulator):
    extras = searchapi_emulator.connection_extras(credential="oauth", conn_type="yandexcloud")
    config = SearchApiConfig.from_connection("yandexcloud", {**extras, "oauth": "y0_not-registered"})
    with pytest.raises(SearchApiAuthError) as info:
        build_auth(config).get_token()
    assert info.value.status == 401 and "the OAuth token" in str(info.value)
    assert "y0_not-registered" not in str(info.value)


def test_build_auth_shares_one_token_auth_per_credential(searchapi_emulator):
    extras = searchapi_emulator.connection_extras(credential="oauth", conn_type="yandexcloud")
    first = SearchApiConfig.from_connection("yandexcloud", extras)
    again = SearchApiConfig.from_connection("yandexcloud", {**extras, "public_ssh_key": "x"})
    assert isinstance(build_auth(first), RefreshingTokenAuth) and build_auth(first) is build_auth(again)
    other = searchapi_emulator.connection_extras(credential="oauth", conn_type="yandexcloud")
    assert build_auth(SearchApiConfig.from_connection("yandexcloud", other)) is not build_auth(first)
    for _ in range(3):
        assert _search(again).status_code == 200
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 1


def test_the_minted_token_and_the_oauth_token_are_masked(searchapi_emulator):
    from airflow.sdk.log import _secrets_masker, mask_secret

    extras = searchapi_emulator.connection_extras(credential="oauth", conn_type="yandexcloud")
    config = SearchApiConfig.from_connection("yandexcloud", extras)
    for value in config.secret_values():
        mask_secret(value)
    token = build_auth(config).get_token()  # registered by build_auth itself
    masker = _secrets_masker()
    said = masker.redact(f"extras {json.dumps(extras)} token {token}")
    assert extras["oauth"] not in said and token not in said


def test_the_oauth_token_shows_in_no_repr_of_the_auth():
    config = SearchApiConfig.from_connection("yandexcloud", {"folder_id": "b1g", "oauth": "y0_never_shown"})
    auth = build_auth(config)
    assert "y0_never_shown" not in repr(auth) + repr(vars(auth)) + repr(config)
    assert SearchApiConfig.model_validate(config.model_dump()).oauth_token == config.oauth_token

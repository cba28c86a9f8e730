from __future__ import annotations

import json

import pytest

from airflow_provider_searchapi.config import (
    DEFAULT_ENDPOINT,
    DEFAULT_REQUESTS_PER_SECOND,
    CredentialKind,
    SearchApiConfig,
)
from airflow_provider_searchapi.exceptions import SearchApiConfigError
from airflow_provider_searchapi.testing.keys import generate_authorized_key

KEY = generate_authorized_key()
PEM_BODY_LINE = KEY["private_key"].splitlines()[3]


def _secret_free(text: str) -> bool:
    return PEM_BODY_LINE not in text and "BEGIN PRIVATE KEY" not in text and "AQVNsecret" not in text


def test_authorized_key_json_with_defaults():
    config = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "b1g", "service_account_json": json.dumps(KEY)}
    )
    assert config.credential is CredentialKind.AUTHORIZED_KEY
    assert config.authorized_key.id == KEY["id"]
    assert config.authorized_key.service_account_id == KEY["service_account_id"]
    assert config.endpoint == DEFAULT_ENDPOINT
    assert config.requests_per_second == DEFAULT_REQUESTS_PER_SECOND


def test_the_yc_comment_line_is_stripped_before_the_pem():
    assert KEY["private_key"].startswith("PLEASE DO NOT REMOVE THIS LINE!")
    config = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "b1g", "service_account_json": json.dumps(KEY)}
    )
    pem = config.authorized_key.private_key.get_secret_value()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    config.authorized_key.load_private_key()


def test_key_as_a_json_object_and_from_a_path(tmp_path):
    by_object = SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "b1g", "service_account_json": KEY})
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KEY))
    by_path = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "b1g", "service_account_json_path": str(path)}
    )
    assert by_object.authorized_key == by_path.authorized_key
    path.write_text(json.dumps(KEY), encoding="utf-8-sig")  # as Windows editors save it: with a BOM
    with_bom = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "b1g", "service_account_json_path": str(path)}
    )
    assert with_bom.authorized_key == by_object.authorized_key


def test_other_credentials_and_none_means_metadata():
    assert (
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret"}).credential
        is CredentialKind.API_KEY
    )
    assert (
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "iam_token": "t1.x"}).credential
        is CredentialKind.IAM_TOKEN
    )
    assert SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f"}).credential is CredentialKind.METADATA


def test_form_values_arrive_as_strings_and_empty_strings_count_as_absent():
    config = SearchApiConfig.from_connection(
        "yandex_searchapi",
        {
            "folder_id": "f",
            "api_key": "AQVNsecret",
            "iam_token": "",
            "timeout": "12.5",
            "requests_per_second": "3",
            "verify_tls": "false",
            "endpoint": "http://127.0.0.1:1/",
        },
    )
    assert (config.timeout, config.requests_per_second, config.verify_tls) == (12.5, 3.0, False)
    assert config.endpoint == "http://127.0.0.1:1"
    for text, value in (("yes", True), ("Off", False), ("1", True), (False, False)):
        assert (
            SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "verify_tls": text}).verify_tls
            is value
        )


@pytest.mark.parametrize("conn_type", ["yandex_searchapi", "yandexcloud"])
def test_pasted_values_lose_stray_spaces_and_blank_ones_count_as_absent(tmp_path, conn_type):
    """A folder ID or path pasted into the form with a space or line break around it is used without it
    (the API would refuse the folder, and the error could not show why); a blank field is absent."""
    path = tmp_path / "key.json"
    path.write_text(json.dumps(KEY))
    blank = "iam_token" if conn_type == "yandex_searchapi" else "oauth"
    extras = {"folder_id": " b1gfolder \n", "service_account_json_path": f"{path}\n", blank: "  "}
    config = SearchApiConfig.from_connection(conn_type, extras)
    assert config.folder_id == "b1gfolder"
    assert config.credential == CredentialKind.AUTHORIZED_KEY and config.authorized_key.id == KEY["id"]


def test_config_is_immutable():
    config = SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret"})
    with pytest.raises(ValueError):
        config.folder_id = "other"


@pytest.mark.parametrize(
    "extras, field, words",
    [
        ({"api_key": "AQVNsecret"}, "folder_id", "is required"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "iam_token": "t1.x"}, "iam_token", "only one credential"),
        ({"folder_id": "f", "service_account_json": "{not json"}, "service_account_json", "not valid JSON"),
        ({"folder_id": "f", "service_account_json": "[1]"}, "service_account_json", "JSON object"),
        (
            {"folder_id": "f", "service_account_json_path": "/nonexistent/key.json"},
            "service_account_json_path",
            "no file",
        ),
        ({"folder_id": "f", "api_key": "AQVNsecret", "timeout": "-1"}, "timeout", "greater than 0"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "requests_per_second": "fast"}, "requests_per_second", "number"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "endpoint": "ftp://x"}, "endpoint", "http"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "verify_tls": "maybe"}, "verify_tls", "valid boolean"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "timeout": "inf"}, "timeout", "finite number"),
        ({"folder_id": "f", "api_key": "AQVNsecret", "endpiont": "http://x"}, "endpiont", "not a setting"),
        ({"folder_id": "x" * 51, "api_key": "AQVNsecret"}, "folder_id", "at most 50"),
    ],
)
def test_bad_settings_name_the_field(extras, field, words):
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection("yandex_searchapi", extras)
    assert info.value.field == field
    assert words in str(info.value)
    assert _secret_free(str(info.value))


def test_missing_key_field_is_named_without_showing_the_key():
    broken = {k: v for k, v in KEY.items() if k != "service_account_id"}
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection(
            "yandex_searchapi", {"folder_id": "f", "service_account_json": json.dumps(broken)}
        )
    assert info.value.field == "service_account_json.service_account_id"
    assert _secret_free(str(info.value)) and _secret_free(repr(info.value))


def test_non_pem_private_key_is_refused_without_echo():
    broken = {**KEY, "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ" + PEM_BODY_LINE}
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection(
            "yandex_searchapi", {"folder_id": "f", "service_account_json": json.dumps(broken)}
        )
    assert info.value.field == "service_account_json.private_key"
    assert "not a PEM" in str(info.value)
    assert _secret_free(str(info.value))


def test_corrupt_pem_is_refused_without_echo():
    pem = KEY["private_key"]
    broken = {**KEY, "private_key": pem.replace(PEM_BODY_LINE, PEM_BODY_LINE[::-1])}
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection(
            "yandex_searchapi", {"folder_id": "f", "service_account_json": json.dumps(broken)}
        )
    assert "could not be loaded" in str(info.value)
    assert PEM_BODY_LINE[::-1] not in str(info.value)


def test_invalid_json_error_does_not_echo_the_content():
    text = json.dumps(KEY)[:-5]  # cut short: invalid JSON holding the whole PEM
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "service_account_json": text})
    assert _secret_free(str(info.value))


@pytest.mark.parametrize("conn_type", ["yandex_searchapi", "yandexcloud"])
@pytest.mark.parametrize("pasted", [json.dumps(KEY, indent=2), json.dumps(KEY), KEY["private_key"]])
def test_a_key_pasted_where_its_path_goes_is_named_not_shown(conn_type, pasted):
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection(conn_type, {"folder_id": "f", "service_account_json_path": pasted})
    assert info.value.field == "service_account_json_path" and "service_account_json" in info.value.problem
    assert _secret_free(str(info.value)) and _secret_free(repr(info.value))


@pytest.mark.parametrize("pasted", ["AQVNsecret" + "x" * 30, "y0_" + "A" * 40, "t1." + "b" * 40])
def test_an_api_key_or_token_pasted_where_a_key_path_goes_is_not_shown(pasted):
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "service_account_json_path": pasted})
    assert info.value.field == "service_account_json_path" and pasted not in str(info.value)


def test_repr_of_config_hides_secrets():
    config = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "f", "service_account_json": json.dumps(KEY)}
    )
    assert _secret_free(repr(config)) and _secret_free(str(config))
    assert "AQVNsecret" not in repr(
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret"})
    )


def test_transport_and_grpc_endpoint():
    config = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret", "transport": "grpc"}
    )
    assert (config.transport, config.grpc_endpoint) == ("grpc", "searchapi.api.cloud.yandex.net:443")
    assert (
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret"}).transport
        == "rest"
    )
    for bad, field in (({"transport": "soap"}, "transport"), ({"grpc_endpoint": "no-port"}, "grpc_endpoint")):
        with pytest.raises(SearchApiConfigError) as info:
            SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVNsecret", **bad})
        assert info.value.field == field


@pytest.mark.parametrize("field", ["api_key", "iam_token"])
@pytest.mark.parametrize("inside", ["\n", "\r\n", " ", "\x00", "\t", "é", "\U0001f600"])
def test_credentials_with_characters_http_refuses_are_named_not_shown(field, inside):
    """Non-ASCII too: gRPC refuses such metadata in a way that is retried (sync) or is no SearchApiError (async)."""
    secret = f"AQVNsecretpart1{inside}secretpart2"
    with pytest.raises(SearchApiConfigError) as info:
        SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", field: f"  {secret}\n"})
    assert info.value.field == field and "line break" in str(info.value)
    assert "secretpart" not in str(info.value) and "secretpart" not in repr(info.value)


def test_secret_values_mask_every_credential_as_given_and_inside_json_text():
    from airflow.sdk.log import _secrets_masker, mask_secret

    keyed = SearchApiConfig.from_connection(
        "yandex_searchapi", {"folder_id": "f", "service_account_json": json.dumps(KEY)}
    )
    plain = SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": 'AQVNsecret"quoted'})
    oauth = SearchApiConfig.from_connection("yandexcloud", {"folder_id": "f", "oauth": "y0_secret"})
    for config in (keyed, plain, oauth):
        for value in config.secret_values():
            mask_secret(value)
    assert len(keyed.secret_values()) == 4 and len(plain.secret_values()) == 2
    assert oauth.secret_values() == ["y0_secret"]
    assert SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f"}).secret_values() == []
    masker = _secrets_masker()
    pem = keyed.authorized_key.private_key.get_secret_value()
    body = "\n".join(pem.splitlines()[1:-1])  # as a tool that strips the PEM's frame would print it
    for text in (pem, json.dumps(KEY), f"body: {body}", json.dumps({"k": 'AQVNsecret"quoted'}), "y0_secret"):
        redacted = masker.redact(text)
        assert _secret_free(redacted) and "y0_secret" not in redacted and "quoted" not in redacted, redacted

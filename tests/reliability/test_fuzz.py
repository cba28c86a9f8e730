"""Fuzzing the response parser and the connection-config parser: only our named errors, no secret."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from airflow_provider_searchapi.config import SearchApiConfig
from airflow_provider_searchapi.exceptions import SearchApiConfigError, SearchApiHTTPError, SearchApiResponseError
from airflow_provider_searchapi.models import ImageSearchResult
from airflow_provider_searchapi.transport.rest import _parse

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
image_like = st.fixed_dictionaries(
    {},
    optional={
        "url": json_values,
        "format": json_values,
        "width": json_values,
        "height": json_values,
        "passage": json_values,
        "host": json_values,
        "pageTitle": json_values,
        "pageUrl": json_values,
    },
)
response_like = st.fixed_dictionaries(
    {},
    optional={
        "images": st.lists(image_like, max_size=3) | json_values,
        "page": json_values,
        "maxPage": json_values,
        "id": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(response_like, json_values))
def test_any_json_parses_or_raises_a_validation_error(value):
    try:
        result = ImageSearchResult.model_validate(value)
    except ValidationError:
        return
    assert all(isinstance(image.width, int) for image in result.images)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | response_like.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([200, 200, 400, 429, 500, 503]),
)
def test_any_answer_is_a_result_or_one_of_our_errors(content, status):
    request = httpx.Request("POST", "https://searchapi.test", headers={"Authorization": "Api-Key AQVN-fuzz-key"})
    try:
        result = _parse(httpx.Response(status, headers={"Retry-After": "1"}, request=request), content, "client-id")
    except (SearchApiResponseError, SearchApiHTTPError) as err:
        assert status != 200 or isinstance(err, SearchApiResponseError)
        return
    assert status == 200 and isinstance(result, ImageSearchResult)


SECRET = "AQVN-very-secret-value-1234567890"
plain_names = st.sampled_from(
    [
        "folder_id",
        "service_account_json_path",
        "endpoint",
        "iam_endpoint",
        "timeout",
        "requests_per_second",
        "verify_tls",
        "unknown_thing",
    ]
)
secret_names = st.sampled_from(["service_account_json", "api_key", "iam_token"])
plain_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
secret_values = (
    plain_values
    | st.just(SECRET)
    | st.just(f"  {SECRET}  ")
    | st.just(json.dumps({"id": "k", "service_account_id": "s", "private_key": SECRET}))
    | st.just(json.dumps({"id": "k", "service_account_id": "s", "private_key": f"-----BEGIN PRIVATE KEY-----{SECRET}"}))
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(plain_names, plain_values, max_size=5), st.dictionaries(secret_names, secret_values, max_size=3))
def test_any_extras_give_a_config_or_a_named_error_without_the_secret(plain, secret):
    try:
        config = SearchApiConfig.from_connection("yandex_searchapi", {**plain, **secret})
    except SearchApiConfigError as err:
        assert err.field
        assert SECRET not in str(err) and SECRET not in repr(err)
    else:
        assert SECRET not in repr(config) and SECRET not in str(config)

from __future__ import annotations

import base64
import json

import pytest

from airflow_provider_searchapi.models import (
    MAX_IMAGES_PER_PAGE,
    MAX_TEXT_FIELD_CHARS,
    FamilyMode,
    FoundImage,
    ImageFormat,
    ImageSearchResult,
    SearchRequest,
)


def test_parses_the_spec_example_with_int64_strings():
    result = ImageSearchResult.model_validate_json(
        '{"images": [{"url": "https://example.com/cat.jpg", "format": "IMAGE_FORMAT_JPEG",'
        ' "width": "1280", "height": "853", "passage": "A grey cat", "host": "example.com",'
        ' "pageTitle": "Cats", "pageUrl": "https://example.com/cats"}],'
        ' "page": "2", "maxPage": "4", "id": "4128402/0c5b8e2f7e0d1a9c"}'
    )
    assert result.page == 2 and result.max_page == 4 and result.cbir_id == "4128402/0c5b8e2f7e0d1a9c"
    image = result.images[0]
    assert (image.width, image.height) == (1280, 853)
    assert image.format is ImageFormat.JPEG
    assert image.page_title == "Cats" and image.page_url == "https://example.com/cats"


@pytest.mark.parametrize(
    "body", ["{}", '{"images": null}', '{"id": "1/x"}', '{"images": []}', '{"page": "0", "maxPage": "0"}']
)
def test_empty_answers_mean_no_images_and_page_zero(body):
    result = ImageSearchResult.model_validate_json(body)
    assert result.images == ()
    assert result.page == 0
    assert result.max_page is None


def test_missing_fields_default_and_unknown_fields_are_ignored():
    result = ImageSearchResult.model_validate_json(
        '{"images": [{"url": "u", "newField": {"x": 1}}], "somethingNew": true, "id": "1/a"}'
    )
    image = result.images[0]
    assert image == FoundImage(url="u")
    assert (image.width, image.height, image.passage, image.host) == (0, 0, "", "")


def test_null_is_the_default_of_every_field_as_in_proto3_json():
    keys = ("url", "format", "width", "height", "passage", "host", "pageTitle", "pageUrl")
    result = ImageSearchResult.model_validate_json(
        json.dumps({"images": [dict.fromkeys(keys)], "page": None, "maxPage": None, "id": None})
    )
    assert result == ImageSearchResult(images=(FoundImage(),))


def test_numbers_are_accepted_as_well_as_strings_and_unknown_formats_degrade():
    image = FoundImage.model_validate({"width": 10, "height": "20", "format": "IMAGE_FORMAT_AVIF"})
    assert (image.width, image.height, image.format) == (10, 20, ImageFormat.UNSPECIFIED)
    assert FoundImage.model_validate({"format": 3}).format is ImageFormat.PNG


@pytest.mark.parametrize("bad", ['{"page": "two"}', '{"images": [{"width": "1.5"}]}', '{"images": "x"}'])
def test_wrong_types_are_refused(bad):
    with pytest.raises(ValueError):
        ImageSearchResult.model_validate_json(bad)


def test_request_body_uses_camel_case_base64_and_int64_strings():
    request = SearchRequest.build(
        folder_id="b1g", image=b"\xff\xd8\xffdata", page=3, site="a.com", family_mode="strict"
    )
    assert json.loads(request.encode()) == {
        "folderId": "b1g",
        "data": base64.b64encode(b"\xff\xd8\xffdata").decode(),
        "page": "3",
        "site": "a.com",
        "familyMode": "FAMILY_MODE_STRICT",
    }


def test_page_zero_and_unset_options_are_omitted():
    assert json.loads(SearchRequest.build(folder_id="f", cbir_id="1/x").encode()) == {"folderId": "f", "id": "1/x"}
    assert json.loads(SearchRequest.build(folder_id="f", url="https://x/a.jpg").encode()) == {
        "folderId": "f",
        "url": "https://x/a.jpg",
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of image, url, cbir_id"),
        ({"image": b"x", "url": "u"}, "got image, url"),
        ({"url": "u", "page": -1}, "page must be"),
        ({"url": "u" * (MAX_TEXT_FIELD_CHARS + 1)}, "url must be"),
        ({"url": "u", "site": ""}, "site must be"),
        ({"url": "u", "family_mode": "lenient"}, "family_mode must be one of"),
    ],
)
def test_invalid_requests_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchRequest.build(folder_id="f", **kwargs)


def test_folder_id_length_is_checked():
    with pytest.raises(ValueError, match="folder_id"):
        SearchRequest.build(folder_id="x" * 51, url="u")


def test_family_mode_accepts_names_and_wire_values():
    assert FamilyMode.parse("none") is FamilyMode.NONE
    assert FamilyMode.parse("FAMILY_MODE_MODERATE") is FamilyMode.MODERATE
    assert FamilyMode.parse(FamilyMode.STRICT) is FamilyMode.STRICT
    assert FamilyMode.parse(None) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": b"\xff\xd8\xff" + bytes(range(256)) * 40, "page": 2, "site": 'a"b.com', "family_mode": "none"},
        {"image": b"\x89PNG\r\n\x1a\n"},
        {"url": "https://x/é.jpg", "page": 1},
        {"cbir_id": "1/x"},
    ],
)
def test_encoded_body_carries_the_request(kwargs):
    body = json.loads(SearchRequest.build(folder_id="b1g", **kwargs).encode())
    assert base64.b64decode(body.get("data", "")) == kwargs.get("image", b"")
    assert (body.get("url"), body.get("id"), body.get("site")) == tuple(map(kwargs.get, ("url", "cbir_id", "site")))
    assert body.get("page", "0") == str(kwargs.get("page", 0)) and body["folderId"] == "b1g"


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"1280"', 1280), ("1280", 1280), ('" -4 "', -4), ("3.0", 3), ("null", 0), ('""', 0)],
)
def test_int64_forms_proto_json_parsers_accept(value, expected):
    result = ImageSearchResult.model_validate_json(f'{{"images": [{{"width": {value}}}], "page": {value}}}')
    assert result.images[0].width == expected and type(result.images[0].width) is int
    assert result.page == expected


@pytest.mark.parametrize("value", ["true", '"1.5"', "1.5", '"12px"', '"1e3"', "[1]"])
def test_int64_refusals_name_the_field(value):
    with pytest.raises(ValueError) as caught:
        ImageSearchResult.model_validate_json(f'{{"images": [{{"url": "u"}}, {{"height": {value}}}]}}')
    assert "images.1.height" in str(caught.value) and "expected a whole number" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"IMAGE_FORMAT_GIF"', ImageFormat.GIF),
        ("2", ImageFormat.GIF),
        ("9", ImageFormat.UNSPECIFIED),
        ('"IMAGE_FORMAT_AVIF"', ImageFormat.UNSPECIFIED),
        ("null", ImageFormat.UNSPECIFIED),
        ("true", ImageFormat.UNSPECIFIED),
    ],
)
def test_formats_by_name_or_number_and_unknown_ones_degrade(value, expected):
    assert ImageSearchResult.model_validate_json(f'{{"images": [{{"format": {value}}}]}}').images[0].format is expected


def test_a_page_holds_at_most_max_images_per_page():
    full = ImageSearchResult.model_validate_json('{"images": [' + ",".join(["{}"] * MAX_IMAGES_PER_PAGE) + "]}")
    assert len(full.images) == MAX_IMAGES_PER_PAGE
    flood = '{"images": [' + ",".join(['{"url": "u"}'] * 100_000) + '], "page": "0"}'
    with pytest.raises(ValueError) as caught:
        ImageSearchResult.model_validate_json(flood)
    (error,) = caught.value.errors()
    assert error["loc"] == ("images",) and error["type"] == "too_long"
    assert f"at most {MAX_IMAGES_PER_PAGE} items" in error["msg"] and "100000" in error["msg"]
    with pytest.raises(ValueError, match="too_long"):  # the gRPC path validates a dict
        ImageSearchResult.model_validate({"images": [{}] * (MAX_IMAGES_PER_PAGE + 1)})

"""The messages built at run time match proto/img_search.proto, field by field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_provider_searchapi.transport import grpc_messages

PROTO = Path(__file__).resolve().parents[2] / "proto" / "img_search.proto"


def _proto_fields() -> dict[str, dict[str, int]]:
    messages, current = {}, None
    for line in PROTO.read_text().splitlines():
        if match := re.match(r"\s*message (\w+) \{", line):
            current = messages.setdefault(match.group(1), {})
        elif current is not None and (match := re.match(r"\s*(?:repeated )?[\w.]+ (\w+) = (\d+);", line)):
            current[match.group(1)] = int(match.group(2))
        elif line.startswith("}"):
            current = None
    return messages


@pytest.mark.parametrize("name", ["ImageSearchByImageRequest", "ImageInfo", "ImageSearchByImageResponse"])
def test_field_numbers_match_the_proto_file(name):
    built = {field: number for field, number, *_ in grpc_messages._MESSAGES[name]}
    assert built == _proto_fields()[name]


def test_round_trip_through_the_wire_format():
    from airflow_provider_searchapi.models import SearchRequest

    request = grpc_messages.request_message(SearchRequest.build(folder_id="f", image=b"\xff\xd8\xffxyz", page=3))
    again = grpc_messages.ImageSearchByImageRequest.FromString(request.SerializeToString())
    assert (again.folder_id, again.data, again.page, again.WhichOneof("source")) == ("f", b"\xff\xd8\xffxyz", 3, "data")
    body = {"images": [{"url": "u", "format": "IMAGE_FORMAT_GIF", "width": "7"}], "page": "1", "id": "1/x"}
    response = grpc_messages.response_from_body(body)
    result = grpc_messages.result_from_message(
        grpc_messages.ImageSearchByImageResponse.FromString(response.SerializeToString())
    )
    assert (result.page, result.cbir_id, result.images[0].width, result.images[0].format.value) == (
        1,
        "1/x",
        7,
        "IMAGE_FORMAT_GIF",
    )

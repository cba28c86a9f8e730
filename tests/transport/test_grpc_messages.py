"""The messages built at run time match proto/img_search.proto, field by field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip(
    "grpc", reason="LOUD SKIP: grpcio is not installed (pip install 'airflow-provider-searchapi[grpc]')"
)

from airflow_provider_searchapi.testing import grpc_server  # noqa: E402
from airflow_provider_searchapi.transport import grpc_messages  # noqa: E402

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
    descriptor = grpc_messages.ImageSearchByImageRequest.DESCRIPTOR.file.message_types_by_name[name]
    built = {field.name: field.number for field in descriptor.fields}
    assert built == _proto_fields()[name]


def test_round_trip_through_the_wire_format():
    from airflow_provider_searchapi.models import SearchRequest

    request = grpc_messages.request_message(SearchRequest.build(folder_id="f", image=b"\xff\xd8\xffxyz", page=3))
    again = grpc_messages.ImageSearchByImageRequest.FromString(request.SerializeToString())
    assert (again.folder_id, again.data, again.page, again.WhichOneof("source")) == ("f", b"\xff\xd8\xffxyz", 3, "data")
    body = {"images": [{"url": "u", "format": "IMAGE_FORMAT_GIF", "width": "7"}], "page": "1", "id": "1/x"}
    response = grpc_server.response_from_body(body)
    result = grpc_messages.result_from_message(
        grpc_messages.ImageSearchByImageResponse.FromString(response.SerializeToString())
    )
    assert (result.page, result.cbir_id, result.images[0].width, result.images[0].format.value) == (
        1,
        "1/x",
        7,
        "IMAGE_FORMAT_GIF",
    )


def _emulator_bodies():
    import hashlib

    from airflow_provider_searchapi.testing.emulator import Emulator
    from airflow_provider_searchapi.testing.emulator_state import EmulatorSettings

    emulator = Emulator(settings=EmulatorSettings(max_result_pages=3))
    for i in range(200):
        query = hashlib.sha256(str(i).encode()).hexdigest()
        yield emulator._results(query, i % 4, "one.example.com" if i % 5 == 0 else None)


def test_answers_convert_as_protobufs_own_json_mapping_does():
    """The fields are mapped by hand for speed; protobuf's ``json_format`` is the reference."""
    from google.protobuf import json_format

    from airflow_provider_searchapi.models import ImageSearchResult

    odd = grpc_messages.ImageSearchByImageResponse(page=2, id="1/y")
    for number in range(5):  # 4 is a format this version has no name for
        odd.images.add(format=number, width=number)
    messages = [odd, grpc_messages.ImageSearchByImageResponse()]
    for body in _emulator_bodies():
        message = grpc_server.response_from_body(body)
        assert message == json_format.ParseDict(body, grpc_messages.ImageSearchByImageResponse())
        messages.append(message)
    assert sum(len(message.images) for message in messages) > 500
    for message in messages:
        reference = ImageSearchResult.model_validate(json_format.MessageToDict(message))
        assert grpc_messages.result_from_message(message) == reference


@pytest.mark.parametrize(
    "fields",
    [
        {"folder_id": "f", "data": b"\xff\xd8\xffabc", "page": 2, "site": "x.ru", "family_mode": 3},
        {"folder_id": "f", "url": "https://a.example/b.jpg"},
        {"id": "1/abc", "page": 1},
        {"data": b""},
        {"url": "", "family_mode": 9},
        {},
    ],
)
def test_requests_convert_as_protobufs_own_json_mapping_does(fields):
    from google.protobuf import json_format

    message = grpc_messages.ImageSearchByImageRequest(**fields)
    assert grpc_server.body_from_request(message) == json_format.MessageToDict(message)

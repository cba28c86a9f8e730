"""Protobuf messages of ``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, built at import.

The messages are described here field by field from the wire contract (``proto/img_search.proto`` is
the same description as a ``.proto`` file) and turned into classes by protobuf's own descriptor pool.
No ``protoc`` output is shipped: generated modules are tied to the protobuf major version that
generated them, while this works with whatever protobuf the Airflow install has (the official SDK pins
``protobuf<7``; Airflow 3.3 installs 7.x). Only field numbers and types matter on the wire.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest

PACKAGE = "yandex.cloud.searchapi.v2"
SERVICE = f"{PACKAGE}.ImageSearchService"
METHOD = f"/{SERVICE}/SearchByImage"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _INT64, _ENUM, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_INT64, _F.TYPE_ENUM, _F.TYPE_MESSAGE

# name: [(field, number, type, type name, repeated, oneof index)]
_MESSAGES: dict[str, list[tuple[str, int, int, str, bool, int | None]]] = {
    "ImageSearchByImageRequest": [
        ("site", 1, _STRING, "", False, None),
        ("folder_id", 2, _STRING, "", False, None),
        ("url", 3, _STRING, "", False, 0),
        ("data", 4, _BYTES, "", False, 0),
        ("id", 5, _STRING, "", False, 0),
        ("page", 6, _INT64, "", False, None),
        ("family_mode", 7, _ENUM, "FamilyMode", False, None),
    ],
    "ImageInfo": [
        ("url", 1, _STRING, "", False, None),
        ("format", 2, _ENUM, "ImageFormat", False, None),
        ("width", 3, _INT64, "", False, None),
        ("height", 4, _INT64, "", False, None),
        ("passage", 5, _STRING, "", False, None),
        ("host", 6, _STRING, "", False, None),
        ("page_title", 7, _STRING, "", False, None),
        ("page_url", 8, _STRING, "", False, None),
    ],
    "ImageSearchByImageResponse": [
        ("images", 1, _MESSAGE, "ImageInfo", True, None),
        ("page", 2, _INT64, "", False, None),
        ("max_page", 3, _INT64, "", False, None),
        ("id", 4, _STRING, "", False, None),
    ],
}
_ENUMS = {
    "FamilyMode": ["FAMILY_MODE_UNSPECIFIED", "FAMILY_MODE_NONE", "FAMILY_MODE_MODERATE", "FAMILY_MODE_STRICT"],
    "ImageFormat": ["IMAGE_FORMAT_UNSPECIFIED", "IMAGE_FORMAT_JPEG", "IMAGE_FORMAT_GIF", "IMAGE_FORMAT_PNG"],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="airflow_provider_searchapi/img_search.proto", package=PACKAGE, syntax="proto3"
    )
    for enum_name, values in _ENUMS.items():
        enum = file.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        if any(oneof is not None for *_, oneof in fields):
            message.oneof_decl.add(name="source")
        for name, number, kind, type_name, repeated, oneof in fields:
            field = message.field.add(
                name=name,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                json_name="".join(part.capitalize() if i else part for i, part in enumerate(name.split("_"))),
            )
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
            if oneof is not None:
                field.oneof_index = oneof
    service = file.service.add(name="ImageSearchService")
    service.method.add(
        name="SearchByImage",
        input_type=f".{PACKAGE}.ImageSearchByImageRequest",
        output_type=f".{PACKAGE}.ImageSearchByImageResponse",
    )
    return file


_classes = message_factory.GetMessages([_file_descriptor()], pool=descriptor_pool.DescriptorPool())
ImageSearchByImageRequest: Any = _classes[f"{PACKAGE}.ImageSearchByImageRequest"]
ImageSearchByImageResponse: Any = _classes[f"{PACKAGE}.ImageSearchByImageResponse"]


_FAMILY_MODES = tuple(_ENUMS["FamilyMode"])
_IMAGE_FORMATS = tuple(_ENUMS["ImageFormat"])


def request_message(request: SearchRequest) -> Any:
    """The protobuf request for a validated :class:`SearchRequest` (image bytes as they are)."""
    message = ImageSearchByImageRequest(folder_id=request.folder_id, page=request.page)
    if request.image is not None:
        message.data = request.image
    elif request.url is not None:
        message.url = request.url
    else:
        message.id = request.cbir_id or ""
    if request.site:
        message.site = request.site
    if request.family_mode is not None:
        message.family_mode = _FAMILY_MODES.index(request.family_mode.value)
    return message


def _enum_name(names: tuple[str, ...], number: int) -> str | int:
    """An enum value as proto3 JSON writes it: its name, or its number when this version has no name."""
    return names[number] if 0 <= number < len(names) else number


def result_from_message(message: Any) -> ImageSearchResult:
    """Our model from a protobuf response, validated as a REST answer of the same content is.

    The fields are read straight off the message (proto3 JSON via ``json_format`` cost ~0.13 ms a page
    of 10 in pure Python); unset fields read as their defaults, which are the model's defaults too.
    """
    images = [
        {
            "url": info.url,
            "format": _enum_name(_IMAGE_FORMATS, info.format),
            "width": info.width,
            "height": info.height,
            "passage": info.passage,
            "host": info.host,
            "pageTitle": info.page_title,
            "pageUrl": info.page_url,
        }
        for info in message.images
    ]
    # proto3 cannot tell an unset max_page from 0; like json_format, 0 reads as not given (None).
    body = {"images": images, "page": message.page, "maxPage": message.max_page or None, "id": message.id}
    return ImageSearchResult.model_validate(body)


def body_from_request(message: Any) -> dict[str, Any]:
    """The request in proto3-JSON shape (as REST carries it), for the emulator's shared logic: unset
    fields left out, bytes in base64, int64 as a string, enums by name."""
    body: dict[str, Any] = {}
    if message.folder_id:
        body["folderId"] = message.folder_id
    source = message.WhichOneof("source")
    if source == "data":
        body["data"] = base64.b64encode(message.data).decode("ascii")
    elif source is not None:
        body[source] = getattr(message, source)
    if message.page:
        body["page"] = str(message.page)
    if message.site:
        body["site"] = message.site
    if message.family_mode:
        body["familyMode"] = _enum_name(_FAMILY_MODES, message.family_mode)
    return body


def response_from_body(body: dict[str, Any]) -> Any:
    """A protobuf response from a proto3-JSON result (what the emulator produces)."""
    message = ImageSearchByImageResponse(
        page=int(body.get("page", 0)), max_page=int(body.get("maxPage", 0)), id=body.get("id", "")
    )
    for image in body.get("images", ()):
        message.images.add(
            url=image.get("url", ""),
            format=_IMAGE_FORMATS.index(image.get("format", _IMAGE_FORMATS[0])),
            width=int(image.get("width", 0)),
            height=int(image.get("height", 0)),
            passage=image.get("passage", ""),
            host=image.get("host", ""),
            page_title=image.get("pageTitle", ""),
            page_url=image.get("pageUrl", ""),
        )
    return message

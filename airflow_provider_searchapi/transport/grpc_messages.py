"""Protobuf messages of ``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, built at import.

The messages are described here field by field (``proto/img_search.proto`` is the same description as
a ``.proto`` file) and turned into classes by protobuf's own descriptor pool. No ``protoc`` output is
shipped: generated modules are tied to the protobuf major version that generated them, while this
works with whatever protobuf the Airflow install has (5.x to 7.x).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from airflow_provider_searchapi.models import FamilyMode, ImageFormat, ImageSearchResult, SearchRequest

PACKAGE = "yandex.cloud.searchapi.v2"
METHOD = f"/{PACKAGE}.ImageSearchService/SearchByImage"

_F = descriptor_pb2.FieldDescriptorProto
#: Each message's fields in field-number order (1, 2, ...): a scalar type, or the name of an enum or
#: a message of the package.
_MESSAGES: dict[str, dict[str, int | str]] = {
    "ImageSearchByImageRequest": {
        "site": _F.TYPE_STRING,
        "folder_id": _F.TYPE_STRING,
        "url": _F.TYPE_STRING,
        "data": _F.TYPE_BYTES,
        "id": _F.TYPE_STRING,
        "page": _F.TYPE_INT64,
        "family_mode": "FamilyMode",
    },
    "ImageInfo": {
        "url": _F.TYPE_STRING,
        "format": "ImageFormat",
        "width": _F.TYPE_INT64,
        "height": _F.TYPE_INT64,
        "passage": _F.TYPE_STRING,
        "host": _F.TYPE_STRING,
        "page_title": _F.TYPE_STRING,
        "page_url": _F.TYPE_STRING,
    },
    "ImageSearchByImageResponse": {
        "images": "ImageInfo",  # repeated: the only message-typed field
        "page": _F.TYPE_INT64,
        "max_page": _F.TYPE_INT64,
        "id": _F.TYPE_STRING,
    },
}
#: The request's ``oneof source``: where the image comes from.
_SOURCE = ("url", "data", "id")
_ENUMS = {"FamilyMode": list(FamilyMode), "ImageFormat": list(ImageFormat)}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="airflow_provider_searchapi/img_search.proto", package=PACKAGE, syntax="proto3"
    )
    for enum_name, members in _ENUMS.items():
        enum = file.enum_type.add(name=enum_name)
        for number, member in enumerate(members):
            enum.value.add(name=member.value, number=number)
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for number, (name, kind) in enumerate(fields.items(), start=1):
            field = message.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL)
            if isinstance(kind, int):
                field.type = kind
            elif kind in _ENUMS:
                field.type, field.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{kind}"
            else:
                field.type, field.type_name, field.label = _F.TYPE_MESSAGE, f".{PACKAGE}.{kind}", _F.LABEL_REPEATED
            if message_name == "ImageSearchByImageRequest" and name in _SOURCE:
                field.oneof_index = 0
    file.message_type[0].oneof_decl.add(name="source")
    return file


_classes = message_factory.GetMessages([_file_descriptor()], pool=descriptor_pool.DescriptorPool())
ImageSearchByImageRequest: Any = _classes[f"{PACKAGE}.ImageSearchByImageRequest"]
ImageSearchByImageResponse: Any = _classes[f"{PACKAGE}.ImageSearchByImageResponse"]


def request_message(request: SearchRequest) -> Any:
    """The protobuf request for a validated :class:`SearchRequest`."""
    message = ImageSearchByImageRequest(folder_id=request.folder_id, page=request.page)
    if request.image is not None:
        message.data = request.image
    elif request.url is not None:
        message.url = request.url
    else:
        message.id = request.cbir_id
    if request.site:
        message.site = request.site
    if request.family_mode is not None:
        message.family_mode = _ENUMS["FamilyMode"].index(request.family_mode)
    return message


def result_from_message(message: Any) -> ImageSearchResult:
    """Our model from a protobuf response, validated as a REST answer of the same content is
    (read field by field: protobuf's ``json_format`` is several times slower)."""
    images = [
        {
            "url": info.url,
            "format": info.format,
            "width": info.width,
            "height": info.height,
            "passage": info.passage,
            "host": info.host,
            "pageTitle": info.page_title,
            "pageUrl": info.page_url,
        }
        for info in message.images
    ]
    # proto3 cannot tell an unset max_page from 0; like json_format, 0 reads as not given.
    body = {"images": images, "page": message.page, "maxPage": message.max_page or None, "id": message.id}
    return ImageSearchResult.model_validate(body)

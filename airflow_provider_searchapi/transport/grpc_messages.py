"""Protobuf messages of ``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, built at import.

The messages are described below in protobuf's text format of a ``FileDescriptorProto`` (the same
description as ``proto/img_search.proto``) and turned into classes by protobuf's own descriptor pool.
No ``protoc`` output is shipped: generated modules are tied to the protobuf major version that
generated them, while this works with whatever protobuf the Airflow install has (checked on 4.22, 5, 6 and 7).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest

PACKAGE = "yandex.cloud.searchapi.v2"
METHOD = f"/{PACKAGE}.ImageSearchService/SearchByImage"

_DESCRIPTOR = """
name: "airflow_provider_searchapi/img_search.proto"
package: "yandex.cloud.searchapi.v2"
syntax: "proto3"
enum_type {
  name: "FamilyMode"
  value { name: "FAMILY_MODE_UNSPECIFIED" number: 0 }
  value { name: "FAMILY_MODE_NONE" number: 1 }
  value { name: "FAMILY_MODE_MODERATE" number: 2 }
  value { name: "FAMILY_MODE_STRICT" number: 3 }
}
enum_type {
  name: "ImageFormat"
  value { name: "IMAGE_FORMAT_UNSPECIFIED" number: 0 }
  value { name: "IMAGE_FORMAT_JPEG" number: 1 }
  value { name: "IMAGE_FORMAT_GIF" number: 2 }
  value { name: "IMAGE_FORMAT_PNG" number: 3 }
}
message_type {
  name: "ImageSearchByImageRequest"
  field { name: "site" number: 1 type: TYPE_STRING }
  field { name: "folder_id" number: 2 type: TYPE_STRING }
  field { name: "url" number: 3 type: TYPE_STRING oneof_index: 0 }
  field { name: "data" number: 4 type: TYPE_BYTES oneof_index: 0 }
  field { name: "id" number: 5 type: TYPE_STRING oneof_index: 0 }
  field { name: "page" number: 6 type: TYPE_INT64 }
  field { name: "family_mode" number: 7 type: TYPE_ENUM type_name: "FamilyMode" }
  oneof_decl { name: "source" }
}
message_type {
  name: "ImageInfo"
  field { name: "url" number: 1 type: TYPE_STRING }
  field { name: "format" number: 2 type: TYPE_ENUM type_name: "ImageFormat" }
  field { name: "width" number: 3 type: TYPE_INT64 }
  field { name: "height" number: 4 type: TYPE_INT64 }
  field { name: "passage" number: 5 type: TYPE_STRING }
  field { name: "host" number: 6 type: TYPE_STRING }
  field { name: "page_title" number: 7 type: TYPE_STRING }
  field { name: "page_url" number: 8 type: TYPE_STRING }
}
message_type {
  name: "ImageSearchByImageResponse"
  field { name: "images" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: "ImageInfo" }
  field { name: "page" number: 2 type: TYPE_INT64 }
  field { name: "max_page" number: 3 type: TYPE_INT64 }
  field { name: "id" number: 4 type: TYPE_STRING }
}
"""

_classes = message_factory.GetMessages(
    [text_format.Parse(_DESCRIPTOR, descriptor_pb2.FileDescriptorProto())], pool=descriptor_pool.DescriptorPool()
)
ImageSearchByImageRequest: Any = _classes[f"{PACKAGE}.ImageSearchByImageRequest"]
ImageSearchByImageResponse: Any = _classes[f"{PACKAGE}.ImageSearchByImageResponse"]
#: The enums as the descriptor numbers them (protobuf also takes their names where a number goes).
FAMILY_MODES: Any = ImageSearchByImageRequest.DESCRIPTOR.fields_by_name["family_mode"].enum_type
IMAGE_FORMATS: Any = _classes[f"{PACKAGE}.ImageInfo"].DESCRIPTOR.fields_by_name["format"].enum_type


def enum_name(enum_type: Any, number: int) -> str | int:
    """The name of an enum value, or the number itself when this descriptor does not know it."""
    value = enum_type.values_by_number.get(number)
    return value.name if value is not None else number


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
        message.family_mode = request.family_mode.value
    return message


def result_from_message(message: Any) -> ImageSearchResult:
    """Our model from a protobuf response, validated as a REST answer of the same content is
    (read field by field: protobuf's ``json_format`` is several times slower)."""
    images = [
        {
            "url": info.url,
            "format": enum_name(IMAGE_FORMATS, info.format),
            "width": info.width,
            "height": info.height,
            "passage": info.passage,
            "host": info.host,
            "pageTitle": info.page_title,
            "pageUrl": info.page_url,
        }
        for info in message.images
    ]
    body = {"images": images, "page": message.page, "maxPage": message.max_page, "id": message.id}
    return ImageSearchResult.model_validate(body)

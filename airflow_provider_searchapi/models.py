"""Wire types of Yandex Cloud Search API v2 *search by image*.

The REST API speaks proto3 JSON: fields at their default value are omitted, int64 values travel as
strings and unknown fields may appear. The models parse that leniently into plain Python types.
"""

from __future__ import annotations

import base64
import enum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

#: Largest image the API accepts in ``data``, in raw bytes.
MAX_IMAGE_BYTES = 3 * 1024 * 1024
#: Longest ``url``, ``id`` and ``site`` the API accepts.
MAX_TEXT_FIELD_CHARS = 1024
#: Longest ``folderId`` the API accepts.
MAX_FOLDER_ID_CHARS = 50
#: Most images accepted in one page of results: the API sends at most 40, and a small (e.g. gzip)
#: answer must not unpack into millions of results.
MAX_IMAGES_PER_PAGE = 1_000


class FamilyMode(str, enum.Enum):
    """Adult-content filtering of the results (``SearchQuery.FamilyMode``)."""

    UNSPECIFIED = "FAMILY_MODE_UNSPECIFIED"
    NONE = "FAMILY_MODE_NONE"
    MODERATE = "FAMILY_MODE_MODERATE"
    STRICT = "FAMILY_MODE_STRICT"

    @classmethod
    def parse(cls, value: FamilyMode | str | None) -> FamilyMode | None:
        """Accept an enum member, its wire name or a short name such as ``"strict"``."""
        if value is None or isinstance(value, FamilyMode):
            return value
        text = str(value).strip().upper()
        for member in cls:
            if text in (member.value, member.name):
                return member
        names = ", ".join(m.name.lower() for m in cls)
        raise ValueError(f"family_mode must be one of {names} (got {value!r})")


class ImageFormat(str, enum.Enum):
    """Format of a found image (``ImageInfo.ImageFormat``): by wire name or proto number; any other
    value (a format this version does not know) is ``UNSPECIFIED``."""

    UNSPECIFIED = "IMAGE_FORMAT_UNSPECIFIED"
    JPEG = "IMAGE_FORMAT_JPEG"
    GIF = "IMAGE_FORMAT_GIF"
    PNG = "IMAGE_FORMAT_PNG"

    @classmethod
    def _missing_(cls, value: object) -> ImageFormat:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(cls):
            return list(cls)[value]
        return cls.UNSPECIFIED


def _int64(value: Any, handler: ValidatorFunctionWrapHandler) -> int:
    """Pydantic's lax int (a number or a string of digits); missing or empty is 0; booleans and
    fractions are refused with one message."""
    if value is None or value == "":
        return 0
    if not isinstance(value, bool):
        try:
            return handler(value)
        except ValidationError:
            pass
    raise PydanticCustomError("int64_parsing", "expected a whole number (an int64, as a number or a string of digits)")


#: Proto3 JSON int64: an integer, or a string of digits (how the API sends them); missing means 0.
Int64 = Annotated[int, WrapValidator(_int64)]
#: Proto3 JSON string: ``null`` means the default, as a missing field does.
Text = Annotated[str, BeforeValidator(lambda value: "" if value is None else value)]


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class FoundImage(_WireModel):
    """One image found by the search (``ImageInfo``).

    :param url: address of the found image.
    :param format: its format; unknown ones are ``UNSPECIFIED``.
    :param width: width in pixels (0 when not reported).
    :param height: height in pixels (0 when not reported).
    :param passage: text snippet of the page the image is on.
    :param host: host of that page.
    :param page_title: title of that page.
    :param page_url: address of that page.
    """

    url: Text = ""
    format: ImageFormat = ImageFormat.UNSPECIFIED
    width: Int64 = 0
    height: Int64 = 0
    passage: Text = ""
    host: Text = ""
    page_title: Text = Field(default="", alias="pageTitle")
    page_url: Text = Field(default="", alias="pageUrl")


class ImageSearchResult(_WireModel):
    """One page of results (``ImageSearchByImageResponse``).

    :param images: the images found on this page (empty past the last page); at most
        :data:`MAX_IMAGES_PER_PAGE`.
    :param page: zero-based index of this page.
    :param max_page: last page index as reported by the API (``None`` when absent or 0); deprecated
        upstream and not meaningful. Paginate until a page comes back empty.
    :param cbir_id: CBIR id of the query image; send it with a later ``page`` instead of the bytes.
    """

    images: Annotated[
        tuple[FoundImage, ...],
        BeforeValidator(lambda value: () if value is None else value),
        Field(max_length=MAX_IMAGES_PER_PAGE),
    ] = ()
    page: Int64 = 0
    # proto3 cannot tell 0 from unset (gRPC never sends it): an explicit "0" reads as not given too.
    max_page: Annotated[Int64 | None, AfterValidator(lambda value: value or None)] = Field(
        default=None, alias="maxPage"
    )
    cbir_id: Text = Field(default="", alias="id")


class SearchRequest(BaseModel):
    """A validated ``ImageSearchByImageRequest``; build it with :meth:`build`.

    :param folder_id: folder that is billed for the call.
    :param image: raw image bytes (one of ``image``, ``url``, ``cbir_id``).
    :param url: public image URL (one of).
    :param cbir_id: CBIR id from an earlier response (one of).
    :param page: zero-based page.
    :param site: restrict results to this site.
    :param family_mode: adult-content filter.
    """

    # Serialized as the REST body: camelCase names, bytes in base64, int64 as a string, defaults left out.
    model_config = ConfigDict(frozen=True)

    folder_id: str = Field(serialization_alias="folderId")
    image: Annotated[
        bytes | None, PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), when_used="json-unless-none")
    ] = Field(default=None, serialization_alias="data")
    url: str | None = None
    cbir_id: str | None = Field(default=None, serialization_alias="id")
    page: Annotated[int, PlainSerializer(str, when_used="json")] = 0
    site: str | None = None
    family_mode: FamilyMode | None = Field(default=None, serialization_alias="familyMode")

    @classmethod
    def build(
        cls,
        *,
        folder_id: str,
        image: bytes | None = None,
        url: str | None = None,
        cbir_id: str | None = None,
        page: int = 0,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
    ) -> SearchRequest:
        """Check the request against the API's rules and return it; raise ``ValueError`` naming the field."""
        given = [name for name, value in (("image", image), ("url", url), ("cbir_id", cbir_id)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of image, url, cbir_id must be given (got {', '.join(given) or 'none'})")
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise ValueError(f"page must be a whole number >= 0 (got {page!r})")
        for name, value in (("url", url), ("cbir_id", cbir_id), ("site", site)):
            if value is not None and (not value or len(value) > MAX_TEXT_FIELD_CHARS):
                raise ValueError(f"{name} must be 1 to {MAX_TEXT_FIELD_CHARS} characters long")
        if not folder_id or len(folder_id) > MAX_FOLDER_ID_CHARS:
            raise ValueError(f"folder_id must be 1 to {MAX_FOLDER_ID_CHARS} characters long")
        family_mode = FamilyMode.parse(family_mode)
        return cls(
            folder_id=folder_id, image=image, url=url, cbir_id=cbir_id, page=page, site=site, family_mode=family_mode
        )

    def encode(self) -> bytes:
        """The REST body as compact JSON bytes."""
        return self.model_dump_json(by_alias=True, exclude_defaults=True).encode()

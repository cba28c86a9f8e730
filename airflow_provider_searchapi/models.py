"""Wire types of Yandex Cloud Search API v2 *search by image*.

The REST API speaks proto3 JSON: fields at their default value are omitted, int64 values travel as
strings and unknown fields may appear. The models here parse that leniently into plain Python types.
They know nothing of Airflow, HTTP or storage.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import pybase64
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Largest image the API accepts in ``data``, in raw bytes (``img_search_service.proto``).
MAX_IMAGE_BYTES = 3 * 1024 * 1024
#: Longest ``url``, ``id`` and ``site`` the API accepts.
MAX_TEXT_FIELD_CHARS = 1024
#: Longest ``folderId`` the API accepts.
MAX_FOLDER_ID_CHARS = 50


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
    """Format of a found image (``ImageInfo.ImageFormat``)."""

    UNSPECIFIED = "IMAGE_FORMAT_UNSPECIFIED"
    JPEG = "IMAGE_FORMAT_JPEG"
    GIF = "IMAGE_FORMAT_GIF"
    PNG = "IMAGE_FORMAT_PNG"


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _int64(value: Any) -> int:
    """Proto3 JSON int64: a string or a number; missing means 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    if not isinstance(value, (int, float, str)):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    try:
        return int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected an integer, got {str(value)[:40]!r}") from None


class FoundImage(_WireModel):
    """One image found by the search (``ImageInfo``).

    :param url: address of the found image.
    :param format: its format, as the API names it; unknown names are kept as ``UNSPECIFIED``.
    :param width: width in pixels (0 when not reported).
    :param height: height in pixels (0 when not reported).
    :param passage: text snippet of the page the image is on.
    :param host: host of that page.
    :param page_title: title of that page.
    :param page_url: address of that page.
    """

    url: str = ""
    format: ImageFormat = ImageFormat.UNSPECIFIED
    width: int = 0
    height: int = 0
    passage: str = ""
    host: str = ""
    page_title: str = Field(default="", alias="pageTitle")
    page_url: str = Field(default="", alias="pageUrl")

    @field_validator("width", "height", mode="before")
    @classmethod
    def _parse_int64(cls, value: Any) -> int:
        return _int64(value)

    @field_validator("format", mode="before")
    @classmethod
    def _parse_format(cls, value: Any) -> ImageFormat:
        if isinstance(value, int) and not isinstance(value, bool):
            members = list(ImageFormat)
            return members[value] if 0 <= value < len(members) else ImageFormat.UNSPECIFIED
        try:
            return ImageFormat(value) if value is not None else ImageFormat.UNSPECIFIED
        except ValueError:
            return ImageFormat.UNSPECIFIED


class ImageSearchResult(_WireModel):
    """One page of results (``ImageSearchByImageResponse``).

    :param images: the images found on this page (empty past the last page).
    :param page: zero-based index of this page.
    :param max_page: last page index as reported by the API; deprecated upstream and not meaningful,
        kept for information only. Paginate until a page comes back empty.
    :param cbir_id: CBIR id of the query image; send it with a later ``page`` instead of the bytes.
    """

    images: tuple[FoundImage, ...] = ()
    page: int = 0
    max_page: int | None = Field(default=None, alias="maxPage")
    cbir_id: str = Field(default="", alias="id")

    @field_validator("page", mode="before")
    @classmethod
    def _parse_page(cls, value: Any) -> int:
        return _int64(value)

    @field_validator("max_page", mode="before")
    @classmethod
    def _parse_max_page(cls, value: Any) -> int | None:
        return None if value is None else _int64(value)

    @field_validator("images", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value


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

    model_config = ConfigDict(frozen=True)

    folder_id: str
    image: bytes | None = None
    url: str | None = None
    cbir_id: str | None = None
    page: int = 0
    site: str | None = None
    family_mode: FamilyMode | None = None

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
        return cls(
            folder_id=folder_id,
            image=image,
            url=url,
            cbir_id=cbir_id,
            page=page,
            site=site,
            family_mode=FamilyMode.parse(family_mode),
        )

    def encode(self) -> bytes:
        """The REST body as bytes, like ``json.dumps(self.to_json())`` but cheaper for images."""
        return b"".join(self.encode_parts())

    def encode_parts(self) -> tuple[bytes, ...]:
        """The REST body in pieces that, joined, are :meth:`encode`'s bytes: the image's base64 text is
        one piece, so that a sender can write it without copying it into one body first.

        The base64 text is spliced in rather than passed through the JSON encoder, which would scan
        and copy a megabyte string once more for nothing (base64 needs no escaping).
        """
        if self.image is None:
            return (json.dumps(self.to_json(), separators=(",", ":")).encode(),)
        head = json.dumps(self.to_json(with_image=False), separators=(",", ":")).encode()
        return (head[:-1] + b',"data":"', pybase64.b64encode(self.image), b'"}')

    def to_json(self, *, with_image: bool = True) -> dict[str, Any]:
        """The REST body: camelCase names, bytes in base64, int64 as a string."""
        body: dict[str, Any] = {"folderId": self.folder_id}
        if self.image is not None:
            if with_image:
                body["data"] = pybase64.b64encode(self.image).decode("ascii")
        elif self.url is not None:
            body["url"] = self.url
        else:
            body["id"] = self.cbir_id
        if self.page:
            body["page"] = str(self.page)
        if self.site:
            body["site"] = self.site
        if self.family_mode is not None:
            body["familyMode"] = self.family_mode.value
        return body

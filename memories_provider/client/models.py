"""Typed results of the memories.ai API, parsed tolerantly from every documented variant.

The vendor's docs disagree: numbers arrive as JSON numbers or strings, keys as camelCase or
snake_case, the failure status as ``PARSE_ERROR``/``FAILED``/``FAIL`` and an absent ``cause``
as the literal string ``"null"``. ``from_api`` accepts all of them; ``to_dict`` gives a
JSON-safe dict (for XCom) that ``from_api`` reads back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar


class VideoStatus(str, Enum):
    """Indexing status of a video.

    ``UNPARSE`` (accepted, indexing), ``PARSE`` (done), ``FAILED`` (any of the documented failure
    spellings) and ``UNKNOWN`` (a value no doc edition mentions; not terminal).
    """

    UNPARSE = "UNPARSE"
    PARSE = "PARSE"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    # Set right after the class body (annotations alone do not create enum members).
    TERMINAL: ClassVar[frozenset[VideoStatus]]
    FAILURE: ClassVar[frozenset[VideoStatus]]

    @classmethod
    def parse(cls, value: Any) -> VideoStatus:
        """Map any documented spelling to a member (``PARSE_ERROR``/``FAIL``/``FAILED`` → ``FAILED``)."""
        if isinstance(value, VideoStatus):
            return value
        text = str(value or "").strip().upper()
        if text in _FAILURE_SPELLINGS:
            return cls.FAILED
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """True when the status will not change any more (success or failure)."""
        return self in VideoStatus.TERMINAL

    @property
    def is_success(self) -> bool:
        """True when the video is indexed (``PARSE``)."""
        return self is VideoStatus.PARSE

    @property
    def is_failure(self) -> bool:
        """True when indexing failed."""
        return self in VideoStatus.FAILURE


_FAILURE_SPELLINGS = frozenset({"FAILED", "FAIL", "PARSE_ERROR", "PARSE_FAILED", "ERROR"})
VideoStatus.TERMINAL = frozenset({VideoStatus.PARSE, VideoStatus.FAILED})
VideoStatus.FAILURE = frozenset({VideoStatus.FAILED})


_CAMEL_RE = re.compile(r"_([a-z])")


def _pick(data: Mapping[str, Any], *names: str) -> Any:
    """First present, non-None value among ``names`` and their camelCase spellings."""
    for name in names:
        for key in (name, _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)):
            value = data.get(key)
            if value is not None:
                return value
    return None


def _text(value: Any) -> str | None:
    """A string, with ``None``, ``""`` and the literal ``"null"`` meaning absent."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.lower() in ("null", "none"):
        return None
    return text


def _number(value: Any) -> float | None:
    """A float from a JSON number or a numeric string; anything else is absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    else:
        text = _text(value)
        if text is None:
            return None
        try:
            result = float(text)
        except ValueError:
            return None
    return result if math.isfinite(result) else None


def _int(value: Any) -> int | None:
    """An int from a JSON number or a numeric string (``"1700000000000"``, ``"12.0"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _number(value)
    return None if number is None else int(number)


def _tags(value: Any) -> tuple[str, ...]:
    """Tags from a JSON list or a comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return ()
    return tuple(t for t in (_text(item) for item in items) if t is not None)


@dataclass(frozen=True)
class UploadResult:
    """What the upload endpoints return for an accepted video.

    :param video_no: the new video's id (``VI...``).
    :param video_name: the server-side name of the video.
    :param status: status at upload time (normally ``UNPARSE``).
    :param upload_time: upload time in epoch milliseconds, if returned.
    :param raw: the response's ``data`` object as received.
    """

    video_no: str
    video_name: str | None
    status: VideoStatus
    upload_time: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> UploadResult:
        """Parse an upload response ``data`` (camelCase or snake_case)."""
        video_no = _text(_pick(data, "video_no", "id"))
        if video_no is None:
            raise ValueError("upload response has no videoNo")
        return cls(
            video_no=video_no,
            video_name=_text(_pick(data, "video_name")),
            status=VideoStatus.parse(_pick(data, "video_status", "status")),
            upload_time=_int(_pick(data, "upload_time", "create_time")),
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for XCom); ``raw`` is left out."""
        return {
            "video_no": self.video_no,
            "video_name": self.video_name,
            "status": self.status.value,
            "upload_time": self.upload_time,
        }


@dataclass(frozen=True)
class Video:
    """A video as returned by ``get_metadata`` and ``list_videos``.

    :param video_no: the video's id (``VI...``).
    :param video_name: its name.
    :param status: indexing status.
    :param cause: why indexing failed, when it did (``"null"`` is read as absent).
    :param duration: length in seconds.
    :param size: size in bytes.
    :param create_time: creation time in epoch milliseconds.
    :param bucket: storage bucket, when the server reports one (for ``download_blob``).
    :param blob: storage blob path, when reported.
    :param tags: tags of the video (the server adds ``api``).
    :param unique_id: the scope the video lives in, when reported.
    :param resolution_label: e.g. ``"1080p"``, after PARSE.
    :param fps: frames per second, after PARSE.
    :param width: frame width in pixels, after PARSE.
    :param height: frame height in pixels, after PARSE.
    :param datetime_taken: capture time in epoch milliseconds, if known.
    :param camera_model: camera model, if known.
    :param latitude: capture latitude, if known.
    :param longitude: capture longitude, if known.
    :param raw: the video object as received.
    """

    video_no: str
    video_name: str | None = None
    status: VideoStatus = VideoStatus.UNKNOWN
    cause: str | None = None
    duration: float | None = None
    size: int | None = None
    create_time: int | None = None
    bucket: str | None = None
    blob: str | None = None
    tags: tuple[str, ...] = ()
    unique_id: str | None = None
    resolution_label: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    datetime_taken: int | None = None
    camera_model: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Video:
        """Parse one video object (snake_case or camelCase, numbers or numeric strings)."""
        video_no = _text(_pick(data, "video_no", "id"))
        if video_no is None:
            raise ValueError("video object has no video_no")
        return cls(
            video_no=video_no,
            video_name=_text(_pick(data, "video_name", "name")),
            status=VideoStatus.parse(_pick(data, "status", "video_status")),
            cause=_text(_pick(data, "cause", "fail_reason")),
            duration=_number(_pick(data, "duration")),
            size=_int(_pick(data, "size")),
            create_time=_int(_pick(data, "create_time", "upload_time")),
            bucket=_text(_pick(data, "bucket")),
            blob=_text(_pick(data, "blob")),
            tags=_tags(_pick(data, "tags")),
            unique_id=_text(_pick(data, "unique_id")),
            resolution_label=_text(_pick(data, "resolution_label")),
            fps=_number(_pick(data, "fps")),
            width=_int(_pick(data, "width")),
            height=_int(_pick(data, "height")),
            datetime_taken=_int(_pick(data, "datetime_taken")),
            camera_model=_text(_pick(data, "camera_model")),
            latitude=_number(_pick(data, "latitude")),
            longitude=_number(_pick(data, "longitude")),
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for XCom and trigger events); ``raw`` is left out."""
        return {
            "video_no": self.video_no,
            "video_name": self.video_name,
            "status": self.status.value,
            "cause": self.cause,
            "duration": self.duration,
            "size": self.size,
            "create_time": self.create_time,
            "bucket": self.bucket,
            "blob": self.blob,
            "tags": list(self.tags),
            "unique_id": self.unique_id,
            "resolution_label": self.resolution_label,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "datetime_taken": self.datetime_taken,
            "camera_model": self.camera_model,
            "latitude": self.latitude,
            "longitude": self.longitude,
        }


@dataclass(frozen=True)
class VideoPage:
    """One page of ``list_videos``.

    :param current_page: 1-based page number.
    :param page_size: requested page size.
    :param total_count: number of matching videos across all pages, if reported.
    :param videos: the videos on this page.
    """

    current_page: int
    page_size: int
    total_count: int | None
    videos: list[Video]

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None, *, page: int = 1, size: int = 0) -> VideoPage:
        """Parse a ``list_videos`` ``data`` object; ``page``/``size`` fill in missing fields."""
        data = data or {}
        items = _pick(data, "videos", "list", "records") or []
        if not isinstance(items, list):
            raise ValueError("list_videos data.videos is not a list")
        return cls(
            current_page=_int(_pick(data, "current_page", "page")) or page,
            page_size=_int(_pick(data, "page_size", "size")) or size,
            total_count=_int(_pick(data, "total_count", "total")),
            videos=[Video.from_api(item) for item in items if isinstance(item, Mapping)],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "current_page": self.current_page,
            "page_size": self.page_size,
            "total_count": self.total_count,
            "videos": [v.to_dict() for v in self.videos],
        }


__all__ = ["UploadResult", "Video", "VideoPage", "VideoStatus"]

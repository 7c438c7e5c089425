"""Typed results of the memories.ai API, parsed tolerantly from every documented variant.

The vendor's docs disagree: numbers arrive as JSON numbers or strings, keys as camelCase or
snake_case, the failure status as ``PARSE_ERROR``/``FAILED``/``FAIL`` and an absent ``cause``
as the literal string ``"null"``. ``from_api`` accepts all of them; ``to_dict`` gives a
JSON-safe dict (for XCom) that ``from_api`` reads back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, ClassVar, Literal


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


#: The integers a 64-bit signed column (Parquet's int64, most warehouses' BIGINT) holds.
INT64_RANGE = range(-(2**63), 2**63)


def _number(value: Any) -> float | None:
    """A float from a JSON number or a numeric string; anything else is absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits: no float holds it
            return None
    else:
        text = _text(value)
        if text is None:
            return None
        try:
            result = float(text)
        except ValueError:
            return None
    return result if math.isfinite(result) else None


_INT_TEXT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _int(value: Any) -> int | None:
    """An int from a JSON number or a numeric string (``"1700000000000"``, ``"12.0"``).

    A string of digits is read exactly (through a float, ``"9007199254740993"`` would come back as
    ...992: a size one byte off, which the download's size check would then hold against the file).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_TEXT_RE.fullmatch(text := value.strip()):
        try:
            return int(text)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits): unreadable
            return None
    number = _number(value)
    return None if number is None else int(number)


def _whole(value: Any) -> int | None:
    """:func:`_int` of a whole number only (``7``, ``"7"``, ``7.0``, ``"7e0"``); ``None`` for
    ``7.9``, which :func:`_int` truncates to another number."""
    whole = _int(value)
    if (
        whole is None
        or isinstance(value, int)
        or (isinstance(value, str) and _INT_TEXT_RE.fullmatch(value.strip()))
    ):
        return whole
    number = _number(value)
    return whole if number is not None and number.is_integer() else None


def _video_no(data: Mapping[str, Any], missing: str) -> str:
    """The video id of an answer (``videoNo``, ``video_no`` or ``id``); ``ValueError(missing)`` if absent."""
    video_no = _text(_pick(data, "video_no", "id"))
    if video_no is None:
        raise ValueError(missing)
    return video_no


def _as_dict(result: Any) -> dict[str, Any]:
    """A result object's ``to_dict``: its fields in order, JSON-safe, ``raw`` left out."""
    return {f.name: _json_safe(getattr(result, f.name)) for f in fields(result) if f.name != "raw"}


def _json_safe(value: Any) -> Any:
    """``value`` as JSON data: result objects as dicts, enums by value, tuples as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return _as_dict(value)
    return value


def _tags(value: Any) -> tuple[str, ...]:
    """Tags from a JSON list or a comma-separated string.

    Only the whole field may be the literal ``"null"`` (absent); inside the list, ``"null"`` or
    ``"none"`` is a tag like any other.
    """
    if isinstance(value, str):
        if _text(value) is None:
            return ()
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return ()
    return tuple(text for item in items if item is not None and (text := str(item).strip()))


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
        return cls(
            video_no=_video_no(data, "upload response has no videoNo"),
            video_name=_text(_pick(data, "video_name")),
            status=VideoStatus.parse(_pick(data, "video_status", "status")),
            upload_time=_int(_pick(data, "upload_time", "create_time")),
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for XCom); ``raw`` is left out."""
        return _as_dict(self)


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
        return cls(
            video_no=_video_no(data, "video object has no video_no"),
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
        return _as_dict(self)


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
        return _as_dict(self)


#: What an index output describes: ``visual`` (scene captions) or ``audio`` (speech transcription).
TranscriptKind = Literal["visual", "audio"]
TRANSCRIPT_KINDS: tuple[TranscriptKind, ...] = ("visual", "audio")


def _clean_text(value: Any) -> str:
    """A segment's text as sent (no stripping); ``None`` is empty, lone surrogates become U+FFFD,
    and a value that is not a string (the spec's type) is its JSON text.

    JSON may carry ``"\\ud800"`` alone: Python keeps it, but no UTF-8 file (JSON Lines, Parquet)
    can hold it, and a row writer would fail half-way through an export.
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@dataclass(frozen=True)
class Segment:
    """One segment of an index output: what was seen (visual) or said (audio) between two times.

    :param index: the segment's number as the service gives it (its position when absent).
    :param text: the caption or the transcribed speech, exactly as sent.
    :param start_s: start in seconds from the video's start (``None`` when absent or not a number).
    :param end_s: end in seconds (``None`` when absent or not a number).
    """

    index: int
    text: str
    start_s: float | None
    end_s: float | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any], position: int) -> Segment:
        """Parse one ``transcriptions`` item; numbers may be JSON numbers or strings of numbers."""
        index = _whole(_pick(item, "index"))
        return cls(
            # An index no 64-bit column holds (a Parquet export's) is as unreadable as "abc".
            index=position if index is None or index not in INT64_RANGE else index,
            text=_clean_text(_pick(item, "content", "text")),
            start_s=_number(_pick(item, "start_time")),
            end_s=_number(_pick(item, "end_time")),
        )


@dataclass(frozen=True)
class Transcript:
    """An index output of one video: visual captions or the audio transcription, segment by segment.

    ``data: null`` and an empty (or absent) ``transcriptions`` both read as no segments: the service
    answers so for a video without an audio track, and for one that is not parsed yet (check
    ``PARSE`` first: the two cannot be told apart from this answer).

    :param video_no: the video's id.
    :param kind: ``"visual"`` or ``"audio"``.
    :param segments: the segments in the order sent.
    :param create_time: when the output was made, epoch milliseconds, if sent.
    :param video_bucket: the video's storage bucket, if sent (for the bucket+blob download).
    :param video_blob: the video's blob path, if sent.
    """

    video_no: str
    kind: TranscriptKind
    segments: tuple[Segment, ...] = ()
    create_time: int | None = None
    video_bucket: str | None = None
    video_blob: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None, *, video_no: str, kind: TranscriptKind) -> Transcript:
        """Parse ``data`` of ``get_video_caption``/``get_audio_transcription`` (``None`` allowed).

        :raises ValueError: when ``data`` names another video (an answer is never taken for the
            wrong video) or ``transcriptions`` is not a list of objects.
        """
        if data is None:
            return cls(video_no=video_no, kind=kind)
        answered = _text(_pick(data, "video_no"))
        if answered is not None and answered != video_no:
            raise ValueError(f"the answer is for video {answered!r}, not {video_no!r}")
        items = _pick(data, "transcriptions")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ValueError(f"transcriptions is {type(items).__name__}, not a list")
        segments = []
        for position, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValueError(f"transcriptions[{position}] is {type(item).__name__}, not an object")
            segments.append(Segment.from_api(item, position))
        return cls(
            video_no=video_no,
            kind=kind,
            segments=tuple(segments),
            create_time=_int(_pick(data, "create_time")),
            video_bucket=_text(_pick(data, "video_bucket")),
            video_blob=_text(_pick(data, "video_blob")),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return _as_dict(self)


__all__ = [
    "TRANSCRIPT_KINDS",
    "Segment",
    "Transcript",
    "TranscriptKind",
    "UploadResult",
    "Video",
    "VideoPage",
    "VideoStatus",
]

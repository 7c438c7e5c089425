"""The metadata of one upload, validated once and able to write its own form fields.

The same nine fields travel from ``MemoriesUploadOperator`` through ``MemoriesHook`` to both
clients' ``upload_video``/``upload_video_from_url``. Building an :class:`UploadMetadata` checks
every documented rule before any request is sent; everything downstream just uses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from memories_provider.client.errors import MemoriesInvalidArgumentError
from memories_provider.client.protocol import (
    MAX_CALLBACK_CHARS,
    MAX_CAMERA_MODEL_CHARS,
    MAX_TAGS,
    is_http_url,
    shown_url,
)

#: The form's spelling of ``datetime_taken`` (``yyyy-MM-dd HH:mm:ss``).
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)


def _invalid(message: str) -> MemoriesInvalidArgumentError:
    return MemoriesInvalidArgumentError(message)


@dataclass(frozen=True)
class UploadMetadata:
    """What the service is told about an uploaded video, besides the video itself.

    Every rule is checked when the object is built, so a bad value fails before any request with a
    :class:`~memories_provider.client.errors.MemoriesInvalidArgumentError` (a ``ValueError`` too)
    naming the parameter. Values are normalised on the way in: a ``datetime`` becomes the form's
    string, ``tags`` a tuple, coordinates floats, and empty strings (``callback``, ``datetime_taken``,
    ``video_transcription_prompt``) ``None``.

    :param unique_id: scope ("folder") to upload into; ``None`` lets the hook use the connection's
        (the service's default is ``default``).
    :param callback: http(s) URL the service POSTs status changes to (≤ 299 characters).
    :param datetime_taken: capture time, a ``datetime`` or ``"yyyy-MM-dd HH:mm:ss"``.
    :param camera_model: camera model (≤ 200 characters).
    :param latitude: capture latitude, -90..90 (with ``longitude``).
    :param longitude: capture longitude, -180..180 (with ``latitude``).
    :param tags: up to 20 non-empty tags (the server adds ``api``); one string is one tag.
    :param retain_original_video: keep the original file on the service (``None``: the service's
        default, true).
    :param video_transcription_prompt: free-text prompt for transcription.
    """

    unique_id: str | None = None
    callback: str | None = None
    datetime_taken: str | datetime | None = None
    camera_model: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    tags: Sequence[str] | None = ()
    retain_original_video: bool | None = None
    video_transcription_prompt: str | None = None

    def __post_init__(self) -> None:
        normalised = {
            "unique_id": _unique_id(self.unique_id),
            "callback": _callback(self.callback),
            "datetime_taken": _datetime_taken(self.datetime_taken),
            "camera_model": _camera_model(self.camera_model),
            **_coordinates(self.latitude, self.longitude),
            "tags": _tags(self.tags, limit=MAX_TAGS),
            "retain_original_video": _retain(self.retain_original_video),
            "video_transcription_prompt": _prompt(self.video_transcription_prompt),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The nine parameter names, in form order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def merged(cls, metadata: UploadMetadata | None, overrides: Mapping[str, Any]) -> UploadMetadata:
        """``metadata`` (or an empty one) with the keyword ``overrides`` applied, validated.

        The clients' and hook's ``upload_video(..., tags=...)`` keyword style goes through here.

        :raises TypeError: for a keyword that is not one of the nine fields.
        """
        base = metadata if metadata is not None else cls()
        return replace(base, **overrides) if overrides else base

    def with_tag(self, tag: str, *, why: str) -> UploadMetadata:
        """A copy with one more tag of the caller's (``why`` tells the user what it is for).

        :raises MemoriesInvalidArgumentError: naming ``tags`` when the user's tags leave no room.
        """
        tags = tuple(self.tags or ())
        if len(tags) >= MAX_TAGS:
            raise _invalid(f"`tags` may hold at most {MAX_TAGS - 1} tags ({why}), got {len(tags)}")
        return replace(self, tags=(*tags, tag))

    def form_fields(self) -> list[tuple[str, str]]:
        """The ``upload``/``upload_url`` form fields, in order; ``tags`` repeats once per tag."""
        form: list[tuple[str, str]] = []
        for name in ("unique_id", "callback", "datetime_taken", "camera_model"):
            value = getattr(self, name)
            if value is not None:
                form.append((name, str(value)))
        if self.latitude is not None and self.longitude is not None:
            form += [("latitude", _decimal(self.latitude)), ("longitude", _decimal(self.longitude))]
        form.extend(("tags", tag) for tag in self.tags or ())
        if self.retain_original_video is not None:
            form.append(("retain_original_video", "true" if self.retain_original_video else "false"))
        if self.video_transcription_prompt is not None:
            form.append(("video_transcription_prompt", self.video_transcription_prompt))
        return form


# --------------------------------------------------------------------------- one rule per field


def _unique_id(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _invalid(f"`unique_id` must be a non-empty string when given, got {value!r}")
    return value


def _callback(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not is_http_url(value):
        raise _invalid(f"`callback` must be an http(s) URL with a host, got {shown_url(str(value))!r}")
    if len(value) > MAX_CALLBACK_CHARS:
        raise _invalid(f"`callback` may be at most {MAX_CALLBACK_CHARS} characters, got {len(value)}")
    return value


def _datetime_taken(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        # Not strftime: its %Y writes year 999 as "999" on Linux, not the form's four digits.
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
        )
    # Exactly the documented shape: strptime alone forgives "2024-5-1 1:2:3" and doubled spaces.
    if isinstance(value, str) and _DATETIME_RE.fullmatch(value):
        try:
            datetime.strptime(value, DATETIME_FORMAT)
        except ValueError:
            pass
        else:
            return value
    raise _invalid(
        f"`datetime_taken` must be a datetime or a string like '2024-05-01 13:45:00' "
        f"(yyyy-MM-dd HH:mm:ss), got {value!r}"
    )


def _camera_model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"`camera_model` must be a string, got {value!r}")
    if len(value) > MAX_CAMERA_MODEL_CHARS:
        raise _invalid(f"`camera_model` may be at most {MAX_CAMERA_MODEL_CHARS} characters, got {len(value)}")
    return value


def _coordinates(latitude: Any, longitude: Any) -> dict[str, float | None]:
    if (latitude is None) != (longitude is None):
        raise _invalid("`latitude` and `longitude` must be given together")
    return {
        "latitude": None if latitude is None else _coordinate("latitude", latitude, 90.0),
        "longitude": None if longitude is None else _coordinate("longitude", longitude, 180.0),
    }


def _decimal(value: float) -> str:
    """``value`` as a plain decimal, shortest exact digits: ``1e-05`` is sent as ``0.00001``."""
    return format(Decimal(repr(value)), "f")


def _coordinate(name: str, value: Any, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"`{name}` must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not -bound <= number <= bound:
        raise _invalid(f"`{name}` must be between -{bound:g} and {bound:g}, got {value!r}")
    return number


def _tags(tags: Any, *, limit: int) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, Sequence) or isinstance(tags, (bytes, bytearray)):
        raise _invalid(f"`tags` must be a list of strings, got {type(tags).__name__}")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise _invalid(f"`tags` must hold non-empty strings, got {tag!r}")
    if len(tags) > limit:
        raise _invalid(f"`tags` may hold at most {limit} tags, got {len(tags)}")
    return tuple(tags)


def _retain(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _invalid(f"`retain_original_video` must be True or False, got {value!r}")
    return value


def _prompt(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(f"`video_transcription_prompt` must be a string, got {value!r}")
    return value or None

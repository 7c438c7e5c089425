"""Validation of MemoriesUploadOperator's arguments: every documented rule, before any request.

Each error names the operator parameter and the rule, so a bad backfill fails at once without
spending a credit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from memories_provider.client.protocol import (
    MAX_CALLBACK_CHARS,
    MAX_CAMERA_MODEL_CHARS,
    MAX_TAGS,
    VIDEO_CONTENT_TYPES,
)

#: Largest file the service accepts (3 GB, binary, as the emulator enforces it).
MAX_UPLOAD_BYTES = 3 * 1024**3
#: Largest file one edition of the docs allows through ``upload_url`` without special permission.
URL_UPLOAD_SOFT_LIMIT = 1024**3
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
IDEMPOTENCY_TAG_PREFIX = "airflow-"


def check_video_name(name: str, *, param: str = "source") -> str:
    """The part's ``video/*`` Content-Type from the file extension (``.mp4 .avi .mkv .mov``)."""
    lower = name.lower()
    for ext, content_type in VIDEO_CONTENT_TYPES.items():
        if lower.endswith(ext):
            return content_type
    raise ValueError(
        f"`{param}` must name a video file ending in one of {', '.join(VIDEO_CONTENT_TYPES)} "
        f"(case-insensitive), got {name!r}"
    )


def check_size(size: int | None, uri: str) -> None:
    """At most 3 GB (``size`` comes from stat/HEAD/object metadata, never from reading the file)."""
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"`source` {uri!r} has {size} bytes; memories.ai accepts at most {MAX_UPLOAD_BYTES} bytes (3 GB)"
        )


def format_datetime_taken(value: Any) -> str | None:
    """``datetime``/pendulum or the exact ``yyyy-MM-dd HH:mm:ss`` string, as the form field."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.strftime(DATETIME_FORMAT)
    if isinstance(value, str):
        try:
            datetime.strptime(value, DATETIME_FORMAT)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(
        f"`datetime_taken` must be a datetime or a string like '2024-05-01 13:45:00' "
        f"(yyyy-MM-dd HH:mm:ss), got {value!r}"
    )


def _coordinate(name: str, value: Any, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not -bound <= number <= bound:
        raise ValueError(f"`{name}` must be between -{bound:g} and {bound:g}, got {value!r}")
    return number


def check_tags(tags: Any, *, reserved: int) -> list[str]:
    """A list of non-empty strings, at most 20 in all (``reserved`` of them are ours)."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, Sequence) or isinstance(tags, (bytes, bytearray)):
        raise ValueError(f"`tags` must be a list of strings, got {type(tags).__name__}")
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"`tags` must hold non-empty strings, got {tag!r}")
        cleaned.append(tag)
    limit = MAX_TAGS - reserved
    if len(cleaned) > limit:
        why = (
            f" (one of the {MAX_TAGS} is the idempotency tag; idempotent=False frees it)" if reserved else ""
        )
        raise ValueError(f"`tags` may hold at most {limit} tags{why}, got {len(cleaned)}")
    return cleaned


def upload_metadata(
    *,
    unique_id: Any,
    callback: Any,
    datetime_taken: Any,
    camera_model: Any,
    latitude: Any,
    longitude: Any,
    tags: Any,
    retain_original_video: Any,
    video_transcription_prompt: Any,
    reserved_tags: int,
) -> dict[str, Any]:
    """Validated keyword arguments for ``hook.upload_video``/``upload_video_from_url``.

    :raises ValueError: naming the parameter and the rule it breaks.
    """
    if unique_id is not None and (not isinstance(unique_id, str) or not unique_id.strip()):
        raise ValueError(f"`unique_id` must be a non-empty string when given, got {unique_id!r}")
    if callback is not None and callback != "":
        if not isinstance(callback, str) or urlsplit(callback).scheme not in ("http", "https"):
            raise ValueError(f"`callback` must be an http(s) URL, got {callback!r}")
        if len(callback) > MAX_CALLBACK_CHARS:
            raise ValueError(
                f"`callback` may be at most {MAX_CALLBACK_CHARS} characters, got {len(callback)}"
            )
    else:
        callback = None
    if camera_model is not None:
        if not isinstance(camera_model, str):
            raise ValueError(f"`camera_model` must be a string, got {camera_model!r}")
        if len(camera_model) > MAX_CAMERA_MODEL_CHARS:
            raise ValueError(
                f"`camera_model` may be at most {MAX_CAMERA_MODEL_CHARS} characters, got {len(camera_model)}"
            )
    if (latitude is None) != (longitude is None):
        raise ValueError("`latitude` and `longitude` must be given together")
    lat = None if latitude is None else _coordinate("latitude", latitude, 90.0)
    lon = None if longitude is None else _coordinate("longitude", longitude, 180.0)
    if not isinstance(retain_original_video, bool):
        raise ValueError(f"`retain_original_video` must be True or False, got {retain_original_video!r}")
    if video_transcription_prompt is not None and not isinstance(video_transcription_prompt, str):
        raise ValueError(f"`video_transcription_prompt` must be a string, got {video_transcription_prompt!r}")
    return {
        "unique_id": unique_id or None,
        "callback": callback,
        "datetime_taken": format_datetime_taken(datetime_taken),
        "camera_model": camera_model,
        "latitude": lat,
        "longitude": lon,
        "tags": check_tags(tags, reserved=reserved_tags),
        "retain_original_video": retain_original_video,
        "video_transcription_prompt": video_transcription_prompt or None,
    }


def idempotency_tag(*, dag_id: str, task_id: str, run_id: str, map_index: int, source: str) -> str:
    """A tag naming one task instance's upload of one source: the same on every try, unique otherwise."""
    key = "\x1f".join((dag_id, task_id, run_id, str(map_index), source))
    return IDEMPOTENCY_TAG_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]

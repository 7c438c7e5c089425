"""Request-field rules of spec section 2; each failure is an ``ApiError`` whose ``msg`` names the field."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

#: One business code per kind of failure (the spec lists 0001 and 0003 for bad parameters; we use 0001).
BAD_PARAM = "0001"
AUTH = "0401"
CREDITS = "0402"
LIMITED = "0429"

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
MAX_CALLBACK = 299
MAX_CAMERA_MODEL = 200
MAX_TAGS = 20
MAX_DELETE = 100
#: ASCII digits only: ``\d`` alone also takes full-width digits (U+FF10..), and so does strptime.
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
_VIDEO_NO_RE = re.compile(r"VI[0-9]{18}")
_TAG_INDEX_RE = re.compile(r"^tags\[(\d+)\]$")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class ApiError(Exception):
    """A failure answered with an error envelope.

    :param code: v1 business code (``"0001"``...); v2 answers use the matching HTTP status instead.
    :param msg: the human-readable ``msg``.
    :param http_status: HTTP status for v1 answers (the service uses 200 for business errors).
    :param v2_status: HTTP status (and integer code) for v2 answers.
    :param retry_after: seconds for a ``Retry-After`` header.
    """

    def __init__(
        self,
        code: str,
        msg: str,
        *,
        http_status: int = 200,
        v2_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.v2_status = v2_status or _V2_STATUS.get(code, 400)
        self.retry_after = retry_after


_V2_STATUS = {BAD_PARAM: 400, AUTH: 401, CREDITS: 402, "0403": 403, LIMITED: 429}


def bad(msg: str) -> ApiError:
    """A bad-parameter error."""
    return ApiError(BAD_PARAM, msg)


def check_filename(filename: str | None) -> str:
    """The upload's filename must be present and end with a video extension."""
    if not filename:
        raise bad("file: the 'file' part needs a filename (Content-Disposition filename=...)")
    if not filename.lower().endswith(VIDEO_EXTENSIONS):
        raise bad(
            f"file: unsupported file type {filename!r}; allowed extensions: {', '.join(VIDEO_EXTENSIONS)}"
        )
    return filename


def check_video_content_type(content_type: str | None) -> str:
    """The file part's Content-Type must start with ``video/``: read to the letter, lowercase (media
    types are case-insensitive by RFC, but the spec's rule is a prefix, and a service comparing it
    as one refuses ``Video/MP4``)."""
    if not content_type or not content_type.startswith("video/"):
        raise bad(f"file: Content-Type must start with 'video/', got {content_type or 'none'!r}")
    return content_type


def single(fields: dict[str, list[str]], name: str) -> str | None:
    """The one value of a form field (None when absent); sending it twice is an error."""
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad(f"{name}: sent {len(values)} times; send it once")
    return values[0]


def unique_id_value(value: Any) -> str:
    """``unique_id``: default ``default``; when sent it must be a non-empty string."""
    if value is None:
        return "default"
    if not isinstance(value, str) or not value.strip():
        raise bad("unique_id: must be a non-empty string when sent")
    return value


def upload_metadata(fields: dict[str, list[str]]) -> dict[str, Any]:
    """Validate the metadata fields shared by ``upload`` and ``upload_url``."""
    meta: dict[str, Any] = {"unique_id": unique_id_value(single(fields, "unique_id"))}

    callback = single(fields, "callback")
    if callback is not None:
        if len(callback) > MAX_CALLBACK:
            raise bad(f"callback: at most {MAX_CALLBACK} characters, got {len(callback)}")
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad(f"callback: must be an http(s) URL, got {callback!r}")
    meta["callback"] = callback

    taken = single(fields, "datetime_taken")
    meta["datetime_taken"] = None
    if taken is not None:
        try:
            if not _DATETIME_RE.fullmatch(taken):
                raise ValueError
            parsed = datetime.strptime(taken, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        except ValueError:
            raise bad(f"datetime_taken: must be 'yyyy-MM-dd HH:mm:ss', got {taken!r}") from None
        meta["datetime_taken"] = int(parsed.timestamp() * 1000)

    camera = single(fields, "camera_model")
    if camera is not None and len(camera) > MAX_CAMERA_MODEL:
        raise bad(f"camera_model: at most {MAX_CAMERA_MODEL} characters, got {len(camera)}")
    meta["camera_model"] = camera

    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        raw = single(fields, name)
        value = None
        if raw is not None:
            # A plain decimal ("-12.5"): not "1e-05", "inf" or Python's "1_0", which float() takes.
            if not _DECIMAL_RE.fullmatch(raw):
                raise bad(f"{name}: must be a decimal number, got {raw!r}")
            value = float(raw)
            if not math.isfinite(value) or abs(value) > bound:
                raise bad(f"{name}: must be between -{bound:g} and {bound:g}, got {raw!r}")
        meta[name] = value

    tags = list(fields.get("tags", []))
    indexed = sorted(
        (int(m.group(1)), v) for k, vs in fields.items() if (m := _TAG_INDEX_RE.match(k)) for v in vs
    )
    tags.extend(v for _, v in indexed)
    if len(tags) > MAX_TAGS:
        raise bad(f"tags: at most {MAX_TAGS} tags, got {len(tags)}")
    if any(not t.strip() for t in tags):
        raise bad("tags: tags must be non-empty strings")
    meta["tags"] = [*tags, "api"]  # the service appends "api" to every upload's tags

    retain = single(fields, "retain_original_video")
    if retain is None:
        meta["retain_original_video"] = True
    elif retain.lower() in ("true", "false"):
        meta["retain_original_video"] = retain.lower() == "true"
    else:
        raise bad(f"retain_original_video: must be true or false, got {retain!r}")

    meta["video_transcription_prompt"] = single(fields, "video_transcription_prompt")
    return meta


KNOWN_UPLOAD_FIELDS = frozenset(
    {
        "file",
        "url",
        "unique_id",
        "callback",
        "datetime_taken",
        "camera_model",
        "latitude",
        "longitude",
        "tags",
        "retain_original_video",
        "video_transcription_prompt",
    }
)


def unknown_fields(fields: dict[str, list[str]]) -> list[str]:
    """Form fields the spec does not define (ignored, but recorded in the request log)."""
    return sorted(k for k in fields if k not in KNOWN_UPLOAD_FIELDS and not _TAG_INDEX_RE.match(k))


def check_video_no(value: Any, name: str = "video_no") -> str:
    """A required ``VI`` + 18 digits id."""
    if value is None or value == "":
        raise bad(f"{name}: required")
    if not isinstance(value, str) or not _VIDEO_NO_RE.fullmatch(value):
        raise bad(f"{name}: must be 'VI' followed by 18 digits, got {value!r}")
    return value


def _int(body: dict[str, Any], name: str, default: int | None, minimum: int | None) -> int | None:
    # An explicit null is the field left out, as for every other list_videos field.
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise bad(f"{name}: must be >= {minimum}, got {value}")
    return value


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad(f"{name}: must be a string, got {value!r}")
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise bad(f"{name}: must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(f"{name}: must be a number, got {value!r}")
    return float(value)


def list_filters(body: Any, statuses: tuple[str, ...]) -> dict[str, Any]:
    """Validate a ``list_videos`` body."""
    if not isinstance(body, dict):
        raise bad("body: must be a JSON object")
    out: dict[str, Any] = {
        "page": _int(body, "page", 1, 1),
        "size": _int(body, "size", 20, 1),
        "unique_id": unique_id_value(body.get("unique_id")),
        "video_name": _str(body, "video_name"),
        "video_no": _str(body, "video_no"),
        "status": _str(body, "status"),
        "camera_model": _str(body, "camera_model"),
        "tag": _str(body, "tag"),
        "datetime_taken": _int(body, "datetime_taken", None, None),
        "latitude": _number(body, "latitude"),
        "longitude": _number(body, "longitude"),
    }
    if out["status"] is not None and out["status"] not in statuses:
        raise bad(f"status: must be one of {', '.join(statuses)}, got {out['status']!r}")
    nos = body.get("video_nos")
    if nos is not None and (not isinstance(nos, list) or not all(isinstance(n, str) for n in nos)):
        raise bad("video_nos: must be a list of video id strings")
    # Ids are checked as get_metadata checks its video_no: one malformed id refuses the request.
    if out["video_no"] is not None:
        check_video_no(out["video_no"])
    for video_no in nos or ():
        check_video_no(video_no, "video_nos")
    out["video_nos"] = nos
    if (out["latitude"] is None) != (out["longitude"] is None):
        raise bad("latitude and longitude: send both or neither")
    return out


def delete_ids(body: Any) -> list[str]:
    """A ``delete_videos`` body: a JSON array of at most 100 id strings."""
    if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
        raise bad("body: must be a JSON array of video id strings")
    if len(body) > MAX_DELETE:
        raise bad(f"body: at most {MAX_DELETE} ids per request, got {len(body)}")
    return body


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (the ``latitude``/``longitude`` filter matches within ~20 km)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))

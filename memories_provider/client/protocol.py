"""The memories.ai wire protocol, free of any HTTP library: requests to build, responses to read.

Both clients (``sync.py`` on requests, ``aio.py`` on aiohttp) build a :class:`RequestSpec` here,
send it with their library and hand the status, headers and body back here to get either the
``data`` of the envelope or a typed exception. A protocol detail lives only in this module.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from memories_provider.client.errors import (
    MemoriesAuthError,
    MemoriesConnectionError,
    MemoriesDuplicateError,
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidArgumentError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesRouteNotFoundError,
    MemoriesServerError,
)
from memories_provider.client.models import (
    TRANSCRIPT_KINDS,
    Transcript,
    TranscriptKind,
    UploadResult,
    Video,
    VideoPage,
)
from memories_provider.redaction import MASK, NO_SECRETS, Redactor, url_secrets

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_BASE_URL = "https://api.memories.ai/serve/api/v1"
DEFAULT_V2_BASE_URL = "https://mavi-backend.memories.ai/serve/api/v2"

#: Logical endpoint names (the same names the emulator's request log and fault injection use).
UPLOAD = "upload"
UPLOAD_URL = "upload_url"
GET_METADATA = "get_metadata"
LIST_VIDEOS = "list_videos"
LIST_UNIQUE_IDS = "list_unique_ids"
DELETE_VIDEOS = "delete_videos"
DOWNLOAD = "download"
V2_DOWNLOAD = "v2_download"
GET_VIDEO_CAPTION = "get_video_caption"
GET_AUDIO_TRANSCRIPTION = "get_audio_transcription"
#: The older edition's visual captions: ``GET /serve/api/video/get_video_transcription`` (no unique_id).
GET_VIDEO_TRANSCRIPTION = "get_video_transcription"

#: Seconds between calls allowed by the documented per-account rate limits (current docs): the
#: least a retry should wait after a ``0429`` that carries no ``Retry-After``.
RATE_LIMIT_INTERVAL = {
    UPLOAD: 60.0,
    UPLOAD_URL: 60.0,
    DOWNLOAD: 5.0,
    V2_DOWNLOAD: 1.0,
    LIST_VIDEOS: 0.2,
    GET_METADATA: 0.2,
    DELETE_VIDEOS: 0.2,
    GET_VIDEO_CAPTION: 0.2,
    GET_AUDIO_TRANSCRIPTION: 0.2,
    GET_VIDEO_TRANSCRIPTION: 0.2,
}

#: Seconds to wait for the answer to an upload once it is sent (the service stores the video,
#: or fetches the whole URL, first). A timed-out upload is never retried, so err on the long side.
DEFAULT_UPLOAD_TIMEOUT = 600.0

MAX_DELETE_BATCH = 100
#: Largest file ``upload`` accepts: "max 3 GB", read strictly (decimal, 3 * 10**9 bytes, like the
#: spec's $0.12/GB): a bigger file is refused before it is streamed whole and refused there.
MAX_UPLOAD_BYTES = 3 * 10**9
MAX_TAGS = 20
MAX_CALLBACK_CHARS = 299
MAX_CAMERA_MODEL_CHARS = 200
#: How much of an unexpected body an error message quotes (redacted first, then cut).
ERROR_BODY_QUOTE = 200
#: How much of a server-written message (an envelope's ``msg``, a Spring ``error``) an error quotes.
ERROR_MESSAGE_QUOTE = 500
#: Upper bound read from a JSON response or an error body (protects memory on a misrouted host).
MAX_JSON_BYTES = 32 * 1024 * 1024
#: What the clients read of a JSON answer: one byte past the bound, so :func:`read_response` can
#: tell an answer that is too large from one that fits exactly.
JSON_READ_BYTES = MAX_JSON_BYTES + 1
MAX_ERROR_BYTES = 64 * 1024

VIDEO_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".avi": "video/x-msvideo",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
}

_SUCCESS_CODES = frozenset({"0000", "0", "200"})
_AUTH_CODES = frozenset({"0401", "0403", "9009", "401", "403"})
_CREDIT_CODES = frozenset({"0402", "402"})
_RATE_CODES = frozenset({"0429", "429"})
_DUPLICATE_CODES = frozenset({"0409", "409"})
_INVALID_CODES = frozenset({"0001", "0003", "400"})
_NOT_FOUND_RE = re.compile(r"not\s+found|does\s*n[o']t\s+exist|not\s+exist|no\s+such", re.IGNORECASE)
_CREDITS_RE = re.compile(r"insufficient\s+(balance|credit)|not\s+enough\s+(balance|credit)", re.IGNORECASE)


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request to make, independent of the HTTP library.

    :param endpoint: logical endpoint name (used in errors and logs).
    :param method: HTTP method.
    :param url: full URL, query string already encoded (send it verbatim).
    :param json_body: JSON body, if any.
    :param form: url-encoded form fields (repeated names allowed), if any.
    :param idempotent: whether repeating the request is harmless (decides retries).
    :param download: whether the response is a file (streamed, Content-Type checked).
    :param slow_answer: whether the server may take long to answer once the body is sent (it
        stores an upload, or fetches a whole URL, before replying): the client waits
        ``upload_timeout`` instead of ``timeout`` for the response.
    :param secrets: secrets this request carries besides the API key (a presigned URL's token,
        sent to ``upload_url``): redacted, like the key, from every error and log line it leads to.
    """

    endpoint: str
    method: str
    url: str
    json_body: Any = None
    form: Sequence[tuple[str, str]] | None = field(default=None, repr=False)
    idempotent: bool = True
    download: bool = False
    slow_answer: bool = False
    secrets: tuple[str, ...] = field(default=(), repr=False)


# --------------------------------------------------------------------------- settings


def api_key_problem(api_key: Any) -> str | None:
    """What is wrong with an API key, in words that never quote it; ``None`` when it can be sent.

    The key travels raw in the ``Authorization`` header: surrounding whitespace is stripped by the
    callers, but a space, a line break, a control or a non-ASCII character inside it (a copy-paste
    accident) would make the HTTP library fail with an error quoting the whole key.
    """
    if not isinstance(api_key, str) or not api_key.strip():
        return "is missing or empty"
    if any(not ("!" <= ch <= "~") for ch in api_key.strip()):
        return (
            "contains a space, a line break, a control character or a non-ASCII character "
            "(only printable ASCII can be sent in the Authorization header; check for a copy-paste accident)"
        )
    return None


def check_api_key(api_key: Any) -> str:
    """``api_key`` without surrounding whitespace.

    :raises ValueError: naming ``api_key`` and what is wrong with it, never its value.
    """
    problem = api_key_problem(api_key)
    if problem is not None:
        raise ValueError(f"api_key {problem}")
    return str(api_key).strip()


def check_timeouts(timeout: float, upload_timeout: float) -> tuple[float, float]:
    """``(timeout, upload_timeout)`` as floats; ``upload_timeout`` is raised to at least ``timeout``.

    :raises ValueError: naming the parameter that is not a positive number of seconds.
    """
    checked = []
    for name, value in (("timeout", timeout), ("upload_timeout", upload_timeout)):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}") from None
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        checked.append(seconds)
    return checked[0], max(checked)


# --------------------------------------------------------------------------- URLs


#: What a path keeps as it is when quoted (requests' requote_uri: '%' stays, escapes are kept).
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"


def normalize_base_url(url: str, *, name: str = "base_url") -> str:
    """Check a base URL has an http(s) scheme and a host; strip the trailing slash.

    A path prefix is percent-encoded as requests would send it ('/video api' as '/video%20api',
    '/café' as '/caf%C3%A9'): the async client sends URLs as given, and sent a raw space (an HTTP
    400 from any server) or raw UTF-8 where the sync client sent the escapes.
    """
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL with a host, got {shown_url(str(url))!r}")
    if parts.hostname and not parts.hostname.isascii():
        # An internationalised name in its ASCII form, as requests sends it (and DNS, proxies
        # and virtual hosts know it); the async client sent the raw UTF-8 name.
        userinfo, at, _ = parts.netloc.rpartition("@")
        port = f":{parts.port}" if parts.port is not None else ""
        parts = parts._replace(netloc=f"{userinfo}{at}{_ascii_host(parts.hostname, name)}{port}")
        url = urlunsplit(parts)
    if parts.path:
        url = urlunsplit(parts._replace(path=quote(parts.path, safe=_PATH_SAFE)))
    return url.rstrip("/")


def _ascii_host(host: str, name: str) -> str:
    """``host`` IDNA-encoded (UTS 46, as requests encodes it; Python's IDNA 2003 codec without the
    ``idna`` package)."""
    try:
        import idna

        return str(idna.encode(host, uts46=True).decode("ascii"))
    except ImportError:
        pass
    except idna.IDNAError:
        raise ValueError(f"{name}: the host name {host!r} is not a valid internationalised name") from None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{name}: the host name {host!r} is not a valid internationalised name") from None


def _query(params: Iterable[tuple[str, Any]]) -> str:
    return urlencode([(k, str(v)) for k, v in params if v is not None], quote_via=quote)


def _blob_query(bucket: str, blob: str) -> str:
    # The docs say slashes inside blob are sent as-is (not %2F): keep "/" safe.
    check_id("bucket", bucket)
    check_blob(blob)
    return f"bucket={quote(bucket, safe='')}&blob={quote(blob, safe='/')}"


def _bad_segment(value: str) -> str | None:
    """What is wrong with ``value`` as one path segment, or None when it is fine."""
    if not value.strip():
        return "must not be empty or blank"
    if value in (".", ".."):
        return f"must not be {value!r} (a relative path segment)"
    if "/" in value or "\\" in value:
        return "must not contain '/' or '\\'"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "must not contain control characters"
    return None


def check_id(name: str, value: Any) -> str:
    """``value`` as an id that is one path segment (``video_no``, ``asset_id``, ``bucket``).

    An id ``"."`` or ``".."`` would be normalised into another URL path, one with ``/`` would
    name another resource: refused before any request.

    :raises ValueError: naming ``name`` and the rule broken.
    """
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string, got {type(value).__name__}")
    problem = _bad_segment(value)
    if problem is not None:
        raise ValueError(f"`{name}` {problem}, got {value!r}")
    return value


#: A private video id as the spec gives it: ``VI`` and 18 digits (``VI568102998803353600``).
VIDEO_NO_PATTERN = re.compile(r"VI[0-9]{18}")  # not \d, which takes any Unicode digit
#: A v2 asset id as the spec gives it: ``re_`` and digits.
ASSET_ID_PATTERN = re.compile(r"re_[0-9]+")

#: Most characters of a bad value an error quotes.
_QUOTED = 80


def quoted(value: Any) -> str:
    """``repr(value)``, cut to :data:`_QUOTED` characters, for an error message."""
    text = repr(value)
    return text if len(text) <= _QUOTED else text[: _QUOTED - 5] + "...'"


def check_video_no(value: Any, name: str = "video_no") -> str:
    """``value`` as a private video id a caller gave: ``VI`` and 18 digits, nothing around it.

    The one check of every ``video_no`` a user hands over (client, hook, operators, sensor), made
    before any request: a malformed id would be refused by the service after a call spent on the
    rate limit. Ids read from answers are never checked (the client is tolerant of what it reads).

    :param name: the caller's parameter, for the message (``video_nos`` for an item of a list).
    :raises MemoriesInvalidArgumentError: naming ``name`` and the rule.
    """
    if not isinstance(value, str) or not VIDEO_NO_PATTERN.fullmatch(value):
        what = "hold video ids" if name.endswith("s") else "be a video id"
        raise MemoriesInvalidArgumentError(
            f"`{name}` must {what} ('VI' and 18 digits, e.g. 'VI568102998803353600'), got {quoted(value)}"
        )
    return value


def check_asset_id(value: Any, name: str = "asset_id") -> str:
    """``value`` as a v2 asset id a caller gave: ``re_`` and digits (see :func:`check_video_no`).

    :raises MemoriesInvalidArgumentError: naming ``name`` and the rule.
    """
    if not isinstance(value, str) or not ASSET_ID_PATTERN.fullmatch(value):
        raise MemoriesInvalidArgumentError(
            f"`{name}` must be an asset id ('re_' and digits, e.g. 're_1234'), got {quoted(value)}"
        )
    return value


def check_blob(blob: Any) -> str:
    """``blob`` as a storage path: ``/``-separated segments, none empty, ``.`` or ``..``.

    :raises ValueError: naming ``blob`` and the segment at fault.
    """
    if not isinstance(blob, str):
        raise ValueError(f"`blob` must be a string, got {type(blob).__name__}")
    if not blob.strip():
        raise ValueError(f"`blob` must be a non-empty string, got {blob!r}")
    for segment in blob.split("/"):
        if segment == "":
            problem: str | None = "is empty (a leading, trailing or doubled '/')"
        else:
            problem = _bad_segment(segment)
        if problem is not None:
            raise ValueError(f"`blob` {blob!r}: a path segment {problem}")
    return blob


def check_unique_id(unique_id: Any) -> str | None:
    """``unique_id`` as sent: ``None`` (the service's ``default``) or a non-empty string.

    Spec: "non-empty if sent"; the service refuses ``""`` after the request, which for a list or a
    download is a call spent on the rate limit.

    :raises MemoriesInvalidArgumentError: naming ``unique_id`` and the rule.
    """
    if unique_id is not None and (not isinstance(unique_id, str) or not unique_id.strip()):
        raise MemoriesInvalidArgumentError(
            f"`unique_id` must be a non-empty string when given, got {unique_id!r}"
        )
    return unique_id


# --------------------------------------------------------------------------- request builders


def video_content_type(filename: str, *, param: str = "filename") -> str:
    """MIME type of an upload part from the file name (the API only takes mp4/avi/mkv/mov).

    :param param: the caller's parameter that named the file, for the error message.
    :raises MemoriesInvalidArgumentError: for any other extension (the server would reject it).
    """
    lower = filename.lower()
    for ext, content_type in VIDEO_CONTENT_TYPES.items():
        if lower.endswith(ext):
            return content_type
    raise MemoriesInvalidArgumentError(
        f"`{param}` must name a video file ending in one of {', '.join(VIDEO_CONTENT_TYPES)} "
        f"(case-insensitive), got {filename!r}"
    )


def upload_request(base_url: str) -> RequestSpec:
    """``POST {v1}/upload`` (the multipart body is built by the client)."""
    return RequestSpec(UPLOAD, "POST", f"{base_url}/upload", idempotent=False, slow_answer=True)


def is_http_url(url: Any) -> bool:
    """Whether ``url`` is an http(s) URL with a host (and a port, if any, in range): one the
    service can fetch (``upload_url``) or call back (``callback``)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:  # e.g. an unclosed "[" in the host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def shown_url(url: str) -> str:
    """``url`` fit for an error: its user-info masked, and what follows a ``?`` or ``#`` (a presigned
    URL's signature, a token) replaced with ``***``."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        url = url[: cut + 1] + MASK
    return NO_SECRETS.redact(url)


def upload_url_request(base_url: str, url: str, fields: Sequence[tuple[str, str]]) -> RequestSpec:
    """``POST {v1}/upload_url`` with a url-encoded form: ``url`` first, then the metadata ``fields``.

    :raises MemoriesInvalidArgumentError: when ``url`` is empty or not an http(s) URL with a host.
    """
    if not url:
        raise MemoriesInvalidArgumentError("`url` must be a non-empty string")
    if not is_http_url(url):
        # The service fetches it with a plain GET; anything else is refused, after being counted
        # against the one-a-minute limit (and maybe billed).
        raise MemoriesInvalidArgumentError(
            f"`url` must be an http(s) URL with a host, which the service fetches with an "
            f"unauthenticated GET; got {shown_url(str(url))!r}"
        )
    form = [("url", url), *fields]
    return RequestSpec(
        UPLOAD_URL,
        "POST",
        f"{base_url}/upload_url",
        form=form,
        idempotent=False,
        slow_answer=True,
        secrets=url_secrets(url),
    )


def get_metadata_request(base_url: str, video_no: str, unique_id: str | None) -> RequestSpec:
    """``GET {v1}/get_metadata?video_no=&unique_id=``."""
    check_video_no(video_no)
    query = _query([("video_no", video_no), ("unique_id", check_unique_id(unique_id))])
    return RequestSpec(GET_METADATA, "GET", f"{base_url}/get_metadata?{query}")


class VideoFilters(TypedDict, total=False):
    """The filters of ``list_videos`` (one declaration for both clients); ``None`` ones are not sent.

    :param unique_id: scope to list.
    :param video_name: exact name filter.
    :param video_no: one id.
    :param video_nos: restrict the result to these ids (check many videos in one call); a single
        string is one id.
    :param status: ``UNPARSE``/``PARSE``/``FAILED`` (or a ``VideoStatus``).
    :param camera_model: camera model filter.
    :param tag: tag filter.
    :param datetime_taken: capture time lower bound, epoch ms.
    :param latitude: with ``longitude``: videos within ~20 km.
    :param longitude: see ``latitude``.
    """

    unique_id: str | None
    video_name: str | None
    video_no: str | None
    video_nos: Sequence[str] | None
    status: str | None
    camera_model: str | None
    tag: str | None
    datetime_taken: int | None
    latitude: float | None
    longitude: float | None


VIDEO_FILTERS: tuple[str, ...] = tuple(VideoFilters.__annotations__)


def list_videos_request(
    base_url: str, *, page: int, size: int, **filters: Unpack[VideoFilters]
) -> RequestSpec:
    """``POST {v1}/list_videos`` with a JSON body (``None`` filters are left out, in a fixed order)."""
    unknown = [name for name in filters if name not in VIDEO_FILTERS]
    if unknown:
        raise TypeError(f"list_videos() got an unexpected keyword argument {unknown[0]!r}")
    for name, number in (("page", page), ("size", size)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise MemoriesInvalidArgumentError(f"`{name}` must be an integer >= 1, got {number!r}")
    optional: dict[str, Any] = {name: filters.get(name) for name in VIDEO_FILTERS}
    if (optional["latitude"] is None) != (optional["longitude"] is None):
        raise MemoriesInvalidArgumentError("`latitude` and `longitude` must be given together")
    if isinstance(optional["video_nos"], str):
        optional["video_nos"] = [optional["video_nos"]]  # one id, as delete_videos takes it
    elif optional["video_nos"] is not None:
        optional["video_nos"] = list(optional["video_nos"])
    optional["status"] = getattr(optional["status"], "value", optional["status"])
    _check_filters(optional)
    body: dict[str, Any] = {"page": page, "size": size}
    body.update({k: v for k, v in optional.items() if v is not None})
    return RequestSpec(LIST_VIDEOS, "POST", f"{base_url}/list_videos", json_body=body)


def _check_filters(filters: dict[str, Any]) -> None:
    """The ``list_videos`` filters' types, checked before the request: the body is JSON, so a wrong
    type (or a NaN, which is not JSON at all) would be refused by the service after a call spent.

    :raises MemoriesInvalidArgumentError: naming the filter and its rule.
    """
    check_unique_id(filters["unique_id"])
    for name in ("video_name", "status", "camera_model", "tag"):
        value = filters[name]
        if value is not None and not isinstance(value, str):
            raise MemoriesInvalidArgumentError(f"`{name}` must be a string, got {value!r}")
    if filters["video_no"] is not None:
        check_video_no(filters["video_no"])
    for video_no in filters["video_nos"] or ():
        check_video_no(video_no, "video_nos")
    taken = filters["datetime_taken"]
    if taken is not None and (isinstance(taken, bool) or not isinstance(taken, int)):
        raise MemoriesInvalidArgumentError(f"`datetime_taken` must be an integer (epoch ms), got {taken!r}")
    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        value = filters[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MemoriesInvalidArgumentError(f"`{name}` must be a number, got {value!r}")
        if not math.isfinite(value) or abs(value) > bound:
            raise MemoriesInvalidArgumentError(
                f"`{name}` must be between -{bound:g} and {bound:g}, got {value!r}"
            )


def list_unique_ids_request(base_url: str) -> RequestSpec:
    """``GET {v1}/list_unique_ids``."""
    return RequestSpec(LIST_UNIQUE_IDS, "GET", f"{base_url}/list_unique_ids")


def delete_batches(video_nos: Iterable[str]) -> list[list[str]]:
    """Split ids into batches of at most 100 (the documented maximum per request), each checked
    (:func:`check_video_no`) before the first batch is sent."""
    if isinstance(video_nos, str):
        video_nos = [video_nos]
    ids = [check_video_no(video_no, "video_nos") for video_no in video_nos]
    return [ids[i : i + MAX_DELETE_BATCH] for i in range(0, len(ids), MAX_DELETE_BATCH)]


def delete_videos_request(base_url: str, video_nos: Sequence[str], unique_id: str | None) -> RequestSpec:
    """``POST {v1}/delete_videos?unique_id=`` with a raw JSON array (idempotent per the current docs)."""
    query = _query([("unique_id", check_unique_id(unique_id))])
    url = f"{base_url}/delete_videos" + (f"?{query}" if query else "")
    return RequestSpec(DELETE_VIDEOS, "POST", url, json_body=list(video_nos))


def download_video_request(base_url: str, video_no: str, unique_id: str | None) -> RequestSpec:
    """A: ``POST {v1}/download`` with JSON ``{video_no, unique_id}``."""
    check_video_no(video_no)
    body = {"video_no": video_no}
    scope = check_unique_id(unique_id)
    if scope is not None:
        body["unique_id"] = scope
    return RequestSpec(DOWNLOAD, "POST", f"{base_url}/download", json_body=body, download=True)


def download_blob_request(
    base_url: str, v2_base_url: str, bucket: str, blob: str, api: Literal["v1", "v2"] = "v2"
) -> RequestSpec:
    """B (``GET {v1}/download?bucket=&blob=``) or D (``GET {v2}/download?bucket=&blob=``)."""
    if api == "v1":
        return RequestSpec(DOWNLOAD, "GET", f"{base_url}/download?{_blob_query(bucket, blob)}", download=True)
    if api == "v2":
        return RequestSpec(
            V2_DOWNLOAD, "GET", f"{v2_base_url}/download?{_blob_query(bucket, blob)}", download=True
        )
    raise ValueError(f"api must be 'v1' or 'v2', got {api!r}")


def download_asset_request(v2_base_url: str, asset_id: str) -> RequestSpec:
    """C: ``GET {v2}/{asset_id}/download``."""
    check_asset_id(asset_id)
    return RequestSpec(
        V2_DOWNLOAD, "GET", f"{v2_base_url}/{quote(asset_id, safe='')}/download", download=True
    )


def check_kind(kind: Any, name: str = "kind") -> TranscriptKind:
    """``kind`` as ``"visual"`` or ``"audio"``.

    :raises ValueError: naming ``name`` for anything else.
    """
    if kind not in TRANSCRIPT_KINDS:
        raise ValueError(f"`{name}` must be 'visual' or 'audio', got {kind!r}")
    return kind  # type: ignore[no-any-return]


def transcript_request(
    base_url: str, kind: TranscriptKind, video_no: str, unique_id: str | None
) -> RequestSpec:
    """``GET {v1}/get_video_caption`` (visual) or ``GET {v1}/get_audio_transcription`` (audio)."""
    check_kind(kind)
    check_video_no(video_no)
    endpoint = GET_VIDEO_CAPTION if kind == "visual" else GET_AUDIO_TRANSCRIPTION
    query = _query([("video_no", video_no), ("unique_id", check_unique_id(unique_id))])
    return RequestSpec(endpoint, "GET", f"{base_url}/{endpoint}?{query}")


def older_caption_request(base_url: str, video_no: str) -> RequestSpec | None:
    """The older edition's ``GET /serve/api/video/get_video_transcription?video_no=`` (visual only).

    Its path sits beside the v1 base (``.../serve/api/v1`` → ``.../serve/api/video/...``); ``None``
    when ``base_url`` does not end in ``/v1`` (no older path can be derived from it).
    """
    check_video_no(video_no)
    root, sep, last = base_url.rstrip("/").rpartition("/")
    if not sep or last != "v1":
        return None
    query = _query([("video_no", video_no)])
    return RequestSpec(GET_VIDEO_TRANSCRIPTION, "GET", f"{root}/video/{GET_VIDEO_TRANSCRIPTION}?{query}")


class TranscriptRoutes:
    """Which path serves the index outputs: the current ones, falling back to the older edition's.

    The client is tolerant: when a deployment answers the current ``get_video_caption`` with an
    HTTP 404 (no such route — an older edition), visual captions are asked of the older
    ``/serve/api/video/get_video_transcription`` instead, and once that path has answered (the
    captions, or a business code), from then on only there (one 404 per client, not per video). A
    404 on both paths (a passing infrastructure error) changes nothing. The older path takes no
    ``unique_id``: the video is named by its ``video_no`` alone, and the answer must name that
    video. There is no older audio path: an audio request that meets a 404 fails.

    Pure bookkeeping shared by both clients: they send :meth:`specs` in turn, each inside
    :meth:`trying` (which asks :meth:`fall_back` about a failure).

    :param base_url: the v1 base URL.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        #: Set once the older path answered: it is used directly from then on.
        self.older_edition = False

    def specs(self, kind: TranscriptKind, video_no: str, unique_id: str | None) -> list[RequestSpec]:
        """The requests to try, in order (the older path only for visual captions)."""
        current = transcript_request(self.base_url, kind, video_no, unique_id)
        older = older_caption_request(self.base_url, video_no) if kind == "visual" else None
        if older is None:
            return [current]
        return [older] if self.older_edition else [current, older]

    @contextmanager
    def trying(self, spec: RequestSpec, specs: Sequence[RequestSpec]) -> Iterator[None]:
        """Around the attempt of ``spec``: a "no such route" 404 is swallowed while ``specs`` has a next."""
        try:
            yield
        except MemoriesError as err:
            self._answered(spec, err)
            if spec is not specs[-1] and self.fall_back(spec, err):
                return
            raise
        self._answered(spec, None)

    def _answered(self, spec: RequestSpec, error: MemoriesError | None) -> None:
        """Remember the older edition once its path answered: the file, or a business code."""
        if spec.endpoint == GET_VIDEO_TRANSCRIPTION and (error is None or error.code is not None):
            self.older_edition = True

    def fall_back(self, spec: RequestSpec, error: BaseException) -> bool:
        """Whether to try the next spec after ``error`` on ``spec``."""
        return spec.endpoint == GET_VIDEO_CAPTION and isinstance(error, MemoriesRouteNotFoundError)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the parsers below judge it.

    :param status: the HTTP status.
    :param headers: the response headers (looked up case-insensitively).
    :param body: the body (a download's: its first bytes).
    :param endpoint: the endpoint asked, named by the errors.
    :param redactor: the client's secrets: every text an error quotes from the answer goes through
        it, then is cut.
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    endpoint: str | None
    redactor: Redactor = field(default=NO_SECRETS, repr=False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    getall = getattr(headers, "getall", None)
    if getall is not None:  # aiohttp's multidict: every value sent, joined as requests joins them
        values = getall(name, [])
        return ", ".join(values) if values else None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/invalid.

    Sent more than once (a proxy adding its own), the values arrive joined by commas (as
    ``requests`` joins them, and :func:`_header` does for aiohttp's): the longest wait asked for
    counts, the same in both clients.
    """
    if value is None:
        return None
    if "," not in value:
        return _parse_one_retry_after(value, now)
    parts = [p.strip() for p in value.split(",")]
    # Each part alone (delta-seconds), and each two neighbours joined (an HTTP date holds a comma).
    pieces = parts + [f"{a}, {b}" for a, b in itertools.pairwise(parts)]
    waits = [w for w in (_parse_one_retry_after(p, now) for p in pieces if p) if w is not None]
    return max(waits) if waits else None


def _parse_one_retry_after(value: str, now: float | None) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def normalize_code(code: Any) -> str | None:
    """Envelope code as a string: ``"0000"`` stays, v2 integer ``400`` becomes ``"400"``."""
    if code is None or isinstance(code, bool):
        return None
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    return str(code).strip() or None


#: Redirects followed for one request, by both clients; one more is refused (:func:`too_many_redirects`).
MAX_REDIRECTS = 10


def redirect_refusal(status: int, location: str | None, redactor: Redactor) -> MemoriesResponseError | None:
    """The error for a redirect not to follow, else ``None`` (both clients ask before following one).

    Refused: a ``location`` that quotes the API key (following it would put the key in a URL: in
    the HTTP library's DEBUG log and errors, in every proxy's and server's access log; looked for
    as :meth:`Redactor.reveals` does, as sent and percent-decoded), one that is not a URL, and one
    whose scheme is not ``http``/``https``. The location itself is never quoted. The answer is the
    server's, not a broken connection: the error is a :class:`MemoriesResponseError` carrying the
    status, never retried, whichever HTTP library would otherwise have complained in its own way.
    """
    if not location:
        return None
    if redactor.reveals(location) or redactor.reveals(unquote(location)):
        reason = "quotes the API key"
    else:
        try:
            scheme = urlsplit(location.strip()).scheme.lower()
        except ValueError:
            scheme = None
        if scheme is None:
            reason = "is not a URL"
        elif scheme not in ("", "http", "https"):
            reason = "is not an http(s) URL"
        else:
            return None
    return MemoriesResponseError(
        f"HTTP {status}: the answer redirects to a location that {reason}; not followed",
        http_status=status,
    )


def too_many_redirects(status: int | None, endpoint: str) -> MemoriesResponseError:
    """The error for a request redirected more than :data:`MAX_REDIRECTS` times (a redirect loop).

    :param status: the status of the last redirect.
    :param endpoint: logical endpoint name.
    """
    return MemoriesResponseError(
        f"HTTP {status}: redirected more than {MAX_REDIRECTS} times; not followed further",
        http_status=status,
        endpoint=endpoint,
    )


def quote_body(body: bytes, redactor: Redactor = NO_SECRETS) -> str:
    """The start of an unexpected body, redacted, then cut to ``ERROR_BODY_QUOTE`` characters, quoted."""
    return redactor.quoted(body, ERROR_BODY_QUOTE)


def server_text(value: Any, redactor: Redactor = NO_SECRETS) -> str:
    """A text the server wrote (``msg``, a Spring ``error``), redacted, then cut, for an error message."""
    return redactor.excerpt(str(value), ERROR_MESSAGE_QUOTE)


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON


_NOT_JSON = object()


def plain_credits(message: str) -> str:
    """``message`` of a credits refusal, saying so plainly whatever the server wrote (spec: ``0402``,
    "say so plainly"; the service's wording is not documented); kept as it is when it says so."""
    if _CREDITS_RE.search(message):
        return message
    return f"not enough credits on the memories.ai account: {message}"


def error_for_code(
    code: str,
    message: str,
    *,
    http_status: int | None,
    endpoint: str | None,
    retry_after: float | None = None,
    redactor: Redactor = NO_SECRETS,
) -> MemoriesError:
    """The exception for a non-success business code (v1 ``"0xxx"`` or v2 integer codes).

    ``message`` must already be fit to show (see :func:`server_text`); an undocumented ``code``
    is quoted through ``redactor``.
    """
    # The code is server text as well: shown by the error's str() and repr().
    shown = server_text(code, redactor)
    kw: dict[str, Any] = {"code": shown, "http_status": http_status, "endpoint": endpoint}
    if code in _AUTH_CODES:
        return MemoriesAuthError(message, **kw)
    if code in _CREDIT_CODES or _CREDITS_RE.search(message):
        return MemoriesInsufficientCreditsError(plain_credits(message), **kw)
    if code in _RATE_CODES:
        return MemoriesRateLimitError(message, retry_after=retry_after, **kw)
    if code in _DUPLICATE_CODES:
        return MemoriesDuplicateError(message, **kw)
    if code == "404":
        return MemoriesNotFoundError(message, **kw)
    if code in _INVALID_CODES:
        if _NOT_FOUND_RE.search(message):
            return MemoriesNotFoundError(message, **kw)
        return MemoriesInvalidRequestError(message, **kw)
    server_failed = code.isdigit() and len(code) == 3 and code.startswith("5")
    if server_failed or (http_status is not None and http_status >= 500):
        return MemoriesServerError(message, retry_after=retry_after, **kw)
    return MemoriesResponseError(f"undocumented error code {shown!r}: {message}", **kw)


def error_for_http(answer: Answer) -> MemoriesError:
    """The exception for an HTTP error status whose body is not a business envelope."""
    status, redactor = answer.status, answer.redactor
    payload = _load_json(answer.body)
    if isinstance(payload, dict) and ("error" in payload or "message" in payload):
        # Spring-style {timestamp, path, status, error[, message]}.
        fields = ("error", "message", "path")
        parts = [server_text(payload.get(k), redactor) for k in fields if payload.get(k)]
        message = f"HTTP {status}: " + " - ".join(parts)
        documented = True
    else:
        message = f"HTTP {status}: body {quote_body(answer.body, redactor)}"
        documented = False
    kw: dict[str, Any] = {"http_status": status, "endpoint": answer.endpoint}
    retry_after = parse_retry_after(_header(answer.headers, "Retry-After"))
    if status in (401, 403):
        return MemoriesAuthError(message, **kw)
    if status == 402:
        return MemoriesInsufficientCreditsError(plain_credits(message), **kw)
    if status == 429:
        return MemoriesRateLimitError(message, retry_after=retry_after, **kw)
    if status == 404:
        return MemoriesRouteNotFoundError(message, **kw)
    if status == 400:
        return MemoriesInvalidRequestError(message, **kw)
    if status == 409:
        return MemoriesDuplicateError(message, **kw)
    if status >= 500:
        # A 503 from a proxy or the service may say when to come back: the retry honours it.
        error_class = MemoriesServerError if documented else MemoriesResponseError
        return error_class(message, retry_after=retry_after, **kw)
    return MemoriesResponseError(message, **kw)


def parse_envelope(answer: Answer) -> Any:
    """Return the ``data`` of a successful envelope, or raise the typed error.

    Accepts v1 (``"0000"`` string codes, with or without ``success``/``failed``) and v2 (integer
    codes equal to the HTTP status). Anything undocumented raises :class:`MemoriesResponseError`
    quoting the status and the first characters of the body. Every text an error takes from the
    answer is redacted with its ``redactor`` (the client's secrets), then cut.
    """
    status, endpoint, redactor = answer.status, answer.endpoint, answer.redactor
    payload = _load_json(answer.body)
    if isinstance(payload, dict) and "code" in payload:
        code = normalize_code(payload.get("code"))
        message = server_text(payload.get("msg") or payload.get("message") or "", redactor).strip()
        explicit_failure = payload.get("success") is False or payload.get("failed") is True
        if code in _SUCCESS_CODES and not explicit_failure and 200 <= status < 300:
            return payload.get("data")
        if code is not None and code not in _SUCCESS_CODES:
            retry_after = parse_retry_after(_header(answer.headers, "Retry-After"))
            return _raise(
                error_for_code(
                    code,
                    message or "(no message)",
                    http_status=status,
                    endpoint=endpoint,
                    retry_after=retry_after,
                    redactor=redactor,
                )
            )
    if status >= 400 or status < 200:
        return _raise(error_for_http(answer))
    return _raise(
        MemoriesResponseError(
            f"undocumented response: HTTP {status}, body {quote_body(answer.body, redactor)}",
            http_status=status,
            endpoint=endpoint,
        )
    )


def _raise(error: MemoriesError) -> Any:
    raise error


def download_error(answer: Answer) -> MemoriesError:
    """The exception for a download answer that is not a file (JSON envelope or HTTP error)."""
    try:
        parse_envelope(answer)
    except MemoriesError as exc:
        return exc
    return MemoriesResponseError(
        f"expected a file but got a success envelope: HTTP {answer.status}, "
        f"body {quote_body(answer.body, answer.redactor)}",
        http_status=answer.status,
        endpoint=answer.endpoint,
    )


def file_labels(headers: Mapping[str, str], redactor: Redactor = NO_SECRETS) -> tuple[str | None, str | None]:
    """``(content_type, filename)`` of a file response, fit for logs, XCom and file names.

    Both come from the server (the file name from ``Content-Disposition``, not sanitised): like
    any text taken from a response they are redacted.
    """
    content_type = _latin1_header(_header(headers, "Content-Type"))
    filename = parse_content_disposition(_latin1_header(_header(headers, "Content-Disposition")))
    return (
        None if content_type is None else redactor.redact(content_type),
        None if filename is None else redactor.redact(filename),
    )


def looks_like_error_envelope(body: bytes) -> bool:
    """True when a download body is an API envelope rather than the file, whatever its Content-Type.

    v1/v2 envelopes (``code`` with ``msg``, ``message``, ``data``, ``success`` or ``failed``) and
    Spring-style infrastructure errors (``status`` with ``error``).
    """
    return _is_envelope(_load_json(body))


def _is_envelope(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    if "code" in payload and any(key in payload for key in ("msg", "message", "data", "success", "failed")):
        return True
    return "status" in payload and "error" in payload


# --------------------------------------------------------------------------- download bodies

#: Bytes of a download body looked at (before any is written) to tell the file from an error page.
SNIFF_BYTES = 1024
_BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n\x0b\x0c"
# An HTML (or XML error) document: optional XML declaration, doctype and comments, then a tag
# that starts a page. No video container starts with "<" (MP4/MOV: a box size, MKV: 0x1A45DFA3,
# AVI: RIFF, MPEG-TS: 0x47).
_MARKUP_RE = re.compile(
    rb"(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"<(?:!doctype\s+html|html|head|body|title|meta|script|style|form|div|h1|p|error)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def _significant(prefix: bytes) -> bytes:
    """``prefix`` without a UTF-8 BOM and leading blanks (what error documents start with)."""
    head = prefix[len(_BOM) :] if prefix.startswith(_BOM) else prefix
    return head.lstrip(_BLANK)


class BodySniffer:
    """The first bytes of a download body, collected until they tell a file from an error document.

    Feed chunks while :attr:`needs_more`; then :meth:`error` says whether the body is an API
    envelope (any Content-Type, ``msg`` or ``message``), an HTML page or empty. At most
    :data:`MAX_ERROR_BYTES` are held (a body opening with ``{`` is read until it parses or that
    limit; anything else is judged on its first byte or :data:`SNIFF_BYTES`), so memory stays flat.
    The same judge serves the sync and the async client; only their reads differ.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._judged_json = True  # nothing new that could complete a JSON document yet
        self.complete = False  # the whole body has been read

    @property
    def prefix(self) -> bytes:
        """The bytes read so far (to be handed on as the start of the file)."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def feed(self, chunk: bytes) -> None:
        """Add the next bytes of the body; an empty ``chunk`` means the body ended."""
        if not chunk:
            self.complete = True
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        # A JSON object can only be complete once a "}" arrived: parse again only then (a server
        # dripping a byte at a time must not cost a parse per byte).
        self._judged_json = b"}" not in chunk

    @property
    def received(self) -> int:
        """How many bytes of the body have been read so far."""
        return self._size

    @property
    def needs_more(self) -> bool:
        """Whether the bytes so far cannot be judged yet (never past :data:`MAX_ERROR_BYTES`)."""
        if self.complete or self._size >= MAX_ERROR_BYTES:
            return False
        head = _significant(self.prefix)
        if not head or (self._size < len(_BOM) and _BOM.startswith(self.prefix)):
            return True  # only blanks (or part of a BOM) so far
        if head[:1] == b"{":
            if self._judged_json:
                return True
            self._judged_json = True
            return _load_json(self.prefix) is _NOT_JSON  # an envelope is judged whole
        if head[:1] == b"<":
            return len(head) < SNIFF_BYTES
        return False

    def error(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        endpoint: str | None,
        redactor: Redactor = NO_SECRETS,
    ) -> MemoriesError | None:
        """The error the body is, or None when it may be the file (call once ``needs_more`` is False).

        :param redactor: the client's secrets: every text the error quotes from the response goes
            through it, and a body that holds a secret (whole, echoed in any form, or any run of
            :data:`~memories_provider.redaction.MIN_FRAGMENT` characters of it) is a server echoing
            the request, never the file (and is neither written nor quoted).
        """
        body = self.prefix
        if self.complete and not _significant(body):
            return MemoriesResponseError(
                f"expected the file but the body is empty or blank (HTTP {status}, {len(body)} bytes); "
                "nothing was written",
                http_status=status,
                endpoint=endpoint,
            )
        head = _significant(body)
        # An envelope first: one that echoes the request (a 0429 in an echoing deployment) is still
        # the typed, retryable error, its text redacted like any other.
        if head[:1] == b"{" and looks_like_error_envelope(body):
            return download_error(Answer(status, headers, body, endpoint, redactor))
        if redactor.reveals(body):
            return MemoriesResponseError(
                f"expected the file but the server echoed the request, API key included (HTTP {status}); "
                "check the connection's hosts. Nothing was written",
                http_status=status,
                endpoint=endpoint,
            )
        content_type = _header(headers, "Content-Type")
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if mime in _HTML_TYPES or _MARKUP_RE.match(head):
            shown_type = None if content_type is None else redactor.redact(content_type)
            return MemoriesResponseError(
                f"expected the file but got an HTML/XML page (a login, proxy or error page?): HTTP {status}, "
                f"Content-Type {shown_type!r}, body {quote_body(body, redactor)}; nothing was written",
                http_status=status,
                endpoint=endpoint,
            )
        return None


def is_chunked(headers: Mapping[str, str]) -> bool:
    """Whether the body is sent with chunked transfer encoding (its end is marked, so a cut shows)."""
    return "chunked" in (_header(headers, "Transfer-Encoding") or "").lower()


def expected_body_size(
    headers: Mapping[str, str],
    content_length: int | None,
    known_size: int | None,
    *,
    status: int | None,
    endpoint: str | None,
) -> int | None:
    """How many bytes the body must have: ``Content-Length``, else the size the service reports.

    :param content_length: the response's ``Content-Length`` (None when absent or encoded).
    :param known_size: the size the service reports for the file (``get_metadata``/``list_videos``
        ``size``), if the caller has it.
    :raises MemoriesResponseError: when the two disagree, or when there is neither and the body is
        not chunked either: a connection closed early could then not be told from the end.
    """
    if content_length is not None and known_size is not None and content_length != known_size:
        raise MemoriesResponseError(
            f"Content-Length {content_length} disagrees with the size the service reports for the file "
            f"({known_size} bytes); nothing was written",
            http_status=status,
            endpoint=endpoint,
        )
    expected = content_length if content_length is not None else known_size
    if expected is None and not is_chunked(headers):
        raise MemoriesResponseError(
            "the download has neither Content-Length nor chunked transfer encoding, and no size is known "
            "for the file: a body cut short could not be told from a complete one; nothing was written",
            http_status=status,
            endpoint=endpoint,
        )
    return expected


def _of(received: int, expected: int | None) -> str:
    return f"{received} of {expected if expected is not None else 'unknown'} bytes"


def body_size_error(
    received: int, expected: int | None, *, status: int | None, endpoint: str | None
) -> MemoriesError | None:
    """The error for a body that ended after ``received`` bytes when ``expected`` were due, if any."""
    if expected is not None and received < expected:
        return MemoriesIncompleteBodyError(
            f"download ended after {_of(received, expected)}", endpoint=endpoint, http_status=status
        )
    if expected is not None and received > expected:
        return MemoriesResponseError(
            f"download sent more than the {expected} bytes expected; nothing was written",
            endpoint=endpoint,
            http_status=status,
        )
    return None


def broken_body_error(
    received: int,
    expected: int | None,
    cause: BaseException,
    *,
    status: int | None,
    endpoint: str | None,
    redactor: Redactor = NO_SECRETS,
) -> MemoriesIncompleteBodyError:
    """The error for a body whose connection broke (``cause``) after ``received`` bytes.

    The transport's text may quote the URL or the request: it is redacted with ``redactor``.
    """
    reason = redactor.redact(str(cause)) or type(cause).__name__
    return MemoriesIncompleteBodyError(
        f"download broke off after {_of(received, expected)}: {reason}", endpoint=endpoint, http_status=status
    )


def broken_sniff_error(
    received: int, expected: int | None, error: MemoriesConnectionError, *, status: int | None
) -> MemoriesConnectionError:
    """``error``, for a connection that broke while a body's first bytes were being checked, saying
    how many of them had come.

    Nothing has reached the caller yet, so it stays the connection error the client retries, unlike
    :class:`MemoriesIncompleteBodyError`, which is raised while the caller streams the body.
    """
    if not received:
        return error
    return type(error)(
        f"download broke off after {_of(received, expected)}, while its first bytes were checked: "
        f"{error.message}",
        code=error.code,
        http_status=status,
        endpoint=error.endpoint,
        request_sent=True,
    )


# --------------------------------------------------------------------------- results


def read_response(answer: Answer, read: Callable[[Any], Any] | None = None) -> Any:
    """:func:`parse_envelope`, then turn its ``data`` into a result with ``read`` (``read_upload``...).

    A success envelope whose ``data`` lacks what ``read`` needs raises
    :class:`MemoriesResponseError` quoting the status and the first bytes of the body, so every
    error stays a :class:`MemoriesError` (never a bare ``ValueError``).
    """
    if len(answer.body) > MAX_JSON_BYTES:  # the clients read JSON_READ_BYTES
        too_large = ValueError(
            f"the answer is larger than {MAX_JSON_BYTES // 2**20} MiB and was not read further"
        )
        raise _undocumented_data(too_large, answer)
    data = parse_envelope(answer)
    if read is None:
        return data
    try:
        return read(data)
    except (TypeError, ValueError) as exc:
        error = _undocumented_data(exc, answer)
    # Raised outside the handler: the reader's complaint, which may quote the answer unredacted,
    # is not kept as the error's __context__ (``from None`` only hides it from tracebacks).
    raise error


def _undocumented_data(problem: Exception, answer: Answer) -> MemoriesResponseError:
    # The reader's complaint may quote a value of the data: it is server text like the body.
    status, endpoint, redactor = answer.status, answer.endpoint, answer.redactor
    message = (
        f"undocumented {endpoint} data ({server_text(problem, redactor)}): HTTP {status}, "
        f"body {quote_body(answer.body, redactor)}"
    )
    if endpoint in (UPLOAD, UPLOAD_URL):
        # The envelope said success: retrying blindly could create (and bill) a second video.
        message += (
            "; the service may have accepted (and billed) the upload, so check list_videos"
            " before uploading it again"
        )
    return MemoriesResponseError(message, http_status=status, endpoint=endpoint)


def _object(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"data is {type(data).__name__}, not an object")
    return data


def read_upload(data: Any) -> UploadResult:
    """The ``data`` of ``upload``/``upload_url`` as an :class:`UploadResult`."""
    return UploadResult.from_api(_object(data))


def read_video(data: Any) -> Video | None:
    """The ``data`` of ``get_metadata`` as a :class:`Video`; None when it is null (no such video)."""
    return None if data is None else Video.from_api(_object(data))


def video_page_reader(page: int, size: int) -> Callable[[Any], VideoPage]:
    """A reader of ``list_videos`` ``data``; ``page``/``size`` fill in fields the server leaves out."""

    def read(data: Any) -> VideoPage:
        return VideoPage.from_api(None if data is None else _object(data), page=page, size=size)

    return read


def transcript_reader(kind: TranscriptKind, video_no: str) -> Callable[[Any], Transcript]:
    """A reader of ``get_video_caption``/``get_audio_transcription`` ``data`` (``null`` allowed)."""

    def read(data: Any) -> Transcript:
        return Transcript.from_api(None if data is None else _object(data), video_no=video_no, kind=kind)

    return read


def read_unique_ids(data: Any) -> list[str]:
    """The ``data`` of ``list_unique_ids`` (``{"unique_ids": [...]}`` or a bare list) as strings."""
    if isinstance(data, Mapping):
        data = data.get("unique_ids", data.get("uniqueIds"))
    if data is None:
        return []
    if not isinstance(data, list):
        raise TypeError(f"unique_ids is {type(data).__name__}, not a list")
    return [str(item) for item in data if item is not None]


# --------------------------------------------------------------------------- Content-Disposition

_PARAM_RE = re.compile(r"""\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)""")


def _latin1_header(value: str | None) -> str | None:
    """A header value as http.client (the sync client) decodes it: each byte one Latin-1 character.

    aiohttp decodes header bytes as UTF-8 with ``surrogateescape``: a byte that is not UTF-8 came
    out as a lone surrogate, which no file name, log or XCom can encode, and the two clients named
    the same file differently. Valid UTF-8 ends the same either way (:func:`_repair_latin1`).
    """
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


def parse_content_disposition(value: str | None) -> str | None:
    """The file name from a ``Content-Disposition`` header, NOT sanitised.

    Prefers RFC 6266/5987 ``filename*=UTF-8''%E2%82%AC.mp4`` over ``filename="..."``; a plain
    ``filename`` that arrived as raw UTF-8 (decoded as Latin-1 by the HTTP library) is repaired.
    """
    if not value:
        return None
    _, _, params_text = value.partition(";")
    plain: str | None = None
    extended: str | None = None
    for match in _PARAM_RE.finditer(params_text):
        name = match.group(1).lower()
        raw = match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name == "filename*":
            extended = _decode_ext_value(raw)
        elif name == "filename":
            plain = _repair_latin1(raw)
    name_found = extended or plain
    return name_found or None


def _decode_ext_value(value: str) -> str | None:
    charset, sep, rest = value.partition("'")
    if not sep:
        return unquote(value) or None
    _lang, sep, encoded = rest.partition("'")
    if not sep:
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict") or None
    except (LookupError, UnicodeDecodeError):
        return unquote(encoded, encoding="latin-1") or None


def _repair_latin1(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value

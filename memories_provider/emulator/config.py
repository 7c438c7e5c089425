"""Emulator configuration: the knobs tests turn, with the spec's defaults and the test defaults."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

#: The API key the emulator accepts unless told otherwise.
DEFAULT_API_KEY = "sk-mavi-emulator-key"

#: Endpoint names used by rate limits, faults and the request log.
ENDPOINTS = (
    "upload",
    "upload_url",
    "get_metadata",
    "list_videos",
    "list_unique_ids",
    "delete_videos",
    "download",
    "v2_download",
    "get_video_caption",
    "get_audio_transcription",
    "get_video_transcription",
)

#: Spec section 3, "current docs" column: ``endpoint -> (requests, window seconds)``.
#: get_metadata and list_unique_ids are not listed; the spec says to treat them like list_videos.
SPEC_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "upload": (1, 60.0),
    "upload_url": (1, 60.0),
    "list_videos": (5, 1.0),
    "get_metadata": (5, 1.0),
    "list_unique_ids": (5, 1.0),
    "delete_videos": (5, 1.0),
    "download": (12, 60.0),
    "v2_download": (1, 1.0),
    # Index outputs: "the standard ones of the v1 API (treat like list: 5/s)".
    "get_video_caption": (5, 1.0),
    "get_audio_transcription": (5, 1.0),
    "get_video_transcription": (5, 1.0),
}

#: 3 GB upload cap (the spec's "max 3 GB"): the strict reading, 3 * 10**9 bytes, as the spec's
#: other GB ($0.12/GB of downloads) is decimal. Read as GiB, files of 3.0-3.22 * 10**9 bytes would
#: pass here and be streamed in full to a service that may refuse them.
DEFAULT_MAX_UPLOAD_BYTES = 3 * 10**9
#: "One doc edition caps URL uploads at 1 GB without special permission": the strict reading again
#: (decimal GB), as the service may refuse a bigger file fetched through ``upload_url``.
DEFAULT_MAX_URL_UPLOAD_BYTES = 10**9


@dataclass
class EmulatorConfig:
    """Behaviour switches of a running emulator (all changeable at run time through the control API).

    :param api_keys: keys accepted in the ``Authorization`` header.
    :param parse_delay: seconds from upload until a video leaves ``UNPARSE``.
    :param rate_limits: per-endpoint ``(requests, window_seconds)``; an endpoint missing here is unlimited.
    :param indexing_cap: max videos in ``UNPARSE`` at once; further uploads get ``0429``. None = no cap.
    :param credits: account balance in USD; None = unlimited. Uploads and downloads deduct from it.
    :param upload_cost: USD deducted per accepted upload.
    :param download_cost_per_gb: USD deducted per GB (10**9 bytes) downloaded.
    :param chunked_downloads: send downloads with chunked transfer encoding and no ``Content-Length``.
    :param fail_pattern: regex searched in the original filename; matches end ``FAILED`` with a cause.
    :param retry_after: seconds sent as ``Retry-After`` with injected ``code_0429``/``http_429`` faults.
    :param max_upload_bytes: largest accepted upload.
    :param max_url_upload_bytes: largest file ``upload_url`` accepts (1 GB: the edition that caps URL
        uploads without special permission; the smaller of this and ``max_upload_bytes`` applies).
    :param callback_on_upload: also POST the callback with ``UNPARSE`` right after an upload is accepted
        (the docs say callbacks may come more than once; receivers must be idempotent).
    :param account_disabled: answer every API call with ``0403`` (account disabled).
    :param permission_denied: endpoint names answered with ``9009`` (permission denied).
    :param echo_requests: answers with HTTP 500 or 401, or with the codes ``0401``/``0429``, echo
        the request (method, full URL and every header, ``Authorization`` included) in their
        body, as a debugging proxy or a careless server would: a test of what clients do with
        secrets they did not expect to read back. A 500 then has a ``text/plain`` body (the
        echo), the others carry it at the end of the envelope's ``msg``.
    :param metadata_before_parse: the emulator's old, lenient reading: ``list_videos``' metadata
        filters (``tag``, ``camera_model``, ``datetime_taken``, ``latitude``/``longitude``) also match
        videos that are not ``PARSE`` yet, and ``tags`` are shown from the upload on. The service
        does neither (spec section 2, List videos): off by default; only for tests written against
        the old emulator.
    :param max_page_size: answer ``list_videos`` with at most this many rows a page, whatever
        ``size`` asked for, and report it as ``page_size`` — as an edition with an undocumented cap
        might (the spec documents none: ``None``, the default, caps nothing). For testing clients.
    :param video_download_disposition: send ``Content-Disposition`` (the original name) with a
        download by ``video_no`` (A) too. The spec says it "may be absent on A": off by default, so
        clients meet the file without a name; B, C and D always send it.
    :param index_segments: segments in each index output (captions, transcription) of a parsed video.
    :param segment_seconds: length of each of those segments.
    :param no_audio_pattern: regex searched in the original filename; matching videos have no audio
        track (``get_audio_transcription`` answers ``data: null``).
    :param index_edition: ``"current"`` serves ``{v1}/get_video_caption``; ``"older"`` serves the
        older edition's ``/serve/api/video/get_video_transcription?video_no=`` instead (the current
        caption path then answers HTTP 404). ``get_audio_transcription`` is served in both.
    """

    api_keys: list[str] = field(default_factory=lambda: [DEFAULT_API_KEY])
    parse_delay: float = 0.0
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    indexing_cap: int | None = None
    credits: float | None = None
    upload_cost: float = 0.01
    download_cost_per_gb: float = 0.12
    chunked_downloads: bool = False
    fail_pattern: str | None = None
    retry_after: float | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_url_upload_bytes: int = DEFAULT_MAX_URL_UPLOAD_BYTES
    callback_on_upload: bool = False
    account_disabled: bool = False
    permission_denied: list[str] = field(default_factory=list)
    echo_requests: bool = False
    metadata_before_parse: bool = False
    max_page_size: int | None = None
    video_download_disposition: bool = False
    index_segments: int = 3
    segment_seconds: float = 7.0
    no_audio_pattern: str | None = None
    index_edition: str = "current"

    def copy(self) -> EmulatorConfig:
        """A deep-enough copy (lists and dicts are not shared)."""
        return dataclasses.replace(
            self,
            api_keys=list(self.api_keys),
            rate_limits=dict(self.rate_limits),
            permission_denied=list(self.permission_denied),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view (rate limit tuples become lists)."""
        data = dataclasses.asdict(self)
        data["rate_limits"] = {k: list(v) for k, v in self.rate_limits.items()}
        return data


_FLAGS = (
    "chunked_downloads",
    "callback_on_upload",
    "account_disabled",
    "echo_requests",
    "metadata_before_parse",
    "video_download_disposition",
)
#: Non-negative numbers, and whether None is allowed.
_AMOUNTS = {
    "parse_delay": False,
    "credits": True,
    "upload_cost": False,
    "download_cost_per_gb": False,
    "retry_after": True,
    "segment_seconds": False,
}
#: Integers with their minimum, and whether None is allowed.
_COUNTS = {
    "indexing_cap": (0, True),
    "max_upload_bytes": (1, False),
    "max_url_upload_bytes": (1, False),
    "max_page_size": (1, True),
    "index_segments": (0, False),
}


def check_config(config: EmulatorConfig) -> None:
    """Refuse a configuration the emulator could not run with, naming the setting and the rule.

    One check for the CLI, ``run_emulator`` and the control API's ``configure``: a bad value is
    refused where it is given, not met later as an HTTP 500 on some API call.
    """
    for name in _FLAGS:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")
    for name, nullable in _AMOUNTS.items():
        value = getattr(config, name)
        if value is None and nullable:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            rule = "a finite number >= 0" + (" or null" if nullable else "")
            raise ValueError(f"{name} must be {rule}, got {value!r}")
    for name, (minimum, nullable) in _COUNTS.items():
        value = getattr(config, name)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            rule = f"an integer >= {minimum}" + (" or null" if nullable else "")
            raise ValueError(f"{name} must be {rule}, got {value!r}")
    for name in ("fail_pattern", "no_audio_pattern"):
        value = getattr(config, name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a regular expression (a string) or null, got {value!r}")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{name}: not a valid regular expression ({exc})") from None
    if config.index_edition not in ("current", "older"):
        raise ValueError(f"index_edition must be 'current' or 'older', got {config.index_edition!r}")
    keys = config.api_keys
    if isinstance(keys, str) or not isinstance(keys, list) or not keys:
        raise ValueError("api_keys must be a non-empty list of strings")
    if not all(isinstance(k, str) and k.strip() for k in keys):
        raise ValueError("api_keys must be a non-empty list of non-blank strings")
    denied = config.permission_denied
    if isinstance(denied, str) or not isinstance(denied, list) or not all(isinstance(e, str) for e in denied):
        raise ValueError("permission_denied must be a list of endpoint names")
    if unknown := set(denied) - set(ENDPOINTS):
        raise ValueError(
            f"permission_denied: unknown endpoints {sorted(unknown)}; known: {', '.join(ENDPOINTS)}"
        )


def resolve_rate_limits(value: Any) -> dict[str, tuple[int, float]]:
    """Turn ``True``/``False``/a partial dict into a full per-endpoint table.

    ``True`` gives the spec limits, ``False`` none, and a dict overrides the spec limits for the named
    endpoints only (``{"list_videos": (5, 1.0)}``); a ``None`` value in the dict removes that limit.
    """
    if value is True:
        return dict(SPEC_RATE_LIMITS)
    if value is False or value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("rate_limits must be true, false or a mapping endpoint -> [requests, seconds]")
    table = dict(SPEC_RATE_LIMITS)
    for endpoint, limit in value.items():
        if endpoint not in ENDPOINTS:
            raise ValueError(f"rate_limits: unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if limit is None:
            table.pop(endpoint, None)
            continue
        count, window = limit
        if int(count) < 1 or float(window) <= 0:
            raise ValueError(f"rate_limits[{endpoint!r}] needs requests >= 1 and seconds > 0")
        table[endpoint] = (int(count), float(window))
    return table


def fixture_defaults(**overrides: Any) -> EmulatorConfig:
    """The configuration the pytest fixture resets to: fast and permissive."""
    return EmulatorConfig(**overrides)


def server_defaults(**overrides: Any) -> EmulatorConfig:
    """The CLI / ``run_emulator`` defaults: spec rate limits on."""
    overrides.setdefault("rate_limits", dict(SPEC_RATE_LIMITS))
    return EmulatorConfig(**overrides)

"""Injected faults: per endpoint, a queue of ``(kind, remaining count, params)`` consumed one per call.

A fault may target only some calls: with ``every=n`` it hits one call in ``n`` (the n-th, 2n-th ...)
and lets the others through, until it has hit ``count`` calls. With ``video_no=...`` it hits only
calls that name that video (in the query's ``video_no``, or the JSON body's ``video_no``,
``video_nos`` or id array): the others pass untouched and are not counted, as with a service that
fails on one bad row — a ``list_videos`` naming it among 200 ids fails, the same call without it
does not.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from memories_provider.emulator.config import ENDPOINTS

#: Faults that replace the whole response before auth and validation run. ``drop_mid_request``
#: reads only the first ``after_bytes`` (default 64 KiB) of the request body, then drops the
#: connection: the client's body never finishes going out, and nothing is stored or billed.
#: ``http_404`` is the spec's infrastructure 404 (a gateway without the route, Spring-style body):
#: it says nothing about the video asked for.
EARLY_KINDS = frozenset(
    {
        "http_500",
        "http_503",
        "http_404",
        "http_401",
        "code_0429",
        "http_429",
        "drop_before_response",
        "drop_mid_request",
    }
)
#: Faults applied to the response the request would otherwise have got.
LATE_KINDS = frozenset({"drop_mid_body", "slow_body", "json_error", "accept_then_drop"})
#: Bodies a download may come back with instead of the file, all with HTTP 200 (the spec: errors
#: arrive "possibly with HTTP 200"; a body is what it is, not what its headers say):
#: ``html_page`` a login page, ``empty_body`` zero bytes, ``cut_unframed`` the file cut after
#: ``after`` bytes with neither Content-Length nor chunking (the end is the connection closing).
#: ``json_error`` (above) also takes ``content_type`` ("" sends none) and ``msg_key`` ("message").
DOWNLOAD_BODY_KINDS = frozenset({"html_page", "empty_body", "cut_unframed"})
#: Where ``json_error`` refuses the request instead of replacing its answer: an upload answered
#: with an error was not accepted (spec: every accepted upload answers its video), so it is
#: neither stored nor billed. Elsewhere the request is handled and only its answer is replaced.
REFUSING_ENDPOINTS = frozenset({"upload", "upload_url"})
DOWNLOAD_ENDPOINTS = frozenset({"download", "v2_download"})
#: Listings that misbehave (``list_videos`` only; the handler runs, the page it serves is wrong):
#: ``ignore_page`` answers page 1 whatever ``page`` asks for (a gateway or edition that drops the
#: parameter), ``no_rows`` answers the page asked for with its ``total_count`` but no videos (pages
#: that never reach the total). Each hit call is one page.
LISTING_KINDS = frozenset({"ignore_page", "no_rows"})
#: ``none`` answers normally: queued first, it aims the next fault at a later call.
NO_FAULT = "none"
#: Endpoints whose requests name videos by ``video_no`` (query or JSON body): where a fault may be
#: aimed at one video. Uploads name none (the service makes the id), nor do v2 downloads (assets).
NAMING_ENDPOINTS = frozenset(
    {
        "get_metadata",
        "list_videos",
        "delete_videos",
        "download",
        "get_video_caption",
        "get_audio_transcription",
        "get_video_transcription",
    }
)
KINDS = EARLY_KINDS | LATE_KINDS | DOWNLOAD_BODY_KINDS | LISTING_KINDS | {NO_FAULT}


@dataclass
class Fault:
    """One injected fault; ``count`` calls left to hit, one call in ``every`` hit."""

    kind: str
    count: int
    params: dict[str, Any] = field(default_factory=dict)
    every: int = 1
    passed: int = 0  # calls let through since the last hit
    video_no: str | None = None  # hit only calls naming this video


class FaultBook:
    """The pending faults of every endpoint."""

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[Fault]] = collections.defaultdict(collections.deque)

    def reset(self) -> None:
        """Drop every pending fault."""
        self._queues.clear()

    def add(
        self,
        endpoint: str,
        kind: str,
        count: int = 1,
        params: dict[str, Any] | None = None,
        every: int = 1,
        video_no: str | None = None,
    ) -> None:
        """Queue ``kind`` for ``count`` calls of ``endpoint`` (after faults already queued).

        :param every: hit one call in ``every`` (the last of each ``every`` calls), let the others through.
        :param video_no: hit only calls that name this video; the others pass and are not counted.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        if kind == "accept_then_drop" and endpoint not in ("upload", "upload_url"):
            raise ValueError("accept_then_drop applies to upload and upload_url only")
        if kind in DOWNLOAD_BODY_KINDS and endpoint not in DOWNLOAD_ENDPOINTS:
            raise ValueError(f"{kind} applies to download and v2_download only")
        if kind in LISTING_KINDS and endpoint != "list_videos":
            raise ValueError(f"{kind} applies to list_videos only")
        if kind == "json_error" and (params or {}).get("msg_key", "msg") not in ("msg", "message"):
            raise ValueError("json_error: msg_key must be 'msg' or 'message'")
        if count < 1:
            raise ValueError("count must be >= 1")
        if every < 1:
            raise ValueError("every must be >= 1")
        if video_no is not None:
            if not isinstance(video_no, str) or not video_no:
                raise ValueError("video_no must be a non-empty string")
            if endpoint not in NAMING_ENDPOINTS:
                raise ValueError(
                    f"video_no: {endpoint} requests name no video; "
                    f"aim at one of {', '.join(sorted(NAMING_ENDPOINTS))}"
                )
        self._queues[endpoint].append(Fault(kind, count, dict(params or {}), every=every, video_no=video_no))

    def aimed(self, endpoint: str) -> bool:
        """Whether the next fault of ``endpoint`` hits only calls naming a video (see :meth:`take`)."""
        queue = self._queues.get(endpoint)
        return queue is not None and bool(queue) and queue[0].video_no is not None

    def take(self, endpoint: str, named: frozenset[str] = frozenset()) -> Fault | None:
        """Consume one call's worth of the first pending fault of ``endpoint``.

        :param named: the videos the call names; a fault aimed at another video lets it through.
        """
        queue = self._queues.get(endpoint)
        if not queue:
            return None
        fault = queue[0]
        if fault.video_no is not None and fault.video_no not in named:
            return None
        if fault.passed + 1 < fault.every:
            fault.passed += 1
            return None
        fault.passed = 0
        fault.count -= 1
        if fault.count <= 0:
            queue.popleft()
        return fault

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        """JSON view of what is still queued."""
        return {
            ep: [
                {"kind": f.kind, "count": f.count, "params": f.params, "every": f.every}
                | ({"video_no": f.video_no} if f.video_no is not None else {})
                for f in q
            ]
            for ep, q in self._queues.items()
            if q
        }

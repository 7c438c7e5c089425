"""MemoriesVideoStatusTrigger: waits in the triggerer until videos are indexed (``PARSE``)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from memories_provider.hooks.connection import DEFAULT_CONN_ID

#: The shared poller's module, imported in a thread on first use (it brings aiohttp and the hook).
_POLLER_MODULE = "memories_provider.triggers._poller"

#: Most video ids a fired event's log line names.
_IDS_SHOWN = 5


def short_ids(video_nos: list[str]) -> str:
    """``VI1, VI2, ... (+N more)``: at most :data:`_IDS_SHOWN` ids, for one log line."""
    shown = ", ".join(video_nos[:_IDS_SHOWN])
    more = len(video_nos) - _IDS_SHOWN
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


class VideoStatusTriggerEvent(TriggerEvent):
    """The trigger's event, told in one short line.

    The triggerer logs every event it fires with its ``repr``: for this one the payload holds
    every video's whole metadata, a line of kilobytes. Its status and ids say what happened;
    the payload itself is unchanged.
    """

    def __repr__(self) -> str:
        payload = self.payload if isinstance(self.payload, dict) else {}
        ids = [str(video.get("video_no")) for video in payload.get("videos") or [] if isinstance(video, dict)]
        return f"VideoStatusEvent<status={payload.get('status')!s}, videos=[{short_ids(ids)}]>"

    def __str__(self) -> str:
        return repr(self)


class MemoriesVideoStatusTrigger(BaseTrigger):
    """Fires once every video is ``PARSE``, one has failed, or ``end_time`` has passed.

    All triggers of the same connection and ``unique_id`` in one triggerer share one polling
    loop (see :mod:`memories_provider.triggers._poller`): N waiting videos cost about
    ceil(N/200) ``list_videos`` requests per poll interval, paced under the documented 5/s.
    Transient errors (5xx, timeouts, ``0429``) are retried with back-off and never end the wait,
    with one exception: a video whose own status request keeps failing while the service answers
    the others' (a row it cannot list) ends the waits holding it with ``error``, naming it, after
    ``MAX_LONE_FAILURES`` rounds; it never holds back the other videos' checks meanwhile.
    The kwargs are plain JSON — the API key is looked up (asynchronously) from the connection.

    Unlike the usual one-session-per-``run()`` trigger, the HTTP session belongs to the shared
    poller: it opens it when its first trigger joins and closes it as soon as its last trigger
    leaves (fires, times out or is cancelled) — at once from its sleep, or when a request in
    flight returns. A trigger holds no state of its own beyond its place
    in the poller, which ``run()`` gives up on its way out (also when cancelled), so there is no
    ``cleanup()``. The ``timeout`` event fires at ``end_time`` even while a status request is in
    flight, ahead of the deferral's own timeout. The poller logs to the triggerer's log, not to
    any one task's: it serves every trigger.

    The single event is ``{"status": "success" | "failed" | "timeout" | "error", "message": str,
    "videos": [video metadata, ...]}``.

    :param video_nos: ids of the videos to wait for.
    :param memories_conn_id: the memories.ai connection.
    :param unique_id: namespace of the videos; ``None`` uses the connection's default.
    :param poll_interval: seconds between two status checks.
    :param end_time: epoch seconds (UTC) after which the trigger fires ``timeout``; ``None``: never.
    :param missing_is_pending: a video not listed is "not listed yet" (keep waiting), not unknown
        (``failed``): for a video just uploaded, which the service may list only a little later.
    """

    def __init__(
        self,
        video_nos: list[str],
        memories_conn_id: str = DEFAULT_CONN_ID,
        unique_id: str | None = None,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        missing_is_pending: bool = False,
    ) -> None:
        super().__init__()
        if not video_nos:
            raise ValueError("`video_nos` must hold at least one video id")
        self.video_nos = [str(v) for v in video_nos]
        self.memories_conn_id = memories_conn_id
        self.unique_id = unique_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.missing_is_pending = bool(missing_is_pending)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and JSON kwargs (never the key); ``missing_is_pending`` only when set, so the
        kwargs of the usual trigger are those earlier versions stored."""
        kwargs: dict[str, Any] = {
            "video_nos": list(self.video_nos),
            "memories_conn_id": self.memories_conn_id,
            "unique_id": self.unique_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
        }
        if self.missing_is_pending:
            kwargs["missing_is_pending"] = True
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Join the shared poller and yield its verdict for our videos as the one event."""
        # The triggerer imports this module inside its event loop: keep it light, and import the
        # client stack (aiohttp, requests, the hook) in a thread so the loop is never blocked.
        module = sys.modules.get(_POLLER_MODULE)
        if module is None or getattr(module.__spec__, "_initializing", False):
            # Once imported, join at once: a thread hop per trigger would spread a thousand
            # triggers' arrivals over the poller's first rounds.
            module = await asyncio.to_thread(importlib.import_module, _POLLER_MODULE)
        poller = module.get_poller(self.memories_conn_id, self.unique_id)
        self.log.info(
            "Waiting for %d video(s) to be parsed (%s; poll every %gs)",
            len(self.video_nos),
            short_ids(self.video_nos),
            self.poll_interval,
        )
        event = await poller.wait(
            self.video_nos,
            poll_interval=self.poll_interval,
            end_time=self.end_time,
            missing_is_pending=self.missing_is_pending,
        )
        yield VideoStatusTriggerEvent(payload=event)

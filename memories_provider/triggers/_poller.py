"""One status-polling loop per triggerer for all the videos its triggers wait on.

Every :class:`MemoriesVideoStatusTrigger` of the same connection and ``unique_id`` running in one
event loop registers its videos with the same :class:`StatusPoller`. The poller checks all of
them together with ``list_videos(video_nos=[...])``, at most 100 ids per request, so N waiting
videos cost about ceil(N/100) requests per poll interval instead of N. Requests of one connection
are spaced so the account stays under the documented 5 requests/second. Transient errors (5xx,
timeouts, ``0429``) back off and poll again; they never end a wait. Each wait fires its own
``timeout`` at its ``end_time`` even while a round is in flight, so a deferral's own timeout never
has to. A trigger that is cancelled simply leaves; when the last one leaves, the loop wakes, ends
and closes its HTTP session.

The poller's task runs in an empty :mod:`contextvars` context: it serves every trigger, so it must
not inherit the log context (task instance, trigger id) of the trigger that happened to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from memories_provider.client import AsyncMemoriesClient, MemoriesError, Video
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.status import batches, evaluate, is_transient

log = logging.getLogger(__name__)

#: Least seconds between two status requests of one connection: 4/s, under the documented 5/s.
MIN_REQUEST_SPACING = 0.25
#: Longest back-off after repeated transient errors, in seconds.
MAX_BACKOFF = 300.0


@dataclass(eq=False)
class _Waiter:
    """One trigger's wait."""

    video_nos: list[str]
    poll_interval: float
    end_time: float | None
    future: asyncio.Future[dict[str, Any]]
    deadline: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Pacer:
    """Spaces the requests of one connection across all its pollers in a loop."""

    spacing: float = MIN_REQUEST_SPACING
    next_slot: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            if self.next_slot > now:
                await asyncio.sleep(self.next_slot - now)
            self.next_slot = max(now, self.next_slot) + self.spacing


# Per running event loop: the pollers and the per-connection pacers. Weak keys: a closed loop
# (tests, a restarted triggerer) takes its pollers with it.
_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str | None], StatusPoller]] = (
    weakref.WeakKeyDictionary()
)
_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Pacer]] = weakref.WeakKeyDictionary()


def get_poller(memories_conn_id: str, unique_id: str | None) -> StatusPoller:
    """The running loop's poller for this connection and ``unique_id`` (created on first use)."""
    loop = asyncio.get_running_loop()
    pollers = _POLLERS.setdefault(loop, {})
    key = (memories_conn_id, unique_id)
    poller = pollers.get(key)
    if poller is None:
        pacer = _PACERS.setdefault(loop, {}).setdefault(memories_conn_id, _Pacer())
        poller = pollers[key] = StatusPoller(memories_conn_id, unique_id, pacer)
    return poller


def active_pollers() -> list[StatusPoller]:
    """The running loop's pollers (for tests and diagnostics)."""
    return list(_POLLERS.get(asyncio.get_running_loop(), {}).values())


class StatusPoller:
    """Polls the statuses of every video its waiters wait on, in batches.

    :param memories_conn_id: the memories.ai connection.
    :param unique_id: the namespace of the videos (``None``: the connection's default).
    :param pacer: request spacing shared by the pollers of the same connection.
    """

    def __init__(self, memories_conn_id: str, unique_id: str | None, pacer: _Pacer) -> None:
        self.memories_conn_id = memories_conn_id
        self.unique_id = unique_id
        self.pacer = pacer
        self.requests = 0
        self._waiters: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None
        # Set when the last waiter leaves, so a sleeping loop ends now rather than after its sleep.
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"StatusPoller(memories_conn_id={self.memories_conn_id!r}, unique_id={self.unique_id!r}, "
            f"waiters={len(self._waiters)})"
        )

    async def wait(
        self, video_nos: list[str], *, poll_interval: float, end_time: float | None
    ) -> dict[str, Any]:
        """Wait until ``video_nos`` are all ``PARSE``, one failed, or ``end_time`` passed.

        Returns the trigger event payload ``{"status", "message", "videos"}``.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            video_nos=list(video_nos),
            poll_interval=poll_interval,
            end_time=end_time,
            future=loop.create_future(),
        )
        if end_time is not None:
            # A timer, not a check between rounds: a stalled request must not outlast the deadline.
            waiter.deadline = loop.call_later(max(0.0, end_time - time.time()), _time_out, waiter)
        self._waiters.append(waiter)
        # A newcomer is checked at the loop's next tick, not at once: waking the loop per trigger
        # would cost a request per trigger when thousands defer one after another. (Sensors and the
        # upload operator check once on the worker before deferring, so nothing is lost.)
        if self._task is None or self._task.done():
            self._start()
        try:
            return await waiter.future
        finally:
            # Normal end, timeout or cancellation (trigger cancelled, task reassigned): leave the loop.
            if waiter.deadline is not None:
                waiter.deadline.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not self._live():
                self._wake.set()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # An empty context: the task would otherwise copy the starting trigger's (its log binding).
        self._task = contextvars.Context().run(
            loop.create_task, self._run(), name=f"memories-status-poller-{self.memories_conn_id}"
        )

    def _live(self) -> list[_Waiter]:
        return [w for w in self._waiters if not w.future.done()]

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            hook = MemoriesHook(memories_conn_id=self.memories_conn_id)
            # unique_id=None means the connection's default scope (as on the worker), not the service's.
            scope = self.unique_id or (await hook.aget_config()).unique_id
            async with await hook.get_async_client() as client:
                await self._loop(client, scope)
        except Exception as err:  # a broken connection config: every waiter must hear about it
            log.exception("memories.ai status poller stopped")
            self._finish_all({"status": "error", "message": f"status polling failed: {err}", "videos": []})
        finally:
            if self._live():
                # Someone registered while the session was closing: serve them with a fresh loop.
                self._start()
            else:
                pollers = _POLLERS.get(asyncio.get_running_loop(), {})
                if pollers.get((self.memories_conn_id, self.unique_id)) is self:
                    del pollers[(self.memories_conn_id, self.unique_id)]

    async def _loop(self, client: AsyncMemoriesClient, scope: str) -> None:
        failures = 0
        while True:
            waiters = self._live()
            if not waiters:
                return
            try:
                found = await self._fetch(client, waiters, scope)
            except MemoriesError as err:
                if not is_transient(err):
                    self._finish_all(
                        {"status": "error", "message": f"status polling failed: {err}", "videos": []}
                    )
                    return
                failures += 1
                delay = min(MAX_BACKOFF, min(w.poll_interval for w in waiters) * 2 ** min(failures, 8))
                # The service said how long to stay away: never come back sooner.
                delay = max(delay, getattr(err, "retry_after", None) or 0.0)
                log.warning("memories.ai status check failed (%s); polling again in %.1fs", err, delay)
                await self._sleep(delay)
                continue
            failures = 0
            for waiter in waiters:
                outcome = evaluate(waiter.video_nos, found)
                if outcome.status != "pending" and not waiter.future.done():
                    waiter.future.set_result(
                        {"status": outcome.status, "message": outcome.message, "videos": outcome.videos}
                    )
            pending = self._live()
            if not pending:
                return
            await self._sleep(min(w.poll_interval for w in pending))

    async def _fetch(
        self, client: AsyncMemoriesClient, waiters: list[_Waiter], scope: str
    ) -> dict[str, Video]:
        ids = sorted({v for w in waiters for v in w.video_nos})
        found: dict[str, Video] = {}
        for batch in batches(ids):
            await self.pacer.wait()
            if all(w.future.done() for w in waiters):
                break  # every wait ended during the round (deadline, cancellation): stop asking
            self.requests += 1
            page = await client.list_videos(video_nos=batch, size=len(batch), unique_id=scope)
            found.update((v.video_no, v) for v in page.videos if v.video_no in batch)
        return found

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until the last waiter leaves."""
        if not self._live():
            return
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _finish_all(self, event: dict[str, Any]) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(event)


def _time_out(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_result(
            {
                "status": "timeout",
                "message": f"timed out waiting for {', '.join(waiter.video_nos)} to be parsed",
                "videos": [],
            }
        )

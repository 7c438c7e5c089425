"""One status-polling loop per triggerer for all the videos its triggers wait on.

Every :class:`MemoriesVideoStatusTrigger` of the same connection and ``unique_id`` running in one
event loop registers its videos with the same :class:`StatusPoller`. The poller checks all of
them together with ``list_videos(video_nos=[...])``, at most 200 ids per request, so N waiting
videos cost about ceil(N/200) requests per poll interval instead of N.

A round (:class:`~memories_provider.status.StatusRound`) asks its batches one after another; each
answer settles at once the waits it completes. A batch refused for a bad id is split until that id
is alone: only the waits holding it fail. A batch that fails transiently (5xx, timeout) is asked
again after the round's other batches, so one batch that keeps failing never holds back the others:
when the request just before it was answered (the service is up; the trouble is this batch's own)
it is split in halves, down to the id that fails it, which later rounds ask alone. An id whose lone
request fails :data:`MAX_LONE_FAILURES` rounds in a row, each time right after the service answered
another request, ends the waits holding it with ``error`` (the task's retries apply), naming it and
the error; an outage, where nothing is answered, never does. Rounds start a poll interval apart (at
once when a round took longer).

Requests of one connection are paced by :class:`_Pacer`, from the service's answers only: each
``0429`` halves the rate and holds requests back for its ``Retry-After`` (spread a little above it,
so that triggerers turned away together do not come back together), each success adds a little
back, so several triggerers sharing one account settle just under its limit without talking to
each other. Other transient errors (5xx, timeouts) back off, unless the request before was
answered, and go on with the round; they never end a wait but as said above. Each wait fires
its own ``timeout`` at its ``end_time`` even while a request is in flight, naming the videos
still waiting and the status last seen; and no request outlasts the latest
``end_time`` of the waits it serves. A trigger that is cancelled simply leaves; when the last one
leaves, the loop wakes, ends and closes its HTTP session.

The poller's task runs in an empty :mod:`contextvars` context: it serves every trigger, so it must
not inherit the log context (task instance, trigger id) of the trigger that happened to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import math
import random
import time
import weakref
from dataclasses import dataclass, field

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesError,
    MemoriesRateLimitError,
    RetryPolicy,
    VideoPage,
)
from memories_provider.client.deadline import within
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.preflight import CreditsRefusedError, account_refusal
from memories_provider.status import (
    NOT_LISTED,
    StatusRound,
    evaluate,
    is_transient,
    shown_status,
    timeout_message,
)
from memories_provider.types import VideoStatusEvent

log = logging.getLogger(__name__)

#: Least seconds between two status requests of one connection in one loop: at most 4/s, under
#: the documented 5/s (the pacer's ceiling).
MIN_REQUEST_SPACING = 0.25
#: Least status requests per second the pacer slows down to.
MIN_RATE = 0.2
#: Status requests per second a pacer starts at.
START_RATE = 1.0
#: Until its first ``0429`` a pacer adds this to its rate per answered request (slow start: it
#: grows by 10 % a second), so a lone poller soon runs at full speed and pollers starting
#: together reach their shares at the same pace.
SLOW_START_STEP = 0.1
#: Factor the rate is multiplied by on the first ``0429``, which ends slow start and its overshoot.
SLOW_START_EXIT = 0.5
#: After slow start, each answered request adds RATE_INCREASE x ACCOUNT_LIMIT / rate requests per
#: second per second of requests: pacers with small shares of the account grow back fastest.
RATE_INCREASE = 0.003
#: The account's documented status limit (requests per second), shared by everyone using it.
ACCOUNT_LIMIT = 5.0
#: Factor the rate is multiplied by on a later ``0429`` (multiplicative decrease).
RATE_DECREASE = 0.7
#: Longest back-off after repeated transient errors other than rate limits, in seconds.
MAX_BACKOFF = 300.0
#: Longest ``Retry-After`` honoured, in seconds: the client's own cap
#: (:attr:`RetryPolicy.max_retry_after`). The pacer outlives every wait of its connection in this
#: triggerer, so an unbounded one ("Retry-After: 1e9") would starve all later waits of it.
MAX_RETRY_AFTER = RetryPolicy.max_retry_after
#: A pause after ``0429`` lasts its ``Retry-After`` (or a spacing) times a random factor in
#: [1, 1 + PAUSE_SPREAD] (at most :data:`MAX_RETRY_AFTER`); so does a back-off after another
#: transient error.
PAUSE_SPREAD = 0.25
#: Rounds in a row an id's own request may fail (transiently, right after the service answered
#: another request) before the waits holding it end with ``error``. Not sooner: a 5xx is usually
#: a blip; not never: a row the service cannot list would otherwise hold its waits, silently, until
#: their timeouts (a sensor's default is 7 days).
MAX_LONE_FAILURES = 10


@dataclass(eq=False)
class _Waiter:
    """One trigger's wait."""

    video_nos: list[str]
    poll_interval: float
    end_time: float | None
    future: asyncio.Future[VideoStatusEvent]
    deadline: asyncio.TimerHandle | None = None
    missing_is_pending: bool = False  # a video not listed is not listed *yet* (just uploaded)


@dataclass(eq=False)
class _Pacer:
    """Paces the status requests of one connection in one event loop by the service's answers (AIMD).

    Triggerers, workers and users' scripts share an account's limit and cannot see each other;
    the service's answers are their one common signal. A pacer starts at :data:`START_RATE` and
    grows by 10 % a second until its first ``0429`` (slow start), which halves it. From then on
    each ``0429`` multiplies the rate by :data:`RATE_DECREASE`, and answered requests add it back
    slowly, the faster the smaller the rate (see :data:`RATE_INCREASE`), up to
    ``1 / MIN_REQUEST_SPACING``. Every ``0429`` also holds the pacer's requests back for its
    ``Retry-After`` (at least one new spacing). K pacers sharing a limit thus settle under it: the
    one that meets a ``0429`` gives up part of its share and the others grow into it.
    """

    rate: float = START_RATE
    slow_start: bool = True
    next_slot: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Until then a further 0429 is from requests sent before the last cut: do not cut again.
    cut_until: float = 0.0
    answered: int = 0
    rate_limited: int = 0

    async def wait(self) -> None:
        """Wait for this connection's next request slot."""
        async with self.lock:
            # Re-read after each sleep: a 0429 meanwhile moves the slot further away.
            for _ in range(100):
                delay = self.next_slot - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self.next_slot = time.monotonic() + 1 / self.rate

    def on_answer(self) -> None:
        """A request was answered (not rate-limited): speed up a little."""
        self.answered += 1
        # rate answers a second, each adding RATE_INCREASE x ACCOUNT_LIMIT / rate**2: the pacers
        # with the smaller shares grow back faster, so K of them even out.
        step = SLOW_START_STEP if self.slow_start else RATE_INCREASE * ACCOUNT_LIMIT / self.rate**2
        self.rate = min(1 / MIN_REQUEST_SPACING, self.rate + step)

    def on_rate_limit(self, retry_after: float | None) -> float:
        """A request drew ``0429``: slow down and pause; returns the pause in seconds."""
        self.rate_limited += 1
        now = time.monotonic()
        if self.slow_start:
            self.slow_start = False
            self.rate = max(MIN_RATE, self.rate * SLOW_START_EXIT)
        elif now >= self.cut_until:
            self.rate = max(MIN_RATE, self.rate * RATE_DECREASE)
        floor = max(min(retry_after or 0.0, MAX_RETRY_AFTER), 1 / self.rate)
        # Spread above the floor: the triggerers of an account that one storm turned away are all
        # told the same Retry-After, and would otherwise all come back in the same instant.
        pause = max(floor, min(floor * random.uniform(1.0, 1.0 + PAUSE_SPREAD), MAX_RETRY_AFTER))
        self.cut_until = max(self.cut_until, now + pause)
        self.next_slot = max(self.next_slot, now + pause)
        return pause


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
    :param pacer: request pacing shared by the pollers of the same connection.
    """

    def __init__(self, memories_conn_id: str, unique_id: str | None, pacer: _Pacer) -> None:
        self.memories_conn_id = memories_conn_id
        self.unique_id = unique_id
        self.pacer = pacer
        self.requests = 0
        #: id -> the status last listed, for timeout messages (pruned to waited-for ids every round).
        self.last_seen: dict[str, str] = {}
        #: Why the last request failed, while no request has succeeded since.
        self.last_error: str | None = None
        #: id -> rounds in a row its lone request failed while the service answered others; such
        #: ids are asked alone (a bad row must not fail the 199 ids batched with it).
        self.strikes: dict[str, int] = {}
        # Whether the last request was answered: a failure right after one is the batch's own.
        self._answered_last = False
        self._waiters: list[_Waiter] = []
        self._by_id: dict[str, list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        # Set when the last waiter leaves, so a sleeping loop ends now rather than after its sleep.
        self._wake = asyncio.Event()
        # Set when a wait joins that polls more often than the rounds now do: the sleep between
        # rounds is shortened to its interval (another wait's hour must not become its own).
        self._faster = asyncio.Event()
        #: The interval the rounds run at now (the shortest of the live waits' when last computed).
        self._interval = math.inf
        #: The hook whose settings the running loop uses, and the one holding the connection's new
        #: settings once a refusal of the key found it edited (see :meth:`_edited_connection`).
        self._hook: MemoriesHook | None = None
        self._reconnect: MemoriesHook | None = None

    def __repr__(self) -> str:
        return (
            f"StatusPoller(memories_conn_id={self.memories_conn_id!r}, unique_id={self.unique_id!r}, "
            f"waiters={len(self._waiters)})"
        )

    async def wait(
        self,
        video_nos: list[str],
        *,
        poll_interval: float,
        end_time: float | None,
        missing_is_pending: bool = False,
    ) -> VideoStatusEvent:
        """Wait until ``video_nos`` are all ``PARSE``, one failed, or ``end_time`` passed.

        :param missing_is_pending: a video not listed keeps the wait going (see
            :func:`~memories_provider.status.evaluate`) instead of failing it as unknown.

        Returns the trigger event payload ``{"status", "message", "videos"}``.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            video_nos=list(dict.fromkeys(video_nos)),
            poll_interval=poll_interval,
            end_time=end_time,
            future=loop.create_future(),
            missing_is_pending=missing_is_pending,
        )
        if end_time is not None:
            # A timer, not a check between rounds: a stalled request must not outlast the deadline.
            waiter.deadline = loop.call_later(max(0.0, end_time - time.time()), self._time_out, waiter)
        self._waiters.append(waiter)
        for video_no in waiter.video_nos:
            self._by_id.setdefault(video_no, []).append(waiter)
        # A newcomer is checked in the loop's next round, not at once: waking the loop per trigger
        # would cost a request per trigger when thousands defer one after another. (Sensors and the
        # upload operator check once on the worker before deferring, so nothing is lost.)
        if self._task is None or self._task.done():
            self._start()
        elif poll_interval < self._interval:
            self._faster.set()
        try:
            return await waiter.future
        finally:
            # Normal end, timeout or cancellation (trigger cancelled, task reassigned): leave the loop.
            if waiter.deadline is not None:
                waiter.deadline.cancel()
            self._leave(waiter)
            if not self._live():
                self._wake.set()

    def _leave(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        for video_no in waiter.video_nos:
            holders = self._by_id.get(video_no, [])
            if waiter in holders:
                holders.remove(waiter)
            if not holders:
                self._by_id.pop(video_no, None)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # An empty context: the task would otherwise copy the starting trigger's (its log binding).
        self._task = contextvars.Context().run(
            loop.create_task, self._run(), name=f"memories-status-poller-{self.memories_conn_id}"
        )

    def _live(self) -> list[_Waiter]:
        return [w for w in self._waiters if not w.future.done()]

    def _wanted(self, video_no: str) -> bool:
        return any(not w.future.done() for w in self._by_id.get(video_no, ()))

    def _time_left(self) -> float | None:
        """Seconds until the last live wait's ``end_time`` (``None``: one waits without end)."""
        ends = [w.end_time for w in self._live()]
        if not ends or None in ends:
            return None
        return max(e for e in ends if e is not None) - time.time()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            hook = MemoriesHook(memories_conn_id=self.memories_conn_id)
            # unique_id=None means the connection's default scope (as on the worker), not the
            # service's; decided once, when the loop starts, even if the connection is edited later.
            scope = self.unique_id or (await hook.aget_config()).unique_id
            serving: MemoriesHook | None = hook
            while serving is not None:
                self._hook = hook = serving
                config = await hook.aget_config()
                # Rate limits come back to the loop, whose pacer learns from them; the client still
                # retries the other transient errors of one request.
                policy = dataclasses.replace(hook.retry_policy(config), retry_rate_limits=False)
                async with await hook.get_async_client(retry=policy) as client:
                    await self._loop(client, scope)
                # The key was refused and the connection holds other settings now (a rotated key):
                # go on with them, in a new session.
                serving, self._reconnect = self._reconnect, None
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
        round_: StatusRound | None = None
        round_started = 0.0
        while True:
            if round_ is None or round_.done:
                if round_ is not None:
                    await self._until_next_round(round_started)
                waiters = self._live()
                if not waiters:
                    return
                # Rounds start a poll interval apart, so each video is asked about once per interval.
                round_started = time.monotonic()
                self._interval = min(w.poll_interval for w in waiters)
                self.last_seen = {v: s for v, s in self.last_seen.items() if v in self._by_id}
                self.strikes = {v: n for v, n in self.strikes.items() if v in self._by_id}
                round_ = StatusRound(sorted(self._by_id), alone=sorted(self.strikes))
            if round_.next_batch(self._wanted) is not None and not await self._paced():
                continue  # the last waiter left while the pacer held us back: the loop ends
            batch = round_.next_batch(self._wanted)  # again: waits may have ended meanwhile
            if batch is None:
                continue
            try:
                page = await self._list(client, batch, scope)
            except MemoriesError as err:
                failures = await self._failed(err, batch, round_, failures, probe=(client, scope))
                if failures < 0:
                    return
                continue
            failures = 0
            self.last_error = None
            self._answered_last = True
            for video_no in batch:
                self.strikes.pop(video_no, None)
            self.pacer.on_answer()
            videos = round_.answered(batch, page)
            self.last_seen.update((v, NOT_LISTED) for v in batch if v in round_.asked)
            for video in videos:
                self.last_seen[video.video_no] = shown_status(video)
            self._settle(batch, round_)

    async def _failed(
        self,
        err: MemoriesError,
        batch: list[str],
        round_: StatusRound,
        failures: int,
        *,
        probe: tuple[AsyncMemoriesClient, str],
    ) -> int:
        """Deal with a failed request; returns the transient failures in a row, or -1 to stop polling.

        A refused batch is split (the round goes on); a rate limit slows the pacer; another
        transient error sets the batch aside (see :meth:`StatusRound.set_aside`): split, at once,
        when the request before was answered; else whole, after a back-off of
        ``interval * 2**failures`` and never sooner than ``Retry-After``, spread up to
        :data:`PAUSE_SPREAD` above that.
        Anything else ends every wait with ``error``.
        """
        self.last_error = str(err)
        if round_.refused(batch, err):
            self._answered_last = True
            self.pacer.on_answer()
            self._settle(batch, round_)
            return failures
        if not self._live():
            return failures  # the waits ended meanwhile (e.g. their deadline cut the request short)
        if not is_transient(err):
            # A refused key, account or balance fails every wait for good ("failed": no task retry
            # sends the same key again); anything else is an error the task's retries may outlast.
            refused = account_refusal(err)
            if refused is not None:
                # The waits may have been deferred long before the key was rotated: a refusal of a
                # key the connection no longer holds says nothing about the one it holds now.
                self._reconnect = await self._edited_connection()
                if self._reconnect is not None:
                    log.warning(
                        "memories.ai refused the status check (%s); connection %r was edited since the "
                        "poller read it: going on with its new settings",
                        refused,
                        self.memories_conn_id,
                    )
                    return -1
            event: VideoStatusEvent = {
                "status": "error" if refused is None else "failed",
                "message": f"status polling failed: {refused or err}",
                "videos": [],
            }
            if refused is not None:  # the sensor fails for it even with soft_fail (not a failed video)
                event["refused"] = "credits" if isinstance(refused, CreditsRefusedError) else "account"
            self._finish_all(event)
            return -1
        if isinstance(err, MemoriesRateLimitError):
            pause = self.pacer.on_rate_limit(err.retry_after)
            log.info(
                "memories.ai status check rate-limited; %.2f requests/s from now, after %.2fs",
                self.pacer.rate,
                pause,
            )
            return failures  # the same batch, once the pacer allows
        # The service answered the request just before this one: this batch's own trouble (one
        # row it cannot list?). Ask the others first, and split it to find the id that fails it.
        evidenced, self._answered_last = self._answered_last, False
        if not evidenced and len(batch) == 1 and batch[0] in self.strikes:
            # An id already found failing its batches, and nothing answered just before (its wait
            # may be the last one): does the service answer a listing that does not name it?
            evidenced = await self._answers_others(*probe)
        lone = round_.set_aside(batch, split=evidenced)
        if evidenced:
            if lone is not None:
                self._strike(lone, err)
            log.warning(
                "memories.ai status check of %d video(s) failed (%s) while others were answered; "
                "asking the other batches first",
                len(batch),
                err,
            )
            return failures
        failures += 1
        interval = min((w.poll_interval for w in self._live()), default=1.0)
        policy = RetryPolicy(initial_delay=2 * interval, max_delay=MAX_BACKOFF, jitter=False)
        delay = policy.backoff(min(failures, 8))  # interval * 2**failures, at most MAX_BACKOFF
        # The service said how long to stay away: never come back sooner.
        delay = max(delay, min(err.retry_after or 0.0, MAX_RETRY_AFTER))
        # Spread above it, as a rate-limit pause is: triggerers that one outage failed together
        # would otherwise all come back at the same instant.
        delay *= random.uniform(1.0, 1.0 + PAUSE_SPREAD)
        log.warning("memories.ai status check failed (%s); resuming in %.1fs", err, delay)
        await self._sleep(delay)
        return failures

    async def _edited_connection(self) -> MemoriesHook | None:
        """A hook holding the connection's settings as they are now, if they differ from those the
        loop uses (``None``: unchanged, or the connection cannot be read any more)."""
        fresh = MemoriesHook(memories_conn_id=self.memories_conn_id)
        try:
            config = await fresh.aget_config()
        except Exception as err:  # deleted or broken meanwhile: the refusal stands
            log.warning("could not read connection %r again: %s", self.memories_conn_id, err)
            return None
        in_use = None if self._hook is None else await self._hook.aget_config()
        return fresh if config != in_use else None

    async def _answers_others(self, client: AsyncMemoriesClient, scope: str) -> bool:
        """Whether the service answers a status request right now that names none of our ids
        (one row of the scope), in the pacer's next slot."""
        if not await self._paced():
            return False
        self.requests += 1
        try:
            with within(self._time_left()):
                await client.list_videos(page=1, size=1, unique_id=scope)
        except MemoriesRateLimitError as err:
            self.pacer.on_rate_limit(err.retry_after)
            return False
        except MemoriesError:
            return False
        self.pacer.on_answer()
        return True

    def _strike(self, video_no: str, err: MemoriesError) -> None:
        """``video_no``'s lone request failed right after another was answered: count it, and end
        the waits holding it once that has happened :data:`MAX_LONE_FAILURES` rounds in a row."""
        strikes = self.strikes[video_no] = self.strikes.get(video_no, 0) + 1
        if strikes < MAX_LONE_FAILURES:
            return
        message = (
            f"memories.ai failed every status check of {video_no} ({strikes} in a row, asked alone, "
            f"while it answered the other videos'): {err}"
        )
        log.error("%s; ending the waits for it", message)
        for waiter in list(self._by_id.get(video_no, ())):
            if not waiter.future.done():
                waiter.future.set_result({"status": "error", "message": message, "videos": []})

    async def _list(self, client: AsyncMemoriesClient, batch: list[str], scope: str) -> VideoPage:
        self.requests += 1
        # No request outlasts the waits it serves.
        with within(self._time_left()):
            return await client.list_videos(video_nos=batch, size=len(batch), unique_id=scope)

    def _settle(self, batch: list[str], round_: StatusRound) -> None:
        """End the waits this batch completed: all their videos answered in this round."""
        waiters = {w for v in batch for w in self._by_id.get(v, ()) if not w.future.done()}
        for waiter in waiters:
            if not all(v in round_.asked for v in waiter.video_nos):
                continue
            outcome = evaluate(
                waiter.video_nos,
                round_.found,
                missing_is_pending=waiter.missing_is_pending,
                rejected=round_.rejected,
                unsent=round_.unsent,
            )
            if outcome.status != "pending":
                waiter.future.set_result(
                    {"status": outcome.status, "message": outcome.message, "videos": outcome.videos}
                )

    async def _paced(self) -> bool:
        """Wait for the pacer's next slot; ``False`` if the last waiter left first (no slot taken).

        A ``Retry-After`` may hold the pacer back for minutes: like :meth:`_sleep`, this wait
        ends as soon as nobody waits any more, so the loop ends and closes its session.
        """
        if not self._live():
            return False
        self._wake.clear()
        slot = asyncio.ensure_future(self.pacer.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({slot, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (slot, woken):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
        return slot.done() and not slot.cancelled()

    async def _until_next_round(self, started: float) -> None:
        """Sleep until the shortest poll interval of the live waits has passed since ``started``.

        Recomputed when a wait that polls more often joins meanwhile, so it is checked at its own
        pace; ends at once when the last waiter leaves.
        """
        while waiters := self._live():
            self._interval = min(w.poll_interval for w in waiters)
            left = started + self._interval - time.monotonic()
            if left <= 0:
                return
            self._faster.clear()
            await self._sleep(left, also=self._faster)
            if not self._faster.is_set():
                return

    async def _sleep(self, seconds: float, *, also: asyncio.Event | None = None) -> None:
        """Sleep ``seconds``, or until the last waiter leaves (or ``also`` is set)."""
        if seconds <= 0 or not self._live():
            return
        self._wake.clear()
        events = [asyncio.ensure_future(self._wake.wait())]
        if also is not None:
            events.append(asyncio.ensure_future(also.wait()))
        try:
            await asyncio.wait(events, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for event in events:
                if not event.done():
                    event.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await event

    def _finish_all(self, event: VideoStatusEvent) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(event)

    def _time_out(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            waiter.future.set_result(
                {
                    "status": "timeout",
                    "message": timeout_message(waiter.video_nos, self.last_seen, last_error=self.last_error),
                    "videos": [],
                }
            )

"""What a set of video statuses means for a wait: shared by the sensor, the trigger and the upload."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from memories_provider.client import (
    MemoriesConnectionError,
    MemoriesError,
    MemoriesInvalidArgumentError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesProxyError,
    MemoriesRateLimitError,
    MemoriesServerError,
    Video,
    VideoPage,
    VideoStatus,
)
from memories_provider.client.deadline import within
from memories_provider.client.protocol import VIDEO_NO_PATTERN, check_video_no, quoted
from memories_provider.templating import rendered_list

#: Largest ``video_nos`` filter sent in one ``list_videos`` call (also its page size). The spec caps
#: neither; 200 is the page size one edition uses by default. A service that lists fewer rows than
#: it matched is asked again for the rest (:meth:`StatusRound.answered`).
BATCH_SIZE = 200


@dataclass(frozen=True)
class WaitOutcome:
    """The state of a wait over several videos.

    :param status: ``"success"`` (all ``PARSE``), ``"failed"`` (one failed, or is unknown unless
        ``missing_is_pending``) or ``"pending"``.
    :param message: a sentence for the task log, naming the failed video and its ``cause``.
    :param videos: the known videos' metadata, in the order they were asked for.
    :param unlisted: ids ``list_videos`` did not return, when that counts as pending (``missing_is_pending``).
    """

    status: Literal["success", "failed", "pending"]
    message: str
    videos: list[dict[str, Any]] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def batches(video_nos: Sequence[str], size: int = BATCH_SIZE) -> Iterable[list[str]]:
    """``video_nos`` in lists of at most ``size``."""
    for start in range(0, len(video_nos), size):
        yield list(video_nos[start : start + size])


def evaluate(
    video_nos: Sequence[str],
    found: Mapping[str, Video],
    *,
    missing_is_pending: bool = False,
    rejected: Mapping[str, str] | None = None,
    unsent: Container[str] = (),
) -> WaitOutcome:
    """Decide a wait from the videos ``list_videos`` returned for ``video_nos``.

    :param missing_is_pending: a video not listed is "not listed yet" (pending), not unknown
        (failed) — for videos just uploaded, which the service may list only a little later.
    :param rejected: ids the service refused as a bad parameter, with its message (see
        :meth:`StatusRound.refused`): a wait holding one fails, naming it.
    :param unsent: those of ``rejected`` the client refused before sending (never the service's word).
    """
    videos = [found[v].to_dict() for v in video_nos if v in found]
    refused = [v for v in video_nos if rejected and v in rejected]
    if refused:
        assert rejected is not None

        def why(ids: list[str]) -> str:
            return "; ".join(f"{v}: {rejected[v]}" for v in ids)

        by_client = [v for v in refused if v in unsent]
        by_service = [v for v in refused if v not in unsent]
        said = (
            [f"video id(s) refused by the client before any request: {why(by_client)}"] if by_client else []
        )
        said += [f"memories.ai refused video id(s) {why(by_service)}"] if by_service else []
        return WaitOutcome("failed", "; ".join(said), videos)
    missing = [v for v in video_nos if v not in found]
    if missing and not missing_is_pending:
        return WaitOutcome(
            "failed",
            f"unknown video(s) {', '.join(missing)}: not found in this unique_id",
            videos,
        )
    failed = [found[v] for v in video_nos if v in found and found[v].status.is_failure]
    if failed:
        details = "; ".join(
            f"{v.video_no} is {shown_status(v)}: {v.cause or 'no cause given'}" for v in failed
        )
        return WaitOutcome("failed", f"memories.ai could not index {details}", videos)
    if missing:
        return WaitOutcome("pending", f"not listed yet: {', '.join(missing)}", videos, missing)
    pending = [v for v in video_nos if found[v].status is not VideoStatus.PARSE]
    if pending:
        return WaitOutcome("pending", f"{len(pending)} of {len(video_nos)} video(s) not parsed yet", videos)
    return WaitOutcome("success", f"all {len(video_nos)} video(s) are PARSE", videos)


def shown_status(video: Video) -> str:
    """The status as the service spelt it (an undocumented one such as ``PROCESSING`` included)."""
    return str(video.raw.get("status") or video.status.value)


#: Most ids a timeout message names one by one.
MAX_NAMED = 100


#: What :func:`timeout_message` says of a video that was asked about but not listed.
NOT_LISTED = "not listed"


def timeout_message(
    video_nos: Sequence[str],
    last_seen: Mapping[str, str],
    waited: float | None = None,
    last_error: str | None = None,
) -> str:
    """Why a wait timed out: each video not yet ``PARSE``, grouped by the status last seen.

    E.g. ``timed out after 60s with 2 of 3 video(s) not parsed: UNPARSE: VI1; PROCESSING: VI2``.

    :param last_seen: id -> status as last listed (see :func:`shown_status`), or :data:`NOT_LISTED`;
        ids never answered for are said to have no status seen.
    :param waited: seconds the wait lasted (its ``timeout``), if known.
    :param last_error: why the last status check failed, if it did.
    """
    waiting = [v for v in video_nos if last_seen.get(v) != VideoStatus.PARSE.value]
    groups: dict[str, list[str]] = {}
    for video_no in waiting[:MAX_NAMED]:
        groups.setdefault(last_seen.get(video_no, "no status seen"), []).append(video_no)
    parts = [f"{status}: {', '.join(ids)}" for status, ids in groups.items()]
    if len(waiting) > MAX_NAMED:
        parts.append(f"and {len(waiting) - MAX_NAMED} more")
    after = "" if waited is None else f" after {waited:g}s"
    counts = f"{len(waiting)} of {len(video_nos)} video(s) not parsed"
    failed = "" if last_error is None else f" (the last status check failed: {last_error})"
    return f"timed out{after} with {counts}: " + "; ".join(parts) + failed


class StatusRound:
    """One pass over the statuses of some videos: ``list_videos(video_nos=batch)``, batch by batch.

    It does no I/O itself — the caller asks :meth:`next_batch`, sends the request and reports the
    answer with :meth:`answered` or the error with :meth:`refused` — so the sensor's sync check and
    the triggers' async poller share one logic. What a round learns is kept: a batch that fails
    does not undo the batches answered before it, and after a transient error the caller resumes
    the round at the batch that failed, not at its first one.

    A batch the service refuses as a bad parameter (``0001``/``0003``, HTTP 400) is split in halves
    until the offending id is alone; that id goes to :attr:`rejected` with the service's message,
    and every other id is still answered. One bad id among n costs about 2·log2(n) more requests.

    :param video_nos: the ids to check (duplicates are asked once).
    :param size: most ids per request.
    :param start: the batch to begin with (the others follow in order, wrapping around).
    A batch that fails for another reason may be set aside (:meth:`set_aside`) so that it does not
    hold back the batches after it: asked again after them, split in halves when the service is
    known to answer other batches, down to a lone id that is left out of the round
    (:attr:`unanswered`).

    :param video_nos: the ids to check (duplicates are asked once).
    :param size: most ids per request.
    :param start: the batch to begin with (the others follow in order, wrapping around).
    :param missing_is_pending: a lone id refused as *not found* is only not listed yet (see
        :func:`evaluate`), not rejected.
    :param alone: ids asked one per request, after the batches (e.g. ids whose batches failed
        before: they no longer take 199 others down with them).
    """

    def __init__(
        self,
        video_nos: Iterable[str],
        *,
        size: int = BATCH_SIZE,
        start: int = 0,
        missing_is_pending: bool = False,
        alone: Iterable[str] = (),
    ) -> None:
        singles = list(dict.fromkeys(alone))
        lone = set(singles)
        groups = list(batches([v for v in dict.fromkeys(video_nos) if v not in lone], size))
        if groups:
            start %= len(groups)
            groups = groups[start:] + groups[:start]
        self._todo: collections.deque[list[str]] = collections.deque(groups + [[v] for v in singles])
        self.missing_is_pending = missing_is_pending
        #: Videos listed so far, by id.
        self.found: dict[str, Video] = {}
        #: Ids the service refused, with its message.
        self.rejected: dict[str, str] = {}
        #: those of :attr:`rejected` the client's own check refused: the service never saw them.
        self.unsent: set[str] = set()
        #: Ids answered so far (listed or not, or refused).
        self.asked: set[str] = set()
        #: Ids left out of the round: asked alone, and the request failed (see :meth:`set_aside`).
        self.unanswered: set[str] = set()
        #: Whether the last request of the round was answered (the service is up).
        self.answered_last = False

    @property
    def done(self) -> bool:
        """Whether every batch has been answered."""
        return not self._todo

    def next_batch(self, wanted: Callable[[str], bool] | None = None) -> list[str] | None:
        """The batch to ask for next, or ``None`` when the round is over.

        :param wanted: ids for which it returns false are no longer asked (their wait ended).
        """
        while self._todo:
            if wanted is not None:
                self._todo[0] = [v for v in self._todo[0] if wanted(v)]
            if self._todo[0]:
                return self._todo[0]
            self._todo.popleft()
        return None

    def answered(self, batch: list[str], page: VideoPage) -> list[Video]:
        """Record the answer to ``batch`` (the batch :meth:`next_batch` returned); returns its videos."""
        self._pop(batch)
        self.answered_last = True
        asked = set(batch)
        videos = [v for v in page.videos if v.video_no in asked]
        listed = {v.video_no for v in videos}
        rest = [v for v in batch if v not in listed]
        if videos and rest and page.total_count is not None and page.total_count > len(page.videos):
            # Fewer rows than match: the service capped ``size`` (no cap is documented). Ask again
            # for the ids it left out; each answer lists some of them, so this ends.
            self._todo.appendleft(rest)
            self.asked |= listed
        else:
            self.asked.update(batch)
        self.found.update((v.video_no, v) for v in videos)
        return videos

    def refused(self, batch: list[str], error: BaseException) -> bool:
        """Learn from ``error`` on ``batch``: ``True`` when it was a refused parameter, now handled
        (the batch split, or its lone id rejected); ``False`` for any other error — the batch stays
        first in line, so the round resumes there after a transient error."""
        if not isinstance(error, MemoriesInvalidRequestError):
            return False
        self._pop(batch)
        self.answered_last = True
        if len(batch) > 1:
            half = len(batch) // 2
            self._todo.extendleft([batch[half:], batch[:half]])  # asked next, first half first
            return True
        self.asked.add(batch[0])
        if not (self.missing_is_pending and isinstance(error, MemoriesNotFoundError)):
            self.rejected[batch[0]] = getattr(error, "message", None) or str(error)
            if isinstance(error, MemoriesInvalidArgumentError):
                self.unsent.add(batch[0])
        return True

    def set_aside(self, batch: list[str], *, split: bool) -> str | None:
        """Move ``batch``, whose request failed (transiently), behind the round's other batches.

        :param split: ask it as two halves (the service answers other batches, so one of its ids
            may be what fails it); else whole, once the others are asked.
        :returns: the id left out of the round, when ``batch`` held it alone (it goes to
            :attr:`unanswered`; the next round asks it again).
        """
        self._pop(batch)
        self.answered_last = False
        if len(batch) == 1:
            self.unanswered.add(batch[0])
            return batch[0]
        if split:
            half = len(batch) // 2
            self._todo.extend([batch[:half], batch[half:]])
        else:
            self._todo.append(batch)
        return None

    def _pop(self, batch: list[str]) -> None:
        if not self._todo or self._todo[0] != batch:
            raise ValueError("report the batch that next_batch() returned, in order")
        self._todo.popleft()


def run_round(list_videos: Callable[..., VideoPage], round_: StatusRound, unique_id: str | None) -> None:
    """Ask ``round_``'s batches in turn with a sync ``list_videos`` until it is done.

    A batch that failed transiently (not a rate limit) is set aside behind the others
    (:meth:`StatusRound.set_aside`, split when the request before it was answered): the next call
    goes on with the other batches, so one batch that keeps failing does not starve them.

    :raises MemoriesError: the first error that is not a refused id; the round can be resumed.
    """
    while (batch := round_.next_batch()) is not None:
        try:
            page = list_videos(video_nos=batch, size=len(batch), unique_id=unique_id)
        except MemoriesError as err:
            if round_.refused(batch, err):
                continue
            if is_transient(err) and not isinstance(err, MemoriesRateLimitError):
                round_.set_aside(batch, split=round_.answered_last)
            raise
        round_.answered(batch, page)


class StatusCheck:
    """Repeated status checks of the same videos by a synchronous caller (a sensor's pokes, the
    upload operator's wait): one round per call, under the caller's deadline.

    A round paused by a transient error is resumed by the next call, so no batch is starved by
    errors in another; results already learnt still decide the wait (a ``FAILED`` video fails it
    at once). The last status seen of each video is kept for the timeout message.

    :param video_nos: the ids to wait for.
    :param unique_id: their scope (``None``: the hook's default).
    :param missing_is_pending: see :func:`evaluate`.
    """

    def __init__(
        self, video_nos: Sequence[str], unique_id: str | None, *, missing_is_pending: bool = False
    ) -> None:
        self.video_nos = list(video_nos)
        self.unique_id = unique_id
        self.missing_is_pending = missing_is_pending
        #: id -> the status last listed (see :func:`shown_status`), or :data:`NOT_LISTED`.
        self.last_seen: dict[str, str] = {}
        #: Why the last call's round was interrupted, if it was.
        self.last_error: str | None = None
        self._round: StatusRound | None = None

    def __call__(self, list_videos: Callable[..., VideoPage], *, seconds: float | None = None) -> WaitOutcome:
        """One round (or the rest of a paused one), bounded by ``seconds``.

        A transient error (:func:`is_transient`; the deadline passing is one) makes the outcome
        ``pending`` unless what was learnt already fails the wait; other errors are raised.

        :param list_videos: e.g. ``MemoriesHook.list_videos``.
        :param seconds: time left to the caller's deadline (see :func:`within`).
        """
        if self._round is None or self._round.done:  # done: a round left with only set-aside ids
            # A fresh round starts at a random batch: callers that cannot keep a paused round (a
            # rescheduled sensor is a new process each poke) still reach every batch in time.
            count = -(-len(self.video_nos) // BATCH_SIZE)
            self._round = StatusRound(
                self.video_nos,
                start=random.randrange(count) if count > 1 else 0,
                missing_is_pending=self.missing_is_pending,
            )
        round_ = self._round
        error: MemoriesError | None = None
        try:
            with within(seconds):
                run_round(list_videos, round_, self.unique_id)
        except MemoriesError as err:
            if not is_transient(err):
                raise
            error = err
        finally:
            self.last_seen.update((v, NOT_LISTED) for v in round_.asked.difference(round_.found))
            self.last_seen.update((v, shown_status(video)) for v, video in round_.found.items())
        if error is None and not round_.unanswered:
            self.last_error = None
            self._round = None
            return evaluate(
                self.video_nos,
                round_.found,
                missing_is_pending=self.missing_is_pending,
                rejected=round_.rejected,
                unsent=round_.unsent,
            )
        if error is None:
            # Over, but with ids whose own requests failed: not "unknown", only not answered. The
            # next call starts a new round, which asks them again (last_error still says why).
            self._round = None
        else:
            self.last_error = str(error)
        partial = evaluate(
            self.video_nos,
            round_.found,
            missing_is_pending=True,
            rejected=round_.rejected,
            unsent=round_.unsent,
        )
        if partial.status == "failed":
            return partial
        return WaitOutcome(
            "pending",
            f"status check failed ({self.last_error}); polling again",
            partial.videos,
            partial.unlisted,
        )

    def timeout_message(self, waited: float) -> str:
        """See :func:`timeout_message`."""
        return timeout_message(self.video_nos, self.last_seen, waited, self.last_error)


def check_round(
    list_videos: Callable[..., VideoPage],
    video_nos: Sequence[str],
    unique_id: str | None,
    *,
    missing_is_pending: bool = False,
) -> WaitOutcome:
    """One status round as a one-off :class:`StatusCheck` (transient errors are ``pending``)."""
    return StatusCheck(video_nos, unique_id, missing_is_pending=missing_is_pending)(list_videos)


def is_transient(error: BaseException) -> bool:
    """Errors a wait survives by polling again later: rate limits, 5xx, transport failures and timeouts.

    Not a proxy's refusal (:class:`MemoriesProxyError`: credentials refused, ``403``): polling
    again through the same proxy gets the same answer, until the wait's timeout.
    """
    if isinstance(error, MemoriesProxyError):
        return False
    return isinstance(error, (MemoriesRateLimitError, MemoriesServerError, MemoriesConnectionError))


def normalize_video_nos(video_no: Any, video_nos: Any) -> list[str]:
    """Exactly one of ``video_no`` (a string) or ``video_nos`` (a non-empty list), deduplicated in order.

    Each id is stripped of surrounding whitespace. A list that a template rendered as text
    (``"['VI1', 'VI2']"``, without ``render_template_as_native_obj``) is read back as the list.

    Each id must be a private video id as documented, ``VI`` and 18 digits
    (:func:`~memories_provider.client.protocol.check_video_no`, the client's own check).

    :raises ValueError: naming the parameter and the rule, before any request: both or neither
        given, an empty list, or an id that is not a video id.
    """
    given_one = video_no not in (None, "")
    given_many = video_nos not in (None, "", [], ())
    if given_one == given_many:
        raise ValueError("give exactly one of `video_no` or `video_nos`")
    name = "video_no" if given_one else "video_nos"
    ids: Any = video_no if given_one else video_nos
    if isinstance(ids, str):
        text = ids.strip()
        if text.startswith("["):
            ids = rendered_list(text)
            if ids is None:
                raise ValueError(f"`{name}` must be a list of video ids, got {quoted(text)}")
        else:
            ids = [text]
    elif not isinstance(ids, (list, tuple)):
        try:
            ids = list(ids)  # e.g. a mapped task's XCom (a lazy sequence)
        except TypeError:
            raise ValueError(f"`{name}` must be a list of video ids (or one id), got {quoted(ids)}") from None
    if not ids:
        raise ValueError(f"`{name}` is an empty list: no video to wait for")
    cleaned: dict[str, None] = {}
    for item in ids:
        video = item.strip() if isinstance(item, str) else item
        cleaned[check_video_no(video, name)] = None
    return list(cleaned)


__all__ = [
    "BATCH_SIZE",
    "NOT_LISTED",
    "VIDEO_NO_PATTERN",
    "StatusCheck",
    "StatusRound",
    "WaitOutcome",
    "batches",
    "check_round",
    "evaluate",
    "is_transient",
    "normalize_video_nos",
    "run_round",
    "shown_status",
    "timeout_message",
]

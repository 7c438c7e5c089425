"""What a set of video statuses means for a wait: shared by the sensor, the trigger and the upload."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from memories_provider.client import (
    MemoriesConnectionError,
    MemoriesError,
    MemoriesRateLimitError,
    MemoriesServerError,
    Video,
    VideoPage,
    VideoStatus,
)

#: Largest ``video_nos`` filter sent in one ``list_videos`` call (also its page size).
BATCH_SIZE = 100


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
    video_nos: Sequence[str], found: Mapping[str, Video], *, missing_is_pending: bool = False
) -> WaitOutcome:
    """Decide a wait from the videos ``list_videos`` returned for ``video_nos``.

    :param missing_is_pending: a video not listed is "not listed yet" (pending), not unknown
        (failed) — for videos just uploaded, which the service may list only a little later.
    """
    videos = [found[v].to_dict() for v in video_nos if v in found]
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
            f"{v.video_no} is {v.raw.get('status') or v.status.value}: {v.cause or 'no cause given'}"
            for v in failed
        )
        return WaitOutcome("failed", f"memories.ai could not index {details}", videos)
    if missing:
        return WaitOutcome("pending", f"not listed yet: {', '.join(missing)}", videos, missing)
    pending = [v for v in video_nos if found[v].status is not VideoStatus.PARSE]
    if pending:
        return WaitOutcome("pending", f"{len(pending)} of {len(video_nos)} video(s) not parsed yet", videos)
    return WaitOutcome("success", f"all {len(video_nos)} video(s) are PARSE", videos)


def list_found(
    list_videos: Callable[..., VideoPage], video_nos: Sequence[str], unique_id: str | None
) -> dict[str, Video]:
    """The listed videos among ``video_nos``, by id: ``list_videos(video_nos=...)`` in batches of 100."""
    found: dict[str, Video] = {}
    for batch in batches(list(video_nos)):
        page = list_videos(video_nos=batch, size=len(batch), unique_id=unique_id)
        found.update((v.video_no, v) for v in page.videos if v.video_no in batch)
    return found


def check_round(
    list_videos: Callable[..., VideoPage],
    video_nos: Sequence[str],
    unique_id: str | None,
    *,
    missing_is_pending: bool = False,
) -> WaitOutcome:
    """One status round, as a sensor poke: ``list_videos(video_nos=...)`` in batches, then :func:`evaluate`.

    A transient error (:func:`is_transient`) is "not yet" — ``pending``, with the error as message —
    so a wait polls again instead of failing; any other error is raised.

    :param list_videos: e.g. ``MemoriesHook.list_videos``.
    """
    try:
        found = list_found(list_videos, video_nos, unique_id)
    except MemoriesError as err:
        if not is_transient(err):
            raise
        return WaitOutcome("pending", f"status check failed ({err}); polling again")
    return evaluate(list(video_nos), found, missing_is_pending=missing_is_pending)


def is_transient(error: BaseException) -> bool:
    """Errors a wait survives by polling again later: rate limits, 5xx, transport failures."""
    return isinstance(error, (MemoriesRateLimitError, MemoriesServerError, MemoriesConnectionError))


def normalize_video_nos(video_no: Any, video_nos: Any) -> list[str]:
    """Exactly one of ``video_no`` (a string) or ``video_nos`` (a non-empty list), deduplicated in order.

    :raises ValueError: naming the parameters when both or neither are given, or an id is empty.
    """
    given_one = video_no not in (None, "")
    given_many = video_nos not in (None, "", [], ())
    if given_one == given_many:
        raise ValueError("give exactly one of `video_no` or `video_nos`")
    ids: Any = [video_no] if given_one else video_nos
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        ids = list(ids)
    cleaned: list[str] = []
    for item in ids:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"`video_nos` must hold non-empty video ids, got {item!r}")
        if item not in cleaned:
            cleaned.append(item.strip())
    return cleaned


__all__ = [
    "BATCH_SIZE",
    "WaitOutcome",
    "batches",
    "check_round",
    "evaluate",
    "is_transient",
    "list_found",
    "normalize_video_nos",
]

"""What a set of video statuses means for a wait: shared by the sensor, the trigger and the upload."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from memories_provider.client import (
    MemoriesConnectionError,
    MemoriesRateLimitError,
    MemoriesServerError,
    Video,
    VideoStatus,
)

#: Largest ``video_nos`` filter sent in one ``list_videos`` call (also its page size).
BATCH_SIZE = 100


@dataclass(frozen=True)
class WaitOutcome:
    """The state of a wait over several videos.

    :param status: ``"success"`` (all ``PARSE``), ``"failed"`` (one failed or is unknown) or ``"pending"``.
    :param message: a sentence for the task log, naming the failed video and its ``cause``.
    :param videos: the known videos' metadata, in the order they were asked for.
    """

    status: Literal["success", "failed", "pending"]
    message: str
    videos: list[dict[str, Any]] = field(default_factory=list)


def batches(video_nos: Sequence[str], size: int = BATCH_SIZE) -> Iterable[list[str]]:
    """``video_nos`` in lists of at most ``size``."""
    for start in range(0, len(video_nos), size):
        yield list(video_nos[start : start + size])


def evaluate(video_nos: Sequence[str], found: Mapping[str, Video]) -> WaitOutcome:
    """Decide a wait from the videos ``list_videos`` returned for ``video_nos``."""
    videos = [found[v].to_dict() for v in video_nos if v in found]
    missing = [v for v in video_nos if v not in found]
    if missing:
        return WaitOutcome(
            "failed",
            f"unknown video(s) {', '.join(missing)}: not found in this unique_id",
            videos,
        )
    failed = [found[v] for v in video_nos if found[v].status.is_failure]
    if failed:
        details = "; ".join(
            f"{v.video_no} is {v.raw.get('status') or v.status.value}: {v.cause or 'no cause given'}"
            for v in failed
        )
        return WaitOutcome("failed", f"memories.ai could not index {details}", videos)
    pending = [v for v in video_nos if found[v].status is not VideoStatus.PARSE]
    if pending:
        return WaitOutcome("pending", f"{len(pending)} of {len(video_nos)} video(s) not parsed yet", videos)
    return WaitOutcome("success", f"all {len(video_nos)} video(s) are PARSE", videos)


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
    "evaluate",
    "is_transient",
    "normalize_video_nos",
]

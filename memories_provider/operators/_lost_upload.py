"""Was an earlier attempt's unanswered upload accepted? Deciding it from what the service lists.

The service lists a video by its basic fields (``size``, ``create_time``, ``status``) from the upload
on, but its tags — the only mark that says whose it is — only once it is ``PARSE`` (never when it
``FAILED``). So the videos that *could* be the earlier attempt's (same size, created after it
started) are candidates; a candidate is ours only when its tags hold our idempotency tag, not ours
when its tags are known and do not, and undecided otherwise. Nothing here talks to Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from memories_provider.client import MemoriesNotFoundError, Video, VideoStatus
from memories_provider.operators._attempt_record import AttemptRecord

#: How far the service's clock (``create_time``) may run behind this worker's (``started_ms``).
#: Generous on purpose: a too-early bound only adds candidates (a longer wait), never a duplicate.
CLOCK_SKEW_MS = 5 * 60 * 1000


def could_be_ours(video: Video, record: AttemptRecord) -> bool:
    """Whether ``video`` may be the upload ``record`` describes, judged by its basic fields.

    It must have been created after the upload started (less :data:`CLOCK_SKEW_MS`) and, when
    the record knows the size, be exactly that size. A video without ``create_time`` or ``size``
    cannot be ruled out. (A listed video whose tags hold the record's is ours by those alone, of
    the same size: see :func:`judge`.)
    """
    too_early = (
        record.started_ms is not None
        and video.create_time is not None
        and video.create_time < record.started_ms - CLOCK_SKEW_MS
    )
    return not too_early and not _other_size(video, record)


def _other_size(video: Video, record: AttemptRecord) -> bool:
    """Whether ``video`` and the upload ``record`` describes have sizes, and they differ."""
    return record.size is not None and video.size is not None and video.size != record.size


@dataclass
class Verdict:
    """What the listing says about an earlier unanswered upload.

    :param ours: the earlier upload, identified by its tag.
    :param pending: candidates whose tags cannot be read yet (not ``PARSE``): wait for them.
    :param undecidable: candidates whose tags will never be readable (``FAILED``, or ``PARSE`` with
        no tags at all — every API upload gets at least ``api``): a person must decide.
    :param foreign: candidates whose tags show they belong to someone else.
    """

    ours: Video | None = None
    pending: list[Video] = field(default_factory=list)
    undecidable: list[Video] = field(default_factory=list)
    foreign: list[Video] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        """No video listed could be the earlier upload."""
        return self.ours is None and not self.pending and not self.undecidable


def judge(listed: Iterable[Video], record: AttemptRecord, confirm: Callable[[str], Video]) -> Verdict:
    """Sort the listed videos that could be ``record``'s upload into ours / pending / undecidable.

    :param listed: the scope's videos (``list_videos`` without metadata filters, every page).
    :param confirm: ``get_metadata`` of one video, asked for a ``PARSE`` row that came without tags.
    """
    verdict = Verdict()
    for video in listed:
        tags = video.tags
        if record.tag in tags and not _other_size(video, record):
            # Our tag proves it, whenever the clocks say it was made (a worker's clock may run
            # ahead of the service's by more than CLOCK_SKEW_MS).
            if verdict.ours is None or _older(video, verdict.ours):
                verdict.ours = video
            continue
        if not could_be_ours(video, record):
            continue
        if not tags and video.status is VideoStatus.PARSE:
            try:
                video = confirm(video.video_no)
            except MemoriesNotFoundError:
                continue  # deleted since it was listed
            tags = video.tags
        if tags:  # tags are shown: they decide, whatever the status
            if record.tag in tags:
                if verdict.ours is None or _older(video, verdict.ours):
                    verdict.ours = video
            else:
                verdict.foreign.append(video)
        elif video.status.is_failure or video.status is VideoStatus.PARSE:
            verdict.undecidable.append(video)
        else:
            verdict.pending.append(video)
    return verdict


def _older(a: Video, b: Video) -> bool:
    return (a.create_time or 0) < (b.create_time or 0)


def describe(videos: Iterable[Video]) -> str:
    """``VI… (FAILED: cause, created 2024-…)``, for messages naming candidates."""
    parts = []
    for video in videos:
        status = video.raw.get("status") or video.status.value
        detail = f"{status}: {video.cause}" if video.status.is_failure and video.cause else status
        size = "size unknown" if video.size is None else f"{video.size} bytes"
        parts.append(f"{video.video_no} ({detail}, {size}, created {when(video.create_time)})")
    return "; ".join(parts)


def when(epoch_ms: int | None) -> str:
    """An epoch-ms time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if epoch_ms is None:
        return "an unknown time"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

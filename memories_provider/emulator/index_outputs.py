"""What the emulated indexing "learnt" about a video: visual captions and the audio transcription.

Spec section 2, "Index outputs". The answers are deterministic (derived from the video's id and
original file name) so that tests can assert exact rows, and use the documented string-typed
numbers (``"startTime": "0"``, ``"createTime": "<epoch ms>"``).

The docs allow two answers for "nothing to show": ``data: null`` or an empty ``transcriptions``.
The emulator picks per case: ``null`` for a video without an audio track (audio endpoint, as
section 4 says), an empty ``transcriptions`` for a video that is not ``PARSE`` yet (or ``FAILED``),
so clients meet both.
"""

from __future__ import annotations

from typing import Any

from memories_provider.emulator.state import PARSE, Video

VISUAL = "visual"
AUDIO = "audio"
KINDS = (VISUAL, AUDIO)


def _seconds(value: float) -> str:
    """A time as the service writes it: a string, ``"7"`` rather than ``"7.0"``."""
    return format(value, "g") if value != int(value) else str(int(value))


def default_segments(video: Video, kind: str, count: int, seconds: float) -> list[dict[str, Any]]:
    """``count`` segments of ``seconds`` each: ``Scene <i> of <file name>`` (visual) or
    ``Words <i> spoken in <file name>`` (audio)."""
    label = "Scene {i} of {name}" if kind == VISUAL else "Words {i} spoken in {name}"
    return [
        {
            "index": i,
            "content": label.format(i=i, name=video.asset.filename),
            "startTime": _seconds(i * seconds),
            "endTime": _seconds((i + 1) * seconds),
        }
        for i in range(count)
    ]


def index_data(
    video: Video, kind: str, *, count: int, seconds: float, has_audio: bool
) -> dict[str, Any] | None:
    """The ``data`` of ``get_video_caption`` (visual) / ``get_audio_transcription`` (audio).

    A video's own outputs (set through the control API, served verbatim) win over the defaults;
    an output set to ``None`` is answered ``data: null``.
    """
    if video.status != PARSE:
        items: list[Any] | None = []
    elif kind in video.index_outputs:
        items = video.index_outputs[kind]
    elif kind == AUDIO and not has_audio:
        items = None
    else:
        items = default_segments(video, kind, count, seconds)
    if items is None:
        return None
    return {
        "videoNo": video.video_no,
        "transcriptions": items,
        "createTime": str(video.create_time),
        "video_bucket": video.asset.bucket,
        "video_blob": video.asset.blob,
    }

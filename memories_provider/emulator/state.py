"""In-memory records of videos and assets; the bytes themselves live in files under the data dir."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNPARSE = "UNPARSE"
PARSE = "PARSE"
FAILED = "FAILED"
STATUSES = (UNPARSE, PARSE, FAILED)

#: One bucket for everything the emulator stores; blobs are ``<scope>/<id>/<filename>``.
BUCKET = "memories-emulator"


@dataclass
class Asset:
    """A stored file reachable by asset id (v2) and by bucket + blob (v1 and v2)."""

    asset_id: str
    bucket: str
    blob: str
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Control-API view."""
        return {
            "asset_id": self.asset_id,
            "bucket": self.bucket,
            "blob": self.blob,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "path": str(self.path),
        }


@dataclass
class Video:
    """An uploaded video and everything the API reports about it."""

    video_no: str
    video_name: str
    unique_id: str
    asset: Asset
    create_time: int  # epoch ms
    ready_at: float  # monotonic time the parse finishes (inf: only set_status moves it)
    status: str = UNPARSE
    cause: str | None = None
    callback: str | None = None
    datetime_taken: int | None = None  # epoch ms
    camera_model: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    tags: list[str] = field(default_factory=list)
    retain_original_video: bool = True
    video_transcription_prompt: str | None = None
    source_url: str | None = None
    #: Index outputs set through the control API (``"visual"``/``"audio"`` -> transcriptions served
    #: verbatim, or ``None`` for ``data: null``); a kind not set gets the deterministic defaults.
    index_outputs: dict[str, list[Any] | None] = field(default_factory=dict)

    def api_dict(self, *, tags_before_parse: bool = False, duration: float | None = None) -> dict[str, Any]:
        """The snake_case object of get_metadata / list_videos.

        Tags and capture metadata appear only once the video is ``PARSE`` (never for a ``FAILED``
        one): before, the service has no metadata row for it. The basic fields (``video_no``,
        ``video_name``, ``size``, ``status``, ``create_time``) are there from the upload on.
        ``tags_before_parse`` restores the old emulator's early tags (``metadata_before_parse``).
        ``duration`` (seconds) is what the indexing found, shown once ``PARSE``: the emulator does
        not decode video, so its caller gives the length its index outputs cover.
        """
        parsed = self.status == PARSE
        return {
            "video_no": self.video_no,
            "video_name": self.video_name,
            "duration": duration if parsed else None,
            "size": self.asset.size,
            "status": self.status,
            "create_time": self.create_time,
            "resolution_label": None,
            "fps": None,
            "width": None,
            "height": None,
            "datetime_taken": self.datetime_taken if parsed else None,
            "camera_model": self.camera_model if parsed else None,
            "latitude": self.latitude if parsed else None,
            "longitude": self.longitude if parsed else None,
            "tags": list(self.tags) if parsed or tags_before_parse else None,
            "bucket": self.asset.bucket,
            "blob": self.asset.blob,
            "cause": self.cause,
        }

    def control_dict(self) -> dict[str, Any]:
        """Everything a test may want to check (control ``videos()``), tags and capture metadata included."""
        data = self.api_dict()
        data.update(
            {
                "unique_id": self.unique_id,
                "filename": self.asset.filename,
                "content_type": self.asset.content_type,
                "sha256": self.asset.sha256,
                "asset_id": self.asset.asset_id,
                "callback": self.callback,
                "camera_model": self.camera_model,
                "tags": list(self.tags),
                "datetime_taken": self.datetime_taken,
                "latitude": self.latitude,
                "longitude": self.longitude,
                "retain_original_video": self.retain_original_video,
                "video_transcription_prompt": self.video_transcription_prompt,
                "source_url": self.source_url,
                "path": str(self.asset.path),
            }
        )
        return data


class IdFactory:
    """Unique ids in the vendor's shapes: ``VI`` + 18 digits, ``re_`` + digits."""

    def __init__(self) -> None:
        # A random start keeps ids from different runs apart; a counter keeps them unique in one run.
        self._counter = itertools.count(random.randrange(10**17, 5 * 10**17))

    def video_no(self) -> str:
        """A new private video id."""
        return f"VI{next(self._counter):018d}"

    def asset_id(self) -> str:
        """A new v2 asset id."""
        return f"re_{next(self._counter)}"


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)

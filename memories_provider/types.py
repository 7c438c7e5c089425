"""The shapes that cross Airflow's boundaries: XCom results and trigger event payloads.

Plain ``TypedDict``s (standard library only), so the trigger module stays light: what is
stored in XCom or sent through the triggerer is JSON, and these name its keys.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = ["DownloadResult", "ExportResult", "VideoStatusEvent", "WaitStatus"]

#: How a wait for ``PARSE`` ended: ``error`` only when polling itself could not go on.
WaitStatus = Literal["success", "failed", "timeout", "error"]


class _VideoStatusEventExtras(TypedDict, total=False):
    #: On a ``failed`` event, what the service refused: ``"account"`` (the key or the account)
    #: or ``"credits"``; absent when a video failed.
    refused: Literal["account", "credits"]


class VideoStatusEvent(_VideoStatusEventExtras):
    """The payload of :class:`~memories_provider.triggers.video_status.MemoriesVideoStatusTrigger`'s event.

    :param status: ``success`` (all ``PARSE``), ``failed``, ``timeout`` or ``error``.
    :param message: a sentence for the task log (the failed video and its cause, or who still waits).
    :param videos: on ``success``, the videos' metadata in the order they were asked for.
    :param refused: on ``failed``, ``"account"`` or ``"credits"`` when the service refused the key,
        the account or the balance rather than a video failing (optional key).
    """

    status: WaitStatus
    message: str
    videos: list[dict[str, Any]]


class DownloadResult(TypedDict):
    """The XCom ``return_value`` of :class:`~memories_provider.operators.download.MemoriesDownloadOperator`.

    :param uri: where the file is (credentials redacted in XCom).
    :param bytes: its size.
    :param sha256: its SHA-256 (hex), or ``None`` with ``checksum=None`` or when not known.
    :param content_type: the ``Content-Type`` memories.ai sent, ``None`` when nothing was downloaded.
    :param filename: the last component of ``uri``.
    :param skipped: ``True`` when the destination already held these bytes and nothing was downloaded.
    """

    uri: str
    bytes: int
    sha256: str | None
    content_type: str | None
    filename: str
    skipped: bool


class ExportResult(TypedDict):
    """The XCom ``return_value`` of :class:`~memories_provider.operators.export.MemoriesExportOperator`.

    :param uri: the file written (credentials redacted in XCom).
    :param rows: rows written (one per segment).
    :param videos: videos whose outputs were written.
    :param bytes: size of the file.
    :param format: ``jsonl`` or ``parquet``.
    :param kinds: the outputs exported (``visual``, ``audio``).
    :param skipped: videos left out (``not_parsed="skip"``, or gone during the export).
    """

    uri: str
    rows: int
    videos: int
    bytes: int
    format: str
    kinds: list[str]
    skipped: list[str]

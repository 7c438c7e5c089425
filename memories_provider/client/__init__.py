"""memories.ai API clients (sync on requests, async on aiohttp) sharing one protocol layer.

No Airflow imports here: the hook builds these clients from an Airflow connection.
"""

from __future__ import annotations

from memories_provider.client.aio import AsyncDownloadResponse, AsyncMemoriesClient
from memories_provider.client.errors import (
    MemoriesAuthError,
    MemoriesConnectionError,
    MemoriesDuplicateError,
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidArgumentError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesServerError,
    MemoriesTimeoutError,
)
from memories_provider.client.metadata import UploadMetadata
from memories_provider.client.models import (
    Segment,
    Transcript,
    TranscriptKind,
    UploadResult,
    Video,
    VideoPage,
    VideoStatus,
)
from memories_provider.client.retry import RetryPolicy
from memories_provider.client.sync import DownloadResponse, MemoriesClient
from memories_provider.redaction import Redactor

__all__ = [
    "AsyncDownloadResponse",
    "AsyncMemoriesClient",
    "DownloadResponse",
    "MemoriesAuthError",
    "MemoriesClient",
    "MemoriesConnectionError",
    "MemoriesDuplicateError",
    "MemoriesError",
    "MemoriesIncompleteBodyError",
    "MemoriesInsufficientCreditsError",
    "MemoriesInvalidArgumentError",
    "MemoriesInvalidRequestError",
    "MemoriesNotFoundError",
    "MemoriesRateLimitError",
    "MemoriesResponseError",
    "MemoriesServerError",
    "MemoriesTimeoutError",
    "Redactor",
    "RetryPolicy",
    "Segment",
    "Transcript",
    "TranscriptKind",
    "UploadMetadata",
    "UploadResult",
    "Video",
    "VideoPage",
    "VideoStatus",
]

"""memories.ai API clients (sync on requests, async on aiohttp) sharing one protocol layer.

No Airflow imports here: the hook builds these clients from an Airflow connection. The two
clients load on first use (``from memories_provider.client import MemoriesClient`` still works),
so each imports without the other's HTTP library: ``memories_provider.client.aio`` needs no
``requests``, ``memories_provider.client.sync`` no ``aiohttp``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    MemoriesPagingError,
    MemoriesProxyAuthError,
    MemoriesProxyError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesRouteNotFoundError,
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
from memories_provider.client.upload import VideoUpload
from memories_provider.redaction import Redactor

if TYPE_CHECKING:
    from memories_provider.client.aio import AsyncDownloadResponse, AsyncMemoriesClient
    from memories_provider.client.sync import DownloadResponse, MemoriesClient

#: The names each client module provides, imported when first asked for.
_LAZY = {
    "AsyncDownloadResponse": "memories_provider.client.aio",
    "AsyncMemoriesClient": "memories_provider.client.aio",
    "DownloadResponse": "memories_provider.client.sync",
    "MemoriesClient": "memories_provider.client.sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "MemoriesPagingError",
    "MemoriesProxyAuthError",
    "MemoriesProxyError",
    "MemoriesRateLimitError",
    "MemoriesResponseError",
    "MemoriesRouteNotFoundError",
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
    "VideoUpload",
]

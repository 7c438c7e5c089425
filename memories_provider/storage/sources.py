"""Upload sources: look a video up without downloading it, then open it as a stream.

Any URI smart-open reads (local path, ``file://``, ``s3://``, ``gs://``, ``azure://``,
``sftp://``, ``http(s)://``); compression is always disabled so ``clip.mp4.gz`` is sent byte
for byte rather than silently decompressed.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from memories_provider.storage import destinations
from memories_provider.storage.credentials import (
    scheme_family,
    transport_params_for,
    validate_transport_params,
)
from memories_provider.storage.errors import StoreUnavailableError
from memories_provider.storage.uris import redact_uri

__all__ = ["SourceInfo", "guess_content_type", "open_source", "redact_uri", "source_name", "stat_source"]


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before a byte of it is read.

    :param uri: the source URI as given.
    :param name: its file name (last path segment), used as the upload's filename.
    :param size: its size in bytes; ``None`` only for an HTTP source whose server gives no length.
    :param content_type: the ``video/*`` type guessed from the extension, or ``None``.
    """

    uri: str
    name: str
    size: int | None
    content_type: str | None


def source_name(uri: str) -> str:
    """The file name of ``uri`` (its last path segment, URL-decoded)."""
    path = urlsplit(uri).path if scheme_family(uri) != "file" or "://" in uri else uri
    return posixpath.basename(unquote(path).rstrip("/"))


def guess_content_type(name: str) -> str | None:
    """The MIME type of a file name from its extension (``video/mp4`` for ``.mp4``)."""
    mimetypes.add_type("video/x-matroska", ".mkv")
    mimetypes.add_type("video/x-flv", ".flv")
    return mimetypes.guess_type(name, strict=False)[0]


def _local_path(uri: str) -> str:
    path = destinations.local_path(uri)
    assert path is not None
    return path


def stat_source(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> SourceInfo:
    """Look ``uri`` up without reading it: ``stat``, S3 ``HeadObject``, blob properties, HTTP ``HEAD``.

    An HTTP server that refuses ``HEAD`` (403/405, as presigned GET URLs do) or gives no length
    is asked for ``Range: bytes=0-0`` instead, and the size read from ``Content-Range``.

    :param uri: the source.
    :param conn_id: Airflow connection with the storage credentials (``source_conn_id``).
    :param transport_params: extra smart-open parameters (validated per scheme).
    :raises ValueError: naming ``source`` when it is empty, missing, a folder, or has no data.
    """
    if not uri or not str(uri).strip():
        raise ValueError("`source` must be a non-empty path or URI")
    family = scheme_family(uri)
    name = source_name(uri)
    shown = redact_uri(uri)
    if not name:
        raise ValueError(f"`source` {shown!r} names a folder, not a video file")
    size: int | None
    if family == "file":
        validate_transport_params(uri, transport_params)
        path = _local_path(uri)
        if os.path.isdir(path):
            raise ValueError(f"`source` {uri!r} is a folder, not a video file")
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = None
        if size is None:
            raise ValueError(f"`source` {uri!r} does not exist")
    else:
        params = transport_params_for(
            uri, conn_id=conn_id, transport_params=transport_params, conn_param="source_conn_id"
        )
        size = _remote_size(uri, family, params)
        if size is None and family != "http":
            raise ValueError(f"`source` {shown!r} does not exist")
    if size == 0:
        raise ValueError(f"`source` {shown!r} is empty (0 bytes)")
    return SourceInfo(uri=uri, name=name, size=size, content_type=guess_content_type(name))


def _remote_size(uri: str, family: str, params: dict[str, Any]) -> int | None:
    # The size probes are the destinations' existence checks: one implementation per store.
    if family == "s3":
        return destinations._s3_size(uri, params)
    if family == "gs":
        return destinations._gcs_size(uri, params)
    if family == "azure":
        return destinations._azure_size(uri, params)
    if family == "sftp":
        return destinations._sftp_size(uri, params)
    return _http_size(uri, params)


def _http_size(uri: str, params: dict[str, Any]) -> int | None:
    import requests

    shown = redact_uri(uri)
    request: dict[str, Any] = {
        "allow_redirects": True,
        "timeout": params.get("timeout"),
        "auth": (params["user"], params.get("password") or "") if params.get("user") else None,
    }
    response = requests.head(uri, headers=params.get("headers"), **request)
    if response.status_code == 404:
        raise ValueError(f"`source` {shown!r} does not exist (HTTP 404)")
    length = _digits(response.headers.get("Content-Length"))
    if response.status_code < 400 and length is not None:
        return length
    if response.status_code >= 400 and response.status_code not in (403, 405):
        error = StoreUnavailableError if _server_trouble(response.status_code) else ValueError
        raise error(f"`source` {shown!r} cannot be read: HEAD answered HTTP {response.status_code}")
    # Presigned S3/GCS URLs are signed for GET only (HEAD gets 403), and some servers refuse HEAD
    # (405) or omit its length: ask for the first byte and read the total from Content-Range.
    headers = {**(params.get("headers") or {}), "Range": "bytes=0-0"}
    with requests.get(uri, headers=headers, stream=True, **request) as ranged:  # body never read
        if ranged.status_code == 404:
            raise ValueError(f"`source` {shown!r} does not exist (HTTP 404)")
        if ranged.status_code >= 400:
            error = StoreUnavailableError if _server_trouble(ranged.status_code) else ValueError
            raise error(
                f"`source` {shown!r} cannot be read: HEAD answered HTTP {response.status_code} and "
                f"a ranged GET HTTP {ranged.status_code}"
            )
        if ranged.status_code == 206:
            return _digits(ranged.headers.get("Content-Range", "").rpartition("/")[2])
        return _digits(ranged.headers.get("Content-Length"))  # the server ignored Range


def _server_trouble(status: int) -> bool:
    # 429 and 5xx may pass: a retry of the task may find the source readable.
    return status == 429 or status >= 500


def _digits(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


@contextlib.contextmanager
def open_source(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> Iterator[BinaryIO]:
    """Open ``uri`` for streaming reads (binary, compression disabled); closed on exit.

    :param uri: the source.
    :param conn_id: Airflow connection with the storage credentials (``source_conn_id``).
    :param transport_params: extra smart-open parameters (validated per scheme).
    """
    if scheme_family(uri) == "file":
        with open(_local_path(uri), "rb") as local:
            yield local
        return
    params = transport_params_for(
        uri, conn_id=conn_id, transport_params=transport_params, conn_param="source_conn_id"
    )
    import smart_open  # on use: it loads every transport (boto3, paramiko, azure...)

    fh: Any = smart_open.open(uri, "rb", compression="disable", transport_params=params)
    with fh:
        yield fh

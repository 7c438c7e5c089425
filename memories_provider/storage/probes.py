"""Storage probes: the size of what is stored at a URI, asked without reading a byte of it, and
the version marks the same answer gives for free (see :class:`StoredStat`).

One probe per scheme family of :data:`~memories_provider.storage.uris.SCHEME_FAMILY`: ``stat``,
S3 ``HeadObject``, GCS and Azure blob properties, SFTP ``stat``, HTTP ``HEAD`` (or a one-byte
ranged ``GET``). The upload operator sizes its ``source`` with them; the download and export
operators ask whether their ``destination`` is already there. Each takes smart-open
``transport_params`` already resolved (credentials included); the storage libraries are imported
on use, as smart-open would.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memories_provider.redaction import Redactor, url_secrets
from memories_provider.storage.errors import StoreUnavailableError
from memories_provider.storage.uris import local_path, redact_uri, scheme_family

__all__ = [
    "StoredStat",
    "azure_size",
    "free_space",
    "gcs_size",
    "http_marks",
    "http_size",
    "local_size",
    "local_stat_of",
    "s3_size",
    "sftp_size",
    "sftp_stat_of",
    "stored_size",
    "stored_stat",
]


@dataclass(frozen=True)
class StoredStat:
    """What one probe learnt of a stored file.

    :param size: bytes (``None``: an HTTP server that gives no length).
    :param version: marks the storage changes whenever the file is written, as strings — local
        ``mtime_ns`` and ``inode@<host>``; SFTP ``mtime`` (seconds); S3 ``etag`` and ``version_id``
        (versioned buckets); GCS ``generation``; Azure ``etag``; HTTP ``etag`` and
        ``last_modified`` — only those the storage gave. Empty when it gave none.
    """

    size: int | None
    version: dict[str, str] = field(default_factory=dict)


def stored_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """The size and version marks of what is stored at ``uri``; ``None`` when nothing is (an HTTP
    resource always answers, or raises: see :func:`http_size`).

    :raises ValueError: for a scheme outside the table.
    """
    return _PROBES[scheme_family(uri)](uri, params)


def stored_size(uri: str, params: dict[str, Any]) -> int | None:
    """The size in bytes of what is stored at ``uri``; ``None`` when nothing is (see :func:`http_size`
    for the one exception).

    :raises ValueError: for a scheme outside the table.
    """
    stat = stored_stat(uri, params)
    return None if stat is None else stat.size


def _marks(**values: Any) -> dict[str, str]:
    """The version marks given (``None`` and empty ones left out), as strings."""
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def free_space(folder: str) -> int | None:
    """Bytes a new file in ``folder`` may still take (``statvfs``); ``None`` when the filesystem
    does not tell: no such folder, or one that reports no size or no room at all (pseudo and some
    FUSE filesystems do; a disk truly full fails at the first write anyway).

    An early warning, not a promise: others may write there meanwhile, and quotas are not seen.
    """
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    # root may also fill the blocks reserved for it (f_bfree); others only f_bavail.
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
    if stats.f_blocks == 0 or blocks == 0:
        return None
    return int(blocks * stats.f_frsize)


def local_size(uri: str, params: dict[str, Any]) -> int | None:
    """A local path's or ``file://`` URI's size; ``None`` unless it is a regular file."""
    return _size(local_stat(uri, params))


def local_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """A local file's size, ``mtime_ns`` and inode (``stat``; the inode as ``inode@<host name>``);
    ``None`` unless it is a regular file."""
    import stat as stat_module

    path = local_path(uri)
    assert path is not None
    try:
        info = os.stat(path)
    except OSError:  # missing, or unreadable: as os.path.isfile says
        return None
    if not stat_module.S_ISREG(info.st_mode):
        return None
    return local_stat_of(info)


def local_stat_of(info: os.stat_result) -> StoredStat:
    """The :class:`StoredStat` of a regular file's ``stat`` (or ``fstat``) result."""
    # The inode is named by the machine that read it: another worker's copy of the path, or the
    # same network or FUSE mount seen from another worker (gcsfuse numbers inodes per mount), has
    # other inode numbers for the same file, so only marks read on the same machine are compared.
    # An inode of 0 (some filesystems, Windows before Python 3.12) says nothing.
    marks = _marks(mtime_ns=info.st_mtime_ns)
    if info.st_ino:
        marks[f"inode@{socket.gethostname()}"] = str(info.st_ino)
    return StoredStat(info.st_size, marks)


def sftp_size(uri: str, params: dict[str, Any]) -> int | None:
    """An ``sftp://`` (``ssh://``, ``scp://``) file's size from ``stat`` over SFTP."""
    return _size(sftp_stat(uri, params))


def sftp_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """An SFTP file's size and ``mtime`` (whole seconds: SFTP v3 gives no finer, and no inode)."""
    import smart_open

    try:
        fh: Any = smart_open.open(uri, "rb", compression="disable", transport_params=params)
    except FileNotFoundError:
        return None
    except OSError as err:  # paramiko raises IOError(errno.ENOENT) for a missing path
        if getattr(err, "errno", None) == errno.ENOENT:
            return None
        raise
    with fh:
        attributes = fh.stat()
        with contextlib.suppress(Exception):
            fh.sftp.close()
        return sftp_stat_of(attributes)


def sftp_stat_of(attributes: Any) -> StoredStat | None:
    """The :class:`StoredStat` of an SFTP ``stat`` answer (paramiko's ``SFTPAttributes``); ``None``
    when it gives no size."""
    size = attributes.st_size
    if size is None:
        return None
    return StoredStat(int(size), _marks(mtime=getattr(attributes, "st_mtime", None)))


def s3_size(uri: str, params: dict[str, Any]) -> int | None:
    """An S3 object's ``ContentLength`` from ``HeadObject`` with ``params["client"]``."""
    return _size(s3_stat(uri, params))


def s3_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """An S3 object's ``ContentLength``, ``ETag`` and ``VersionId`` (versioned buckets only), from
    ``HeadObject`` — of the version ``params["version_id"]`` pins, if any."""
    from smart_open import s3

    parsed = s3.parse_uri(uri)
    client = params["client"]  # transport_params_for provides one
    try:
        # The version smart-open reads (transport_params["version_id"], else the URI's
        # ?versionId=), not the latest one.
        version = params.get("version_id") or parsed["version_id"]
        pinned = {"VersionId": version} if version else {}
        head = client.head_object(Bucket=parsed["bucket_id"], Key=parsed["key_id"], **pinned)
    except Exception as err:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return StoredStat(
        int(head["ContentLength"]),
        _marks(etag=head.get("ETag"), version_id=_real_version(head.get("VersionId"))),
    )


def _real_version(version_id: Any) -> Any:
    """S3's ``VersionId``, but not ``"null"`` (an object written before versioning was enabled)."""
    return None if version_id == "null" else version_id


def gcs_size(uri: str, params: dict[str, Any]) -> int | None:
    """A GCS blob's size (``params["client"]`` or the default ``storage.Client()``)."""
    return _size(gcs_stat(uri, params))


def gcs_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """A GCS blob's size and ``generation`` (new on every write of the object)."""
    from smart_open import gcs

    parsed = gcs.parse_uri(uri)
    client = params.get("client")
    if client is None:
        from google.cloud import storage

        client = storage.Client()
    blob = client.bucket(parsed["bucket_id"]).get_blob(parsed["blob_id"])
    if blob is None:
        return None
    return StoredStat(int(blob.size), _marks(generation=blob.generation))


def azure_size(uri: str, params: dict[str, Any]) -> int | None:
    """An Azure blob's size from its properties (needs ``params["client"]``)."""
    return _size(azure_stat(uri, params))


def azure_stat(uri: str, params: dict[str, Any]) -> StoredStat | None:
    """An Azure blob's size and ``ETag`` (new on every write) from its properties."""
    from azure.core.exceptions import ResourceNotFoundError
    from smart_open import azure

    parsed = azure.parse_uri(uri)
    client = params.get("client")
    if client is None:
        raise ValueError("azure:// destinations need a `destination_conn_id` or transport_params['client']")
    blob = client.get_blob_client(parsed["container_id"], parsed["blob_id"])
    try:
        properties = blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    return StoredStat(int(properties.size), _marks(etag=properties.etag))


def http_size(uri: str, params: dict[str, Any]) -> int | None:
    """An ``http(s)://`` resource's length from ``HEAD``, else from a ranged ``GET`` of one byte.

    Unlike the other probes, ``None`` means the server gives no length; a missing resource raises.

    :raises ValueError: naming ``source`` when the server says it does not exist or refuses it.
    :raises StoreUnavailableError: on ``429`` or ``5xx`` (a later try may read it).
    """
    return http_stat(uri, params).size


def http_stat(uri: str, params: dict[str, Any]) -> StoredStat:
    """An ``http(s)://`` resource's length (see :func:`http_size`), ``ETag`` and ``Last-Modified``,
    from the answer the length was read from."""
    import requests

    request: dict[str, Any] = {
        "allow_redirects": True,
        "timeout": params.get("timeout"),
        "auth": (params["user"], params.get("password") or "") if params.get("user") else None,
    }
    # The length of the bytes themselves: requests accepts gzip by default, and a server that
    # compresses would give the compressed length, which neither the stream read (smart-open asks
    # for ``identity``) nor the file the service fetches has. The user's own headers win.
    asked = {"Accept-Encoding": "identity", **(params.get("headers") or {})}
    failure: requests.RequestException
    try:
        response = requests.head(uri, headers=asked, **request)
        _check_http(uri, response.status_code, f"HEAD answered HTTP {response.status_code}", refusable=True)
        length = _digits(response.headers.get("Content-Length"))
        if response.status_code < 400 and length is not None:
            return StoredStat(length, http_marks(response.headers))
        # Presigned S3/GCS URLs are signed for GET only (HEAD gets 403), and some servers refuse HEAD
        # (405) or omit its length: ask for the first byte and read the total from Content-Range.
        headers = {**asked, "Range": "bytes=0-0"}
        with requests.get(uri, headers=headers, stream=True, **request) as ranged:  # body never read
            answers = f"HEAD answered HTTP {response.status_code} and a ranged GET HTTP {ranged.status_code}"
            _check_http(uri, ranged.status_code, answers, refusable=False)
            marks = http_marks(ranged.headers)
            if ranged.status_code == 206:
                return StoredStat(_digits(ranged.headers.get("Content-Range", "").rpartition("/")[2]), marks)
            return StoredStat(_digits(ranged.headers.get("Content-Length")), marks)  # Range ignored
    except requests.RequestException as err:
        failure = err
    # Raised outside the handler, with no cause: requests quotes the URL, a presigned one's
    # signature included ("Max retries exceeded with url: /clip.mp4?X-Amz-Signature=...").
    text = Redactor(url_secrets(uri)).redact(str(failure))
    raise StoreUnavailableError(f"`source` {redact_uri(uri)!r} cannot be reached: {text}")


def _check_http(uri: str, status: int, answers: str, *, refusable: bool) -> None:
    shown = redact_uri(uri)
    if status == 404:
        raise ValueError(f"`source` {shown!r} does not exist (HTTP 404)")
    if status < 400 or (refusable and status in (403, 405)):
        return
    # 429 and 5xx may pass: a retry of the task may find the source readable.
    error = StoreUnavailableError if status == 429 or status >= 500 else ValueError
    raise error(f"`source` {shown!r} cannot be read: {answers}")


def http_marks(headers: Any) -> dict[str, str]:
    """The version marks of an HTTP answer: its ``ETag`` and ``Last-Modified``."""
    return _marks(etag=headers.get("ETag"), last_modified=headers.get("Last-Modified"))


def _size(stat: StoredStat | None) -> int | None:
    return None if stat is None else stat.size


def _digits(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


_PROBES: dict[str, Callable[[str, dict[str, Any]], StoredStat | None]] = {
    "file": local_stat,
    "s3": s3_stat,
    "gs": gcs_stat,
    "azure": azure_stat,
    "sftp": sftp_stat,
    "http": http_stat,
}

"""Storage files: the file an upload reads (the upload operator's ``source``), looked up without
downloading it, then opened as a stream.

Any URI smart-open reads (local path, ``file://``, ``s3://``, ``gs://``, ``azure://``,
``sftp://``, ``http(s)://``); compression is always disabled so ``clip.mp4.gz`` is sent byte
for byte rather than silently decompressed. The size and the version marks come from
:mod:`~memories_provider.storage.probes`.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import stat as file_mode
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

from memories_provider.client.multipart import SourceSizeError
from memories_provider.storage.credentials import (
    SFTP_TIMEOUT,
    transport_params_for,
    validate_transport_params,
)
from memories_provider.storage.probes import StoredStat, http_marks, local_stat_of, sftp_stat_of, stored_stat
from memories_provider.storage.uris import (
    file_host_problem,
    local_path,
    object_key,
    object_location,
    object_uri_problem,
    redact_uri,
    scheme_family,
    scheme_of,
    windows_path_problem,
)

__all__ = ["SourceChangedError", "StorageFile", "open_storage_file", "stat_storage_file", "storage_file_name"]


@dataclass(frozen=True)
class StorageFile:
    """What is known about a file in storage before a byte of it is read.

    :param uri: its URI as given.
    :param name: its file name (last path segment), used as the upload's filename.
    :param size: its size in bytes; ``None`` only for an HTTP file whose server gives no length.
    :param version: what the storage's answer said of this version of the file besides its size
        (:attr:`~memories_provider.storage.probes.StoredStat.version`: mtime and inode, ETag,
        generation ...); empty when it said nothing more.
    :param transport_params: the smart-open settings it was looked up with (credentials, and the
        storage client itself), so that :meth:`open` reads it with the same ones; never shown.
    """

    uri: str
    name: str
    size: int | None
    transport_params: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    version: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Open the file for streaming reads (binary, compression disabled) with the settings it was
        looked up with: one storage client per file, not one per step.

        It is held to the version that was looked up, else :class:`SourceChangedError` before the
        upload's body can end: a local file, opened without blocking, must still be the regular
        file of that size and marks (``mtime_ns``, inode), and an SFTP file of that size and
        ``mtime``, when opened and when read to the end; an S3 object is read by its ``VersionId``
        or only while each GET answers with its ``ETag``; an Azure blob is downloaded only while its
        ``ETag`` is still the one seen; a GCS blob's generation and an HTTP answer's
        ``ETag``, ``Last-Modified`` and length are compared on opening.
        """
        family = scheme_family(self.uri)
        if family == "file":
            with _open_local(self) as local:
                yield local
            return
        if family == "s3":
            with _open_s3(self) as fh:
                yield fh
            return
        with _open(self.uri, self.transport_params) as fh:
            if family == "http":
                _check_http_answer(self, fh)
            elif family == "sftp":
                _bound_sftp_reads(fh, self.transport_params)
                _check_sftp_answer(self, fh, _BEFORE_SENDING)
                # Read through its handle, an SFTP file rewritten in place mixes versions.
                yield cast(BinaryIO, _CheckedAtEnd(fh, lambda: _check_sftp_answer(self, fh, _WHILE_SENDING)))
                return
            elif family == "gs":
                _check_gcs_blob(self, fh)
            elif family == "azure":
                _pin_azure_blob(self, fh)
            yield fh


def storage_file_name(uri: str) -> str:
    """The file name of ``uri``, as its storage names the file read: the last path segment of a
    URL (``file://``, ``sftp://``, ``http(s)://``), URL-decoded; of an object key (``s3://``,
    ``gs://``, ``azure://``) as written, since smart-open reads the key with its ``%``, ``?`` and
    ``#``; of a plain local path as written too, a path being no URL."""
    if scheme_of(uri) == "":  # what local_path reads as a path, not a file: URI
        return posixpath.basename(uri.rstrip("/"))
    key = object_key(uri)  # smart-open's reading: raw, past S3 credentials, without versionId
    if key is not None:  # a key ending in '/' (or azure://container/) names a folder
        return "" if key.endswith("/") or uri.endswith("/") else posixpath.basename(key)
    return posixpath.basename(unquote(urlsplit(uri).path).rstrip("/"))


def source_family(uri: str) -> str:
    """:func:`scheme_family` of an upload's ``source``; a Windows path, a ``file://`` URI naming a
    host or an unsupported scheme raises ``ValueError`` naming ``source``."""
    problem = (
        windows_path_problem(uri, "source")
        or file_host_problem(uri, "source")
        or object_uri_problem(uri, "source")
    )
    if problem is not None:
        raise ValueError(problem)
    try:
        return scheme_family(uri)
    except ValueError as err:
        raise ValueError(f"`source`: {err}") from None


#: What a path that exists but is no regular file (nor a folder) is, by its ``stat`` mode.
_SPECIAL_KINDS = (
    (file_mode.S_ISFIFO, "a FIFO (named pipe)"),
    (file_mode.S_ISCHR, "a character device"),
    (file_mode.S_ISBLK, "a block device"),
    (file_mode.S_ISSOCK, "a socket"),
)


def special_file_kind(path: str) -> str | None:
    """What ``path`` is when it exists (symlinks followed) as a FIFO, device or socket; else ``None``.

    Only ``stat``: opening a FIFO to look would block until someone writes to it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def _check_readable(uri: str) -> None:
    """A local ``source`` that exists must open for reading on this worker (without blocking):
    ``stat`` passes a file without read permission, which would fail only after the requests
    made before the upload."""
    try:
        os.close(os.open(_local_path(uri), _NO_WAIT))
    except FileNotFoundError:
        return  # said as "does not exist", with where it was looked for
    except OSError as err:
        raise ValueError(f"`source` {uri!r} cannot be read on this worker: {err.strerror or err}") from None


def _resolved_as(uri: str) -> str:
    """`` (looked for at /abs/path)`` when a relative or ``~`` path resolved to another spelling on
    this worker, whose working folder and home are rarely the ones the DAG's author had in mind."""
    path = _local_path(uri)
    return "" if path == uri.strip() or "://" in uri else f" (looked for at {path!r} on this worker)"


def _local_path(uri: str) -> str:
    path = local_path(uri)
    assert path is not None
    return path


def stat_storage_file(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> StorageFile:
    """Look ``uri`` up without reading it (see :mod:`~memories_provider.storage.probes`).

    An HTTP server that refuses ``HEAD`` (403/405, as presigned GET URLs do) or gives no length
    is asked for ``Range: bytes=0-0`` instead, and the size read from ``Content-Range``.

    :param uri: the file (the upload operator's ``source``).
    :param conn_id: Airflow connection with the storage credentials (``source_conn_id``).
    :param transport_params: extra smart-open parameters (validated per scheme).
    :raises ValueError: naming ``source`` when it is empty, missing, a folder, or has no data.
    """
    if not uri or not str(uri).strip():
        raise ValueError("`source` must be a non-empty path or URI")
    family = source_family(uri)
    name = storage_file_name(uri)
    shown = redact_uri(uri)
    if not name:
        raise ValueError(f"`source` {shown!r} names a folder, not a video file")
    if family == "file":
        validate_transport_params(uri, transport_params)
        if os.path.isdir(_local_path(uri)):
            raise ValueError(f"`source` {uri!r} is a folder, not a video file")
        kind = special_file_kind(_local_path(uri))
        if kind is not None:
            raise ValueError(
                f"`source` {uri!r} is {kind}, not a regular file: only a regular file has a size to "
                "announce before it is sent"
            )
        _check_readable(uri)
    params = _source_params(uri, conn_id, transport_params)
    stat = stored_stat(uri, params)
    size = None if stat is None else stat.size
    if size is None and family != "http":  # an HTTP server may just not tell
        raise ValueError(f"`source` {shown!r} does not exist{_resolved_as(uri) if family == 'file' else ''}")
    if size == 0:
        raise ValueError(f"`source` {shown!r} is empty (0 bytes)")
    version = {} if stat is None else stat.version
    return StorageFile(uri=uri, name=name, size=size, transport_params=params, version=version)


@contextlib.contextmanager
def open_storage_file(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> Iterator[BinaryIO]:
    """Open ``uri`` for streaming reads (binary, compression disabled); closed on exit.

    :param uri: the file.
    :param conn_id: Airflow connection with the storage credentials (``source_conn_id``).
    :param transport_params: extra smart-open parameters (validated per scheme).
    """
    with _open(uri, _source_params(uri, conn_id, transport_params)) as fh:
        yield fh


def _source_params(uri: str, conn_id: str | None, transport_params: dict[str, Any] | None) -> dict[str, Any]:
    """The smart-open settings to read ``uri`` with (none for a local file, which is opened directly)."""
    if scheme_family(uri) == "file":
        return {}
    return transport_params_for(
        uri, conn_id=conn_id, transport_params=transport_params, conn_param="source_conn_id"
    )


class SourceChangedError(SourceSizeError):
    """A local ``source`` is no longer the file that was looked up: replaced or rewritten since,
    or while it was being sent. Raised before the upload's body ends, so nothing is accepted."""


#: Open without waiting: a FIFO put in the file's place would block ``open`` until a writer came.
_NO_WAIT = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
)


@contextlib.contextmanager
def _open_local(source: StorageFile) -> Iterator[BinaryIO]:
    fd = os.open(_local_path(source.uri), _NO_WAIT)
    try:
        _check_unchanged(source, os.fstat(fd), _BEFORE_SENDING)
        if hasattr(os, "O_NONBLOCK"):  # a regular file: read it blocking (a FUSE file may honour the flag)
            os.set_blocking(fd, True)
        local = _HeldFile(fd, source)
    except BaseException:
        os.close(fd)
        raise
    with local:
        yield local


class _HeldFile(io.FileIO):
    """A local file that, once read to its end, checks it is still the file that was looked up:
    rewritten in place while it was read (same size, other bytes), its mtime has moved."""

    def __init__(self, fd: int, source: StorageFile) -> None:
        super().__init__(fd, "rb", closefd=True)
        self._source = source

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            _check_unchanged(self._source, os.fstat(self.fileno()), _WHILE_SENDING)
        return data or b""


@contextlib.contextmanager
def _open_s3(source: StorageFile) -> Iterator[BinaryIO]:
    """An S3 object read as the version that was looked up: that ``VersionId`` (a versioned bucket
    keeps it readable), else only while its ``ETag`` is still the one seen: the answer of every GET
    smart-open makes (the first one on opening, and any reconnect mid-read) is compared with it
    before its body is read. Not ``If-Match``, which S3-compatible stores without conditional reads
    refuse (``501 NotImplemented``), failing every upload from them."""
    params = dict(source.transport_params)
    etag = source.version.get("etag")
    location = object_location(source.uri)
    # The user's version, or the URI's (an empty ?versionId= too: smart-open passes it on).
    pinned = params.get("version_id") or (location is not None and location.version_id is not None)
    client: Any = params.get("client")
    watch = None
    if source.version.get("version_id") and not pinned:
        params["version_id"] = source.version["version_id"]
    elif etag and client is not None:
        watch = f"memories-source-etag-{uuid.uuid4().hex}"
        answers = []

        def same_etag(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
            status = getattr(http_response, "status_code", None)
            got = (parsed or {}).get("ETag") if status in (200, 206) else None
            answers.append(got)
            if got is not None and got.strip('"') != etag.strip('"'):
                with contextlib.suppress(Exception):
                    parsed["Body"].close()  # not a byte of it is read
                what = _BEFORE_SENDING if len(answers) == 1 else _WHILE_SENDING
                raise SourceChangedError(
                    f"`source` {redact_uri(source.uri)!r} {what} (etag {etag} -> {got}); a retry "
                    "uploads it as it is then"
                )

        client.meta.events.register("after-call.s3.GetObject", same_etag, unique_id=watch)
    try:
        import smart_open

        fh: Any = smart_open.open(source.uri, "rb", compression="disable", transport_params=params)
        with fh:
            yield fh
    finally:
        if watch is not None:
            client.meta.events.unregister("after-call.s3.GetObject", unique_id=watch)


#: What a :class:`SourceChangedError` found before anything was read says happened.
_BEFORE_SENDING = "changed since it was looked up; nothing of it was sent"
#: ... and what one found once the file was read to its end.
_WHILE_SENDING = (
    "changed while it was being sent; the upload was stopped before its last byte, so it cannot "
    "have been accepted"
)


def _check_http_answer(source: StorageFile, fh: Any) -> None:
    """The GET smart-open opened must answer for the version that was looked up (HEAD or a ranged
    GET, earlier): the same ``ETag`` and ``Last-Modified`` where both answers give one, and a whole
    body (HTTP 200) of the same length. Raises :class:`SourceChangedError` before a byte is read."""
    response: Any = getattr(fh, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return
    length = headers.get("Content-Length", "").strip()
    whole = int(length) if response.status_code == 200 and length.isdigit() else None
    _check_same(source, StoredStat(whole, http_marks(headers)), _BEFORE_SENDING)


def _check_sftp_answer(source: StorageFile, fh: Any, what: str) -> None:
    """The SFTP file opened must still be the one looked up (its ``stat`` over the open handle:
    size, and ``mtime`` in whole seconds), else :class:`SourceChangedError`."""
    now = sftp_stat_of(fh.stat())
    if now is not None:
        _check_same(source, now, what)


def _bound_sftp_reads(fh: Any, params: dict[str, Any]) -> None:
    """Let each SFTP answer take at most the connection's timeout (:data:`SFTP_TIMEOUT` without
    one): paramiko waits forever for a server that stopped answering without closing."""
    channel = getattr(getattr(fh, "sftp", None), "get_channel", lambda: None)()
    if channel is not None:
        channel.settimeout(float((params.get("connect_kwargs") or {}).get("timeout") or SFTP_TIMEOUT))


class _CheckedAtEnd:
    """``fh`` whose ``read``, once it finds the end, calls ``check`` (raising if the file moved)."""

    def __init__(self, fh: Any, check: Callable[[], None]) -> None:
        self._fh = fh
        self._check = check

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._fh.read(size)
        if not data and size != 0:
            self._check()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _check_gcs_blob(source: StorageFile, fh: Any) -> None:
    """The blob smart-open fetched on opening must be the generation looked up (its reader
    downloads that generation only). Raises :class:`SourceChangedError` before a byte is read."""
    blob = getattr(fh, "_blob", None)  # google-cloud-storage's BlobReader
    if blob is not None and blob.generation is not None:
        _check_same(source, StoredStat(blob.size, {"generation": str(blob.generation)}), _BEFORE_SENDING)


def _pin_azure_blob(source: StorageFile, fh: Any) -> None:
    """The blob smart-open opened must be the one looked up: its size (read on opening) is compared
    before a byte is read, and every ranged download it makes is conditional on the ``ETag`` looked
    up, so a blob rewritten before or while it is read raises :class:`SourceChangedError`."""
    size = getattr(fh, "_size", None)  # smart-open's azure Reader, from the blob's properties
    if isinstance(size, int):
        _check_same(source, StoredStat(size, {}), _BEFORE_SENDING)
    etag = source.version.get("etag")
    blob = getattr(fh, "_blob", None)
    if not etag or blob is None:
        return
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError

    download = blob.download_blob

    def pinned(*args: Any, **kwargs: Any) -> Any:
        try:
            return download(*args, etag=etag, match_condition=MatchConditions.IfNotModified, **kwargs)
        except ResourceModifiedError:
            raise SourceChangedError(
                f"`source` {redact_uri(source.uri)!r} changed since it was looked up (etag {etag} is no "
                "longer the blob's); a retry uploads it as it is then"
            ) from None

    # This BlobClient is the reader's own (smart-open makes one per open).
    blob.download_blob = pinned


def _check_unchanged(source: StorageFile, info: os.stat_result, what: str) -> None:
    """Raise :class:`SourceChangedError` unless ``info`` is of the regular file ``source`` was:
    same size, and same version marks where ``source`` has them."""
    kind = next((kind for test, kind in _SPECIAL_KINDS if test(info.st_mode)), None)
    if kind is not None:
        raise SourceChangedError(
            f"`source` {redact_uri(source.uri)!r} is {kind} now, not the regular file it was when looked up"
        )
    _check_same(source, local_stat_of(info), what)


def _check_same(source: StorageFile, now: StoredStat, what: str) -> None:
    """Raise :class:`SourceChangedError` (``source`` ``what``, and which marks moved) when ``now``
    has another size (if it tells one) or another value of a version mark both hold."""
    changes = (
        [f"size {source.size} -> {now.size}"]
        if None not in (now.size, source.size) and now.size != source.size
        else []
    )
    changes += [
        f"{key} {value} -> {now.version[key]}"
        for key, value in source.version.items()
        if key in now.version and now.version[key] != value
    ]
    if changes:
        told = ", ".join(changes)
        raise SourceChangedError(
            f"`source` {redact_uri(source.uri)!r} {what} ({told}); a retry uploads it as it is then"
        )


@contextlib.contextmanager
def _open(uri: str, params: dict[str, Any]) -> Iterator[BinaryIO]:
    if scheme_family(uri) == "file":
        with open(_local_path(uri), "rb") as local:
            yield local
        return
    import smart_open  # on use: it loads every transport (boto3, paramiko, azure...)

    fh: Any = smart_open.open(uri, "rb", compression="disable", transport_params=params)
    with fh:
        yield fh

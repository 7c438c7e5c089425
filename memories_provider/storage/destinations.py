"""Atomic, streaming destinations for downloads: any URI smart-open can write.

A reader of the destination sees either nothing (or the previous object) or the whole
new object, never a partial one:

* local paths and ``file://``: write ``.<name>.<random>.part`` beside the target, fsync,
  then ``os.replace`` on success; the temporary file is removed on any error;
* ``sftp://`` (also ``ssh://``, ``scp://``): the same dance over SFTP with
  ``posix-rename@openssh.com``;
* ``s3://``, ``gs://``, ``azure://``: smart-open's writer, opened inside ``with`` so that on
  an exception its ``__exit__`` calls ``terminate()`` (S3: ``AbortMultipartUpload``;
  GCS: the resumable upload is cancelled; Azure: the block list is never committed).
  Memory is about one part (``min_part_size`` in ``transport_params``; smart-open's default
  is 50 MiB for S3).

A process killed outright (SIGKILL, the OOM killer) runs no cleanup, so each writer first
removes the temporary files an earlier, dead writer left for the same target: locally those
whose ``flock`` it can take (a live writer holds one on its own until the rename) and that were
idle for :data:`LOCAL_TEMP_GRACE` seconds; over SFTP (no locks) those idle for
:data:`UNLOCKED_TEMP_GRACE` seconds. An S3 multipart upload of a killed writer stays incomplete
(and billed) until a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` removes it.

Compression is always disabled: a key ending in ``.gz`` is written byte for byte.

Resolve a destination's transport parameters (credentials included) once with
:func:`resolve_transport`, before any paid request, and hand the result to
:func:`destination_exists` and :func:`atomic_writer`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, urlsplit

from memories_provider.storage import probes
from memories_provider.storage.part_buffer import PartBuffer
from memories_provider.storage.provenance import Provenance, sidecar_name
from memories_provider.storage.s3_part_checksums import crc32_upload_args, precompute_part_checksums
from memories_provider.storage.uris import (
    file_host_problem,
    local_path,
    object_key,
    object_location,
    object_uri_problem,
    redact_uri,
    scheme_of,
    schemes_of,
    windows_path_problem,
)
from memories_provider.storage.write_behind import open_write_behind

log = logging.getLogger(__name__)

#: Schemes whose smart-open writer aborts (commits nothing) when its ``with`` block raises.
OBJECT_STORE_SCHEMES = schemes_of("s3", "gs", "azure")
#: Schemes written through google-cloud-storage.
GCS_SCHEMES = schemes_of("gs")
#: Schemes written through SFTP.
SFTP_SCHEMES = schemes_of("sftp")
#: Every destination scheme we know how to write atomically ("" is a plain local path).
SUPPORTED_SCHEMES = OBJECT_STORE_SCHEMES | SFTP_SCHEMES | schemes_of("file")

_MAX_NAME_BYTES = 200  # leaves room for our ".<name>.<random>.part" temp names under the usual 255
_TEMP_TOKEN_BYTES = 6
#: Bytes in a file name on the usual filesystems (ext4, XFS, APFS, NTFS in UTF-16 units) and SFTP servers.
_NAME_MAX = 255
#: What the longest name derived from a destination's (its record's temporary file) adds to it.
_DERIVED_NAME_OVERHEAD = len(f".{sidecar_name('')}.{'0' * 2 * _TEMP_TOKEN_BYTES}.part")
#: Seconds a local temp file whose lock is free must have been idle before it counts as abandoned:
#: covers a writer between creating its file and locking it, and filesystems (some NFS mounts)
#: whose locks are not seen from other hosts, where a live writer still writes at least this often.
LOCAL_TEMP_GRACE = 120.0
#: Idle seconds before a temp file counts as abandoned where no lock can tell (SFTP, local
#: filesystems without ``flock``): far longer than a live writer's longest pause.
UNLOCKED_TEMP_GRACE = 3600.0
# Characters that would change the meaning of a URI (query, fragment) or of a path.
_URI_UNSAFE = str.maketrans({c: "_" for c in '?#%:*"<>|'})


def check_destination(uri: str) -> None:
    """Raise ``ValueError`` for an empty destination or one we cannot write atomically."""
    if not uri or not uri.strip():
        raise ValueError("`destination` must be a non-empty path or URI")
    problem = windows_path_problem(uri, "destination")
    if problem is not None:
        raise ValueError(problem)
    scheme = scheme_of(uri)
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"`destination` scheme {scheme!r} is not supported; use a local path, file://, s3://, "
            "gs://, azure:// or sftp://"
        )
    problem = file_host_problem(uri, "destination") or object_uri_problem(uri, "destination")
    if problem is not None:
        raise ValueError(problem)
    cut = _path_cut_by(uri, scheme)
    if cut:
        raise ValueError(
            f"`destination` {redact_uri(uri)!r} holds {' and '.join(repr(c) for c in cut)}, which ends the "
            f"path of a {scheme}:// URI: the file would be written under another name"
            + (
                "; percent-encode it (%3F for '?', %23 for '#')"
                if scheme != "azure"
                else "; choose a name without it"
            )
        )
    location = object_location(uri)
    if location is not None and location.version_id is not None:
        raise ValueError(
            f"`destination` {redact_uri(uri)!r} names an object version (versionId=), which smart-open "
            "reads as the version to open, and no version can be written (S3 gives a new object its "
            "own): remove the versionId parameter"
        )
    if location is not None and not location.key and not is_folder(uri):
        raise ValueError(
            f"`destination` {redact_uri(uri)!r} names a bucket and no object: end it with '/' to "
            f"download into the bucket ({redact_uri(uri)}/), or give the object's key"
        )
    if scheme == "azure" and _dot_segment(uri):
        raise ValueError(
            f"`destination` {redact_uri(uri)!r} has a '.' or '..' segment in its blob name: in the blob's "
            "URL it is resolved as a relative path, so the request would name another blob (or be "
            "refused as badly signed); give the name without it"
        )
    if scheme not in OBJECT_STORE_SCHEMES and not is_folder(uri):
        # Written as ``.<name>.<random>.part`` and recorded in ``.<name>.memories.json`` (itself
        # written through a temporary file): those names must fit too, or the write fails only
        # once the (billed) download is under way, or the record is lost.
        size = len(basename_of(uri).encode("utf-8"))
        room = _NAME_MAX - _DERIVED_NAME_OVERHEAD
        if size > room:
            raise ValueError(
                f"`destination` file name is {size} bytes long; at most {room} bytes fit (the temporary "
                f"file and the record written beside it add {_DERIVED_NAME_OVERHEAD} bytes, and a file "
                f"name has at most {_NAME_MAX})"
            )


def _path_cut_by(uri: str, scheme: str) -> list[str]:
    """The characters of ``uri`` that end its path where smart-open (and :func:`local_path`) read it:
    ``?`` and ``#`` in ``file://`` and SFTP URIs, ``?`` in ``azure://`` ones. S3 and GCS keys keep them."""
    if scheme == "file" or scheme in SFTP_SCHEMES:
        cutting = "?#"
    elif scheme == "azure":
        cutting = "?"
    else:
        return []
    rest = uri.partition("://")[2]
    return [char for char in cutting if char in rest]


def _dot_segment(uri: str) -> bool:
    """Whether the blob name of ``uri`` (after its container) has a ``.`` or ``..`` segment."""
    key = object_key(uri) or ""
    return any(segment in (".", "..") for segment in key.split("/"))


def is_folder(uri: str) -> bool:
    """A destination ending in ``/`` is a folder: the file name comes from the response."""
    return uri.endswith("/")


def canonical_uri(uri: str) -> str:
    """A stable URI for events and lineage: local paths become ``file:///abs/path``."""
    path = local_path(uri)
    if path is not None:
        return "file://" + path
    return uri


def sanitize_filename(name: str | None, fallback: str) -> str:
    """Make an untrusted (server-supplied) file name safe to put inside a destination folder.

    Directories, ``..``, absolute paths, drive letters, control characters and leading dots
    are removed; characters that would change a URI's meaning are replaced; an empty result
    falls back to ``fallback`` (itself sanitised), and ``"download"`` as last resort. The
    result is a single path component, so the caller can never be made to write outside
    the folder.
    """
    for candidate in (name, fallback):
        if not candidate:
            continue
        # Both separators, whatever the OS: keep only the last component.
        base = candidate.replace("\\", "/").rsplit("/", 1)[-1]
        # Drop control and format characters (NUL, newlines, bidi overrides...) and lone surrogates
        # (bytes a decoder escaped), which no file system, log or XCom can encode.
        base = "".join(ch for ch in base if unicodedata.category(ch) not in {"Cc", "Cf", "Cs"})
        base = base.translate(_URI_UNSAFE).strip().lstrip(".").strip()
        # Windows drops trailing dots and spaces ("a.mp4." is "a.mp4" there).
        base = base.rstrip(". ")
        if not base:
            continue
        if _is_windows_reserved(base):
            base = f"_{base}"  # CON, nul.mp4, COM1.txt...: devices, not files, on Windows
        encoded = base.encode("utf-8")
        if len(encoded) > _MAX_NAME_BYTES:
            stem, dot, ext = base.rpartition(".")
            keep = ext if dot and 0 < len(ext.encode("utf-8")) <= 16 else ""
            budget = _MAX_NAME_BYTES - (len(keep.encode("utf-8")) + 1 if keep else 0)
            stem_part = (stem if keep else base).encode("utf-8")[:budget].decode("utf-8", "ignore")
            base = f"{stem_part}.{keep}" if keep else stem_part
        return base
    return "download"


_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "\u00b9", "\u00b2", "\u00b3")}
)


def _is_windows_reserved(name: str) -> bool:
    """Whether Windows reads ``name`` as a device (``CON``, ``nul.mp4``, ``com1.tar.gz``...)."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def prefixed_name(prefix: str, name: str) -> str:
    """``prefix`` + ``name``, the name shortened (keeping its extension) to fit :data:`_MAX_NAME_BYTES`.

    :param prefix: a safe single component (not checked here beyond that).
    :param name: a sanitised file name (see :func:`sanitize_filename`).
    """
    budget = _MAX_NAME_BYTES - len(prefix.encode("utf-8"))
    if budget < 16:
        raise ValueError(f"name prefix {prefix!r} leaves no room for a file name")
    if len(name.encode("utf-8")) > budget:
        stem, dot, ext = name.rpartition(".")
        keep = ext if dot and 0 < len(ext.encode("utf-8")) <= 16 else ""
        room = budget - (len(keep.encode("utf-8")) + 1 if keep else 0)
        cut = (stem if keep else name).encode("utf-8")[:room].decode("utf-8", "ignore")
        name = f"{cut}.{keep}" if keep else cut
    return prefix + name


def join_folder(folder_uri: str, name: str) -> str:
    """``folder_uri`` (ending in ``/``) plus a sanitised single-component ``name``."""
    if not is_folder(folder_uri):
        raise ValueError(f"not a folder destination (must end with '/'): {redact_uri(folder_uri)!r}")
    if "/" in name or "\\" in name or name in {"", ".", ".."}:
        raise ValueError(f"unsafe file name {name!r}")
    return folder_uri + name


def basename_of(uri: str) -> str:
    """The last path component of a destination URI."""
    path = local_path(uri)
    if path is not None:
        return os.path.basename(path)
    key = object_key(uri)
    if key is not None:
        return key.rstrip("/").rsplit("/", 1)[-1]
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1] if "://" in uri else uri.rsplit("/", 1)[-1]


def _smart_open_open(*args: Any, **kwargs: Any) -> Any:
    # Imported on use: ``import smart_open`` loads every transport (boto3, paramiko, azure,
    # google-cloud) and would make merely importing an operator cost seconds.
    import smart_open

    return smart_open.open(*args, **kwargs)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}.part"


def _temp_name_pattern(name: str) -> re.Pattern[str]:
    """Exactly the names :func:`_temp_name` gives for ``name``, nothing else."""
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}\.part")


@dataclass(frozen=True)
class ResolvedTransport:
    """smart-open ``transport_params`` for one destination, credentials included and validated.

    Built by :func:`resolve_transport`; valid for the destination URI it was resolved for and any
    file inside it when that URI is a folder (same scheme, host and credentials).
    """

    params: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold passwords and clients


def resolve_transport(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
    conn_param: str = "destination_conn_id",
) -> ResolvedTransport:
    """Validate ``transport_params`` and fetch ``conn_id``'s credentials for ``uri``; no data is sent.

    :param uri: the destination (a file or a folder URI).
    :param conn_id: Airflow connection with credentials for the destination (aws, google_cloud_platform,
        wasb, ssh/sftp); ``None`` uses the environment's defaults; ignored for local paths.
    :param transport_params: extra smart-open transport parameters (validated per scheme), e.g.
        ``{"min_part_size": 16 * 1024**2}`` for S3; none are accepted for local paths.
    :param conn_param: the operator parameter naming the connection, quoted in errors.
    :raises ValueError: naming ``transport_params`` or ``conn_param`` and what is wrong with it.
    """
    from memories_provider.storage.credentials import transport_params_for

    check_destination(uri)
    if local_path(uri) is not None:
        # Ignored, as for upload sources: a DAG whose destination param may be local or remote
        # passes one connection for both.
        conn_id = None
    return ResolvedTransport(
        transport_params_for(uri, conn_id=conn_id, transport_params=transport_params, conn_param=conn_param)
    )


def _resolved(
    uri: str,
    conn_id: str | None,
    transport_params: dict[str, Any] | None,
    transport: ResolvedTransport | None,
) -> ResolvedTransport:
    if transport is None:
        return resolve_transport(uri, conn_id=conn_id, transport_params=transport_params)
    if conn_id or transport_params:
        raise TypeError("pass either `transport` or `conn_id`/`transport_params`, not both")
    return transport


class DestinationTaken(Exception):
    """A file appeared at the destination while it was being written, and ``replace=False``.

    Raised by :func:`atomic_writer` when committing; nothing was overwritten and the temporary
    data (or the S3 multipart upload) is gone. Local, SFTP, S3 and Azure (``If-None-Match: *``)
    and GCS (``ifGenerationMatch=0``) destinations.
    """

    def __init__(self, uri: str) -> None:
        super().__init__(f"{redact_uri(uri)} was created by someone else while this download wrote it")
        self.uri = uri


@contextlib.contextmanager
def atomic_writer(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
    transport: ResolvedTransport | None = None,
    provenance: Provenance | None = None,
    replace: bool = True,
    replace_version: str | None = None,
) -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing so that the object appears only if the block succeeds.

    :param uri: destination file URI (not a folder).
    :param conn_id: as for :func:`resolve_transport`.
    :param transport_params: as for :func:`resolve_transport`.
    :param transport: what :func:`resolve_transport` returned for ``uri`` (or its folder), instead
        of ``conn_id`` and ``transport_params``.
    :param provenance: the record to keep with the file (see :mod:`.provenance`). Object stores
        take it as user metadata when the upload starts; local and SFTP destinations write its
        sidecar when the block ends (staged before the rename), so the caller may complete it
        (``size``, ``sha256``) inside the block. None: no record (and any earlier sidecar of the
        name is removed).
    :param replace: False: never overwrite an existing local, SFTP, S3, Azure or GCS file, raise
        :class:`DestinationTaken` instead (the check and the commit are one atomic step).
    :param replace_version: with ``replace=False``, the version of the object at ``uri`` that may be
        replaced (:attr:`~.provenance.Existing.version`: S3 and Azure its ETag, GCS its generation):
        the commit replaces that object only (S3 ``If-Match``, GCS ``ifGenerationMatch``, Azure
        ``If-Match``, checked by the store as it commits); any other object there, or none, raises
        :class:`DestinationTaken`. Ignored locally and over SFTP, which replace what is there.
    """
    check_destination(uri)
    if is_folder(uri):
        raise ValueError(f"atomic_writer needs a file URI, got the folder {redact_uri(uri)!r}")
    params = _resolved(uri, conn_id, transport_params, transport).params
    scheme = scheme_of(uri)
    if replace_version is not None and scheme not in OBJECT_STORE_SCHEMES:
        replace = True  # local and SFTP: no version to hold the commit to
    if scheme in ("", "file"):
        path = local_path(uri)
        assert path is not None
        with _local_atomic(path, provenance, replace) as fh:
            yield fh
    elif scheme in SFTP_SCHEMES:
        with _sftp_atomic(uri, params, provenance, replace) as fh:
            yield fh
    else:
        if provenance is not None:
            params = _with_metadata(scheme, params, provenance.to_metadata())
        if scheme.startswith("s3"):
            params = _s3_write_params(params)
            if not replace:
                with _s3_no_clobber(uri, params, replace_version) as fh:
                    yield fh
                return
        elif scheme == "azure" and not replace:
            with _azure_no_clobber(uri, params, replace_version) as fh:
                yield fh
            return
        elif scheme in GCS_SCHEMES and not replace:
            with _gcs_no_clobber(uri, params, replace_version) as fh:
                yield fh
            return
        # Inside ``with``: on an exception smart-open's __exit__ calls terminate() (abort), on
        # success close() completes the upload. Never let the writer be garbage-collected open.
        with _smart_open_open(uri, "wb", compression="disable", transport_params=params) as fh:
            yield fh


class _NoClobberS3:
    """A boto3 S3 client whose completions never overwrite a key (``If-None-Match: *``), or with
    ``etag`` overwrite only the object of that ETag (``If-Match``).

    A store that does not implement conditional writes (some S3-compatible ones answer
    ``NotImplemented``) gets the plain completion instead, with a warning: the last writer wins there.
    """

    _UNSUPPORTED = frozenset({"NotImplemented", "501"})

    def __init__(self, client: Any, etag: str | None = None) -> None:
        self._client = client
        self._condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _conditional(self, call: str, kwargs: dict[str, Any]) -> Any:
        from botocore.exceptions import ClientError

        method = getattr(self._client, call)
        try:
            return method(**self._condition, **kwargs)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code", "")) not in self._UNSUPPORTED:
                raise
        log.warning("this S3 store does not support conditional writes: %s is completed without one", call)
        return method(**kwargs)

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        return self._conditional("complete_multipart_upload", kwargs)

    def put_object(self, **kwargs: Any) -> Any:
        return self._conditional("put_object", kwargs)


@contextlib.contextmanager
def _s3_no_clobber(uri: str, params: dict[str, Any], etag: str | None = None) -> Iterator[IO[bytes]]:
    """An S3 writer whose commit fails with DestinationTaken if the key exists meanwhile (with
    ``etag``: if the key holds anything but the object of that ETag, or nothing)."""
    from botocore.exceptions import ClientError

    fh: Any = _smart_open_open(
        uri,
        "wb",
        compression="disable",
        transport_params={**params, "client": _NoClobberS3(params["client"], etag)},
    )
    try:
        yield fh
    except BaseException:
        with contextlib.suppress(Exception):
            fh.terminate()  # abort the multipart upload: no object, no parts left billed
        raise
    try:
        fh.close()
    except BaseException as err:
        # A failed completion leaves the upload open: abort it, whatever the reason.
        with contextlib.suppress(Exception):
            fh.terminate()
        # smart-open's single PutObject (multipart_upload=False) raises its ClientError wrapped in
        # ValueError("the bucket ... does not exist, or is forbidden for access").
        cause = err if isinstance(err, ClientError) else err.__cause__
        code = str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""
        if code in ("PreconditionFailed", "412") or (etag is not None and code in ("NoSuchKey", "404")):
            raise DestinationTaken(uri) from None
        raise


#: Azure's answers to a block list committed with ``If-None-Match: *`` over an existing blob.
_AZURE_TAKEN = frozenset({"BlobAlreadyExists", "ConditionNotMet"})


@contextlib.contextmanager
def _azure_no_clobber(uri: str, params: dict[str, Any], etag: str | None = None) -> Iterator[IO[bytes]]:
    """An Azure writer whose commit (the block list) fails with DestinationTaken if the blob exists
    meanwhile (with ``etag``: if it is not the blob of that ETag); its staged blocks are left
    uncommitted (Azure drops them after a week)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    condition: dict[str, Any] = {"match_condition": MatchConditions.IfMissing}
    if etag is not None:
        condition = {"match_condition": MatchConditions.IfNotModified, "etag": etag}
    blob_kwargs = {**(params.get("blob_kwargs") or {}), **condition}
    try:
        with _smart_open_open(
            uri, "wb", compression="disable", transport_params={**params, "blob_kwargs": blob_kwargs}
        ) as fh:
            yield fh
    except HttpResponseError as err:
        code = getattr(err, "error_code", None)
        if code in _AZURE_TAKEN or (etag is not None and code == "BlobNotFound"):
            raise DestinationTaken(uri) from None
        raise


@contextlib.contextmanager
def _gcs_no_clobber(uri: str, params: dict[str, Any], generation: str | None = None) -> Iterator[IO[bytes]]:
    """A GCS writer whose object is created only if none has the name (``ifGenerationMatch=0`` on
    the resumable upload, which GCS checks when it creates the object), or with ``generation`` only
    if the object there is that generation: otherwise the upload fails with ``412 Precondition
    Failed``, raised as DestinationTaken; the upload session is cancelled and nothing of ours is left."""
    wanted = 0 if generation is None else int(generation)
    open_kwargs = {**(params.get("blob_open_kwargs") or {}), "if_generation_match": wanted}
    try:
        with _smart_open_open(
            uri, "wb", compression="disable", transport_params={**params, "blob_open_kwargs": open_kwargs}
        ) as fh:
            yield fh
    except Exception as err:
        if _gcs_status(err) == 412:
            raise DestinationTaken(uri) from None
        raise


def _gcs_status(err: BaseException) -> int | None:
    """The HTTP status of a google-cloud-storage error: ``InvalidResponse`` (the resumable upload's
    requests) carries the answer, ``GoogleAPICallError`` its ``code``."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:
        status = getattr(err, "code", None)
    return status if isinstance(status, int) else None


def _s3_write_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for smart-open's S3 writer: parts collected in a :class:`PartBuffer` (its memory
    reused for every part) and checksummed as they are written, the upload declaring that CRC32
    (:mod:`.s3_part_checksums`; a ``ChecksumAlgorithm`` of the user's own is kept)."""
    client = precompute_part_checksums(params["client"])  # transport_params_for provides one
    client_kwargs = dict(params.get("client_kwargs") or {})
    create = dict(client_kwargs.get("S3.Client.create_multipart_upload") or {})
    if "ChecksumAlgorithm" not in create:
        create.update(crc32_upload_args(client))
    client_kwargs["S3.Client.create_multipart_upload"] = create
    return {
        **params,
        "writebuffer": params.get("writebuffer") or PartBuffer(),
        "client": client,
        "client_kwargs": client_kwargs,
    }


def _with_metadata(scheme: str, params: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
    """``params`` with ``metadata`` added to the user metadata the writer sets (the user's own kept)."""
    params = dict(params)
    if scheme.startswith("s3"):
        client_kwargs = dict(params.get("client_kwargs") or {})
        # Multipart uploads (the default) and single PUTs (multipart_upload=False) alike.
        for call in ("S3.Client.create_multipart_upload", "S3.Client.put_object"):
            kwargs = dict(client_kwargs.get(call) or {})
            kwargs["Metadata"] = {**(kwargs.get("Metadata") or {}), **metadata}
            client_kwargs[call] = kwargs
        params["client_kwargs"] = client_kwargs
    elif scheme in ("gs", "gcs"):
        properties = dict(params.get("blob_properties") or {})
        properties["metadata"] = {**(properties.get("metadata") or {}), **metadata}
        params["blob_properties"] = properties
    else:  # azure: metadata names must be C# identifiers
        blob_kwargs = dict(params.get("blob_kwargs") or {})
        azure_names = {key.replace("-", "_"): value for key, value in metadata.items()}
        blob_kwargs["metadata"] = {**(blob_kwargs.get("metadata") or {}), **azure_names}
        params["blob_kwargs"] = blob_kwargs
    return params


def _folder_in_the_way(path: str) -> IsADirectoryError:
    return IsADirectoryError(errno.EISDIR, "a folder has this name: no file can replace it", path)


@contextlib.contextmanager
def _local_atomic(path: str, provenance: Provenance | None, replace: bool) -> Iterator[IO[bytes]]:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        raise _folder_in_the_way(path)  # before the first byte: the rename could only fail
    name = os.path.basename(path)
    tmp_name = _temp_name(name)
    tmp = os.path.join(directory, tmp_name)
    # O_EXCL: never follow or clobber something that happens to sit at the temp name.
    # Written back while it grows (see write_behind): the closing fsync is short.
    fh = open_write_behind(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        # Held until the file is renamed or removed (closing releases it): a temp file whose lock
        # can be taken belongs to no live writer.
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        now = os.fstat(fh.fileno()).st_mtime
        _remove_abandoned_local(directory, name, own=tmp_name, now=now)
        _remove_abandoned_local(directory, sidecar_name(name), own="", now=now)
        if provenance is not None and provenance.size is not None:
            _check_room(directory, path, provenance.size)
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        # The file's stat as it will be once renamed (a rename keeps inode and mtime).
        info = os.fstat(fh.fileno())
        stat = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}
        # The record is on disk before the file takes its name: a writer killed between the two
        # leaves it as ``.<name>.memories.json.<random>.part``, which still proves the file (its
        # stat, inode included, is this file's alone), so a retry is not refused as unproven.
        pending = _stage_local_sidecar(directory, name, provenance, stat)
        try:
            if replace:
                os.replace(tmp, path)
            else:
                _link_no_clobber(tmp, path)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pending)
            raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        fh.close()
    _commit_local_sidecar(directory, name, pending)


class NoRoomError(OSError):
    """``ENOSPC`` measured before the first byte (see :func:`check_room`): its text names the file
    and both sizes."""


def _check_room(directory: str, path: str, size: int, free: int | None = None) -> None:
    """Fail before the first byte when ``directory``'s filesystem cannot hold ``size`` more bytes
    (the temporary file is whole before it replaces anything): ``ENOSPC``, as the write would.

    :param free: the bytes free, if already measured.
    """
    if free is None:
        free = probes.free_space(directory)
    if free is not None and free < size:
        raise NoRoomError(
            errno.ENOSPC,
            f"{path}: {size} bytes to write, but its filesystem has {free} bytes free; nothing was "
            "written (free some space, or choose another destination)",
        )


def check_room(uri: str, size: int, *, name_prefix: str = "") -> None:
    """Before a (billed) request: fail with ``ENOSPC`` when a local destination's filesystem cannot
    hold ``size`` more bytes; nothing is checked for other destinations.

    Optimistic: the temporary files of the target (in a folder: of names starting with
    ``name_prefix``) count as free, as the writer removes those a dead writer left before it
    measures again (:func:`atomic_writer` makes the exact check).
    """
    path = local_path(uri)
    if path is None:
        return
    if is_folder(uri):
        directory = path
        temps = re.compile(rf"\.{re.escape(name_prefix)}.*\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}\.part")
    else:
        directory = os.path.dirname(path) or "."
        temps = _temp_name_pattern(os.path.basename(path))
    free = probes.free_space(directory)
    if free is None or free >= size:
        return
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if temps.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    free += entry.stat(follow_symlinks=False).st_size
    _check_room(directory, path, size, free)


def _link_no_clobber(tmp: str, path: str) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it (atomically), then drop ``tmp``."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DestinationTaken(path) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (some FUSE/SMB mounts): a check, then a rename (a tiny race).
        if os.path.lexists(path):
            raise DestinationTaken(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _stage_local_sidecar(
    directory: str, name: str, provenance: Provenance | None, stat: dict[str, int]
) -> str | None:
    """Write the record of ``name`` (``stat``: the file's) under a temporary name, synced; its path.

    None without a record, or when it cannot be written (the download does not fail for it).
    """
    if provenance is None:
        return None
    tmp = os.path.join(directory, _temp_name(sidecar_name(name)))
    try:
        try:
            with open(tmp, "xb") as out:
                out.write(provenance.to_sidecar(stat))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as err:
        # The file will be complete and in place; only a later run's skip loses its proof.
        log.warning("could not write the record of %s: %s", os.path.join(directory, name), err)
        return None
    return tmp


def _commit_local_sidecar(directory: str, name: str, pending: str | None) -> None:
    """Give the staged record ``pending`` its name (None: remove any earlier record of ``name``);
    never fails the download."""
    side = os.path.join(directory, sidecar_name(name))
    try:
        if pending is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(side)
            return
        os.replace(pending, side)
    except OSError as err:
        log.warning("could not write the record of %s: %s", os.path.join(directory, name), err)


def _remove_abandoned_local(directory: str, name: str, *, own: str, now: float) -> None:
    """Remove temp files of ``name`` that writers killed before their cleanup left behind.

    ``now`` is the filesystem's clock (our own new file's mtime). Best effort: never fails a write.
    """
    pattern = _temp_name_pattern(name)
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name != own and pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):  # gone meanwhile, or not ours to open
                    _remove_if_abandoned(entry.path, now)


def _remove_if_abandoned(path: str, now: float) -> None:
    # O_NOFOLLOW: a symlink at a temp name is not something we wrote.
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        idle = now - info.st_mtime
        if not stat.S_ISREG(info.st_mode) or idle < LOCAL_TEMP_GRACE:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or idle < UNLOCKED_TEMP_GRACE:
                return  # a live writer holds it, or no locks here and not idle long enough
        os.unlink(path)  # still holding its lock: no writer can be using it
    finally:
        os.close(fd)


def _sftp_paths(uri: str) -> tuple[str, str, str]:
    """(path, temp path, temp URI) for an SFTP destination."""
    from smart_open import ssh

    parts = urlsplit(uri)
    path = ssh.parse_uri(uri)["uri_path"] or ""
    directory, _, name = path.rpartition("/")
    tmp_name = _temp_name(name)
    tmp_path = f"{directory}/{tmp_name}"
    base_uri = uri[: len(uri) - len(parts.path)] if parts.path else uri
    prefix_dir = parts.path.rpartition("/")[0]
    # ``name`` is decoded (``%3F`` is ``?`` in it): encoded again in the URI smart-open decodes.
    return path, tmp_path, f"{base_uri}{prefix_dir}/{quote(tmp_name)}"


@contextlib.contextmanager
def _sftp_atomic(
    uri: str, params: dict[str, Any], provenance: Provenance | None, replace: bool
) -> Iterator[IO[bytes]]:
    path, tmp_path, tmp_uri = _sftp_paths(uri)
    fh: Any = _smart_open_open(tmp_uri, "wb", compression="disable", transport_params=params)
    # smart-open hands back paramiko's SFTPFile (possibly proxied); its ``sftp`` is the client.
    sftp = fh.sftp
    try:
        if _sftp_is_folder(sftp, path):
            raise _folder_in_the_way(path)  # before the first byte: the rename could only fail
        _remove_abandoned_sftp(sftp, path, tmp_path)
        try:
            yield fh
        finally:
            fh.close()
        info = sftp.stat(tmp_path)  # a rename keeps size and mtime
        stat = {"size": int(info.st_size or 0), "mtime": int(info.st_mtime or 0)}
        # Staged before the rename, as locally: a connection lost (or a worker killed) between
        # the two leaves a record that still proves the file to a retry.
        pending = _stage_sftp_sidecar(sftp, path, provenance, stat)
        try:
            if replace:
                try:
                    sftp.posix_rename(tmp_path, path)
                except OSError:
                    # Servers without posix-rename@openssh.com refuse to rename over a file.
                    with contextlib.suppress(OSError):
                        sftp.remove(path)
                    sftp.rename(tmp_path, path)
            else:
                try:
                    sftp.rename(tmp_path, path)  # plain SFTP rename never overwrites
                except OSError:
                    if _sftp_exists(sftp, path):
                        raise DestinationTaken(uri) from None
                    raise
        except BaseException:
            if pending is not None:
                with contextlib.suppress(Exception):
                    sftp.remove(pending)
            raise
        _commit_sftp_sidecar(sftp, path, pending)
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(tmp_path)
        raise
    finally:
        with contextlib.suppress(Exception):
            sftp.close()


def _sftp_is_folder(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.lstat(path).st_mode or 0)
    except OSError:
        return False


def _sftp_exists(sftp: Any, path: str) -> bool:
    try:
        sftp.lstat(path)  # a symlink to nothing holds the name too
    except OSError:
        return False
    return True


def _stage_sftp_sidecar(
    sftp: Any, path: str, provenance: Provenance | None, stat: dict[str, int]
) -> str | None:
    """Write the record of ``path`` (``stat``: the file's) under a temporary name; its path.

    None without a record, or when it cannot be written (the download does not fail for it).
    """
    if provenance is None:
        return None
    directory, _, name = path.rpartition("/")
    tmp = f"{directory}/{_temp_name(sidecar_name(name))}"
    try:
        try:
            with sftp.open(tmp, "wb") as out:
                out.write(provenance.to_sidecar(stat))
        except BaseException:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise
    except OSError as err:
        log.warning("could not write the record of %s over SFTP: %s", path, err)
        return None
    return tmp


def _commit_sftp_sidecar(sftp: Any, path: str, pending: str | None) -> None:
    """Give the staged record ``pending`` its name (None: remove any earlier record of ``path``).

    Never fails the download, which is complete and in place: a record left staged (the connection
    lost here) still proves the file.
    """
    directory, _, name = path.rpartition("/")
    side = f"{directory}/{sidecar_name(name)}"
    try:
        if pending is None:
            with contextlib.suppress(OSError):
                sftp.remove(side)
            return
        sftp.posix_rename(pending, side)
    except Exception as err:  # paramiko's own errors too (a dropped connection is no OSError)
        log.warning("could not write the record of %s over SFTP: %s", path, err)


def _remove_abandoned_sftp(sftp: Any, path: str, tmp_path: str) -> None:
    """Remove temp files of ``path`` idle for :data:`UNLOCKED_TEMP_GRACE` (SFTP has no locks).

    Ages are measured on the server's clock (our own new temp file's mtime): no clock skew.
    Best effort: never fails a write.
    """
    directory, _, name = path.rpartition("/")
    own = tmp_path.rpartition("/")[2]
    pattern = _temp_name_pattern(name)
    with contextlib.suppress(OSError):
        now = sftp.stat(tmp_path).st_mtime
        for entry in sftp.listdir_attr(directory or "."):
            if (
                entry.filename != own
                and pattern.fullmatch(entry.filename)
                and stat.S_ISREG(entry.st_mode or 0)
                and now - (entry.st_mtime or now) >= UNLOCKED_TEMP_GRACE
            ):
                with contextlib.suppress(OSError):
                    sftp.remove(f"{directory}/{entry.filename}")


def destination_exists(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
    transport: ResolvedTransport | None = None,
) -> int | None:
    """The size in bytes of the object at ``uri``, or ``None`` when there is none (no data is read).

    ``conn_id``, ``transport_params`` and ``transport`` as for :func:`atomic_writer`.
    """
    check_destination(uri)
    return probes.stored_size(uri, _resolved(uri, conn_id, transport_params, transport).params)

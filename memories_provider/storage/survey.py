"""Before a billed download: prove the destination can be written, and see what already sits there.

:func:`survey` makes the cheapest call each store offers that fails the way the write would:

* local: the folder exists or is created, is a folder, and a probe file can be created in it;
  a file destination must not be an existing folder;
* ``sftp://``: connect, authenticate and create (then remove) a probe file in the folder, which
  must exist; a file destination must not be an existing folder;
* ``s3://``: ``CreateMultipartUpload`` + ``AbortMultipartUpload`` at the destination (no object,
  no event, nothing billed but two requests): the bucket exists and the credentials may write;
* ``gs://``: ``testIamPermissions`` for ``storage.objects.create`` on the bucket;
* ``azure://``: the container's properties (it exists, the credentials work).

and returns what is already at the destination (:class:`~.provenance.Existing`): the file itself,
or, for a folder and a name prefix, the files directly in it whose names start with the prefix.
Every failure is a ``ValueError`` naming ``destination`` (its URI redacted).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat as stat_module
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from memories_provider.redaction import Redactor
from memories_provider.storage.destinations import (
    SFTP_SCHEMES,
    ResolvedTransport,
    _smart_open_open,
    _temp_name_pattern,
    check_destination,
    is_folder,
    join_folder,
    local_path,
    scheme_of,
)
from memories_provider.storage.errors import StoreUnavailableError
from memories_provider.storage.provenance import MAX_SIDECAR_BYTES, Existing, Provenance, sidecar_name
from memories_provider.storage.uris import object_location, redact_uri

log = logging.getLogger(__name__)

#: At most this many files sharing a prefix are inspected (one request each on S3).
MAX_CANDIDATES = 100
#: A record and what ``stat`` said of its file when it was written.
_Record = tuple[Provenance, dict[str, int]]
_PROBE = ".memories-probe"
#: Azure answers to a credential that may write but not read (a write-only SAS): not a failure.
_AZURE_WRITE_ONLY = frozenset({"AuthorizationPermissionMismatch", "AuthorizationFailure"})
_HASH_CHUNK = 1024 * 1024


def survey(
    uri: str, *, transport: ResolvedTransport, prefix: str | None = None, inspect: bool = True
) -> list[Existing]:
    """Check that ``uri`` can be written, then list what is already there.

    :param uri: a file or a folder (ending in ``/``) destination.
    :param transport: what :func:`~.destinations.resolve_transport` returned for it.
    :param prefix: for a folder, the start of the names to return (none without one).
    :param inspect: False: only check that it can be written (nothing is returned).
    :raises ValueError: naming ``destination`` and why it cannot be written.
    """
    check_destination(uri)
    scheme = scheme_of(uri)
    params = transport.params
    if not inspect:
        prefix = None
    if scheme in ("", "file"):
        return _local_survey(uri, prefix, inspect)
    if scheme in SFTP_SCHEMES:
        return _sftp_survey(uri, params, prefix, inspect)
    if scheme.startswith("s3"):
        return _s3_survey(uri, params, prefix, inspect)
    if scheme in ("gs", "gcs"):
        return _gcs_survey(uri, params, prefix, inspect)
    return _azure_survey(uri, params, prefix, inspect)


def sha256_of(uri: str, *, transport: ResolvedTransport) -> str:
    """The sha256 (hex) of the file at ``uri``, read in 1 MiB chunks (local reads cost nothing)."""
    digest = hashlib.sha256()
    path = local_path(uri)
    if path is not None:
        with open(path, "rb") as local:
            while chunk := local.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    fh: Any = _smart_open_open(uri, "rb", compression="disable", transport_params=transport.params)
    with fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
        with contextlib.suppress(Exception):
            fh.sftp.close()  # SFTP: the client of this one read
    return digest.hexdigest()


# A download may end the destination with '/' to write into the folder; an export writes one named
# file, so the hint must hold for both.
_EXISTING_FOLDER = (
    "is an existing folder: name a file in it (a download may instead end it with '/' to write into it)"
)


def _cannot(uri: str, what: str, *, cause: BaseException | None = None) -> ValueError:
    # ``what`` may quote a storage library's error: redacted like any text we show (issue 14).
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    redactor = Redactor([password, unquote(password)] if password else [])
    error = StoreUnavailableError if cause is not None and _may_pass(cause) else ValueError
    return error(f"`destination` {redact_uri(uri)!r} {redactor.redact(what)}")


#: S3 error codes of a store that is busy or failing, not of a request that is wrong.
_S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)
#: Transport errors of the storage libraries (matched by name: none of them is a required import).
_TRANSPORT_ERRORS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServiceRequestError",
        "ServiceResponseError",
        "NoValidConnectionsError",
    }
)


def _may_pass(err: BaseException) -> bool:
    """Whether a store's error may go away by itself (network, throttling, 5xx): a retry may succeed.

    Refusals (no such bucket, access denied, bad credentials) are not: they need the user.
    """
    seen: set[int] = set()
    item: BaseException | None = err
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        response = getattr(item, "response", None)
        status = getattr(item, "status_code", None) or getattr(item, "code", None)
        if isinstance(response, dict):  # botocore's ClientError
            if str(response.get("Error", {}).get("Code", "")) in _S3_TRANSIENT_CODES:
                return True
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and not isinstance(status, bool) and (status == 429 or status >= 500):
            return True
        if isinstance(item, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any(cls.__name__ in _TRANSPORT_ERRORS for cls in type(item).__mro__):
            return True
        item = item.__cause__ or item.__context__
    return False


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or "no details"
    return f"{type(err).__name__}: {text}"


def _wanted(name: str, prefix: str | None) -> bool:
    return prefix is not None and name.startswith(prefix) and not name.startswith(".")


# ---------------------------------------------------------------------------- local


def _local_survey(uri: str, prefix: str | None, inspect: bool) -> list[Existing]:
    path = local_path(uri)
    assert path is not None
    if is_folder(uri):
        directory = path
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise _cannot(uri, "ends with '/' (a folder) but is an existing file")
    else:
        if os.path.isdir(path):
            raise _cannot(uri, _EXISTING_FOLDER)
        directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise _cannot(
            uri, f"cannot be written: its folder {directory!r} cannot be created ({_reason(err)})"
        ) from None
    probe = os.path.join(directory, f"{_PROBE}.{secrets.token_hex(6)}.part")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise _cannot(
            uri, f"cannot be written: no file can be created in {directory!r} ({_reason(err)})"
        ) from None
    if not inspect:
        return []
    if not is_folder(uri):
        found = _local_existing(uri)
        return [found] if found is not None else []
    if prefix is None:
        return []
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries if _wanted(entry.name, prefix))
    found_all = (_local_existing(join_folder(uri, name)) for name in names[:MAX_CANDIDATES])
    return [found for found in found_all if found is not None]


def _local_existing(uri: str) -> Existing | None:
    path = local_path(uri)
    assert path is not None
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        # A symlink to nothing still holds the name: no-clobber commits refuse to take it.
        return _in_the_way(uri, "symlink to nothing") if os.path.islink(path) else None
    if not stat_module.S_ISREG(info.st_mode):
        # A folder in a folder destination, named as its file may be (a file destination that is a
        # folder was refused above): the file could never take its name. A FIFO or a device is no
        # download either, and is never read (opening a FIFO blocks until someone writes to it).
        return _in_the_way(uri, _special_kind(info.st_mode))
    directory, name = os.path.split(path)
    directory = directory or "."
    now = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}
    return _recorded(
        uri,
        name,
        now,
        read=lambda sidecar: _local_record(os.path.join(directory, sidecar)),
        listdir=lambda: os.listdir(directory),
    )


#: Staged records of one file looked at (normally none; one per writer killed at that moment).
_MAX_STAGED = 8


def _recorded(
    uri: str,
    name: str,
    now: dict[str, int],
    *,
    read: Callable[[str], _Record | None],
    listdir: Callable[[], list[str]],
) -> Existing:
    """The file ``name`` (``now``: its stat) with its record: its sidecar's, or else the one a writer
    cut off between the file's rename and the record's (killed, connection lost) left staged, if
    that record's stat is this file's.

    :param read: the record in a file of the folder, by name; None if there is none.
    :param listdir: the names in the folder (only listed when the sidecar does not prove the file).
    """
    found = _existing(uri, now["size"], read(sidecar_name(name)), now)
    if found.intact:
        return found
    pattern = _temp_name_pattern(sidecar_name(name))
    names: list[str] = []
    with contextlib.suppress(OSError):  # an unreadable folder (execute-only): no staged record
        names = listdir()
    for candidate in sorted(entry for entry in names if pattern.fullmatch(entry))[:_MAX_STAGED]:
        record = read(candidate)
        if record is not None and record[1] == now:
            return _existing(uri, now["size"], record, now)
    return found


def _local_record(path: str) -> _Record | None:
    """The record in the sidecar file ``path`` (not followed if a symlink); None if there is none."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as side:
            return Provenance.from_sidecar(side.read(MAX_SIDECAR_BYTES))
    return None


def _special_kind(mode: int) -> str:
    """What a non-regular file is, for :attr:`Existing.kind`."""
    if stat_module.S_ISDIR(mode):
        return "folder"
    return "FIFO" if stat_module.S_ISFIFO(mode) else "special file"


def _in_the_way(uri: str, kind: str) -> Existing:
    """Something at ``uri`` that holds the name but is no file (see :attr:`Existing.kind`)."""
    return Existing(uri, 0, None, intact=False, kind=kind)


def _existing(uri: str, size: int, record: _Record | None, now: dict[str, int]) -> Existing:
    if record is None:
        return Existing(uri, size, None, intact=False)
    provenance, then = record
    return Existing(uri, size, provenance, intact=then == now)


# ---------------------------------------------------------------------------- SFTP


def _sftp_survey(uri: str, params: dict[str, Any], prefix: str | None, inspect: bool) -> list[Existing]:
    from smart_open import ssh

    parts = urlsplit(uri)
    base_uri = uri[: len(uri) - len(parts.path)] if parts.path else uri
    path = ssh.parse_uri(uri)["uri_path"] or "/"
    directory = path.rstrip("/") if is_folder(uri) else path.rpartition("/")[0]
    directory = directory or "/"
    probe = f"{directory.rstrip('/')}/{_PROBE}.{secrets.token_hex(6)}.part"
    try:
        # ``probe`` is a decoded path: encoded again in the URI smart-open decodes.
        fh: Any = _smart_open_open(
            f"{base_uri}{quote(probe)}", "wb", compression="disable", transport_params=params
        )
    except Exception as err:  # connect, authenticate, open: paramiko's and socket errors alike
        what = f"cannot be written over SFTP in {directory!r}: {_reason(err)}"
        raise _cannot(uri, what, cause=err) from None
    sftp = fh.sftp
    try:
        fh.close()
        with contextlib.suppress(OSError):
            sftp.remove(probe)
        if not inspect and is_folder(uri):
            return []
        if not is_folder(uri):
            with contextlib.suppress(OSError):
                if stat_module.S_ISDIR(sftp.stat(path).st_mode or 0):
                    raise _cannot(uri, _EXISTING_FOLDER)
            if not inspect:
                return []
            found = _sftp_existing(sftp, uri, path)
            return [found] if found is not None else []
        if prefix is None:
            return []
        # Whatever the entry is (the listing's modes are lstat's: a symlink is no regular file): a
        # symlink, a folder, anything with the name the file may get is looked at, as locally.
        names = sorted(entry for entry in sftp.listdir(directory) if _wanted(entry, prefix))
        found_all = (
            _sftp_existing(sftp, join_folder(uri, name), f"{directory.rstrip('/')}/{name}")
            for name in names[:MAX_CANDIDATES]
        )
        return [found for found in found_all if found is not None]
    finally:
        with contextlib.suppress(Exception):
            sftp.close()


def _sftp_existing(sftp: Any, uri: str, path: str) -> Existing | None:
    try:
        info = sftp.stat(path)
    except OSError:
        with contextlib.suppress(OSError):
            if stat_module.S_ISLNK(sftp.lstat(path).st_mode or 0):
                # A symlink to nothing still holds the name: no-clobber commits refuse to take it.
                return _in_the_way(uri, "symlink to nothing")
        return None
    if info.st_mode is not None and not stat_module.S_ISREG(info.st_mode):
        return _in_the_way(uri, _special_kind(info.st_mode))  # as locally (a server may not say)
    directory, _, name = path.rpartition("/")
    now = {"size": int(info.st_size or 0), "mtime": int(info.st_mtime or 0)}
    return _recorded(
        uri,
        name,
        now,
        read=lambda sidecar: _sftp_record(sftp, f"{directory}/{sidecar}"),
        listdir=lambda: sftp.listdir(directory or "/"),
    )


def _sftp_record(sftp: Any, path: str) -> _Record | None:
    """The record in the sidecar file ``path`` over SFTP; None if there is none."""
    with contextlib.suppress(OSError), sftp.open(path, "rb") as side:
        return Provenance.from_sidecar(side.read(MAX_SIDECAR_BYTES))
    return None


# ---------------------------------------------------------------------------- S3


def _bucket_and_key(uri: str) -> tuple[str, str]:
    """The bucket (container) and key of an object-store file ``uri``, as smart-open writes it; of a
    folder, those of the files in it, the key being their common prefix: ``azure://c/`` is the
    container ``c`` (read alone, as a file, it is the blob ``c`` of the root container)."""
    location = object_location(join_folder(uri, "_") if is_folder(uri) else uri)
    assert location is not None  # an object-store scheme
    return location.bucket, location.key[:-1] if is_folder(uri) else location.key


def _s3_survey(uri: str, params: dict[str, Any], prefix: str | None, inspect: bool) -> list[Existing]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_and_key(uri)
    client = params["client"]  # transport_params_for provides one
    probe_key = f"{key}{prefix or ''}{_PROBE}" if is_folder(uri) else key
    # The user's own settings for the upload (e.g. SSE, which a bucket policy may require).
    create_kwargs = (params.get("client_kwargs") or {}).get("S3.Client.create_multipart_upload") or {}
    try:
        upload = client.create_multipart_upload(Bucket=bucket, Key=probe_key, **create_kwargs)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            raise _cannot(uri, f"cannot be written: the bucket {bucket!r} does not exist") from None
        raise _cannot(uri, f"cannot be written to the bucket {bucket!r}: {code or err}", cause=err) from None
    except BotoCoreError as err:
        raise _cannot(uri, f"cannot be written: S3 cannot be reached ({_reason(err)})", cause=err) from None
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=probe_key, UploadId=upload["UploadId"])
    except (ClientError, BotoCoreError) as err:
        # Writable all the same; an empty upload left open holds no parts (a lifecycle rule
        # AbortIncompleteMultipartUpload removes it, and the aborts of failed downloads need this right too).
        log.warning("could not abort the probe upload of %s: %s", redact_uri(uri), err)
    if not inspect:
        return []
    if not is_folder(uri):
        found = _s3_existing(client, uri, bucket, key)
        return [found] if found is not None else []
    if prefix is None:
        return []
    listing = client.list_objects_v2(
        Bucket=bucket, Prefix=f"{key}{prefix}", Delimiter="/", MaxKeys=MAX_CANDIDATES
    )
    keys = [item["Key"] for item in listing.get("Contents", [])]
    found_all = (_s3_existing(client, join_folder(uri, k[len(key) :]), bucket, k) for k in keys)
    return [found for found in found_all if found is not None]


def _s3_existing(client: Any, uri: str, bucket: str, key: str) -> Existing | None:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as err:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return Existing(
        uri,
        int(head["ContentLength"]),
        Provenance.from_metadata(head.get("Metadata")),
        intact=True,
        version=head.get("ETag"),
    )


# ---------------------------------------------------------------------------- GCS


def _gcs_survey(uri: str, params: dict[str, Any], prefix: str | None, inspect: bool) -> list[Existing]:
    from google.api_core.exceptions import GoogleAPIError, NotFound

    name, key = _bucket_and_key(uri)
    client = params.get("client")
    if client is None:
        from google.cloud import storage

        client = storage.Client()
    bucket = client.bucket(name)
    try:
        granted = bucket.test_iam_permissions(["storage.objects.create"])
    except NotFound:
        raise _cannot(uri, f"cannot be written: the bucket {name!r} does not exist") from None
    except (GoogleAPIError, OSError) as err:
        raise _cannot(uri, f"cannot be written to the bucket {name!r}: {_reason(err)}", cause=err) from None
    if "storage.objects.create" not in (granted or []):
        raise _cannot(uri, f"cannot be written: no permission to create objects in the bucket {name!r}")
    if not inspect:
        return []
    if not is_folder(uri):
        blob = bucket.get_blob(key)
        return [] if blob is None else [_gcs_existing(uri, blob)]
    if prefix is None:
        return []
    blobs = client.list_blobs(bucket, prefix=f"{key}{prefix}", delimiter="/", max_results=MAX_CANDIDATES)
    return [_gcs_existing(join_folder(uri, blob.name[len(key) :]), blob) for blob in blobs]


def _gcs_existing(uri: str, blob: Any) -> Existing:
    generation = None if blob.generation is None else str(blob.generation)
    return Existing(
        uri, int(blob.size or 0), Provenance.from_metadata(blob.metadata), intact=True, version=generation
    )


# ---------------------------------------------------------------------------- Azure


def _azure_survey(uri: str, params: dict[str, Any], prefix: str | None, inspect: bool) -> list[Existing]:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    name, key = _bucket_and_key(uri)
    client = params.get("client")
    if client is None:
        raise ValueError("azure:// destinations need a `destination_conn_id` or transport_params['client']")
    container = client.get_container_client(name)
    try:
        container.get_container_properties()
    except ResourceNotFoundError:
        raise _cannot(uri, f"cannot be written: the container {name!r} does not exist") from None
    except AzureError as err:
        if getattr(err, "error_code", None) not in _AZURE_WRITE_ONLY:
            raise _cannot(
                uri, f"cannot be written to the container {name!r}: {_reason(err)}", cause=err
            ) from None
        # Authenticated, but allowed to write only (e.g. a SAS without read): the write will tell.
        log.warning(
            "cannot read the properties of the container of %s (%s); writing anyway", redact_uri(uri), err
        )
    if not inspect:
        return []
    if not is_folder(uri):
        try:
            props = container.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError:
            return []
        return [
            Existing(
                uri,
                int(props.size),
                Provenance.from_metadata(props.metadata),
                intact=True,
                version=props.etag,
            )
        ]
    if prefix is None:
        return []
    found: list[Existing] = []
    for blob in container.list_blobs(name_starts_with=f"{key}{prefix}", include=["metadata"]):
        rest = blob.name[len(key) :]
        if "/" not in rest and len(found) < MAX_CANDIDATES:
            found.append(
                Existing(
                    join_folder(uri, rest),
                    int(blob.size),
                    Provenance.from_metadata(blob.metadata),
                    True,
                    version=blob.etag,
                )
            )
    return found

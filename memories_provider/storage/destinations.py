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

Compression is always disabled: a key ending in ``.gz`` is written byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import unicodedata
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import unquote, urlsplit

#: Schemes whose smart-open writer aborts (commits nothing) when its ``with`` block raises.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "s3n", "s3u", "gs", "gcs", "azure"})
#: Schemes written through SFTP.
SFTP_SCHEMES = frozenset({"sftp", "ssh", "scp"})
#: Every destination scheme we know how to write atomically ("" is a plain local path).
SUPPORTED_SCHEMES = OBJECT_STORE_SCHEMES | SFTP_SCHEMES | {"", "file"}

_MAX_NAME_BYTES = 200  # leaves room for our ".<name>.<random>.part" temp names under the usual 255
# Characters that would change the meaning of a URI (query, fragment) or of a path.
_URI_UNSAFE = str.maketrans({c: "_" for c in '?#%:*"<>|'})


def scheme_of(uri: str) -> str:
    """The lower-cased URI scheme, ``""`` for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep or "/" in head:
        return ""
    return head.lower()


def check_destination(uri: str) -> None:
    """Raise ``ValueError`` for an empty destination or one we cannot write atomically."""
    if not uri or not uri.strip():
        raise ValueError("`destination` must be a non-empty path or URI")
    scheme = scheme_of(uri)
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"`destination` scheme {scheme!r} is not supported; use a local path, file://, s3://, "
            "gs://, azure:// or sftp://"
        )


def is_folder(uri: str) -> bool:
    """A destination ending in ``/`` is a folder: the file name comes from the response."""
    return uri.endswith("/")


def local_path(uri: str) -> str | None:
    """The filesystem path for a local destination, ``None`` for remote ones."""
    scheme = scheme_of(uri)
    if scheme == "":
        return os.path.abspath(os.path.expanduser(uri))
    if scheme == "file":
        # file:///abs/path and file://localhost/abs/path; percent-encoded as Path.as_uri() writes them
        parts = urlsplit(uri)
        return os.path.abspath(unquote(parts.path))
    return None


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
    falls back to ``fallback`` (itself sanitised, and ``"download"`` as last resort). The
    result is a single path component, so the caller can never be made to write outside
    the folder.
    """
    for candidate in (name, fallback, "download"):
        if not candidate:
            continue
        # Both separators, whatever the OS: keep only the last component.
        base = candidate.replace("\\", "/").rsplit("/", 1)[-1]
        # Drop control and format characters (NUL, newlines, bidi overrides...).
        base = "".join(ch for ch in base if unicodedata.category(ch) not in {"Cc", "Cf"})
        base = base.translate(_URI_UNSAFE).strip().lstrip(".").strip()
        if not base:
            continue
        encoded = base.encode("utf-8")
        if len(encoded) > _MAX_NAME_BYTES:
            stem, dot, ext = base.rpartition(".")
            keep = ext if dot and 0 < len(ext.encode("utf-8")) <= 16 else ""
            budget = _MAX_NAME_BYTES - (len(keep.encode("utf-8")) + 1 if keep else 0)
            stem_part = (stem if keep else base).encode("utf-8")[:budget].decode("utf-8", "ignore")
            base = f"{stem_part}.{keep}" if keep else stem_part
        return base
    return "download"  # unreachable: "download" always survives


def join_folder(folder_uri: str, name: str) -> str:
    """``folder_uri`` (ending in ``/``) plus a sanitised single-component ``name``."""
    if not is_folder(folder_uri):
        raise ValueError(f"not a folder destination (must end with '/'): {folder_uri!r}")
    if "/" in name or "\\" in name or name in {"", ".", ".."}:
        raise ValueError(f"unsafe file name {name!r}")
    return folder_uri + name


def basename_of(uri: str) -> str:
    """The last path component of a destination URI."""
    path = local_path(uri)
    if path is not None:
        return os.path.basename(path)
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1] if "://" in uri else uri.rsplit("/", 1)[-1]


def _smart_open_open(*args: Any, **kwargs: Any) -> Any:
    # Imported on use: ``import smart_open`` loads every transport (boto3, paramiko, azure,
    # google-cloud) and would make merely importing an operator cost seconds.
    import smart_open

    return smart_open.open(*args, **kwargs)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.part"


def _transport(uri: str, conn_id: str | None, transport_params: dict[str, Any] | None) -> dict[str, Any]:
    # Imported here: local destinations need no credentials machinery at all.
    from memories_provider.storage.credentials import transport_params_for

    return transport_params_for(
        uri, conn_id=conn_id, transport_params=transport_params, conn_param="destination_conn_id"
    )


@contextlib.contextmanager
def atomic_writer(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing so that the object appears only if the block succeeds.

    :param uri: destination file URI (not a folder).
    :param conn_id: Airflow connection with credentials for the destination (aws, google_cloud_platform,
        wasb, ssh/sftp); ``None`` uses the environment's defaults.
    :param transport_params: extra smart-open transport parameters (validated per scheme), e.g.
        ``{"min_part_size": 16 * 1024**2}`` for S3.
    """
    check_destination(uri)
    if is_folder(uri):
        raise ValueError(f"atomic_writer needs a file URI, got the folder {uri!r}")
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        path = local_path(uri)
        assert path is not None
        with _local_atomic(path) as fh:
            yield fh
    elif scheme in SFTP_SCHEMES:
        with _sftp_atomic(uri, _transport(uri, conn_id, transport_params)) as fh:
            yield fh
    else:
        params = _transport(uri, conn_id, transport_params)
        # Inside ``with``: on an exception smart-open's __exit__ calls terminate() (abort), on
        # success close() completes the upload. Never let the writer be garbage-collected open.
        with _smart_open_open(uri, "wb", compression="disable", transport_params=params) as fh:
            yield fh


@contextlib.contextmanager
def _local_atomic(path: str) -> Iterator[IO[bytes]]:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, _temp_name(os.path.basename(path)))
    # O_EXCL: never follow or clobber something that happens to sit at the temp name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    return path, tmp_path, f"{base_uri}{prefix_dir}/{tmp_name}"


@contextlib.contextmanager
def _sftp_atomic(uri: str, params: dict[str, Any]) -> Iterator[IO[bytes]]:
    path, tmp_path, tmp_uri = _sftp_paths(uri)
    fh: Any = _smart_open_open(tmp_uri, "wb", compression="disable", transport_params=params)
    # smart-open hands back paramiko's SFTPFile (possibly proxied); its ``sftp`` is the client.
    sftp = fh.sftp
    try:
        try:
            yield fh
        finally:
            fh.close()
        try:
            sftp.posix_rename(tmp_path, path)
        except OSError:
            # Servers without posix-rename@openssh.com refuse to rename over a file.
            with contextlib.suppress(OSError):
                sftp.remove(path)
            sftp.rename(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(tmp_path)
        raise
    finally:
        with contextlib.suppress(Exception):
            sftp.close()


def destination_exists(
    uri: str,
    *,
    conn_id: str | None = None,
    transport_params: dict[str, Any] | None = None,
) -> int | None:
    """The size in bytes of the object at ``uri``, or ``None`` when there is none (no data is read)."""
    check_destination(uri)
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        path = local_path(uri)
        assert path is not None
        return os.path.getsize(path) if os.path.isfile(path) else None
    params = _transport(uri, conn_id, transport_params)
    if scheme in SFTP_SCHEMES:
        return _sftp_size(uri, params)
    if scheme.startswith("s3"):
        return _s3_size(uri, params)
    if scheme in ("gs", "gcs"):
        return _gcs_size(uri, params)
    return _azure_size(uri, params)


def _sftp_size(uri: str, params: dict[str, Any]) -> int | None:
    try:
        fh: Any = _smart_open_open(uri, "rb", compression="disable", transport_params=params)
    except FileNotFoundError:
        return None
    except OSError as err:  # paramiko raises IOError(errno.ENOENT) for a missing path
        if getattr(err, "errno", None) == 2:
            return None
        raise
    with fh:
        size = fh.stat().st_size
        with contextlib.suppress(Exception):
            fh.sftp.close()
        return int(size) if size is not None else None


def _s3_size(uri: str, params: dict[str, Any]) -> int | None:
    from smart_open import s3

    parsed = s3.parse_uri(uri)
    client = params.get("client")
    if client is None:
        import boto3

        client = boto3.client("s3")
    try:
        head = client.head_object(Bucket=parsed["bucket_id"], Key=parsed["key_id"])
    except Exception as err:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return int(head["ContentLength"])


def _gcs_size(uri: str, params: dict[str, Any]) -> int | None:
    from smart_open import gcs

    parsed = gcs.parse_uri(uri)
    client = params.get("client")
    if client is None:
        from google.cloud import storage

        client = storage.Client()
    blob = client.bucket(parsed["bucket_id"]).get_blob(parsed["blob_id"])
    return None if blob is None else int(blob.size)


def _azure_size(uri: str, params: dict[str, Any]) -> int | None:
    from azure.core.exceptions import ResourceNotFoundError
    from smart_open import azure

    parsed = azure.parse_uri(uri)
    client = params.get("client")
    if client is None:
        raise ValueError("azure:// destinations need a `destination_conn_id` or transport_params['client']")
    blob = client.get_blob_client(parsed["container_id"], parsed["blob_id"])
    try:
        return int(blob.get_blob_properties().size)
    except ResourceNotFoundError:
        return None

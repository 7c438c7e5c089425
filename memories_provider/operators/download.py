"""Stream a memories.ai video or asset to any storage URI, atomically and verified."""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from memories_provider.client import MemoriesConnectionError, RetryPolicy
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators._progress import TransferProgress
from memories_provider.storage.background_writer import BackgroundWriter
from memories_provider.storage.destinations import (
    atomic_writer,
    basename_of,
    canonical_uri,
    check_destination,
    destination_exists,
    is_folder,
    join_folder,
    resolve_transport,
    sanitize_filename,
    scheme_of,
)
from memories_provider.storage.uris import redact_uri

if TYPE_CHECKING:
    from memories_provider.client import DownloadResponse
    from memories_provider.storage.destinations import ResolvedTransport

_CHUNK_SIZE = 1024 * 1024
#: Chunks received while the destination is busy (e.g. smart-open uploading an S3 part, which
#: blocks its write()): 16 MiB lets receiving go on during a whole part of up to 16 MiB.
_WRITE_AHEAD_CHUNKS = 16


class _BodyInterrupted(Exception):
    """The connection broke while streaming the body: restart the download from the start."""

    def __init__(self, error: MemoriesConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Source:
    """What to fetch: exactly one kind of id."""

    kind: str  # "video" | "asset" | "blob"
    video_no: str | None = None
    asset_id: str | None = None
    bucket: str | None = None
    blob: str | None = None
    unique_id: str | None = None

    @property
    def label(self) -> str:
        """Human-readable id for logs and errors."""
        if self.kind == "video":
            return f"video {self.video_no}"
        if self.kind == "asset":
            return f"asset {self.asset_id}"
        return f"blob {self.bucket}/{self.blob}"

    @property
    def fallback_stem(self) -> str:
        """Base of the file name when the server sends no Content-Disposition."""
        if self.kind == "video":
            return str(self.video_no)
        if self.kind == "asset":
            return str(self.asset_id)
        return str(self.blob).rstrip("/").rsplit("/", 1)[-1]


def _given(value: Any) -> bool:
    return value is not None and value != ""


def select_source(
    *,
    video_no: Any,
    asset_id: Any,
    bucket: Any,
    blob: Any,
    unique_id: Any = None,
) -> _Source:
    """Validate that exactly one of video_no / asset_id / bucket+blob is given (before any request)."""
    kinds = [name for name, ok in (("video_no", _given(video_no)), ("asset_id", _given(asset_id))) if ok]
    if _given(bucket) or _given(blob):
        if not (_given(bucket) and _given(blob)):
            raise ValueError("`bucket` and `blob` must be given together")
        kinds.append("bucket+blob")
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise ValueError(f"give exactly one of `video_no`, `asset_id` or `bucket`+`blob` (got: {got})")
    if kinds[0] == "video_no":
        return _Source("video", video_no=str(video_no), unique_id=unique_id or None)
    if kinds[0] == "asset_id":
        return _Source("asset", asset_id=str(asset_id))
    return _Source("blob", bucket=str(bucket), blob=str(blob))


def name_from_response(resp: DownloadResponse, source: _Source) -> str:
    """Safe file name: Content-Disposition's, else ``<id><ext from Content-Type>``."""
    fallback = source.fallback_stem
    ctype = (resp.content_type or "").split(";", 1)[0].strip().lower()
    ext = mimetypes.guess_extension(ctype) if ctype else None
    if ext and not fallback.lower().endswith(ext):
        fallback += ext
    return sanitize_filename(resp.filename, sanitize_filename(fallback, "download"))


class MemoriesDownloadOperator(BaseOperator):
    """Download a memories.ai video or asset to any storage URI, streaming, atomic and verified.

    The body flows from the socket to the destination in chunks (memory does not grow with
    file size); a reader of the destination sees nothing (or the previous object) or the
    whole new object. A connection dropped mid-body restarts the download from the start
    (the API has no Range support) within the connection's retry policy. Downloads are billed:
    the destination's settings (``transport_params``, ``destination_conn_id``'s credentials) are
    checked before any request is sent.

    A worker killed outright (SIGKILL, out of memory) cannot clean up: a local or SFTP temporary
    file ``.<name>.<random>.part`` is removed by the next download to the same target (locally
    once no live writer holds its lock and it was idle 2 minutes; over SFTP, which has no locks,
    once idle an hour). On S3 the killed writer's
    multipart upload stays incomplete, invisible but billed for its parts: give the bucket a
    lifecycle rule ``AbortIncompleteMultipartUpload`` (e.g. after 1 day).

    :param destination: where to write (templated): a local path, ``file://``, ``s3://``, ``gs://``,
        ``azure://`` or ``sftp://`` URI. A value ending in ``/`` is a folder: the file name comes from
        the response's ``Content-Disposition`` (sanitised: never outside the folder), else
        ``<id><extension from Content-Type>``.
    :param video_no: a private video id (``VI...``) to download (templated).
    :param asset_id: a v2 asset id (``re_...``) to download (templated).
    :param bucket: with ``blob``, a storage location to download (templated).
    :param blob: with ``bucket``, the object path (templated).
    :param unique_id: scope of ``video_no`` (templated); defaults to the connection's ``unique_id``.
    :param memories_conn_id: the memories.ai connection.
    :param destination_conn_id: Airflow connection with credentials for the destination (aws,
        google_cloud_platform, wasb, ssh/sftp); ``None`` uses the environment's defaults.
    :param transport_params: extra smart-open transport parameters, validated per scheme; e.g.
        ``{"min_part_size": 16 * 1024**2}`` for S3 (memory used is about one part).
    :param overwrite: ``False`` (default): an existing destination of the expected size is kept and
        nothing is downloaded; one of a different size fails the task. ``True``: replace atomically.
    :param verify_size: fail (leaving nothing behind) when the bytes written differ from ``Content-Length``.
    :param checksum: ``"sha256"`` (computed while streaming) or ``None``.

    Returns (XCom) ``{"uri", "bytes", "sha256", "content_type", "filename", "skipped"}`` (``uri`` with its
    user-info and query string masked, like every URI the operator shows). When the task
    declares an outlet asset/dataset whose URI is the destination, its event carries
    ``{"bytes", "sha256", "content_type", "source"}`` as extra.
    """

    template_fields: Sequence[str] = ("destination", "video_no", "asset_id", "bucket", "blob", "unique_id")
    ui_color = "#c8e6ff"

    def __init__(
        self,
        *,
        destination: str,
        video_no: str | None = None,
        asset_id: str | None = None,
        bucket: str | None = None,
        blob: str | None = None,
        unique_id: str | None = None,
        memories_conn_id: str = "memories_default",
        destination_conn_id: str | None = None,
        transport_params: dict[str, Any] | None = None,
        overwrite: bool = False,
        verify_size: bool = True,
        checksum: str | None = "sha256",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if checksum not in ("sha256", None):
            raise ValueError(f"`checksum` must be 'sha256' or None, got {checksum!r}")
        # Fail at DAG parse time for the static mistakes; rendered values are checked again in execute().
        select_source(video_no=video_no, asset_id=asset_id, bucket=bucket, blob=blob)
        if not destination:
            raise ValueError("`destination` must be a non-empty path or URI")
        self.destination = destination
        self.video_no = video_no
        self.asset_id = asset_id
        self.bucket = bucket
        self.blob = blob
        self.unique_id = unique_id
        self.memories_conn_id = memories_conn_id
        self.destination_conn_id = destination_conn_id
        self.transport_params = transport_params
        self.overwrite = overwrite
        self.verify_size = verify_size
        self.checksum = checksum
        self._result: dict[str, Any] | None = None
        self._source: _Source | None = None
        self._lineage_namespace: str | None = None
        self._lineage_unique_id: str | None = None

    # ------------------------------------------------------------------ execute

    def execute(self, context: Any) -> dict[str, Any]:
        """Download (or skip), then attach the result to matching outlet events."""
        source = select_source(
            video_no=self.video_no,
            asset_id=self.asset_id,
            bucket=self.bucket,
            blob=self.blob,
            unique_id=self.unique_id,
        )
        destination = str(self.destination)
        check_destination(destination)
        # Once, before any (billed) request; reused by the existence checks and the writer.
        transport = resolve_transport(
            destination, conn_id=self.destination_conn_id, transport_params=self.transport_params
        )
        self._source = source
        hook = MemoriesHook(memories_conn_id=self.memories_conn_id)
        self._lineage_namespace = namespace_of(hook)
        # The scope the request uses, named as the upload operator names its output.
        self._lineage_unique_id = source.unique_id or hook.config.unique_id
        result = self._download(hook, source, destination, transport)
        self._result = result
        self._annotate_outlets(context, result, source)
        # XCom is stored in the metadata DB and shown in the UI: no credentials in the URI.
        return {**result, "uri": redact_uri(result["uri"])}

    def _download(
        self, hook: MemoriesHook, source: _Source, destination: str, transport: ResolvedTransport
    ) -> dict[str, Any]:
        if not self.overwrite and not is_folder(destination):
            skipped = self._skip_by_metadata(hook, source, destination, transport)
            if skipped is not None:
                return skipped
        # The client's own policy (built from the connection's max_retries): same delays, same bound.
        policy = getattr(hook.get_conn(), "retry", None) or RetryPolicy(max_retries=hook.config.max_retries)
        attempt = 0
        while True:
            try:
                return self._attempt(hook, source, destination, transport)
            except _BodyInterrupted as interrupted:
                if attempt >= policy.max_retries:
                    raise interrupted.error from None
                attempt += 1
                delay = policy.delay_for(attempt, interrupted.error)
                self.log.warning(
                    "%s: connection broke mid-body (%s); restarting from the start in %.1fs (retry %d of %d)",
                    source.label,
                    interrupted.error,
                    delay,
                    attempt,
                    policy.max_retries,
                )
                time.sleep(delay)

    def _skip_by_metadata(
        self, hook: MemoriesHook, source: _Source, uri: str, transport: ResolvedTransport
    ) -> dict[str, Any] | None:
        """For a video, compare with get_metadata's size: no download request at all."""
        if source.kind != "video":
            return None
        existing = destination_exists(uri, transport=transport)
        if existing is None:
            return None
        video = hook.get_video(str(source.video_no), unique_id=source.unique_id)
        if video.size is None:
            return None  # cannot tell: let the download's Content-Length decide
        return self._skip_or_fail(source, uri, existing, int(video.size), "get_metadata")

    def _skip_or_fail(
        self,
        source: _Source,
        uri: str,
        existing: int,
        expected: int | None,
        how: str,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        if expected is not None and expected != existing:
            raise AirflowFailException(
                f"{redact_uri(uri)} already exists with {existing} bytes but {source.label} has "
                f"{expected} bytes (per {how}); set overwrite=True to replace it"
            )
        if expected is None:
            self.log.warning(
                "%s already exists (%d bytes) and the expected size is unknown; keeping it (overwrite=False)",
                redact_uri(uri),
                existing,
            )
        else:
            self.log.info(
                "Skipping %s: %s already exists with the expected %d bytes (per %s); nothing downloaded",
                source.label,
                redact_uri(uri),
                existing,
                how,
            )
        return {
            "uri": uri,
            "bytes": existing,
            "sha256": None,
            "content_type": content_type,
            "filename": basename_of(uri),
            "skipped": True,
        }

    def _open(self, hook: MemoriesHook, source: _Source) -> DownloadResponse:
        if source.kind == "video":
            return hook.download_video(str(source.video_no), unique_id=source.unique_id)
        if source.kind == "asset":
            return hook.download_asset(str(source.asset_id))
        return hook.download_blob(str(source.bucket), str(source.blob))

    def _attempt(
        self, hook: MemoriesHook, source: _Source, destination: str, transport: ResolvedTransport
    ) -> dict[str, Any]:
        with self._open(hook, source) as resp:
            # The folder name is known only now, from the headers, before any body byte is read.
            filename = name_from_response(resp, source) if is_folder(destination) else None
            uri = join_folder(destination, filename) if filename else destination
            expected = resp.content_length
            if not self.overwrite:
                existing = destination_exists(uri, transport=transport)
                if existing is not None:
                    # Closing the response here reads no body: only the headers were transferred.
                    return self._skip_or_fail(
                        source, uri, existing, expected, "Content-Length", resp.content_type
                    )
            return self._stream(resp, source, uri, expected, transport)

    def _stream(
        self,
        resp: DownloadResponse,
        source: _Source,
        uri: str,
        expected: int | None,
        transport: ResolvedTransport,
    ) -> dict[str, Any]:
        digest = hashlib.sha256() if self.checksum == "sha256" else None
        done = 0
        shown = redact_uri(uri)
        progress = TransferProgress(self.log, f"{source.label} -> {shown}", expected)
        size = "unknown" if expected is None else expected
        self.log.info("Downloading %s to %s (%s bytes)", source.label, shown, size)
        writer = atomic_writer(uri, transport=transport)
        with writer as out, contextlib.ExitStack() as stack:
            # Writing and hashing each run in their own thread, overlapping with receiving.
            consumers = [stack.enter_context(BackgroundWriter(out.write, depth=_WRITE_AHEAD_CHUNKS))]
            if digest is not None:
                consumers.append(stack.enter_context(BackgroundWriter(digest.update)))
            try:
                for chunk in resp.iter_chunks(_CHUNK_SIZE):
                    for consumer in consumers:
                        consumer.write(chunk)
                    done += len(chunk)
                    progress.update(done)
            except MemoriesConnectionError as err:
                # Raised inside the writer's block: the partial object is discarded first.
                raise _BodyInterrupted(err) from err
            if self.verify_size and expected is not None and done != expected:
                raise AirflowException(
                    f"{source.label}: received {done} bytes but Content-Length was {expected}; "
                    f"nothing was written to {shown}"
                )
        progress.update(done, final=True)
        return {
            "uri": uri,
            "bytes": done,
            "sha256": digest.hexdigest() if digest is not None else None,
            "content_type": resp.content_type,
            "filename": basename_of(uri),
            "skipped": False,
        }

    # ------------------------------------------------------------------ events & lineage

    def _annotate_outlets(self, context: Any, result: dict[str, Any], source: _Source) -> None:
        """Attach the result to the outlet event of the destination (the event itself is Airflow's)."""
        targets = {result["uri"], canonical_uri(result["uri"])}
        events = context.get("outlet_events") if hasattr(context, "get") else None
        if events is None:
            return
        for outlet in getattr(self, "outlets", None) or []:
            if getattr(outlet, "uri", None) in targets:
                events[outlet].extra = {
                    "bytes": result["bytes"],
                    "sha256": result["sha256"],
                    "content_type": result["content_type"],
                    "source": source.label,
                    "skipped": result["skipped"],
                }

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the memories video/asset as input, the destination as output."""
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        source = self._source
        inputs = []
        if source is not None:
            name = {
                "video": f"video/{self._lineage_unique_id}/{source.video_no}",
                "asset": f"asset/{source.asset_id}",
                "blob": f"blob/{source.bucket}/{source.blob}",
            }[source.kind]
            inputs.append(Dataset(namespace=self._lineage_namespace or "memories", name=name))
        outputs = []
        uri = self._result["uri"] if self._result else None
        if uri and not is_folder(uri):
            namespace, name = lineage_dataset(uri)
            outputs.append(Dataset(namespace=namespace, name=name))
        return OperatorLineage(inputs=inputs, outputs=outputs)


def namespace_of(hook: MemoriesHook) -> str:
    """OpenLineage namespace for the service: ``memories://<host[:port]>``."""
    from urllib.parse import urlsplit

    try:
        netloc = urlsplit(hook.config.base_url).netloc
    except Exception:  # lineage must never break the task
        return "memories"
    return f"memories://{netloc}" if netloc else "memories"


def lineage_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a destination, per the OpenLineage dataset naming conventions."""
    from urllib.parse import urlsplit

    canonical = canonical_uri(uri)
    scheme = scheme_of(canonical)
    parts = urlsplit(canonical)
    if scheme == "file":
        return "file", parts.path
    if scheme in ("sftp", "ssh", "scp"):
        host = parts.hostname or ""
        return f"{scheme}://{host}:{parts.port or 22}", parts.path
    return f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}", parts.path.lstrip("/")

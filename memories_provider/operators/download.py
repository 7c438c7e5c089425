"""Stream a memories.ai video or asset to any storage URI, atomically and verified.

"Done" and "skipped" are decided on identity, never on a name: every file written carries a
record of its source (see :mod:`memories_provider.storage.provenance`), and a run skips only a
file whose record names the same source, whose bytes are still the ones recorded, and (for a
video) whose service facts (``get_metadata``'s size, create_time, bucket, blob) have not changed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from memories_provider.client import MemoriesConnectionError
from memories_provider.hooks.connection import DEFAULT_CONN_ID
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.hooks.task_mixin import MemoriesHookMixin
from memories_provider.lineage import annotate_outlets, lineage_dataset, namespace_of, video_dataset_name
from memories_provider.operators._download_source import (
    DownloadSource,
    ServiceFacts,
    describe_identity,
    facts_of,
    same_evidence,
    select_source,
)
from memories_provider.operators._progress import TransferProgress
from memories_provider.preflight import (
    account_refusal_fails_at_once,
    bad_input_fails_at_once,
    flags,
    refusal_fails_at_once,
)
from memories_provider.storage.background_writer import BackgroundWriter, BufferRing, Chunk
from memories_provider.storage.destinations import (
    DestinationTaken,
    NoRoomError,
    atomic_writer,
    basename_of,
    check_destination,
    check_room,
    is_folder,
    join_folder,
    local_path,
    resolve_transport,
)
from memories_provider.storage.provenance import Existing, Provenance, writer_mark
from memories_provider.storage.survey import sha256_of, survey
from memories_provider.storage.uris import redact_uri, scheme_family
from memories_provider.templating import single_value
from memories_provider.types import DownloadResult

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from memories_provider.client import DownloadResponse
    from memories_provider.storage.destinations import ResolvedTransport

__all__ = ["MemoriesDownloadOperator", "select_source"]

_CHUNK_SIZE = 1024 * 1024
#: A write refused for room: the filesystem or a quota is full, or the file size limit reached.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: Chunks received while the destination is busy (e.g. smart-open uploading an S3 part, which
#: blocks its write()): 16 MiB lets receiving go on during a whole part of up to 16 MiB.
_WRITE_AHEAD_CHUNKS = 16
#: A local file's write waits for the disk one chunk at a time (O_DIRECT on ext4/XFS), or now and
#: then (written back as it grows): a few chunks cover it (8 or 16 measured no faster).
_LOCAL_WRITE_AHEAD_CHUNKS = 4


@dataclass(frozen=True)
class _DownloadPlan:
    """What one download needs, settled before the first (billed) request; every attempt reuses it.

    :param stale: files that hold an earlier state of the same source (replaced by the download), each
        with the version seen (object stores: the commit replaces that object only; see
        :attr:`~memories_provider.storage.provenance.Existing.version`).
    """

    hook: MemoriesHook
    source: DownloadSource
    facts: ServiceFacts
    destination: str
    transport: ResolvedTransport
    stale: dict[str, str | None] = field(default_factory=dict)
    writer: str | None = None  # this task instance's mark, recorded with the file


class _BodyInterrupted(Exception):
    """The connection broke while streaming the body: restart the download from the start."""

    def __init__(self, error: MemoriesConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


class MemoriesDownloadOperator(MemoriesHookMixin, BaseOperator):
    """Download a memories.ai video or asset to any storage URI, streaming, atomic and verified.

    Before the first (billed) download request the destination is proven writable (see
    :func:`memories_provider.storage.survey.survey`) and what already sits there is looked at.
    The body flows from the socket to the destination in chunks (memory does not grow with file
    size) and is checked on the way: an API error envelope (whatever its Content-Type), an HTML
    page, an empty body, or a body whose size differs from ``Content-Length`` or from the size
    the service reports is an error, and nothing is written. A reader of the destination sees
    nothing (or the previous object) or the whole new object. A connection dropped mid-body
    restarts the download from the start (the API has no Range support) within the connection's
    retry policy.

    Every file written carries a record of its source (object metadata on S3/GCS/Azure, a hidden
    sidecar ``.<name>.memories.json`` locally and over SFTP). In a folder destination the file
    is named ``<id>.<name from Content-Disposition>`` (``VI123….clip.mp4``): two sources never
    share a name, and a later run finds the file without a download request.

    A worker killed outright (SIGKILL, out of memory) cannot clean up: a local or SFTP temporary
    file ``.<name>.<random>.part`` is removed by the next download to the same target (locally
    once no live writer holds its lock and it was idle 2 minutes; over SFTP, which has no locks,
    once idle an hour). On S3 the killed writer's
    multipart upload stays incomplete, invisible but billed for its parts: give the bucket a
    lifecycle rule ``AbortIncompleteMultipartUpload`` (e.g. after 1 day).

    :param destination: where to write (templated): a local path, ``file://``, ``s3://``, ``gs://``,
        ``azure://`` or ``sftp://`` URI. A value ending in ``/`` is a folder: the file is named
        ``<id>.<name>``, the name from the response's ``Content-Disposition`` (sanitised: never
        outside the folder), else from the blob or the Content-Type; ``<id>`` is the ``video_no``
        or ``asset_id`` (or ``blob~<digest>`` of ``bucket``+``blob``).
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
    :param overwrite: ``False`` (default): a file already there is kept when its record proves it
        holds this source (nothing is downloaded, ``skipped=True``); an earlier download of the same
        video that the service has changed since is replaced; anything else there (no record,
        another source, bytes changed since) fails the task before any download. ``True``:
        download and replace atomically, except on a retry the file an earlier try of this task
        instance committed since it was last cleared (its record says so, and the service reports
        the source unchanged): that try failed after its commit, and downloading again would bill
        it twice. A clear downloads again.
    :param verify_size: also check the body against the size ``get_metadata`` reports for a video
        (the only check of a body sent without ``Content-Length``).
    :param checksum: ``"sha256"`` (computed while streaming, and kept in the local/SFTP record so
        a moved or copied file can still be proven) or ``None``.

    Returns (XCom) ``{"uri", "bytes", "sha256", "content_type", "filename", "skipped"}`` (``uri`` with its
    user-info and query string masked, like every URI the operator shows). When the task
    declares an outlet asset/dataset whose URI is the destination, its event carries
    ``{"bytes", "sha256", "content_type", "source"}`` as extra.
    """

    uri_template_fields = ("destination",)
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
        memories_conn_id: str = DEFAULT_CONN_ID,
        destination_conn_id: str | None = None,
        transport_params: dict[str, Any] | None = None,
        overwrite: bool = False,
        verify_size: bool = True,
        checksum: str | None = "sha256",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        flags(overwrite=overwrite, verify_size=verify_size)
        if checksum not in ("sha256", None):
            raise ValueError(f"`checksum` must be 'sha256' or None, got {checksum!r}")
        # Fail at DAG parse time for the static mistakes; rendered values are checked again in
        # execute() (a template such as "{{ ... }}" is itself a valid id until rendered).
        select_source(video_no=video_no, asset_id=asset_id, bucket=bucket, blob=blob, rendered=False)
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
        self._result: DownloadResult | None = None
        self._source: DownloadSource | None = None
        self._lineage_namespace: str | None = None
        self._lineage_unique_id: str | None = None

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> DownloadResult:
        """Check the destination, download (or skip), then attach the result to outlet events."""
        with bad_input_fails_at_once():  # no retry fixes bad arguments, destination or connection
            for name in ("video_no", "asset_id", "destination"):
                if getattr(self, name) is not None:
                    single_value(name, getattr(self, name), operator=type(self).__name__)
            source = select_source(
                video_no=self.video_no,
                asset_id=self.asset_id,
                bucket=self.bucket,
                blob=self.blob,
                unique_id=self.unique_id,
                unique_id_templated=self.rendered_from_template("unique_id"),
            )
            # Without the whitespace around it, as the upload's source and the ids: a template's
            # trailing newline made 'out/\n' a file named '\n', not the folder 'out/'.
            destination = str(self.destination).strip()
            check_destination(destination)
            # Once, before any (billed) request; reused by the checks and the writer.
            transport = resolve_transport(
                destination, conn_id=self.destination_conn_id, transport_params=self.transport_params
            )
            writer, retry = _writer_of(context, self.retries or 0)
            # The destination is proven writable here, before anything is asked of the service.
            found = self._survey(destination, transport, source, look_for_own=retry and writer is not None)
            self._source = source
            hook = self.hook
            self._lineage_namespace = namespace_of(hook)
            # The scope the request uses, named as the upload operator names its output.
            self._lineage_unique_id = source.unique_id or hook.config.unique_id
        # An unknown or malformed id, a refused key or account, is refused the same way on every
        # try: no retries spent on it.
        with account_refusal_fails_at_once(), refusal_fails_at_once(source.label):
            facts = self._facts(hook, source)
            plan = _DownloadPlan(hook, source, facts, destination, transport, writer=writer)
            result = self._earlier_try(plan, found) if self.overwrite else self._skip_or_fail(plan, found)
            if result is None:
                result = self._download(plan)
        self._result = result
        annotate_outlets(
            self,
            context,
            result["uri"],
            {
                "bytes": result["bytes"],
                "sha256": result["sha256"],
                "content_type": result["content_type"],
                "source": source.label,
                "skipped": result["skipped"],
            },
        )
        # XCom is stored in the metadata DB and shown in the UI: no credentials in the URI.
        return {**result, "uri": redact_uri(result["uri"])}

    @staticmethod
    def _facts(hook: MemoriesHook, source: DownloadSource) -> ServiceFacts:
        """For a video, what ``get_metadata`` says (not billed); assets and blobs have no such call."""
        if source.kind != "video":
            return ServiceFacts()
        return facts_of(hook.get_video(str(source.video_no), unique_id=source.unique_id))

    # ------------------------------------------------------------------ what is there already

    def _survey(
        self, destination: str, transport: ResolvedTransport, source: DownloadSource, *, look_for_own: bool
    ) -> list[Existing]:
        """Prove the destination writable and list what is there: for ``overwrite=False`` always, for
        ``overwrite=True`` only on a retry (``look_for_own``), and then at best: a credential that may
        write but not read (a write-only S3 policy or SAS) replaces as it always did."""
        folder_prefix = f"{source.name_key}." if is_folder(destination) else None
        if not self.overwrite:
            return survey(destination, transport=transport, prefix=folder_prefix)
        if look_for_own:
            try:
                return survey(destination, transport=transport, prefix=folder_prefix)
            except Exception as err:
                self.log.warning(
                    "Could not look at %s for an earlier try's download (%s); downloading",
                    redact_uri(destination),
                    err,
                )
        return survey(destination, transport=transport, inspect=False)

    def _earlier_try(self, plan: _DownloadPlan, found: list[Existing]) -> DownloadResult | None:
        """With ``overwrite=True``: the file an earlier try of this task instance committed, still
        holding the source as the service has it now; ``None`` downloads (and replaces).

        That try failed after its commit (its success never reported: a worker lost, a callback or
        an XCom push failing): downloading again would bill the same bytes twice. A file anyone
        else wrote is replaced, as ``overwrite=True`` promises.
        """
        source, facts = plan.source, plan.facts
        for existing in found:
            record = existing.provenance
            if (
                record is None
                or plan.writer is None
                or record.writer != plan.writer
                or record.source != source.identity
                or not same_evidence(record.evidence, facts.evidence)
                or (record.size is not None and record.size != existing.size)
            ):
                continue
            if not existing.intact and (
                record.sha256 is None or sha256_of(existing.uri, transport=plan.transport) != record.sha256
            ):
                continue
            self.log.info(
                "Keeping %s: an earlier try of this task instance downloaded %s there (%d bytes, per its "
                "record) and the service reports it unchanged; nothing downloaded",
                redact_uri(existing.uri),
                source.label,
                existing.size,
            )
            return _downloaded(existing.uri, existing.size, record.sha256, None, skipped=True)
        return None

    def _skip_or_fail(self, plan: _DownloadPlan, found: list[Existing]) -> DownloadResult | None:
        """The skip result when a file there is proven to hold the source as the service has it now.

        Files holding an earlier state of the same source go into ``plan.stale`` (replaced by the
        download); anything else there fails the task before a download request is sent.
        """
        source, facts = plan.source, plan.facts
        proven: list[tuple[Existing, Provenance]] = []
        doubts: list[AirflowFailException] = []
        for existing in found:
            try:
                proven.append((existing, self._proven(source, existing, plan.transport)))
            except AirflowFailException as doubt:
                doubts.append(doubt)
        for existing, record in proven:
            if same_evidence(record.evidence, facts.evidence):
                self.log.info(
                    "Skipping %s: %s already holds it (%d bytes, per its record); nothing downloaded",
                    source.label,
                    redact_uri(existing.uri),
                    existing.size,
                )
                return _downloaded(existing.uri, existing.size, record.sha256, None, skipped=True)
        if doubts:
            raise doubts[0]
        for existing, record in proven:
            self.log.warning(
                "%s holds %s as it was when downloaded, but the service reports it changed since "
                "(%s, now %s): downloading it again",
                redact_uri(existing.uri),
                source.label,
                record.evidence,
                facts.evidence,
            )
            plan.stale[existing.uri] = existing.version
        return None

    def _proven(self, source: DownloadSource, existing: Existing, transport: ResolvedTransport) -> Provenance:
        """``existing``'s record when it proves the file holds ``source``; else fail, naming both."""
        shown = redact_uri(existing.uri)
        record = existing.provenance
        keep = "delete it, choose another destination, or set overwrite=True to replace it"
        if existing.kind == "folder":  # not replaced by overwrite=True either
            keep = "remove it or choose another destination"
        if record is None:
            what = f"{existing.size} bytes" if existing.kind == "file" else f"a {existing.kind}"
            raise AirflowFailException(
                f"{shown} already exists ({what}) with no record of what it holds, so it "
                f"cannot be shown to be {source.label}; nothing was downloaded: {keep}"
            )
        if record.source != source.identity:
            raise AirflowFailException(
                f"{shown} already holds {describe_identity(record.source)}, not {source.label} "
                f"(two sources, one name); nothing was downloaded: {keep}"
            )
        changed = record.size is not None and record.size != existing.size
        if not changed and not existing.intact:
            # Moved, copied or touched since: the bytes decide (a local read; remote: a plain read).
            changed = record.sha256 is None or sha256_of(existing.uri, transport=transport) != record.sha256
        if changed:
            raise AirflowFailException(
                f"{shown} was downloaded from {source.label} but has been changed since "
                f"({existing.size} bytes now, {record.size} recorded, or other bytes); nothing was "
                f"downloaded: {keep}"
            )
        return record

    # ------------------------------------------------------------------ downloading

    def _download(self, plan: _DownloadPlan) -> DownloadResult:
        if self.verify_size and plan.facts.size is not None:
            # The body will be held to this size: a disk that cannot take it fails before the
            # (billed) request, not once it is answered.
            check_room(plan.destination, plan.facts.size, name_prefix=f"{plan.source.name_key}.")
        # The client's own policy (built from the connection's max_retries): same delays, same bound.
        policy = plan.hook.get_conn().retry
        attempt = 0
        while True:
            try:
                return self._attempt(plan)
            except _BodyInterrupted as interrupted:
                if attempt >= policy.max_retries:
                    raise interrupted.error from None
                attempt += 1
                delay = policy.delay_for(attempt, interrupted.error)
                self.log.warning(
                    "%s: connection broke mid-body (%s); restarting from the start in %.1fs (retry %d of %d)",
                    plan.source.label,
                    interrupted.error,
                    delay,
                    attempt,
                    policy.max_retries,
                )
                time.sleep(delay)

    def _open(self, hook: MemoriesHook, source: DownloadSource) -> DownloadResponse:
        if source.kind == "video":
            return hook.download_video(str(source.video_no), unique_id=source.unique_id)
        if source.kind == "asset":
            return hook.download_asset(str(source.asset_id))
        return hook.download_blob(str(source.bucket), str(source.blob))

    def _attempt(self, plan: _DownloadPlan) -> DownloadResult:
        with self._open(plan.hook, plan.source) as resp:
            # A folder's file name is known only now, from the headers, before any body byte is written.
            destination = plan.destination
            uri = (
                join_folder(destination, plan.source.folder_entry_name(resp))
                if is_folder(destination)
                else destination
            )
            # A stale file is replaced only as it was seen: on object stores the commit is conditional
            # on its version, and one written meanwhile by another writer is a lost race.
            replace = self.overwrite or (uri in plan.stale and plan.stale[uri] is None)
            version = None if self.overwrite else plan.stale.get(uri)
            return self._stream(
                resp,
                plan.source,
                plan.facts,
                uri,
                plan.transport,
                replace=replace,
                replace_version=version,
                mark=plan.writer,
            )

    def _stream(
        self,
        resp: DownloadResponse,
        source: DownloadSource,
        facts: ServiceFacts,
        uri: str,
        transport: ResolvedTransport,
        replace: bool = True,
        replace_version: str | None = None,
        mark: str | None = None,
    ) -> DownloadResult:
        known = facts.size if self.verify_size else None
        # Checked before anything is written: a Content-Length that disagrees with the service's
        # size is named as such (not, say, as a disk too small for it).
        expected = resp.expected_size(known)
        digest = hashlib.sha256() if self.checksum == "sha256" else None
        shown = redact_uri(uri)
        progress = TransferProgress(self.log, f"{source.label} -> {shown}", expected)
        size = "unknown" if expected is None else expected
        self.log.info("Downloading %s to %s (%s bytes)", source.label, shown, size)
        # Object stores take the record when the upload starts; sidecars when the block ends (staged
        # before the rename, named after it).
        provenance = Provenance(source.identity, facts.evidence, size=expected, writer=mark)
        writer = atomic_writer(
            uri, transport=transport, provenance=provenance, replace=replace, replace_version=replace_version
        )
        local = local_path(uri) is not None
        depth = _LOCAL_WRITE_AHEAD_CHUNKS if local else _WRITE_AHEAD_CHUNKS
        # The body goes round a fixed set of page-aligned buffers (received into, hashed while
        # still in the cache, written by a second thread, handed back): no allocation or copy per
        # chunk, and a local file takes them with O_DIRECT (see storage.write_behind).
        ring = BufferRing(depth + 2, _CHUNK_SIZE)
        try:
            with writer as out, contextlib.ExitStack() as stack:
                # Ours and smart-open's object-store writers copy what they are given before
                # returning; paramiko's SFTP file wants bytes.
                write: Callable[[Chunk], object] = out.write
                if scheme_family(uri) == "sftp":
                    write = lambda view: out.write(bytes(view))  # noqa: E731
                background = stack.enter_context(BackgroundWriter(write, depth=depth, release=ring.give_back))
                try:
                    done = _pump(resp, ring, background, digest, progress, known)
                except MemoriesConnectionError as err:
                    # Raised inside the writer's block: the partial object is discarded first.
                    raise _BodyInterrupted(err) from err
                if self.verify_size and expected is not None and done != expected:
                    raise AirflowException(
                        f"{source.label}: received {done} bytes but {expected} were expected; "
                        f"nothing was written to {shown}"
                    )
                stack.close()  # every chunk written: the record can be completed
                provenance.size = done
                provenance.sha256 = digest.hexdigest() if digest is not None else None
        except DestinationTaken:
            return self._after_race(source, uri, transport, provenance)
        except OSError as err:
            if isinstance(err, IsADirectoryError) and err.filename is not None:
                # Seen before the body was read (overwrite=True looks nothing up beforehand, and a
                # folder's file name is known only from the answer): no retry can replace a folder.
                raise AirflowFailException(
                    f"{source.label}: {shown} is an existing folder, which the file cannot replace; "
                    "nothing was written: remove it or choose another destination"
                ) from err
            if err.errno not in _NO_ROOM or isinstance(err, NoRoomError):
                raise
            # Mid-write (the disk or a quota filled, a file size limit): say which file, and that
            # nothing of it is left (the writer removed its temporary file). A retry may find room.
            raise AirflowException(
                f"{source.label}: writing {shown} failed: {err.strerror or err}; nothing was left "
                "there (free some space or lift the limit, or choose another destination)"
            ) from err
        progress.update(done, final=True)
        return _downloaded(uri, done, provenance.sha256, resp.content_type)

    def _after_race(
        self, source: DownloadSource, uri: str, transport: ResolvedTransport, ours: Provenance
    ) -> DownloadResult:
        """Another writer took ``uri`` while this one downloaded (``replace=False``): fine only if
        what it wrote is these very bytes; else fail, naming what is there."""
        there = next(iter(survey(uri, transport=transport)), None)
        if there is not None and _holds_the_same(there, ours, transport):
            self.log.info(
                "%s was written meanwhile by another download of %s: the same bytes",
                redact_uri(uri),
                source.label,
            )
            return {
                "uri": uri,
                "bytes": there.size,
                "sha256": ours.sha256,
                "content_type": None,
                "filename": basename_of(uri),
                "skipped": False,
            }
        if there is None:
            # The stale file it was to replace, or the other writer's, was removed meanwhile: nothing
            # is there to keep, and the next try writes it.
            raise AirflowException(
                f"`destination` {redact_uri(uri)} was changed meanwhile by another writer and is gone "
                f"now; nothing was written for {source.label} (overwrite=False replaces only the file "
                "it looked at): the next try writes it"
            )
        holder = "other bytes"
        if there.kind != "file":
            holder = f"a {there.kind}"
        elif there.provenance is not None:
            holder = describe_identity(there.provenance.source)
        raise AirflowFailException(
            f"`destination` {redact_uri(uri)} was created meanwhile by another writer and holds {holder}, "
            f"not what {source.label} sent; it was left as it is and nothing was written (overwrite=False "
            "never replaces a file)"
        )

    # ------------------------------------------------------------------ events & lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the memories video/asset as input, the destination as output."""
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        source = self._source
        inputs = []
        if source is not None:
            name = {
                "video": video_dataset_name(self._lineage_unique_id, str(source.video_no)),
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


def _writer_of(context: Any, retries: int) -> tuple[str | None, bool]:
    """This task instance's mark (None outside a task, or when Airflow does not say since which try
    it runs), and whether an earlier try ran since it was last cleared.

    A clear sets ``max_tries`` to the last try plus ``retries``, so the first try since then is
    ``max_tries - retries + 1`` (Airflow's own reckoning): a retry shares its mark, a clear does not.
    """
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    if not (_count(try_number) and _count(max_tries) and _count(retries)):
        return None, False
    assert isinstance(try_number, int) and isinstance(max_tries, int)
    first_try = max(max_tries - retries + 1, 1)
    if try_number < first_try:
        return None, False  # not Airflow's reckoning: no mark rather than a wrong one
    map_index = getattr(ti, "map_index", None)
    mark = writer_mark(
        str(getattr(ti, "dag_id", "")),
        str(getattr(ti, "task_id", "")),
        str(getattr(ti, "run_id", "")),
        -1 if map_index is None else int(map_index),
        first_try,
    )
    return mark, try_number > first_try


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _holds_the_same(there: Existing, ours: Provenance, transport: ResolvedTransport) -> bool:
    """Whether ``there`` (written meanwhile by another writer) holds what ``ours`` describes."""
    if there.kind != "file":
        return False
    if ours.sha256 is not None:
        return sha256_of(there.uri, transport=transport) == ours.sha256
    # No digest of our own (checksum=None): the other writer's record decides, as it would a skip.
    record = there.provenance
    if (
        record is None
        or record.source != ours.source
        or not same_evidence(record.evidence, ours.evidence)
        or there.size != ours.size
    ):
        return False
    return there.intact or (
        record.sha256 is not None and sha256_of(there.uri, transport=transport) == record.sha256
    )


def _pump(
    resp: DownloadResponse,
    ring: BufferRing,
    background: BackgroundWriter,
    digest: Any,
    progress: TransferProgress,
    known: int | None,
) -> int:
    """Move the body through ``ring`` to ``background``, hashing on the way; returns the bytes moved."""
    done = 0
    for view in resp.iter_into(ring.take, ring.give_back, expected_size=known):
        if digest is not None:
            digest.update(view)
        done += len(view)
        background.write(view)
        progress.update(done)
    return done


def _downloaded(
    uri: str, size: int, sha256: str | None, content_type: str | None, *, skipped: bool = False
) -> DownloadResult:
    """The result of a download that wrote ``uri`` (``skipped``: found there, kept, nothing downloaded)."""
    return {
        "uri": uri,
        "bytes": size,
        "sha256": sha256,
        "content_type": content_type,
        "filename": basename_of(uri),
        "skipped": skipped,
    }

"""Export what memories.ai learnt about videos (captions, audio transcription) as rows in any storage."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    conf,
)

from memories_provider.client import (
    MemoriesError,
    MemoriesInvalidArgumentError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    MemoriesRouteNotFoundError,
    Transcript,
    Video,
    VideoStatus,
)
from memories_provider.client.core import PageCursor
from memories_provider.client.deadline import within
from memories_provider.client.models import TRANSCRIPT_KINDS, TranscriptKind
from memories_provider.hooks.connection import DEFAULT_CONN_ID
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.hooks.task_mixin import MemoriesHookMixin
from memories_provider.lineage import annotate_outlets, lineage_dataset, namespace_of, video_dataset_name
from memories_provider.operators._export_rows import (
    COLUMNS,
    CountingFile,
    ExportFormat,
    compression_for,
    compressor,
    format_for,
    require_pyarrow,
    row_writer,
    rows_of,
)
from memories_provider.preflight import (
    account_refusal_fails_at_once,
    bad_input_fails_at_once,
    checked_unique_id,
    flags,
    seconds,
)
from memories_provider.status import StatusRound, is_transient, normalize_video_nos, run_round, shown_status
from memories_provider.storage.destinations import (
    DestinationTaken,
    ResolvedTransport,
    atomic_writer,
    check_destination,
    is_folder,
    resolve_transport,
)
from memories_provider.storage.provenance import Existing, Provenance
from memories_provider.storage.survey import survey
from memories_provider.storage.uris import redact_uri
from memories_provider.templating import single_value
from memories_provider.triggers.video_status import short_ids
from memories_provider.types import ExportResult, VideoStatusEvent

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["COLUMNS", "MemoriesExportOperator"]

NOT_PARSED_POLICIES = ("fail", "wait", "skip")


@dataclass(frozen=True)
class _ExportPlan:
    """What the checks before any request established."""

    video_nos: list[str] | None  # None: every parsed video of the scope
    destination: str
    file_format: ExportFormat
    compression: str | None  # of JSON Lines, as the destination's name says (.gz, .bz2, .xz)
    transport: ResolvedTransport
    found: bool  # something not written by this task instance is there (overwrite=False)
    replace: bool  # overwrite=True, or what is there is an earlier try's own export
    mark: Provenance | None  # recorded with the export when overwrite=False
    unique_id: str | None  # None: the connection's
    #: overwrite=False, replacing an earlier try's own export in an object store: its version seen
    #: (S3/Azure ETag, GCS generation), which the commit must still find there.
    replace_version: str | None = None


#: Videos named one by one in OpenLineage inputs; more are named by their scope only.
_LINEAGE_MAX_VIDEOS = 100
_LOG_EVERY = 100
#: all_parsed: listings of the scope at most (the first, and at least one check that it missed nothing).
_LISTINGS = 4
#: all_parsed: videos asked for per list_videos page.
_PAGE_SIZE = 100


class _NothingExported(Exception):
    """Every video was left out: the write is aborted, so no empty file replaces the destination."""


def _task_instance_mark(context: Context) -> Provenance | None:
    """The record an export of this task instance (any try) keeps with its file; None outside a task."""
    ti = context.get("ti")
    if ti is None:
        return None
    who = "\0".join(str(getattr(ti, name, "")) for name in ("dag_id", "task_id", "run_id", "map_index"))
    return Provenance(source="export/" + hashlib.sha256(who.encode()).hexdigest()[:40])


def _is_own(item: Existing, mark: Provenance | None) -> bool:
    """Whether ``item`` is still the file an earlier try of this task instance committed."""
    return (
        mark is not None
        and item.intact
        and item.provenance is not None
        and item.provenance.source == mark.source
    )


def _check_arguments(
    destination: str,
    video_no: str | None,
    video_nos: list[str] | None,
    all_parsed: bool,
    file_format: str | None,
    not_parsed: str,
) -> None:
    """The constructor's checks of what to export, where, and on which policy."""
    if not destination or not str(destination).strip():
        raise ValueError("`destination` must be a non-empty path or URI")
    named = video_no not in (None, "") or video_nos not in (None, "", [], ())
    if named == bool(all_parsed):
        raise ValueError("give exactly one of `video_no`, `video_nos` or `all_parsed=True`")
    if video_no not in (None, "") and video_nos not in (None, "", [], ()):
        raise ValueError("give exactly one of `video_no`, `video_nos` or `all_parsed=True`")
    if file_format is not None:
        format_for(str(destination), file_format)
    if not_parsed not in NOT_PARSED_POLICIES:
        raise ValueError(f"`not_parsed` must be 'fail', 'wait' or 'skip', got {not_parsed!r}")


def _kinds(kinds: Any) -> tuple[TranscriptKind, ...]:
    """``kinds`` as a tuple of ``"visual"``/``"audio"`` (``"both"`` and a single string allowed)."""
    if kinds == "both":
        kinds = TRANSCRIPT_KINDS
    if isinstance(kinds, str):
        kinds = (kinds,)
    try:
        chosen = tuple(dict.fromkeys(kinds))
    except TypeError:
        chosen = ()
    if not chosen or any(kind not in TRANSCRIPT_KINDS for kind in chosen):
        raise ValueError(f"`kinds` must be 'visual', 'audio', 'both' or a list of them, got {kinds!r}")
    return chosen


class _Listing:
    """One listing of a scope's ``PARSE`` videos, page by page, and what its pages showed."""

    def __init__(self, scope: str, *, gone_before: int) -> None:
        self.scope = scope
        self.rows = 0  # rows listed, repeats included
        self.totals: set[int | None] = set()  # the total_count of each page
        self.ids: set[str] = set()
        self.repeated = False  # a video listed twice: the listing moved under the reader
        self._gone_before = gone_before

    def pages(self, hook: MemoriesHook) -> Iterator[Video]:
        """The videos of every page, one page asked for once the previous one is consumed.

        The client's :class:`~memories_provider.client.core.PageCursor` pages and refuses a listing
        that cannot be read whole (``iter_videos`` does the same); the export pages itself because
        :meth:`whole` needs each page's ``total_count`` and ids.
        """
        cursor = PageCursor(_PAGE_SIZE, scope=self.scope)
        while cursor.next is not None:
            page = hook.list_videos(
                unique_id=self.scope, status=VideoStatus.PARSE.value, page=cursor.next, size=_PAGE_SIZE
            )
            try:
                cursor.advance(page)
            except MemoriesPagingError as err:
                raise AirflowException(
                    f"{err.message}; the export would hold part of the scope as if it were all of "
                    "it, so nothing was exported"
                ) from err
            ids = [v.video_no for v in page.videos]
            self.rows += len(ids)
            self.totals.add(page.total_count)
            self.repeated = self.repeated or not self.ids.isdisjoint(ids)
            self.ids.update(ids)
            yield from page.videos

    def whole(self, *, gone_after: int) -> bool:
        """Whether this listing saw the scope whole, as it stood (see ``_listed``)."""
        if len(self.totals) != 1 or self.repeated or gone_after != self._gone_before:
            return False
        (total,) = self.totals
        return total is not None and len(self.ids) == total


class MemoriesExportOperator(MemoriesHookMixin, BaseOperator):
    """Write the index outputs of memories.ai videos to a file in any storage, one row per segment.

    For each video, the segments of the chosen ``kinds`` — ``visual`` (scene captions,
    ``get_video_caption``) and ``audio`` (speech to text, ``get_audio_transcription``) — become rows
    with the columns ``video_no, unique_id, kind, index, start_s, end_s, text, video_name,
    video_duration_s, video_create_time`` (seconds; epoch milliseconds), written as JSON Lines
    (default) or Parquet (``pip install 'airflow-provider-memories[parquet]'``).

    The export is atomic: rows are streamed to a temporary object (local/SFTP: a hidden ``.part``
    file renamed at the end; S3/GCS/Azure: an upload committed only on success), so a reader of
    the destination sees the previous object or the whole new one, never a part; a failed or
    killed export leaves nothing at the final name. Rows go out video by video as their outputs
    arrive: memory does not grow with the number of videos (Parquet holds one row group).

    Before any request to the service, the arguments and the destination are checked (the
    destination is proven writable, see :func:`~memories_provider.storage.survey.survey`); then
    the statuses of the named videos are checked together (``list_videos``, 200 ids a request).
    Only ``PARSE`` videos have outputs: ``not_parsed`` decides what happens to the others. A video
    without an audio track has no audio rows; that is not an error. Rate limits (``0429``),
    5xx answers and dropped connections are retried per request by the connection's retry policy;
    if they persist the task fails with nothing written, and its retry exports again from the start
    (no duplicate rows).

    :param destination: the file to write (templated): a local path, ``file://``, ``s3://``,
        ``gs://``, ``azure://`` or ``sftp://`` URI; not a folder.
    :param video_no: one video to export (templated).
    :param video_nos: several videos (templated; e.g. an upload's XCom).
    :param all_parsed: instead of ids, every ``PARSE`` video of ``unique_id`` (listed page by page;
        one deleted after the listing is left out, and named in the result's ``skipped``).
    :param unique_id: the videos' scope (templated); defaults to the connection's ``unique_id``.
    :param kinds: ``"visual"``, ``"audio"``, ``"both"`` (default) or a list of them.
    :param file_format: ``"jsonl"`` or ``"parquet"``; default: ``parquet`` when the destination
        ends in ``.parquet``, else ``jsonl``. JSON Lines to a name ending in ``.gz``, ``.bz2`` or
        ``.xz`` is compressed so; Parquet to such a name is refused.
    :param not_parsed: for named videos that are not ``PARSE``: ``"fail"`` (default: the task fails
        before any output is fetched, naming them and their status), ``"wait"`` (poll their status
        every ``poll_interval`` seconds until all are ``PARSE``, up to ``wait_timeout``; a
        ``FAILED`` or unknown video fails the task) or ``"skip"`` (export the others; the skipped
        ids, and those of videos deleted during the export, are in the result's ``skipped``;
        when none is left, nothing is written and the task is skipped).
    :param wait_timeout: seconds (or a ``timedelta``) ``not_parsed="wait"`` waits at most, counted
        from the start of the try (a deferred wait included; a retry of the task waits again). It
        bounds the waiting; the first status check, like the export itself, is bounded by the
        connection's retry policy.
    :param poll_interval: seconds (or a ``timedelta``) between status checks while waiting.
    :param deferrable: with ``not_parsed="wait"``, wait in the triggerer (the status trigger the
        sensor uses; no worker slot held) once the first check has found videos not parsed yet, or
        could not get an answer; defaults to ``[operators] default_deferrable``. On resume, the
        statuses and the destination are checked again before anything is fetched.
    :param overwrite: ``True`` (default): replace what is at the destination, atomically.
        ``False``: fail, before any request, if something is there (and at the commit if
        something appeared meanwhile), unless it is the unchanged export of an earlier try of
        this task instance, which a retry replaces only if it is still there as it was seen: in
        S3, GCS and Azure the commit is conditional on its version (ETag, generation), locally
        and over SFTP it is looked at again just before the commit.
    :param memories_conn_id: the memories.ai connection.
    :param destination_conn_id: Airflow connection with credentials for the destination.
    :param transport_params: extra smart-open transport parameters, validated per scheme.

    Returns (XCom) ``{"uri", "rows", "videos", "bytes", "format", "kinds", "skipped"}`` (``uri``
    with user-info and query masked). When the task declares an outlet asset/dataset whose URI is
    the destination, its event carries ``{"rows", "videos", "bytes", "format"}`` as extra.
    """

    uri_template_fields = ("destination",)
    template_fields: Sequence[str] = ("destination", "video_no", "video_nos", "unique_id")
    ui_color = "#d7f0dc"

    def __init__(
        self,
        *,
        destination: str,
        video_no: str | None = None,
        video_nos: list[str] | None = None,
        all_parsed: bool = False,
        unique_id: str | None = None,
        kinds: str | Sequence[str] = "both",
        file_format: str | None = None,
        not_parsed: str = "fail",
        wait_timeout: float | timedelta = 3600.0,
        poll_interval: float | timedelta = 30.0,
        overwrite: bool = True,
        memories_conn_id: str = DEFAULT_CONN_ID,
        destination_conn_id: str | None = None,
        transport_params: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        flags(all_parsed=all_parsed, overwrite=overwrite, deferrable=deferrable)
        _check_arguments(destination, video_no, video_nos, all_parsed, file_format, not_parsed)
        wait_timeout = seconds("wait_timeout", wait_timeout)
        poll_interval = seconds("poll_interval", poll_interval)
        self.kinds = _kinds(kinds)
        self.destination = destination
        self.video_no = video_no
        self.video_nos = video_nos
        self.all_parsed = bool(all_parsed)
        self.unique_id = unique_id
        self.file_format = file_format
        self.not_parsed = not_parsed
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)
        self.overwrite = overwrite
        self.memories_conn_id = memories_conn_id
        self.destination_conn_id = destination_conn_id
        self.transport_params = transport_params
        self.deferrable = deferrable
        self._result: ExportResult | None = None
        self._exported: list[str] = []
        self._gone = 0
        self._scope: str | None = None
        self._namespace: str | None = None

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> ExportResult:
        """Check everything that can fail without the service, then stream the rows and commit."""
        self.__dict__["_try_started"] = time.time()  # where execution_timeout counts from
        with account_refusal_fails_at_once():  # a refused key or account: no retry changes that
            return self._export(context, end_time=time.time() + self.wait_timeout)

    def execute_complete(
        self,
        context: Context,
        event: VideoStatusEvent,
        end_time: float | None = None,
        started_at: float | None = None,
    ) -> ExportResult:
        """Resume after a deferred wait for parsing: export, or fail as the wait ended.

        ``started_at`` (the try's first ``execute``) keeps ``execution_timeout`` counting from there
        for a further wait (Airflow 3 gives the resumed run a whole new one).
        """
        if isinstance(started_at, (int, float)):
            self.__dict__["_try_started"] = float(started_at)
        status = event.get("status") if isinstance(event, dict) else None
        message = str(event.get("message") or "") if isinstance(event, dict) else repr(event)
        if status == "failed":  # a failed or unknown video: no retry changes that
            raise AirflowFailException(f"cannot export: {message}; nothing was exported")
        if status != "success":  # timeout, or the trigger's error
            raise AirflowException(
                f"{message or f'unexpected trigger event {event!r}'}; nothing was exported"
            )
        # The wait's deadline stands. Only dag.test() drops a fired deferral's kwargs: a fresh
        # window then, which the statuses just found all PARSE make moot.
        with account_refusal_fails_at_once():
            return self._export(
                context, end_time=end_time if end_time is not None else time.time() + self.wait_timeout
            )

    def _export(self, context: Context, *, end_time: float) -> ExportResult:
        """The export, with ``end_time`` (epoch seconds) as the deadline of ``not_parsed="wait"``."""
        # This try's alone: dag.test() runs every try on a shallow copy of one operator, whose list
        # this would otherwise be (an earlier try's videos would count as exported by this one).
        self._exported = []
        self._gone = 0  # all_parsed: videos found deleted while listed (the listing moved)
        plan = self._preflight(context)
        shown = redact_uri(plan.destination)
        if plan.found:
            raise AirflowFailException(
                f"{shown} already exists and overwrite=False; nothing was exported: delete it, choose "
                "another destination, or set overwrite=True to replace it"
            )
        hook = self.hook
        with bad_input_fails_at_once():
            hook.config  # noqa: B018 (validated here, before anything is sent)
        skipped: list[str] = []
        try:
            self._namespace = namespace_of(hook)
            scope = self._scope = plan.unique_id or hook.config.unique_id
            ids = plan.video_nos
            videos = (
                self._listed(hook, scope) if ids is None else self._checked(ids, scope, skipped, end_time)
            )
            hook = self.hook  # (another one if the wait found the connection edited: see _statuses)
            self.log.info("Exporting %s outputs to %s (%s)", "+".join(self.kinds), shown, plan.file_format)
            rows, size = self._write(hook, plan, videos, scope, skipped)
        finally:
            hook.close()
        result: ExportResult = {
            "uri": plan.destination,
            "rows": rows,
            "videos": len(self._exported),
            "bytes": size,
            "format": plan.file_format,
            "kinds": list(self.kinds),
            "skipped": skipped,
        }
        self.log.info(
            "Exported %d rows of %d videos (%d bytes) to %s%s",
            rows,
            len(self._exported),
            size,
            shown,
            f"; skipped {len(skipped)}: {', '.join(skipped[:10])}" if skipped else "",
        )
        self._result = result
        extra = {k: result[k] for k in ("rows", "videos", "bytes", "format")}
        annotate_outlets(self, context, result["uri"], extra)
        return {**result, "uri": shown}

    def _preflight(self, context: Context) -> _ExportPlan:
        """Every check that needs no request to memories.ai; input no retry can fix fails at once.

        With ``overwrite=False`` the export is recorded as this task instance's (see
        :mod:`memories_provider.storage.provenance`): a retry after a commit whose success was
        never reported (a worker lost) finds its own export and replaces it, instead of failing
        for good on "already exists".
        """
        with bad_input_fails_at_once():  # no retry fixes bad arguments, destination or connection
            ids = None if self.all_parsed else self._ids()
            unique_id = checked_unique_id(self.unique_id, templated=self.rendered_from_template("unique_id"))
            # Without the whitespace around it, as the upload's source and every id: a template's
            # trailing newline is no part of a file name.
            destination = single_value("destination", self.destination, operator=type(self).__name__).strip()
            check_destination(destination)
            if is_folder(destination):
                raise ValueError(
                    f"`destination` must name a file, not the folder {redact_uri(destination)!r}"
                )
            file_format = format_for(destination, self.file_format)
            compression = compression_for(destination, file_format)
            if file_format == "parquet":
                require_pyarrow()
            transport = resolve_transport(
                destination, conn_id=self.destination_conn_id, transport_params=self.transport_params
            )
            existing = survey(destination, transport=transport, inspect=not self.overwrite)
        mark = None if self.overwrite else _task_instance_mark(context)
        own = bool(existing) and all(_is_own(item, mark) for item in existing)
        if own:
            self.log.info(
                "%s is an earlier try's export of this task instance: replacing it", redact_uri(destination)
            )
        found = bool(existing) and not own
        # An export names one file: what is there is at most one object, replaced only as seen.
        version = existing[0].version if own and not self.overwrite else None
        return _ExportPlan(
            ids,
            destination,
            file_format,
            compression,
            transport,
            found,
            self.overwrite or own,
            mark,
            unique_id,
            version,
        )

    def _write(
        self, hook: MemoriesHook, plan: _ExportPlan, videos: Iterable[Video], scope: str, skipped: list[str]
    ) -> tuple[int, int]:
        """Stream the rows of ``videos`` to the destination and commit it; returns (rows, bytes)."""
        shown = redact_uri(plan.destination)
        try:
            with atomic_writer(
                plan.destination,
                transport=plan.transport,
                provenance=plan.mark,
                # Object stores: the earlier try's export is replaced only if still the version seen
                # (the look and the commit one step, in the store); locally and over SFTP, a replace.
                replace=plan.replace and plan.replace_version is None,
                replace_version=plan.replace_version,
            ) as fh:
                out = CountingFile(fh)  # what reaches the destination
                packer = compressor(plan.compression, out) if plan.compression else None
                writer = row_writer(plan.file_format, CountingFile(packer) if packer else out)
                try:
                    for video in videos:
                        transcripts = self._outputs(hook, video, scope, skipped, shown)
                        if transcripts is None:
                            continue
                        writer.write_rows(rows_of(video, scope, transcripts))
                        self._exported.append(video.video_no)
                        if len(self._exported) % _LOG_EVERY == 0:
                            self.log.info("%d videos, %d rows so far", len(self._exported), writer.rows)
                    if skipped and not self._exported:
                        raise _NothingExported  # aborts the write: the destination stays as it was
                    if self.all_parsed and not self._exported:
                        self._check_scope(hook, scope, shown)  # an unknown one aborts the write
                    writer.close()
                    if packer is not None:
                        packer.close()  # the end of the compressed stream
                    if plan.replace and not self.overwrite and plan.replace_version is None:
                        self._still_own(plan)  # another writer's file is not replaced
                except BaseException:
                    writer.abandon()
                    if packer is not None:  # closed now, into nothing: never later, into the aborted object
                        out.detach()
                        with contextlib.suppress(Exception):
                            packer.close()
                    raise
        except _NothingExported:
            raise AirflowSkipException(
                f"every video was left out ({short_ids(skipped)}): nothing exported, and {shown} was "
                "left as it was rather than replaced by an empty file"
            ) from None
        except DestinationTaken:
            if plan.replace_version is not None and not self._anything_there(plan):
                # The earlier try's export it was to replace was removed meanwhile: nothing to keep.
                raise AirflowException(
                    f"`destination` {shown} was removed by another writer during the export "
                    "(overwrite=False replaces only the export it looked at); nothing was written: "
                    "the next try writes it"
                ) from None
            raise AirflowFailException(
                f"`destination` {shown} was created by another writer during the export (overwrite=False); "
                "it was left as it is and nothing was written"
            ) from None
        return writer.rows, out.bytes

    @staticmethod
    def _anything_there(plan: _ExportPlan) -> bool:
        """After a lost race: whether anything is at the destination now (True if it cannot be told)."""
        try:
            return bool(survey(plan.destination, transport=plan.transport))
        except Exception:
            return True

    def _still_own(self, plan: _ExportPlan) -> None:
        """``overwrite=False``, replacing an earlier try's own export: just before the commit,
        what is at the destination must still be that export (or nothing).

        It was checked before any request; another writer may have replaced it since (a run with
        ``overwrite=True``, a person), and the commit, a replace, would overwrite their file.
        Local and SFTP destinations only: there the look and the commit are two steps (a write
        between them still wins the race); object stores commit only over the version seen.

        :raises DestinationTaken: when something else is there now.
        """
        existing = survey(plan.destination, transport=plan.transport)
        if existing and not all(_is_own(item, plan.mark) for item in existing):
            raise DestinationTaken(plan.destination)

    def _check_scope(self, hook: MemoriesHook, scope: str, shown: str) -> None:
        """An ``all_parsed`` export that found no video: fail if ``scope`` is no scope of the account.

        Scopes are case-sensitive and made by the first upload, so a misspelt one lists nothing;
        its export would replace the last good one with an empty file, and report success.
        """
        try:
            scopes = hook.list_unique_ids()
        except MemoriesRouteNotFoundError:  # a deployment without the route cannot say
            self.log.warning("No PARSE video in unique_id %r (its scopes cannot be listed here)", scope)
            return
        if scope in scopes:
            self.log.warning("No PARSE video in unique_id %r: the export has no rows", scope)
            return
        near = [s for s in scopes if s.casefold() == scope.casefold()]
        raise AirflowFailException(
            f"`unique_id` {scope!r} is not a scope of this account (no video was ever uploaded to it; "
            f"scopes are case-sensitive{f', did you mean {near[0]!r}?' if near else ''}): nothing was "
            f"exported and {shown} was left as it was"
        )

    def _ids(self) -> list[str]:
        # normalize_video_nos also reads back a list a template rendered as text ("['VI1', 'VI2']").
        try:
            return normalize_video_nos(self.video_no, self.video_nos)
        except ValueError as err:
            raise ValueError(f"{err} (or all_parsed=True)") from None

    # ------------------------------------------------------------------ which videos

    def _listed(self, hook: MemoriesHook, scope: str) -> Iterator[Video]:
        """Every ``PARSE`` video of the scope, page by page, each once.

        Pages are offsets into a listing that may change while it is read (a page is asked for
        only once the previous one is exported): a video added shows twice (kept once), and a
        video deleted moves every later one up a place, the first of the next page onto the page
        already read. So the scope is listed again (list requests only, about 1 % of an export's
        requests: each video's outputs take 2), and again until a listing is *whole* or finds no
        video the export has not seen, up to :data:`_LISTINGS` listings. A listing is whole when
        every page counted the same ``total_count``, it held that many videos, each once, and no
        video was found deleted while it was read.

        The first listing is never taken as the scope on its own, however whole it looks: a video
        deleted from pages already read while as many others turn ``PARSE`` on pages not read
        yet, between the same two page requests, keeps the total and hides the video the deletion
        moved. A second listing lists that video (it would take the same two events again, at
        the same place, to hide it twice).

        :raises AirflowException: when the service answers a page with exactly the videos of an
            earlier page (it ignores ``page``) or its pages end before they reach ``total_count``:
            the export would hold part of the scope, reported complete.
        """
        seen: set[str] = set()
        for count in range(1, _LISTINGS + 1):
            listing = _Listing(scope, gone_before=self._gone)
            new = False
            for video in listing.pages(hook):
                if video.status is VideoStatus.PARSE and video.video_no not in seen:
                    seen.add(video.video_no)
                    new = True
                    yield video
            # Never the first alone, whole as it may look: see the docstring.
            if count >= 2 and (listing.whole(gone_after=self._gone) or not new):
                return
        self.log.warning(
            "unique_id %r changed under each of its %d listings, the last one still finding videos "
            "not seen before: a video that a deletion moved onto a page already read may be "
            "missing from this export (it was listed no further)",
            scope,
            _LISTINGS,
        )

    def _checked(self, ids: list[str], scope: str, skipped: list[str], end_time: float) -> list[Video]:
        """The named videos, in order, once their statuses allow the export (see ``not_parsed``);
        with ``deferrable``, the wait for the others is deferred (nothing is written before).
        Checked with ``self.hook``, which a wait that finds the connection edited replaces."""
        deadline = time.monotonic() + (end_time - time.time())
        ready: dict[str, Video] = {}
        waiting, first = list(ids), True
        while True:
            answer = self._statuses(self.hook, waiting, scope, deadline, first=first)
            if answer is None:  # unanswered, deferrable: the trigger retries it, not a worker slot
                self._defer_for(waiting, scope, end_time)
            found, rejected = answer
            problems: dict[str, str] = {}
            pending: list[str] = []
            for video_no in waiting:
                video = found.get(video_no)
                if video is not None and video.status is VideoStatus.PARSE:
                    ready[video_no] = video
                elif video is None:
                    problems[video_no] = f"unknown ({rejected.get(video_no, 'not listed in ' + repr(scope))})"
                elif video.status is VideoStatus.FAILED:
                    problems[video_no] = shown_status(video)
                elif self.not_parsed == "skip":
                    problems[video_no] = f"not parsed yet ({shown_status(video)})"
                else:
                    pending.append(video_no)
            if problems and self.not_parsed != "skip":
                raise AirflowFailException(
                    f"cannot export videos that are not PARSE: {_listing(problems)}; nothing was exported"
                )
            if pending and self.not_parsed == "fail":
                raise AirflowFailException(
                    f"cannot export {len(pending)} video(s) that are not PARSE yet "
                    f"({', '.join(pending[:10])}); nothing was exported. Set not_parsed='wait' to wait "
                    "for them or 'skip' to leave them out"
                )
            if problems:
                self.log.warning("Leaving out %d video(s): %s", len(problems), _listing(problems))
                skipped.extend(problems)
            if not pending:
                return [ready[v] for v in ids if v in ready]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AirflowException(
                    f"timed out after {self.wait_timeout:g}s waiting for {len(pending)} video(s) to be "
                    f"PARSE ({', '.join(pending[:10])}); nothing was exported"
                )
            if self.deferrable:
                self._defer_for(pending, scope, end_time)
            self.log.info("%d video(s) not PARSE yet; next check in %gs", len(pending), self.poll_interval)
            time.sleep(min(self.poll_interval, remaining))
            waiting, first = pending, False

    def _defer_for(self, pending: list[str], scope: str, end_time: float) -> NoReturn:
        from memories_provider.sensors.video_status import defer_until_parsed, execution_time_left

        self.log.info(
            "%d video(s) not PARSE yet (%s); waiting for them in the triggerer",
            len(pending),
            ", ".join(pending[:10]),
        )
        defer_until_parsed(
            self,
            pending,
            scope,
            poll_interval=self.poll_interval,
            end_time=end_time,
            execution_left=execution_time_left(self, self.__dict__.get("_try_started")),
            method_name="execute_complete",
            kwargs={"end_time": end_time, "started_at": self.__dict__.get("_try_started")},
        )

    def _statuses(
        self, hook: MemoriesHook, video_nos: list[str], scope: str, deadline: float, *, first: bool
    ) -> tuple[dict[str, Video], dict[str, str]] | None:
        """One status round (``list_videos``, 200 ids a request): (listed videos, refused ids);
        ``None`` when, waiting deferrable, it went unanswered (transient errors, retries spent).

        The deadline bounds the waiting, not the ``first`` try: the check every export makes, also
        when it resumes after its deadline (queued a while after the trigger saw the videos parsed).
        """
        round_ = StatusRound(video_nos)
        while True:
            try:
                bounded = self.not_parsed == "wait" and not first
                with within(deadline - time.monotonic() if bounded else None):
                    if self.deferrable and self.not_parsed == "wait":
                        # Unanswered, it defers: no 0429 slept out in the slot deferring frees.
                        with hook.status_lister() as list_videos:
                            run_round(list_videos, round_, scope)
                    else:
                        run_round(hook.list_videos, round_, scope)
                return round_.found, round_.rejected
            except MemoriesError as err:
                # A key rotated during the wait (the old one revoked): go on, and export, with the
                # connection as it is now; an unchanged one's refusal fails the task as before.
                fresh = self._hook_edited_after(err)
                if fresh is not None:
                    hook = fresh
                    round_ = StatusRound(video_nos)
                    continue
                # Waiting, a transient error is one more reason to poll again; otherwise the
                # client's retries are spent and the task's own retry takes over.
                if self.not_parsed != "wait" or not is_transient(err) or time.monotonic() >= deadline:
                    raise
                if self.deferrable:
                    self.log.info("status check failed (%s); the triggerer will check again", err)
                    return None
                self.log.info("status check failed (%s); checking again in %gs", err, self.poll_interval)
                time.sleep(max(0.0, min(self.poll_interval, deadline - time.monotonic())))
                first = False

    # ------------------------------------------------------------------ outputs

    def _outputs(
        self, hook: MemoriesHook, video: Video, scope: str, skipped: list[str], shown: str
    ) -> list[Transcript] | None:
        """Every chosen output of one video (all fetched before any row is written: a video
        deleted half-way leaves no rows), or ``None`` when it is skipped."""
        try:
            return [hook.get_transcript(video.video_no, kind, unique_id=scope) for kind in self.kinds]
        except MemoriesInvalidArgumentError as err:
            if not self.all_parsed:  # named ids were checked before any request: cannot happen
                raise
            # The service listed an id out of the documented shape: the client sends only ids of
            # that shape, so it cannot be asked about; left out (and said), not the export failed.
            self.log.warning("Leaving out %r: listed by the service, but %s", video.video_no, err)
            skipped.append(video.video_no)
            return None
        except MemoriesNotFoundError as err:
            # all_parsed: a video deleted since the listing is no longer in the scope exported.
            if self.not_parsed == "skip" or self.all_parsed:
                self._gone += 1
                self.log.warning("Leaving out %s: it is gone (%s)", video.video_no, err)
                skipped.append(video.video_no)
                return None
            raise AirflowFailException(
                f"{video.video_no} could not be found during the export (deleted meanwhile?): {err}; "
                f"nothing was written to {shown}"
            ) from err

    # ------------------------------------------------------------------ events & lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the exported videos (or their scope) as inputs, the file as output."""
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        namespace = self._namespace or "memories"
        if len(self._exported) <= _LINEAGE_MAX_VIDEOS:
            names = [video_dataset_name(self._scope, v) for v in self._exported]
        else:
            names = [f"scope/{self._scope}"]
        inputs = [Dataset(namespace=namespace, name=name) for name in names]
        outputs = []
        if self._result:
            out_namespace, out_name = lineage_dataset(self._result["uri"])
            outputs.append(Dataset(namespace=out_namespace, name=out_name))
        return OperatorLineage(inputs=inputs, outputs=outputs)


def _listing(problems: dict[str, str], limit: int = 10) -> str:
    shown = "; ".join(f"{video_no}: {why}" for video_no, why in list(problems.items())[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")

"""Stream a video from any storage URI into memories.ai — validated first, never billed twice by a retry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    BaseOperator,
    conf,
)

from memories_provider.client import (
    MemoriesConnectionError,
    MemoriesError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    MemoriesRateLimitError,
    MemoriesRouteNotFoundError,
    MemoriesServerError,
    RetryPolicy,
    UploadMetadata,
    UploadResult,
    Video,
)
from memories_provider.client.core import PageCursor
from memories_provider.client.deadline import within
from memories_provider.client.multipart import SourceReadError, find_source_error
from memories_provider.client.protocol import video_content_type
from memories_provider.hooks.connection import DEFAULT_CONN_ID
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.hooks.task_mixin import MemoriesHookMixin
from memories_provider.operators._attempt_record import (
    STATE_KEY,
    AttemptRecord,
    RecordBook,
    changed_marks,
    record_book,
    shared_marks,
)
from memories_provider.operators._lost_upload import Verdict, describe, judge, when
from memories_provider.operators._progress import TransferProgress
from memories_provider.operators._upload_args import (
    IDEMPOTENCY_TAG_WHY,
    URL_UPLOAD_SOFT_LIMIT,
    check_size,
    idempotency_tag,
    rendered_tags,
)
from memories_provider.preflight import (
    account_refusal_fails_at_once,
    bad_input_fails_at_once,
    flags,
    refusal_fails_at_once,
    refuse_missing_value_text,
    seconds,
)
from memories_provider.redaction import Redactor, url_secrets
from memories_provider.status import StatusCheck, is_transient
from memories_provider.storage.files import StorageFile, source_family, stat_storage_file
from memories_provider.storage.uris import redact_uri
from memories_provider.templating import single_value
from memories_provider.types import VideoStatusEvent

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["STATE_KEY", "MemoriesUploadOperator", "tagged_video"]


@dataclass(frozen=True)
class _DeferRateLimits(RetryPolicy):
    """The connection's policy, except that rate limits are waited out deferred, not in the worker."""

    def should_retry(self, error: BaseException, *, idempotent: bool = True) -> bool:
        if isinstance(error, MemoriesRateLimitError):
            return False
        return super().should_retry(error, idempotent=idempotent)


@dataclass
class _BodyProgress:
    """How many bytes of the source the client has handed to the HTTP library (last attempt)."""

    file_bytes: int = 0


def _source_read_failed(uri: str, err: SourceReadError) -> SourceReadError:
    """``err`` (the body's source failed mid-read) naming ``source``, its cause's text redacted
    (an HTTP library quotes the URL it read, a presigned signature included); raised without
    that cause, which a traceback would print whole."""
    cause = err.__cause__
    told = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
    text = Redactor(url_secrets(uri)).redact(told)
    return SourceReadError(
        f"`source` {redact_uri(uri)!r} could not be read while it was sent ({text}); the upload was "
        "stopped before its last byte, so it cannot have been accepted"
    )


def _never_accepted(error: BaseException, plan: _Plan, file_bytes: int) -> bool:
    """Whether an upload that raised ``error`` certainly was not accepted (so cannot have been billed).

    True when the multipart body stopped before the last byte of the file (the service cannot
    accept a body cut short), or before its closing boundary (the source turned out longer than
    its size, or failed to be read: a ``SourceError``, raised before the boundary goes out), when
    the connection was never made, or when the service itself answered with a refusal
    (``0429``, ``0402``, ``0001`` ...). A 5xx may come from a gateway that passed the body on, and
    a dropped or timed-out answer says nothing: those stay unknown.
    """
    if find_source_error(error) is not None:  # the client resends only what was surely refused
        return True
    body_cut = not plan.via_url and plan.source.size is not None and file_bytes < plan.source.size
    if isinstance(error, MemoriesConnectionError):
        return not error.request_sent or body_cut
    if isinstance(error, MemoriesServerError):
        return body_cut
    if isinstance(error, MemoriesError):
        return True
    return body_cut  # the source failed mid-read, the task was killed ...: the body tells


#: Seconds the look of an execution that starts at or after its deadline (a deferred wait resumed
#: on its timeout) gets: enough for one listing, far less than a Retry-After storm.
_FIRST_LOOK = 10.0

#: Videos a page of the lost-answer look's listing (the client's default).
_LOOK_PAGE_SIZE = 100


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _resized(recorded: int | None, now: int | None) -> bool:
    """Whether the source's size now differs from the one recorded with its video (both known)."""
    return recorded is not None and now is not None and recorded != now


def _rewritten(record: AttemptRecord, source: StorageFile) -> str | None:
    """How the source's version marks differ from those ``record`` holds (``etag "a" -> "b"``), or
    ``None`` when none that both hold differs."""
    changed = changed_marks(record.source_version, source.version)
    if not changed or record.source_version is None:
        return None
    return ", ".join(f"{key} {record.source_version[key]} -> {source.version[key]}" for key in changed)


def _describes_another_upload(record: AttemptRecord, source: StorageFile) -> bool:
    """Whether ``record`` names a video, or a send of another size or version than ``source``."""
    return bool(
        record.video_no or _resized(record.size, source.size) or _rewritten(record, source) is not None
    )


def _unreadable_listing(unique_id: str | None, question: str, err: MemoriesPagingError) -> str:
    """The failure of a try whose look at the scope could not read the listing whole."""
    return (
        f"Could not list {unique_id or 'the scope'} whole to tell whether {question}: {err}. Not "
        "listed is no proof that it did not arrive, so nothing was uploaded; a later try looks again"
    )


def _bytes(size: int | None) -> str:
    return "size unknown" if size is None else f"{size} bytes"


@dataclass(frozen=True)
class _Plan:
    """A validated upload: what to send and how to recognise it on a retry."""

    source: StorageFile
    via_url: bool
    metadata: UploadMetadata
    tag: str | None


def _check_waits(poll_interval: Any, timeout: Any, lost_answer_grace: Any) -> tuple[float, float, float]:
    """The constructor's checks of the waiting parameters: seconds (or timedeltas), as floats."""
    return (
        seconds("poll_interval", poll_interval),
        seconds("timeout", timeout),
        seconds("lost_answer_grace", lost_answer_grace, zero=True),
    )


class MemoriesUploadOperator(MemoriesHookMixin, BaseOperator):
    """Upload one video to memories.ai from a local path or any storage URI, streaming.

    Every argument is checked before a request is made (no credit is spent on a bad one); the
    file is streamed from its storage into the multipart body in 1 MiB blocks, never held whole
    in memory nor copied to a temporary file.

    **A lost answer is never paid for twice.** The service bills every accepted upload and has no
    idempotency key, and it shows a video's tags only once the video is ``PARSE`` (minutes after
    the upload; never when it ``FAILED``), so a retry cannot find a just-accepted upload by its
    tag. Instead each attempt *records* what it is about to send — its idempotency tag
    (``airflow-<hash>`` of dag, task, run, map index and source — an http(s) source without its
    query string, which a presigned URL changes on every try — also sent as a tag), the size, the
    source's version marks and the time it started — before sending, and the ``video_no`` as soon
    as the answer arrives. The record lives in the task state store on Airflow >= 3.3 and in an
    Airflow Variable ``memories_upload_attempt__<tag>`` before (deleted when the task succeeds).

    The version marks are what the storage's size answer tells for free: local ``mtime_ns`` and
    inode (compared only on the worker that read it), SFTP ``mtime`` (whole seconds), S3 ``ETag``
    and ``VersionId``, GCS ``generation``, Azure ``ETag``, HTTP ``ETag`` and ``Last-Modified``. A
    later attempt of the same task instance whose
    source has another size, or a mark that differs from the recorded one, has another file: it
    uploads it (and logs which mark changed). Where there is no mark to compare (a storage that
    gives none, a record written before marks were kept, the tag lookup) the size alone decides,
    as the log says; a file rewritten with the same bytes counts as changed. Otherwise the
    attempt:

    * finds an answered record: reuses that video (one ``get_metadata``);
    * finds an unanswered one (the earlier attempt's body went out, the answer never came): lists
      the scope and takes as candidates the videos of the same size created after that attempt
      started (less 5 minutes for the service's clock). A video of that size whose tags hold ours
      is reused, whenever it was created (clocks may differ by more);
      one whose tags are someone else's is ignored; one still ``UNPARSE`` cannot be told apart
      yet, so the attempt waits — deferred, on the status trigger, when ``deferrable`` — until it
      is parsed, for at most ``timeout`` seconds. A candidate whose tags can never be read (it
      ``FAILED``) fails the task (``AirflowFailException``) naming it: whether to spend a second
      credit is the user's decision. When no candidate is listed ``lost_answer_grace`` seconds
      after the attempt began looking, nothing arrived and it uploads;
    * finds no record: looks the tag up (``list_videos(tag=...)``, which finds parsed videos,
      e.g. after a clear of a task that succeeded) and uploads if nothing carries it.

    An attempt that knows its upload never reached the service — the body stopped before its last
    byte (a body cut short cannot be accepted), the connection was never made, or the service
    answered with a refusal such as ``0429`` or ``0402`` — forgets its record, so the retry
    uploads at once. If the record cannot be written, nothing is sent; if it cannot be read,
    nothing is uploaded (the attempt fails and a retry tries again). Not covered: two attempts of
    one task instance running at once (a zombie worker still uploading), ``idempotent=False``, a
    video the service accepted but does not list by ``lost_answer_grace`` seconds after the retry
    began looking, and (before Airflow 3.3) someone deleting the Variable. Clearing a task for a
    *new* run uploads again (different ``run_id``), and so does a changed ``source`` (another
    URI, or a file at the same URI whose size or version marks differ from those the earlier
    attempt sent).

    **Rate limits.** The service allows about one upload per minute per account. A rejected
    (``0429``) upload is retried with backoff honouring ``Retry-After``; with ``deferrable=True``
    the wait happens deferred on a time trigger, freeing the worker slot. For backfills, put the
    uploads in an Airflow pool with one or two slots.

    :param source: the video (templated): a local path, ``file://``, ``s3://``, ``gs://``, ``azure://``,
        ``sftp://`` or ``http(s)://`` URI. File names must end in ``.mp4``, ``.avi``, ``.mkv`` or ``.mov``;
        at most 3 GB (size read from ``stat``/``HEAD``/object metadata, without downloading).
    :param memories_conn_id: the memories.ai connection.
    :param unique_id: namespace of the video (templated); defaults to the connection's ``unique_id``.
    :param callback: URL the service POSTs status changes to (templated; ≤ 299 characters).
    :param datetime_taken: capture time (templated): a ``datetime`` or ``"yyyy-MM-dd HH:mm:ss"``.
    :param camera_model: camera model (templated; ≤ 200 characters).
    :param latitude: capture latitude, -90..90 (with ``longitude``).
    :param longitude: capture longitude, -180..180 (with ``latitude``).
    :param tags: up to 20 tags (templated), one of which is the idempotency tag when ``idempotent``.
    :param retain_original_video: keep the original file at memories.ai (needed to download it later).
    :param video_transcription_prompt: prompt for the transcription (templated).
    :param source_conn_id: Airflow connection with credentials for ``source`` (aws,
        google_cloud_platform, wasb, ssh/sftp); ``None`` uses the storage library's defaults.
    :param transport_params: extra smart-open transport parameters, validated per scheme.
    :param stream_http: for an ``http(s)://`` source, stream it through this worker instead of
        letting the service fetch the URL itself (``upload_url``, the default).
    :param idempotent: record each upload and check for an earlier attempt's before uploading
        (see above); ``False`` uploads on every attempt and frees the 20th tag.
    :param wait_for_parse: after the upload, wait until the video is ``PARSE``, polling as the status
        sensor does: transient errors (5xx, ``0429``, connection) and a video not listed yet only
        mean "not yet" until ``timeout``; ``FAILED`` fails at once, with the service's cause.
    :param deferrable: wait for rate limits, for parsing and for an earlier attempt's candidate
        videos in the triggerer, not in a worker slot; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds (or a ``timedelta``) between status checks while waiting for parsing
        or for candidates.
    :param timeout: seconds (or a ``timedelta``) to wait for parsing before failing; also the
        longest a retry waits for an earlier attempt's candidate videos to be parsed before failing
        undecided.
    :param lost_answer_grace: seconds (or a ``timedelta``) a retry keeps looking for an earlier
        attempt's unanswered upload in the listing before it concludes nothing arrived and uploads
        (capped by ``timeout``). The retry itself starts ``retry_delay`` after the attempt failed.

    Returns (XCom ``return_value``) the ``video_no``; the upload result goes to XCom key
    ``upload_result``, of the same shape whether uploaded or reused: ``{"video_no", "video_name",
    "status", "upload_time", "source", "reused"}`` — ``status`` as last seen (the upload's answer or
    the lookup), ``upload_time`` in epoch ms, ``source`` with any ``user:password@`` and query string
    (presigned tokens) masked.
    """

    uri_template_fields = ("source", "callback")
    template_fields: Sequence[str] = (
        "source",
        "unique_id",
        "tags",
        "datetime_taken",
        "callback",
        "camera_model",
        "video_transcription_prompt",
    )
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        source: str,
        memories_conn_id: str = DEFAULT_CONN_ID,
        unique_id: str | None = None,
        callback: str | None = None,
        datetime_taken: Any = None,
        camera_model: str | None = None,
        latitude: float | None = None,
        longitude: float | None = None,
        tags: list[str] | None = None,
        retain_original_video: bool = True,
        video_transcription_prompt: str | None = None,
        source_conn_id: str | None = None,
        transport_params: dict[str, Any] | None = None,
        stream_http: bool = False,
        idempotent: bool = True,
        wait_for_parse: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | timedelta = 30.0,
        timeout: float | timedelta = 2 * 60 * 60,
        lost_answer_grace: float | timedelta = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not source:
            raise ValueError("`source` must be a non-empty path or URI")
        flags(
            stream_http=stream_http,
            idempotent=idempotent,
            wait_for_parse=wait_for_parse,
            deferrable=deferrable,
        )
        poll_interval, timeout, lost_answer_grace = _check_waits(poll_interval, timeout, lost_answer_grace)
        self.source = source
        self.memories_conn_id = memories_conn_id
        self.unique_id = unique_id
        self.callback = callback
        self.datetime_taken = datetime_taken
        self.camera_model = camera_model
        self.latitude = latitude
        self.longitude = longitude
        self.tags = tags
        self.retain_original_video = retain_original_video
        self.video_transcription_prompt = video_transcription_prompt
        self.source_conn_id = source_conn_id
        self.transport_params = transport_params
        self.stream_http = stream_http
        self.idempotent = idempotent
        self.wait_for_parse = wait_for_parse
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.lost_answer_grace = float(lost_answer_grace)
        self._video_no: str | None = None  # this task instance's video, for lineage

    # ------------------------------------------------------------------ validation

    def _tag(self, context: Context) -> str | None:
        """This task instance's idempotency tag for the (rendered) source; ``None`` if not idempotent."""
        if not self.idempotent:
            return None
        ti = context["ti"]
        return idempotency_tag(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", -1),
            source=str(self.source).strip(),
        )

    def _plan(self, context: Context) -> _Plan:
        source_uri = single_value("source", self.source, operator=type(self).__name__).strip()
        # A template's "None" would create a unique_id of that name.
        refuse_missing_value_text(self.unique_id, templated=self.rendered_from_template("unique_id"))
        fields = {name: getattr(self, name) for name in UploadMetadata.field_names()}
        metadata = UploadMetadata(**{**fields, "tags": rendered_tags(fields["tags"])})
        via_url = source_family(source_uri) == "http" and not self.stream_http
        if via_url and (self.source_conn_id or self.transport_params):
            raise ValueError(
                "`source_conn_id`/`transport_params` cannot be used when the service fetches an http(s) "
                "`source` itself (it fetches unauthenticated); set stream_http=True to stream it through"
            )
        tag = self._tag(context)  # once the scheme is known good; before the storage is asked
        if tag is not None:
            metadata = metadata.with_tag(tag, why=IDEMPOTENCY_TAG_WHY)
        info = stat_storage_file(
            source_uri, conn_id=self.source_conn_id, transport_params=self.transport_params
        )
        video_content_type(info.name, param="source")
        shown = redact_uri(source_uri)
        check_size(info.size, shown)
        if info.size is None and not via_url:
            raise ValueError(f"`source` {shown!r}: the server gives no Content-Length to stream it with")
        if via_url and info.size is not None and info.size > URL_UPLOAD_SOFT_LIMIT:
            self.log.warning(
                "%s has %d bytes; one edition of the docs caps URL uploads at 1 GB without special "
                "permission — use stream_http=True if the service refuses it",
                shown,
                info.size,
            )
        return _Plan(source=info, via_url=via_url, metadata=metadata, tag=tag)

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> str:
        """Validate, reuse a previous attempt's video or upload, then optionally wait for parsing."""
        self.__dict__["_try_started"] = time.time()
        return self._upload_or_reuse(context, rate_limited=0)

    def execute_after_rate_limit(self, context: Context, event: Any = None, rate_limited: int = 0) -> str:
        """Resume after a deferred wait for the upload rate limit.

        The count of rate-limited tries rides in the event (``dag.test()`` drops a deferral's
        kwargs); ``rate_limited`` is the kwarg of a deferral made by an earlier version.
        """
        counted = event.get("rate_limited") if isinstance(event, dict) else None
        started = event.get("started_at") if isinstance(event, dict) else None
        self._resume_try(started, "waited out a rate limit")
        return self._upload_or_reuse(
            context, rate_limited=counted if isinstance(counted, int) else rate_limited
        )

    def execute_after_candidates(
        self, context: Context, event: Any = None, since: float = 0.0, started_at: float | None = None
    ) -> str:
        """Resume looking for an earlier attempt's unanswered upload after a deferred wait.

        Whatever the trigger's event says, the next round lists the scope again and decides.
        ``since`` and ``started_at`` (the try's start, for ``execution_timeout``) come back as the
        deferral's kwargs, or in the event of a pause (``dag.test()`` hands over the event alone).
        """
        carried = event if isinstance(event, dict) else {}
        if started_at is None:
            started_at = carried.get("started_at")
        if not since and _is_number(carried.get("since")):
            since = float(carried["since"])
        self._resume_try(started_at, "looked for an earlier attempt's upload")
        return self._upload_or_reuse(context, rate_limited=0, looking_since=since or None)

    def _resume_try(self, started_at: Any, waited: str) -> None:
        """Carry the try's start across a deferral (Airflow 3 gives a resumed run a whole new
        execution_timeout); raise :class:`AirflowTaskTimeout` when it passed during the wait (a
        trigger that fired late, a busy triggerer), before anything is sent."""
        self.__dict__["_try_started"] = float(started_at) if _is_number(started_at) else time.time()
        self._time_left_or_timeout(waited)

    def _time_left_or_timeout(self, waited: str) -> float | None:
        """:meth:`_execution_time_left`; :class:`AirflowTaskTimeout` when none is left (``waited``
        says what the upload was doing), before anything is sent or deferred."""
        left = self._execution_time_left()
        if left is not None and left <= 0:
            raise AirflowTaskTimeout(
                f"execution_timeout ({self.execution_timeout}) passed while the upload {waited}; "
                "not uploading"
            )
        return left

    def _carried_start(self) -> dict[str, float]:
        """``{"started_at": ...}`` for a deferral's kwargs or event, when an execution_timeout runs."""
        if self.execution_timeout is None:
            return {}
        return {"started_at": float(self.__dict__.setdefault("_try_started", time.time()))}

    def _upload_or_reuse(
        self, context: Context, *, rate_limited: int, looking_since: float | None = None
    ) -> str:
        # A refused key, account or balance (0401/0402/0403/9009) is refused again on every retry.
        with account_refusal_fails_at_once():
            return self._upload_or_reuse_once(context, rate_limited=rate_limited, looking_since=looking_since)

    def _upload_or_reuse_once(
        self, context: Context, *, rate_limited: int, looking_since: float | None
    ) -> str:
        with bad_input_fails_at_once():  # no retry fixes bad arguments or a misconfigured connection
            plan = self._plan(context)
            hook = self.hook
            hook.config  # noqa: B018 (validated here, before anything is sent)
        unique_id = plan.metadata.unique_id
        book = record_book(context, plan.tag) if plan.tag is not None else None
        earlier = self._load_record(book)
        previous = self._previous_video(context, hook, plan, book, earlier, looking_since)
        shown = redact_uri(plan.source.uri)
        if previous is not None:
            self.log.info(
                "Reusing %s uploaded by an earlier attempt of this task instance (nothing uploaded, "
                "no credit spent)",
                previous.video_no,
            )
            uploaded = UploadResult(
                video_no=previous.video_no,
                video_name=previous.video_name,
                status=previous.status,
                upload_time=previous.create_time,
            )
            if book is not None and plan.tag is not None:
                # The source's size and version marks, as _send records them: what a later clear
                # compares with.
                size = plan.source.size if plan.source.size is not None else previous.size
                self._note(
                    book,
                    AttemptRecord(
                        tag=plan.tag,
                        size=size,
                        source_version=plan.source.version or None,
                        video_no=previous.video_no,
                    ),
                )
        else:
            try:
                # A request the service refuses (0001/0003, HTTP 400) is refused again: no retry
                # sends the whole file once more for the same answer.
                with refusal_fails_at_once(f"the upload of {shown}"):
                    uploaded = self._send(hook, plan, book, earlier)
            except MemoriesRateLimitError as err:
                self._defer_for_rate_limit(hook, err, rate_limited)
                raise  # not deferrable, or out of retries
            self.log.info("Uploaded %s as %s", shown, uploaded.video_no)
        video_no = self._video_no = uploaded.video_no
        result = {**uploaded.to_dict(), "source": shown, "reused": previous is not None}
        context["ti"].xcom_push(key="upload_result", value=result)
        if self.wait_for_parse:
            self._wait_for_parse(hook, video_no, unique_id)
        self._finish(book)
        return video_no

    # ------------------------------------------------------------------ earlier attempts

    def _previous_video(
        self,
        context: Context,
        hook: MemoriesHook,
        plan: _Plan,
        book: RecordBook | None,
        record: AttemptRecord | None,
        looking_since: float | None,
    ) -> Video | None:
        """The video an earlier attempt of this task instance uploaded (``record`` is what they
        recorded), or ``None`` to upload.

        May defer (waiting for candidates) or fail (undecided): never returns ``None`` on doubt.
        """
        if book is None or plan.tag is None:  # idempotent=False
            return None
        unique_id = plan.metadata.unique_id
        if record is not None and _resized(record.size, plan.source.size):
            # The source at this URI is no longer the file the earlier attempt sent (replaced before
            # a clear or a retry): that upload, answered or not, billed or not, holds other bytes,
            # and reusing it would report success for them.
            self.log.warning(
                "An earlier attempt sent %s (%s); %s now has %s: it changed, so it is uploaded again",
                record.video_no or "its upload, unanswered",
                _bytes(record.size),
                redact_uri(plan.source.uri),
                _bytes(plan.source.size),
            )
            return None
        rewritten = _rewritten(record, plan.source) if record is not None else None
        if record is not None and rewritten is not None:
            # Same size, other bytes: the file was written since the earlier attempt sent it (replaced
            # between the tries). Its upload, answered or not, holds the old bytes.
            self.log.warning(
                "An earlier attempt sent %s (%s) from %s, which has been written since (%s): it is "
                "another file now, so it is uploaded again. The earlier upload, if memories.ai got "
                "it, holds the old bytes and is left as it is",
                record.video_no or "its upload, unanswered",
                _bytes(record.size),
                redact_uri(plan.source.uri),
                rewritten,
            )
            return None
        if record is not None and not shared_marks(record.source_version, plan.source.version):
            self.log.info(
                "%s: nothing but its size to compare with the earlier attempt's record (%s); it is "
                "taken for the file that attempt sent because the sizes match",
                redact_uri(plan.source.uri),
                "the storage gives no version marks"
                if record.source_version or not plan.source.version
                else "a record written before version marks were kept",
            )
        if record is not None and record.video_no:
            try:
                return hook.get_video(record.video_no, unique_id=unique_id)
            except MemoriesRouteNotFoundError as err:
                raise AirflowException(
                    f"Could not check {record.video_no}, recorded by an earlier attempt: {err}. An HTTP "
                    "404 without a business code is the service's infrastructure, not proof that the "
                    "video is gone; not uploading it again"
                ) from err
            except MemoriesNotFoundError:
                self.log.warning(
                    "%s, recorded by an earlier attempt, no longer exists; uploading again", record.video_no
                )
                return None
        if record is not None:
            since = self._looking_since(context, book, record, looking_since)
            return self._find_unanswered(hook, plan, record, since)

        # No earlier send recorded: the tag finds a parsed video, e.g. after a clear of a task that
        # succeeded once its record was gone (Airflow < 3.3, or ``clear_on_success``).
        def confirm(video_no: str) -> Video:
            return hook.get_video(video_no, unique_id=unique_id)

        try:
            return tagged_video(
                hook.iter_videos(unique_id=unique_id, tag=plan.tag),
                plan.tag,
                confirm,
                self.log,
                plan.source.size,
            )
        except MemoriesPagingError as err:
            raise AirflowException(_unreadable_listing(unique_id, "an earlier run uploaded it", err)) from err

    def _looking_since(
        self, context: Context, book: RecordBook, record: AttemptRecord, resumed_since: float | None
    ) -> float:
        """When this try began looking for ``record``'s upload: its timeout runs from then.

        Handed back by the deferral's kwargs, or else read from the record (``dag.test()`` drops
        the kwargs of a deferral whose trigger fired); a new try starts afresh.
        """
        if resumed_since is not None:
            return resumed_since
        try_number = getattr(context["ti"], "try_number", None)
        if try_number is not None and record.looking_try == try_number and record.looking_since is not None:
            return record.looking_since
        since = time.time()
        self.log.warning(
            "An earlier attempt sent %s (%s) at %s and got no answer; memories.ai may have "
            "accepted (and billed) it. Looking for it before uploading anything.",
            redact_uri(str(self.source)),
            _bytes(record.size),
            when(record.started_ms),
        )
        if try_number is not None:
            try:
                book.save(replace(record, looking_try=try_number, looking_since=since))
            except Exception as err:  # only a resumed deferral needs it, and its kwargs carry it too
                self.log.warning("Could not record when this try began looking: %s", err)
        return since

    def _find_unanswered(
        self, hook: MemoriesHook, plan: _Plan, record: AttemptRecord, since: float
    ) -> Video | None:
        """Decide whether ``record``'s upload was accepted: its video, or ``None`` (nothing arrived).

        Rounds of listing the scope, each followed by a wait (deferred when ``deferrable``), until
        one decides; bounded by ``timeout`` from ``since``, when this try began looking.
        """
        unique_id = plan.metadata.unique_id
        deadline = since + self.timeout
        grace = min(self.lost_answer_grace, self.timeout)
        shown = redact_uri(plan.source.uri)
        last: Verdict | None = None  # the latest answered look of this execution
        looked = False
        while True:
            left = deadline - time.time()
            # Each look ends by the deadline; an execution resumed at or after it (a deferral
            # that timed out) still gets one bounded look, to name what it waits for.
            verdict = self._look(hook, unique_id, record, left if left > 0 or looked else _FIRST_LOOK)
            looked = True
            last = verdict if verdict is not None else last
            now = time.time()
            if verdict is not None:
                decided, video = self._decision(verdict, shown, record, looked=now - since, grace=grace)
                if decided:
                    return video
            if now >= deadline:
                waiting = last.pending + last.undecidable if last is not None else []
                if waiting:
                    raise AirflowFailException(self._undecided(shown, record, waiting, timed_out=True))
                raise AirflowException(
                    f"Could not list {unique_id or 'the scope'} within {self.timeout:.0f}s to tell whether "
                    "an earlier attempt's upload arrived; nothing was uploaded"
                )
            pause = self._pause(verdict, unique_id, since=since, deadline=deadline, grace=grace, now=now)
            if self.deferrable:
                self._defer_a_while(pause, since)
            time.sleep(max(pause, 0.0))

    def _look(
        self, hook: MemoriesHook, unique_id: str | None, record: AttemptRecord, seconds: float
    ) -> Verdict | None:
        """One listing of the scope judged against ``record``; ``None`` when it failed transiently.

        Every request of it, client retries and ``Retry-After`` sleeps included, ends within
        ``seconds`` (a look that runs out of time failed transiently).
        """

        def confirm(video_no: str) -> Video:
            return hook.get_video(video_no, unique_id=unique_id)

        cut: list[MemoriesPagingError] = []
        cursor = PageCursor(_LOOK_PAGE_SIZE)  # named by iter_videos, with the scope it lists

        def listed() -> Iterator[Video]:
            try:
                yield from hook.iter_videos(unique_id=unique_id, page_size=_LOOK_PAGE_SIZE, cursor=cursor)
            except MemoriesPagingError as err:  # the pages read so far are still judged
                cut.append(err)

        try:
            with within(seconds):
                verdict = judge(listed(), record, confirm)
        except MemoriesError as err:
            if not is_transient(err):
                raise
            self.log.warning("Listing %s failed (%s); looking again", unique_id or "the scope", err)
            return None
        if cut and verdict.ours is None and not verdict.pending:
            # "Not listed" on a listing read in part is no proof the upload did not arrive: it may
            # be on a page never seen. Not transient either (the pages came back, wrong). A video
            # the pages read show with our tag is ours all the same (the usual case: the newest);
            # a candidate they show still UNPARSE is waited for, as on a whole listing (the usual
            # case right after the lost answer): once parsed, its tags decide, and a later look
            # that finds it foreign fails here, having uploaded nothing.
            raise AirflowException(
                _unreadable_listing(unique_id, "an earlier attempt's upload arrived", cut[0])
            ) from cut[0]
        if cut:
            self.log.warning(
                "Listing %s could not be read whole (%s); the pages read show %s",
                unique_id or "the scope",
                cut[0],
                "the earlier upload" if verdict.ours is not None else "candidates to wait for",
            )
        if verdict.ours is None and not verdict.pending and cursor.may_have_skipped:
            # Offset pages, newest first: a video deleted ahead between two page reads (another
            # task of the account cleaning up) moved ours, the first of the next page, onto a page
            # already read. "Not listed" is no proof then (look again rather than pay again), nor
            # are the undecidable look-alikes it shows the only candidates (look again rather than
            # fail the task for a person to decide about them).
            self.log.warning(
                "Listing %s may have moved while it was read (a page's total_count was below the "
                "previous page's, or missing): a video listed all along may have been skipped, so "
                "this look decides nothing; looking again",
                unique_id or "the scope",
            )
            return None
        return verdict

    def _decision(
        self, verdict: Verdict, shown: str, record: AttemptRecord, *, looked: float, grace: float
    ) -> tuple[bool, Video | None]:
        """``(True, video)`` when ``verdict`` decides (``None``: nothing arrived), else ``(False, None)``."""
        if verdict.ours is not None:
            self.log.info(
                "%s carries this task's tag: it is the earlier attempt's upload", verdict.ours.video_no
            )
            return True, verdict.ours
        if verdict.foreign:
            self.log.info("Not ours (their tags say so): %s", ", ".join(v.video_no for v in verdict.foreign))
        if verdict.undecidable and not verdict.pending:
            raise AirflowFailException(self._undecided(shown, record, verdict.undecidable, timed_out=False))
        if verdict.nothing and looked >= grace:
            self.log.info(
                "No video listed %.0fs after this attempt began looking could be the earlier "
                "upload: it did not arrive. Uploading.",
                looked,
            )
            return True, None
        return False, None

    def _pause(
        self,
        verdict: Verdict | None,
        unique_id: str | None,
        *,
        since: float,
        deadline: float,
        grace: float,
        now: float,
    ) -> float:
        """Seconds until the next look; defers until pending candidates parse (when deferrable)."""
        if verdict is not None and verdict.pending:
            ids = [v.video_no for v in verdict.pending]
            self.log.info(
                "Waiting for %s to be parsed: until then their tags, which say whose they are, "
                "cannot be read",
                ", ".join(ids),
            )
            if self.deferrable:
                self._defer_for_candidates(ids, unique_id, since, deadline)
            return min(self.poll_interval, deadline - now)
        if verdict is not None:  # nothing yet: give a late listing its grace
            pause = min(since + grace - now, deadline - now)
            self.log.info("No candidate listed yet; looking again in %.0fs", pause)
            return pause
        return min(self.poll_interval, deadline - now)

    def _undecided(self, shown: str, record: AttemptRecord, videos: list[Video], *, timed_out: bool) -> str:
        if timed_out:
            why = f"were still not parsed after {self.timeout:.0f}s, so their tags could not be read yet"
            again = "Clear this task once they are PARSE to decide again (or raise `timeout`). "
        else:
            why = (
                "their tags cannot be read (memories.ai shows tags only for PARSE videos, never FAILED ones)"
            )
            again = ""
        return (
            f"An earlier attempt of this task sent {shown} ({_bytes(record.size)}) at "
            f"{when(record.started_ms)} and got no answer, so memories.ai may have accepted and billed "
            f"it. These videos could be that upload, but {why}, and only tags say whose a video is: "
            f"{describe(videos)}. Nothing was uploaded: a second upload may cost a second credit, and "
            f"that is your decision. {again}To upload again, delete the one(s) that are this task's "
            "(MemoriesHook().delete_videos([...], unique_id=...)) and clear this task; to upload "
            "regardless, run it with idempotent=False."
        )

    def _defer_for_candidates(
        self, video_nos: list[str], unique_id: str | None, since: float, deadline: float
    ) -> None:
        from memories_provider.sensors.video_status import defer_until_parsed

        defer_until_parsed(
            self,
            video_nos,
            unique_id,
            poll_interval=self.poll_interval,
            end_time=deadline,
            execution_left=self._execution_time_left(),
            method_name="execute_after_candidates",
            kwargs={"since": since, **self._carried_start()},
        )

    def _defer_a_while(self, seconds: float, since: float) -> None:
        from memories_provider.triggers.pause import MemoriesPauseTrigger

        # A pause whose event carries `since` and the try's start: dag.test() hands the resumed
        # method the event alone, without the kwargs.
        carried = {"since": since, **self._carried_start()}
        left = self._time_left_or_timeout("looked for an earlier attempt's upload")
        self.defer(
            trigger=MemoriesPauseTrigger(time.time() + max(seconds, 0.0), carried),
            method_name="execute_after_candidates",
            kwargs=carried,
            timeout=None if left is None else timedelta(seconds=max(left, 0.0)),
        )

    # ------------------------------------------------------------------ sending

    @staticmethod
    def _load_record(book: RecordBook | None) -> AttemptRecord | None:
        """What earlier attempts of this task instance recorded (``None``: nothing, or not idempotent)."""
        if book is None:
            return None
        try:
            return book.load()
        except Exception as err:
            raise AirflowException(
                f"Could not read what earlier attempts of this task recorded ({err}); not uploading "
                "blind, since one of them may already have been billed"
            ) from err

    def _send(
        self, hook: MemoriesHook, plan: _Plan, book: RecordBook | None, earlier: AttemptRecord | None
    ) -> UploadResult:
        """Record the send, upload, record the answer; if it surely did not arrive, forget it.

        Forgetting puts back ``earlier`` (what the book held before) when that describes another
        upload — a video, or a send of another size or version of the source: its video carries
        the same tag, and without the record a later attempt's tag lookup, which compares sizes
        only, would take it for this source as it is now.
        """
        record = None
        if book is not None and plan.tag is not None:
            record = AttemptRecord(
                tag=plan.tag,
                size=plan.source.size,
                source_version=plan.source.version or None,
                started_ms=int(time.time() * 1000),
            )
            try:
                book.save(record)
            except Exception as err:
                raise AirflowException(
                    f"Could not record the upload before sending it ({err}); not sending, since a retry "
                    "could not tell whether it was billed"
                ) from err
        sent = _BodyProgress()
        try:
            uploaded = self._upload(hook, plan, sent)
        except BaseException as err:
            if book is not None and _never_accepted(err, plan, sent.file_bytes):
                try:
                    if earlier is not None and _describes_another_upload(earlier, plan.source):
                        book.save(earlier)
                    else:
                        book.clear()
                except Exception as clear_err:  # the retry will then look, find nothing and upload
                    self.log.warning("Could not clear (or put back) the upload record: %s", clear_err)
            raise
        if book is not None and record is not None:
            self._note(book, replace(record, video_no=uploaded.video_no))
        return uploaded

    def _note(self, book: RecordBook, record: AttemptRecord) -> None:
        try:
            book.save(record)
        except Exception as err:  # never fail an accepted, billed upload over bookkeeping
            self.log.warning(
                "Could not record %s as this task's video (%s); a retry will find it by listing",
                record.video_no,
                err,
            )

    def _finish(self, book: RecordBook | None) -> None:
        if book is None:
            return
        try:
            book.done()
        except Exception as err:
            self.log.warning("Could not drop the upload record: %s", err)

    def _upload(self, hook: MemoriesHook, plan: _Plan, sent: _BodyProgress) -> UploadResult:
        config = hook.config
        policy: RetryPolicy = RetryPolicy(max_retries=config.max_retries)
        if self.deferrable:
            policy = _DeferRateLimits(max_retries=config.max_retries)
        with hook.new_client(retry=policy) as client:
            metadata = hook.scoped(plan.metadata)
            shown = redact_uri(plan.source.uri)
            if plan.via_url:
                self.log.info("Asking memories.ai to fetch %s (upload_url)", shown)
                return client.upload_video_from_url(plan.source.uri, metadata=metadata)
            size = plan.source.size
            progress = TransferProgress(self.log, f"upload {shown}", size)

            def on_progress(done: int) -> None:
                sent.file_bytes = done
                progress.update(done)

            self.log.info("Uploading %s (%s bytes)", shown, size)
            with plan.source.open() as fh:  # with the client the pre-flight looked it up with
                try:
                    result = client.upload_video(
                        fh,
                        filename=plan.source.name,
                        size=size,
                        metadata=metadata,
                        progress=on_progress,
                    )
                except SourceReadError as err:
                    raise _source_read_failed(plan.source.uri, err) from None
            progress.update(size or 0, final=True)
            return result

    def _execution_time_left(self) -> float | None:
        """Seconds left of ``execution_timeout`` in this try, counted from its first ``execute``
        (``None`` without one)."""
        from memories_provider.sensors.video_status import execution_time_left

        return execution_time_left(self, float(self.__dict__.setdefault("_try_started", time.time())))

    def _defer_for_rate_limit(
        self, hook: MemoriesHook, err: MemoriesRateLimitError, rate_limited: int
    ) -> None:
        max_retries = hook.config.max_retries
        if not self.deferrable or rate_limited >= max_retries:
            return
        from memories_provider.triggers.pause import MemoriesPauseTrigger

        left = self._execution_time_left()
        with within(left):  # the spread above Retry-After leaves the wait within execution_timeout
            delay = RetryPolicy(max_retries=max_retries).delay_for(rate_limited + 1, err)
        payload: dict[str, Any] = {"rate_limited": rate_limited + 1}
        timeout: timedelta | None = None
        if left is not None:
            # Airflow 3 neither counts a deferral against execution_timeout nor keeps it across one
            # (the resumed run gets a whole new one): the wait ends within it, or is not made.
            if delay >= left:
                self.log.warning(
                    "Upload rate-limited (%s); waiting %.1fs would outlast execution_timeout (%.1fs "
                    "left): not waiting",
                    err,
                    delay,
                    max(left, 0.0),
                )
                return
            payload["started_at"] = self.__dict__["_try_started"]
            timeout = timedelta(seconds=left)
        self.log.warning(
            "Upload rate-limited (%s); waiting %.1fs deferred (retry %d of %d)",
            err,
            delay,
            rate_limited + 1,
            max_retries,
        )
        self.defer(
            trigger=MemoriesPauseTrigger(time.time() + delay, payload),
            method_name="execute_after_rate_limit",
            timeout=timeout,
        )

    # ------------------------------------------------------------------ waiting for PARSE

    def _wait_for_parse(self, hook: MemoriesHook, video_no: str, unique_id: str | None) -> None:
        # Polled as the status sensor pokes: transient errors are "not yet"; so is our own video
        # not being listed yet (the service documents no listing consistency). Every check, its
        # client retries and Retry-After sleeps included, ends by the deadline.
        deadline = time.monotonic() + self.timeout
        # The scope uploaded to, kept for the whole wait: a connection found edited meanwhile (a
        # key rotated) may name another default unique_id, where the video is not.
        unique_id = unique_id or hook.config.unique_id
        check = StatusCheck([video_no], unique_id, missing_is_pending=True)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Not AirflowSensorTimeout: a retry re-finds the uploaded video and waits again.
                raise AirflowException(check.timeout_message(self.timeout))
            try:
                if self.deferrable:
                    # The one check before deferring sleeps out no 0429 in this slot (the trigger's
                    # pacer paces rate limits); not listed yet is "not yet" there too.
                    with hook.status_lister() as list_videos:
                        outcome = check(list_videos, seconds=remaining)
                else:
                    outcome = check(hook.list_videos, seconds=remaining)
            except MemoriesError as err:
                # A key rotated during the wait (the old one revoked): go on with the connection
                # as it is now; an unchanged one's refusal fails the task, unretried, as before.
                fresh = self._hook_edited_after(err)
                if fresh is None:
                    raise
                hook = fresh
                continue
            if outcome.status == "failed":
                raise AirflowFailException(outcome.message)
            if outcome.status == "success":
                return
            remaining = deadline - time.monotonic()
            if self.deferrable and remaining > 0:
                self._defer_for_parse(video_no, unique_id, remaining)
            if remaining > 0:
                self.log.info("%s: %s; checking again in %gs", video_no, outcome.message, self.poll_interval)
                time.sleep(min(self.poll_interval, remaining))

    def _defer_for_parse(self, video_no: str, unique_id: str | None, remaining: float) -> None:
        from memories_provider.sensors.video_status import defer_until_parsed

        # The trigger's own timeout event comes first; Airflow's is only a backstop (as in the sensor).
        defer_until_parsed(
            self,
            [video_no],
            unique_id,
            poll_interval=self.poll_interval,
            end_time=time.time() + remaining,
            execution_left=self._execution_time_left(),
            missing_is_pending=True,  # just uploaded: the service may list it a little later
            method_name="execute_complete",
            kwargs={"video_no": video_no},
        )

    def execute_complete(self, context: Context, event: VideoStatusEvent, video_no: str = "") -> str:
        """Resume after the deferred wait for ``PARSE``; fails on ``FAILED`` or timeout.

        A timeout fails the attempt as the wait on the worker does (``AirflowException``: a retry
        reuses the recorded video and waits again), not as a sensor (``AirflowSensorTimeout``,
        which Airflow never retries).
        """
        from memories_provider.sensors.video_status import handle_status_event

        if isinstance(event, dict) and event.get("status") == "timeout":
            raise AirflowException(str(event.get("message") or "timed out waiting for PARSE"))
        videos = handle_status_event(event)
        if not video_no:  # the deferral's kwargs were not handed back (dag.test()): the trigger's
            # event names the one video it waited for
            video_no = next((str(v["video_no"]) for v in videos if v.get("video_no")), "")
        if not video_no:
            raise AirflowException(f"the wait for PARSE ended without naming the video: {event!r}")
        tag = self._tag(context)
        self._finish(record_book(context, tag) if tag is not None else None)
        self._video_no = video_no
        return video_no

    # ------------------------------------------------------------------ lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the source file as input, the memories.ai video as output."""
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        from memories_provider.lineage import lineage_dataset, namespace_of, video_dataset_name

        namespace, name = lineage_dataset(str(self.source))
        inputs = [Dataset(namespace=namespace, name=name)]
        outputs = []
        # What this instance returned, not an XCom pull: for a mapped task that pull gives every
        # instance's video (Airflow 3) or the first one's (Airflow 2), not this instance's.
        video_no = self._video_no
        if video_no:
            hook = self.hook
            scope = self.unique_id or hook.config.unique_id
            outputs.append(Dataset(namespace=namespace_of(hook), name=video_dataset_name(scope, video_no)))
        return OperatorLineage(inputs=inputs, outputs=outputs)


#: Most listed videos without tags confirmed one by one: a service honouring the ``tag`` filter
#: lists one or two; more means the filter was ignored, and probing the whole scope would be costly.
MAX_TAG_CONFIRMATIONS = 5


def tagged_video(
    candidates: Iterable[Video],
    tag: str,
    confirm: Callable[[str], Video],
    log: Any,
    size: int | None = None,
) -> Video | None:
    """The first of ``candidates`` (a ``list_videos(tag=...)`` listing) that really carries ``tag``.

    The filter is not trusted: a listed video counts only if its tags hold ``tag``; one listed
    without tags is confirmed with ``confirm`` (``get_metadata``). On any doubt — tags still
    unknown, the video gone, too many to confirm — it is not reused. With ``size`` (the source's),
    a tagged video of another size holds an earlier version of the file and is passed over.
    """
    from memories_provider.client import MemoriesNotFoundError

    def same_file(video: Video) -> bool:
        if _resized(video.size, size):
            log.info(
                "%s carries this task's tag but holds %s, not this source's %s",
                video.video_no,
                _bytes(video.size),
                _bytes(size),
            )
            return False
        return True

    confirmed = 0
    for video in candidates:
        if tag in video.tags:
            if same_file(video):
                return video
            continue
        if video.tags:
            continue  # tagged, but not ours: the service ignored the filter
        if confirmed >= MAX_TAG_CONFIRMATIONS:
            log.warning("list_videos returns untagged videos for tag %s; not confirming more of them", tag)
            return None
        confirmed += 1
        try:
            full = confirm(video.video_no)
        except MemoriesNotFoundError:
            continue
        if tag in full.tags:
            if same_file(full):
                return full
            continue
        if not full.tags:
            log.warning(
                "%s is listed for tag %s but its tags are unknown; not reusing it", video.video_no, tag
            )
    return None

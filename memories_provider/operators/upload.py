"""Stream a video from any storage URI into memories.ai — validated first, never billed twice by a retry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator, conf

from memories_provider.client import MemoriesRateLimitError, RetryPolicy, UploadResult, Video
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators._progress import TransferProgress
from memories_provider.operators._upload_args import (
    URL_UPLOAD_SOFT_LIMIT,
    check_size,
    check_video_name,
    idempotency_tag,
    upload_metadata,
)
from memories_provider.status import StatusCheck
from memories_provider.storage.credentials import scheme_family
from memories_provider.storage.sources import SourceInfo, open_source, redact_uri, stat_source

#: Task state store key (Airflow >= 3.3) of ``{"video_no", "tag"}``: the video and the tag it was for.
STATE_KEY = "memories_video_no"


@dataclass(frozen=True)
class _DeferRateLimits(RetryPolicy):
    """The connection's policy, except that rate limits are waited out deferred, not in the worker."""

    def should_retry(self, error: BaseException, *, idempotent: bool = True) -> bool:
        if isinstance(error, MemoriesRateLimitError):
            return False
        return super().should_retry(error, idempotent=idempotent)


@dataclass(frozen=True)
class _Plan:
    """A validated upload: what to send and how to recognise it on a retry."""

    source: SourceInfo
    via_url: bool
    metadata: dict[str, Any]
    tag: str | None


class MemoriesUploadOperator(BaseOperator):
    """Upload one video to memories.ai from a local path or any storage URI, streaming.

    Every argument is checked before a request is made (no credit is spent on a bad one); the
    file is streamed from its storage into the multipart body in 1 MiB blocks, never held whole
    in memory nor copied to a temporary file.

    **Retries never create a second billed video.** Each upload carries a tag derived from the
    dag, task, run, map index and source (``airflow-<hash>``); before uploading, a retry looks it
    up with ``list_videos(tag=...)`` and reuses a video whose tags hold it (confirmed with
    ``get_metadata`` when the listing omits tags; never on doubt). On Airflow >= 3.3 the
    ``video_no`` (with its tag) is also kept in the task's state store as soon as the answer
    arrives, so a retry finds it with one ``get_metadata`` call; on Airflow 2.11 the tag is the
    only guard. What remains: a duplicate's window opens as soon as an attempt starts sending the
    upload request — from then on the service may accept it even if its answer never arrives (a
    client timeout, a dropped connection, a worker killed mid-request) — and closes once that
    answer is in the task state store (Airflow >= 3.3) or the service lists the video under its
    tag (it documents no listing consistency guarantee). A retry that looks inside that window
    uploads a second, billed copy. Duplicates are also possible if two attempts of the same task
    instance run at once (e.g. a zombie worker still uploading while the retry starts), or with
    ``idempotent=False``. A lookup that fails raises rather than risk a blind upload. A retry
    reuses the earlier video whatever its status, ``FAILED`` included. Clearing a task for a *new*
    run uploads again (different ``run_id``), and so does a changed ``source``.

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
    :param idempotent: tag the upload and look the tag up before uploading (see above).
    :param wait_for_parse: after the upload, wait until the video is ``PARSE``, polling as the status
        sensor does: transient errors (5xx, ``0429``, connection) and a video not listed yet only
        mean "not yet" until ``timeout``; ``FAILED`` fails at once, with the service's cause.
    :param deferrable: wait for rate limits and for parsing in the triggerer, not in a worker slot;
        defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting for parsing.
    :param timeout: seconds to wait for parsing before failing.

    Returns (XCom ``return_value``) the ``video_no``; the upload result goes to XCom key
    ``upload_result``, of the same shape whether uploaded or reused: ``{"video_no", "video_name",
    "status", "upload_time", "source", "reused"}`` — ``status`` as last seen (the upload's answer or
    the lookup), ``upload_time`` in epoch ms, ``source`` with any ``user:password@`` and query string
    (presigned tokens) masked.
    """

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
        memories_conn_id: str = MemoriesHook.default_conn_name,
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
        poll_interval: float = 30.0,
        timeout: float = 2 * 60 * 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not source:
            raise ValueError("`source` must be a non-empty path or URI")
        if poll_interval <= 0:
            raise ValueError(f"`poll_interval` must be > 0 seconds, got {poll_interval!r}")
        if timeout <= 0:
            raise ValueError(f"`timeout` must be > 0 seconds, got {timeout!r}")
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
        self._plan_cache: _Plan | None = None

    # ------------------------------------------------------------------ validation

    def _plan(self, context: Any) -> _Plan:
        source_uri = str(self.source).strip()
        metadata = upload_metadata(
            unique_id=self.unique_id,
            callback=self.callback,
            datetime_taken=self.datetime_taken,
            camera_model=self.camera_model,
            latitude=self.latitude,
            longitude=self.longitude,
            tags=self.tags,
            retain_original_video=self.retain_original_video,
            video_transcription_prompt=self.video_transcription_prompt,
            reserved_tags=1 if self.idempotent else 0,
        )
        via_url = scheme_family(source_uri) == "http" and not self.stream_http
        if via_url and (self.source_conn_id or self.transport_params):
            raise ValueError(
                "`source_conn_id`/`transport_params` cannot be used when the service fetches an http(s) "
                "`source` itself (it fetches unauthenticated); set stream_http=True to stream it through"
            )
        info = stat_source(source_uri, conn_id=self.source_conn_id, transport_params=self.transport_params)
        check_video_name(info.name)
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
        tag = None
        if self.idempotent:
            ti = context["ti"]
            tag = idempotency_tag(
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                run_id=ti.run_id,
                map_index=getattr(ti, "map_index", -1),
                source=source_uri,
            )
            metadata["tags"] = [*metadata["tags"], tag]
        return _Plan(source=info, via_url=via_url, metadata=metadata, tag=tag)

    # ------------------------------------------------------------------ execute

    def execute(self, context: Any) -> str:
        """Validate, reuse a previous attempt's video or upload, then optionally wait for parsing."""
        return self._upload_or_reuse(context, rate_limited=0)

    def execute_after_rate_limit(self, context: Any, event: Any = None, rate_limited: int = 0) -> str:
        """Resume after a deferred wait for the upload rate limit."""
        return self._upload_or_reuse(context, rate_limited=rate_limited)

    def _upload_or_reuse(self, context: Any, *, rate_limited: int) -> str:
        plan = self._plan(context)
        hook = MemoriesHook(memories_conn_id=self.memories_conn_id)
        unique_id = plan.metadata["unique_id"]
        previous = self._previous_video(context, hook, plan)
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
        else:
            try:
                uploaded = self._upload(hook, plan)
            except MemoriesRateLimitError as err:
                self._defer_for_rate_limit(hook, err, rate_limited)
                raise  # not deferrable, or out of retries
            self.log.info("Uploaded %s as %s", shown, uploaded.video_no)
        video_no = uploaded.video_no
        self._remember(context, video_no, plan.tag)
        result = {**uploaded.to_dict(), "source": shown, "reused": previous is not None}
        context["ti"].xcom_push(key="upload_result", value=result)
        if self.wait_for_parse:
            self._wait_for_parse(hook, video_no, unique_id)
        return video_no

    def _previous_video(self, context: Any, hook: MemoriesHook, plan: _Plan) -> Video | None:
        tag = plan.tag
        if tag is None:  # idempotent=False
            return None
        unique_id = plan.metadata["unique_id"]
        store = _state_store(context)
        if store is not None:
            try:
                stored = store.get(STATE_KEY)
            except Exception as err:  # the store is an optimisation; the tag lookup still protects us
                self.log.warning("Could not read the task state store (%s); using the tag lookup", err)
                stored = None
            # Kept after success too: a task cleared after its source was changed must not reuse
            # the video of the old source, so the entry counts only for the same tag.
            if not (isinstance(stored, dict) and stored.get("tag") == tag):
                stored = None
            else:
                stored = stored.get("video_no")
            if stored:
                from memories_provider.client import MemoriesNotFoundError

                try:
                    return hook.get_video(str(stored), unique_id=unique_id)
                except MemoriesNotFoundError:
                    self.log.warning("%s from the task state store no longer exists; uploading again", stored)

        def confirm(video_no: str) -> Video:
            return hook.get_video(video_no, unique_id=unique_id)

        return tagged_video(hook.iter_videos(unique_id=unique_id, tag=tag), tag, confirm, self.log)

    def _upload(self, hook: MemoriesHook, plan: _Plan) -> UploadResult:
        config = hook.config
        policy: RetryPolicy = RetryPolicy(max_retries=config.max_retries)
        if self.deferrable:
            policy = _DeferRateLimits(max_retries=config.max_retries)
        with hook.new_client(retry=policy) as client:
            metadata = {**plan.metadata, "unique_id": plan.metadata["unique_id"] or config.unique_id}
            shown = redact_uri(plan.source.uri)
            if plan.via_url:
                self.log.info("Asking memories.ai to fetch %s (upload_url)", shown)
                return client.upload_video_from_url(plan.source.uri, **metadata)
            size = plan.source.size
            progress = TransferProgress(self.log, f"upload {shown}", size)
            self.log.info("Uploading %s (%s bytes)", shown, size)
            with open_source(
                plan.source.uri, conn_id=self.source_conn_id, transport_params=self.transport_params
            ) as fh:
                result = client.upload_video(
                    fh,
                    filename=plan.source.name,
                    size=size,
                    content_type=check_video_name(plan.source.name),
                    progress=progress.update,
                    **metadata,
                )
            progress.update(size or 0, final=True)
            return result

    def _defer_for_rate_limit(
        self, hook: MemoriesHook, err: MemoriesRateLimitError, rate_limited: int
    ) -> None:
        max_retries = hook.config.max_retries
        if not self.deferrable or rate_limited >= max_retries:
            return
        from airflow.providers.common.compat.standard.triggers import TimeDeltaTrigger

        delay = RetryPolicy(max_retries=max_retries).delay_for(rate_limited + 1, err)
        self.log.warning(
            "Upload rate-limited (%s); waiting %.1fs deferred (retry %d of %d)",
            err,
            delay,
            rate_limited + 1,
            max_retries,
        )
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
            method_name="execute_after_rate_limit",
            kwargs={"rate_limited": rate_limited + 1},
        )

    def _remember(self, context: Any, video_no: str, tag: str | None) -> None:
        store = _state_store(context)
        if store is None or tag is None:
            return
        try:
            store.set(STATE_KEY, {"video_no": video_no, "tag": tag})
        except Exception as err:  # never fail an accepted, billed upload over bookkeeping
            self.log.warning("Could not write %s to the task state store: %s", video_no, err)

    # ------------------------------------------------------------------ waiting for PARSE

    def _wait_for_parse(self, hook: MemoriesHook, video_no: str, unique_id: str | None) -> None:
        # Polled as the status sensor pokes: transient errors are "not yet"; so is our own video
        # not being listed yet (the service documents no listing consistency). Every check, its
        # client retries and Retry-After sleeps included, ends by the deadline.
        deadline = time.monotonic() + self.timeout
        check = StatusCheck([video_no], unique_id, missing_is_pending=True)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Not AirflowSensorTimeout: a retry re-finds the uploaded video and waits again.
                raise AirflowException(check.timeout_message(self.timeout))
            outcome = check(hook.list_videos, seconds=remaining)
            if outcome.status == "failed":
                raise AirflowFailException(outcome.message)
            if outcome.status == "success":
                return
            remaining = deadline - time.monotonic()
            if self.deferrable and not outcome.unlisted and remaining > 0:
                self._defer_for_parse(video_no, unique_id, remaining)  # the trigger fails unlisted ids
            if remaining > 0:
                self.log.info("%s: %s; checking again in %gs", video_no, outcome.message, self.poll_interval)
                time.sleep(min(self.poll_interval, remaining))

    def _defer_for_parse(self, video_no: str, unique_id: str | None, remaining: float) -> None:
        from memories_provider.sensors.video_status import deferral_margin
        from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

        self.defer(
            trigger=MemoriesVideoStatusTrigger(
                video_nos=[video_no],
                memories_conn_id=self.memories_conn_id,
                unique_id=unique_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + remaining,
            ),
            method_name="execute_complete",
            kwargs={"video_no": video_no},
            # The trigger's own timeout event comes first; Airflow's is only a backstop (as in the sensor).
            timeout=timedelta(seconds=remaining + deferral_margin(self.poll_interval)),
        )

    def execute_complete(self, context: Any, event: dict[str, Any], video_no: str = "") -> str:
        """Resume after the deferred wait for ``PARSE``; fails on ``FAILED`` or timeout."""
        from memories_provider.sensors.video_status import handle_status_event

        handle_status_event(event)
        return video_no

    # ------------------------------------------------------------------ lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the source file as input, the memories.ai video as output."""
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        from memories_provider.operators.download import lineage_dataset, namespace_of

        source = str(self.source)
        if scheme_family(source) == "http":
            parts = urlsplit(source)  # credentials and presigned tokens stay out of lineage
            namespace, name = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", parts.path
        else:
            namespace, name = lineage_dataset(source)
        inputs = [Dataset(namespace=namespace, name=name)]
        outputs = []
        video_no = task_instance.xcom_pull(task_ids=task_instance.task_id, key="return_value")
        if video_no:
            hook = MemoriesHook(memories_conn_id=self.memories_conn_id)
            scope = self.unique_id or hook.config.unique_id
            outputs.append(Dataset(namespace=namespace_of(hook), name=f"video/{scope}/{video_no}"))
        return OperatorLineage(inputs=inputs, outputs=outputs)


#: Most listed videos without tags confirmed one by one: a service honouring the ``tag`` filter
#: lists one or two; more means the filter was ignored, and probing the whole scope would be costly.
MAX_TAG_CONFIRMATIONS = 5


def tagged_video(
    candidates: Iterable[Video], tag: str, confirm: Callable[[str], Video], log: Any
) -> Video | None:
    """The first of ``candidates`` (a ``list_videos(tag=...)`` listing) that really carries ``tag``.

    The filter is not trusted: a listed video counts only if its tags hold ``tag``; one listed
    without tags is confirmed with ``confirm`` (``get_metadata``). On any doubt — tags still
    unknown, the video gone, too many to confirm — it is not reused.
    """
    from memories_provider.client import MemoriesNotFoundError

    confirmed = 0
    for video in candidates:
        if tag in video.tags:
            return video
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
            return full
        if not full.tags:
            log.warning(
                "%s is listed for tag %s but its tags are unknown; not reusing it", video.video_no, tag
            )
    return None


def _state_store(context: Any) -> Any:
    """The task state store (Airflow >= 3.3), else ``None``."""
    getter = getattr(context, "get", None)
    return getter("task_state_store") if getter is not None else None

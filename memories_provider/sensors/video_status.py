"""MemoriesVideoStatusSensor: wait until memories.ai has indexed videos (status ``PARSE``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from memories_provider.hooks.connection import DEFAULT_CONN_ID
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.hooks.task_mixin import MemoriesHookMixin
from memories_provider.preflight import (
    AccountRefusedError,
    BadInputError,
    CreditsRefusedError,
    account_refusal_fails_at_once,
    bad_input_fails_at_once,
    checked_unique_id,
)
from memories_provider.status import StatusCheck, normalize_video_nos
from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger
from memories_provider.types import VideoStatusEvent

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


def check_videos(
    hook: MemoriesHook, video_nos: Sequence[str], unique_id: str | None
) -> list[dict[str, Any]] | None:
    """One status round: ``list_videos(video_nos=...)`` in batches of 200.

    Returns the videos' metadata when all are ``PARSE``, ``None`` while any is still ``UNPARSE``
    or a transient error interrupted the round.

    :raises AirflowFailException: when a video failed (with its ``cause``), is unknown or was
        refused by the service — a retry would not change that.
    """
    outcome = StatusCheck(video_nos, unique_id)(hook.list_videos)
    if outcome.status == "failed":
        raise AirflowFailException(outcome.message)
    return outcome.videos if outcome.status == "success" else None


def deferral_margin(poll_interval: float) -> float:
    """Seconds the deferral timeout outlasts the trigger's ``end_time``: ``max(60, 2 poll intervals)``."""
    return max(60.0, 2 * poll_interval)


#: A deferral timeout's upper bound in seconds: a ``timedelta`` holds at most 10**9 days.
_MAX_DEFERRAL_SECONDS = 1e13


def deferral_timeout(
    end_time: float, poll_interval: float, *, execution_left: float | None = None
) -> timedelta:
    """Airflow's deferral timeout for a wait whose trigger fires its own ``timeout`` event at
    ``end_time`` (epoch seconds): only a backstop, the time left plus :func:`deferral_margin`.

    If Airflow's won the race it would fail the task with a ``TaskDeferralError`` (Airflow 2),
    spending retries, instead of ending as the wait's own timeout.

    :param execution_left: seconds left of the task's ``execution_timeout`` (see
        :func:`execution_time_left`), which the deferral must not outlast: Airflow 2 caps a
        deferral by it, Airflow 3 does not (and gives the resumed run a whole new one).
    """
    left = max(0.0, end_time - time.time()) + deferral_margin(poll_interval)
    if execution_left is not None:
        left = min(left, max(execution_left, 0.0))
    return timedelta(seconds=min(left, _MAX_DEFERRAL_SECONDS))


def defer_until_parsed(
    task: Any,
    video_nos: Sequence[str],
    unique_id: str | None,
    *,
    poll_interval: float,
    end_time: float,
    execution_left: float | None,
    method_name: str,
    kwargs: dict[str, Any] | None = None,
    missing_is_pending: bool = False,
) -> NoReturn:
    """Defer ``task`` (an operator with a ``memories_conn_id``) to a :class:`MemoriesVideoStatusTrigger`
    waiting for ``video_nos`` to be ``PARSE`` until ``end_time`` (epoch seconds), resuming in
    ``method_name`` with ``kwargs``: the deferral the sensor, the export and the upload all make.

    The trigger fires its own timeout event at ``end_time``; Airflow's deferral timeout is only a
    backstop (see :func:`deferral_timeout`, which ``execution_left`` caps). ``missing_is_pending``:
    a video not listed yet is waited for (one just uploaded), not failed as unknown.
    """
    task.defer(
        trigger=MemoriesVideoStatusTrigger(
            video_nos=list(video_nos),
            memories_conn_id=task.memories_conn_id,
            # The scope the worker checked, never None: a triggerer's poller for "the connection's
            # default" keeps the default it read when it started, for as long as waits keep it busy.
            unique_id=unique_id or task.hook.config.unique_id,
            poll_interval=poll_interval,
            end_time=end_time,
            missing_is_pending=missing_is_pending,
        ),
        method_name=method_name,
        kwargs=kwargs,
        timeout=deferral_timeout(end_time, poll_interval, execution_left=execution_left),
    )
    raise AssertionError("defer() raises TaskDeferred")  # typed so on Airflow 3 only


def execution_time_left(task: Any, started: float | None) -> float | None:
    """Seconds left of ``task.execution_timeout`` counted from ``started`` (epoch seconds: the
    start of this try's first run), ``None`` without one (or without a known start)."""
    limit = getattr(task, "execution_timeout", None)
    if limit is None or started is None:
        return None
    return float(limit.total_seconds()) - (time.time() - started)


def handle_status_event(event: VideoStatusEvent, *, soft_fail: bool = False) -> list[dict[str, Any]]:
    """Turn a :class:`MemoriesVideoStatusTrigger` event into a result or the matching exception.

    ``success`` → the videos' metadata; ``failed`` → :class:`AirflowFailException` (no retries),
    :class:`AccountRefusedError`/:class:`CreditsRefusedError` when the service refused the key, the
    account or the balance; ``timeout`` → :class:`AirflowSensorTimeout`
    (:class:`AirflowSkipException` with ``soft_fail``); anything else → :class:`AirflowException`.
    """
    status = event.get("status")
    message = str(event.get("message") or "")
    if status == "success":
        return list(event.get("videos") or [])
    if status == "failed":
        refused = event.get("refused")
        if refused == "account":
            raise AccountRefusedError(message)
        if refused == "credits":
            raise CreditsRefusedError(message)
        raise AirflowFailException(message)
    if status == "timeout":
        if soft_fail:
            raise AirflowSkipException(f"{message} (soft_fail)")
        raise AirflowSensorTimeout(message)
    raise AirflowException(message or f"unexpected trigger event {event!r}")


class MemoriesVideoStatusSensor(MemoriesHookMixin, BaseSensorOperator):
    """Wait until memories.ai has indexed one or more videos (status ``PARSE``).

    Succeeds when every video is ``PARSE`` and returns their metadata (XCom ``return_value``, a
    list of dicts). A ``FAILED``/``PARSE_ERROR``/``FAIL`` video, or an id the service does not know,
    fails the task at once without retries, naming the video and the service's ``cause``. Transient
    errors (5xx, timeouts, ``0429``) never fail the wait: it polls again until ``timeout`` (deferred,
    one video whose own status request keeps failing while others are answered fails the attempt,
    retryably, naming it: see :class:`MemoriesVideoStatusTrigger`).

    Modes: ``deferrable=True`` checks once on the worker, then waits in the triggerer (no worker
    slot; all waiting videos of a connection share one poller, ~ceil(N/200) requests per
    interval); ``mode="reschedule"`` frees the slot between checks; ``mode="poke"`` holds it.
    A timeout ends as :class:`AirflowSensorTimeout` in every mode; with ``soft_fail`` a timeout or
    a failed video skips the task instead, in every mode (as Airflow's sensors do). A refused key,
    account or balance, and a mistake in the task or its connection (a malformed id, a
    ``memories_conn_id`` that names no connection), fail the task at once (no retries) even with
    ``soft_fail``: they say nothing about the videos, and a skip would hide them (``never_fail``
    still skips them, as any error).

    :param video_no: one video id, ``VI`` and 18 digits (templated); or use ``video_nos``.
    :param video_nos: several video ids (templated; e.g. an upload's mapped XCom, also when the
        template renders it as text, ``"['VI…', 'VI…']"``); duplicates are waited for once.
        Malformed ids, or an empty list, fail the task at once, before any request.
    :param unique_id: namespace of the videos (templated); defaults to the connection's.
    :param memories_conn_id: the memories.ai connection.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poke_interval: seconds between checks (also the trigger's poll interval).
    """

    template_fields: Sequence[str] = ("video_no", "video_nos", "unique_id")
    ui_color = "#e1f5fe"

    def __init__(
        self,
        *,
        video_no: str | None = None,
        video_nos: list[str] | None = None,
        unique_id: str | None = None,
        memories_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        if video_no in (None, "") and video_nos in (None, "", []):
            raise ValueError("give exactly one of `video_no` or `video_nos`")
        if video_no not in (None, "") and video_nos not in (None, "", []):
            raise ValueError("give exactly one of `video_no` or `video_nos`")
        self.video_no = video_no
        self.video_nos = video_nos
        self.unique_id = unique_id
        self.memories_conn_id = memories_conn_id
        self.deferrable = deferrable

    @property
    def _ids(self) -> list[str]:
        """The ids to wait for; raises ``ValueError`` on bad ids or a blank ``unique_id``."""
        # A blank one is refused on every call: each id would be blamed in turn.
        checked_unique_id(self.unique_id, templated=self.rendered_from_template("unique_id"))
        return normalize_video_nos(self.video_no, self.video_nos)

    def _check(self, context: Context) -> StatusCheck:
        # Kept across the pokes of one process (poke mode): a round paused by a transient error is
        # resumed and the last statuses seen are remembered for the timeout message.
        check = self.__dict__.get("_status_check")
        if check is None:
            check = self.__dict__["_status_check"] = StatusCheck(self._ids, self.unique_id)
            if self.reschedule:
                _restore_last_seen(check, context, self.log)
        return check

    def _time_left(self, context: Context) -> float:
        """Seconds until this sensor's timeout, counted from its first poke in every mode."""
        if self.reschedule:
            first = _first_reschedule_date(context, self.retries)
            if first is not None:
                return float(self.timeout) - (time.time() - first)
        started = self.__dict__.setdefault("_started", time.time())
        return float(self.timeout) - (time.time() - started)

    def _looked(self, context: Context) -> bool:
        """Whether this wait has checked the videos already (in an earlier poke of this try)."""
        if self.__dict__.get("_has_looked"):
            return True
        # Rescheduled before: Airflow 3 counts it in the context; Airflow 2 has its reschedule rows.
        return self.reschedule and bool(
            context.get("task_reschedule_count") or _first_reschedule_date(context, self.retries) is not None
        )

    def _timed_out(self, check: StatusCheck) -> AirflowException:
        message = check.timeout_message(float(self.timeout))
        if self.soft_fail:
            return AirflowSkipException(f"{message} (soft_fail)")
        return AirflowSensorTimeout(message)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """One status round, ending by the sensor's timeout; transient errors count as "not yet".

        Client retries and ``Retry-After`` sleeps stop at the deadline; once it has passed, a later
        poke sends nothing and raises :class:`AirflowSensorTimeout` naming each video not yet
        ``PARSE`` with the status last seen. The wait's first poke always looks (see :meth:`_looked`).
        """
        with bad_input_fails_at_once():  # bad ids or a misconfigured connection: no retry helps
            check = self._check(context)
            self.hook.config  # noqa: B018 (validated before the first request)
        left = self._time_left(context)
        if left <= 0:
            if self._looked(context):
                raise self._timed_out(check)
            # As Airflow's sensors: a wait's first poke looks whatever the timeout (``timeout=0``
            # reads "go on if indexed already"), which is checked after it. One look, bounded by
            # the connection's request timeout.
            left = self.hook.config.timeout
        self.__dict__["_has_looked"] = True
        try:
            # A refused key, account or balance is refused again on every poke and every retry.
            with account_refusal_fails_at_once():
                if self.deferrable:  # the check before deferring: no 0429 slept out in this slot
                    with self.hook.status_lister() as list_videos:
                        outcome = check(list_videos, seconds=left)
                else:
                    outcome = check(self.hook.list_videos, seconds=left)
        finally:
            self.hook.close()  # no pooled session kept open between pokes (a poke may be minutes apart)
            # Nor the connection's settings: a poking sensor holds its process for the whole wait,
            # and a key rotated meanwhile (the old one revoked) would fail it at once, unretried.
            # The next poke reads the connection as it is then, as a rescheduled one does.
            self.__dict__.pop("hook", None)
        if self.reschedule:
            _save_last_seen(check, context, self.log)
        if outcome.status == "failed":
            raise AirflowFailException(outcome.message)
        if outcome.status == "success":
            return PokeReturnValue(is_done=True, xcom_value=outcome.videos)
        if self._time_left(context) <= 0:
            raise self._timed_out(check)
        self.log.info("%s; checking again in %gs", outcome.message, self.poke_interval)
        return False

    def _get_next_poke_interval(
        self, started_at: Any, run_duration: Callable[[], float], poke_count: int
    ) -> float:
        # Airflow waits a whole interval even when the timeout comes first: the wait would end an
        # interval late (an hour's poke_interval on a minute's timeout). The last check, at the
        # deadline, sends nothing and raises the timeout naming what was last seen.
        interval = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        return max(0.0, min(float(interval), float(self.timeout) - run_duration()))

    @contextlib.contextmanager
    def _refusals_not_skipped(self) -> Iterator[None]:
        """A refused key, account or balance, or bad input, fails the task even with ``soft_fail``.

        Airflow's sensors skip on every :class:`AirflowFailException` under ``soft_fail`` (in
        ``execute`` and ``resume_execution``); these are ones too, so that no retry sends the same
        key or the same mistake again, but they say nothing about the videos waited for: a skip
        would hide a wrong key or a misnamed connection as "nothing to wait for" and skip
        everything downstream. ``never_fail`` (skip on any error) still skips them.
        """
        try:
            yield
        except AirflowSkipException as skip:
            cause = skip.__cause__
            if isinstance(cause, (AccountRefusedError, CreditsRefusedError, BadInputError)) and not getattr(
                self, "never_fail", False
            ):
                raise cause from cause.__cause__
            raise

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        with self._refusals_not_skipped():
            return super().resume_execution(next_method, next_kwargs, context)

    def execute(self, context: Context) -> Any:
        """Poke/reschedule as usual, or check once and defer — within the same ``timeout``."""
        with self._refusals_not_skipped():
            return self._execute(context)

    def _execute(self, context: Context) -> Any:
        self.__dict__["_started"] = time.time()
        self.__dict__.pop("_has_looked", None)  # a new try looks again
        if not self.deferrable:
            return super().execute(context)
        # The trigger's deadline is the one the worker-side check started with, not a fresh window.
        end_time = self.__dict__["_started"] + self.timeout
        try:
            with bad_input_fails_at_once():
                ids = self._ids
            result = self.poke(context)
        except AirflowSkipException:
            raise
        except Exception as err:
            # What BaseSensorOperator.execute makes of a failed poke (and resume_execution of a
            # failed trigger event): the worker-side check must not fail where a later one skips.
            if getattr(self, "never_fail", False):
                raise AirflowSkipException(f"{err} (never_fail)") from err
            if self.soft_fail and isinstance(err, (AirflowFailException, AirflowSensorTimeout)):
                raise AirflowSkipException(f"{err} (soft_fail)") from err
            raise
        if isinstance(result, PokeReturnValue):
            return result.xcom_value
        # The trigger fires its own timeout event at end_time (→ AirflowSensorTimeout).
        defer_until_parsed(
            self,
            ids,
            self.unique_id,
            poll_interval=self.poke_interval,
            end_time=end_time,
            execution_left=execution_time_left(self, self.__dict__["_started"]),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: VideoStatusEvent) -> list[dict[str, Any]]:
        """Resume from the trigger: the videos' metadata, or the matching failure."""
        return handle_status_event(event, soft_fail=self.soft_fail)


#: Task state store key (Airflow >= 3.3) of a rescheduled sensor's last statuses seen: each poke
#: runs in a new process, and the one that finds the deadline passed reports them.
STATE_KEY = "memories_last_seen"
#: Most ids whose statuses are kept there (beyond that the timeout message does without).
MAX_STORED = 1000


def _state_store(context: Context) -> Any:
    """The task state store (Airflow >= 3.3), else ``None``."""
    getter = getattr(context, "get", None)
    return getter("task_state_store") if getter is not None else None


def _save_last_seen(check: StatusCheck, context: Context, log: Any) -> None:
    store = _state_store(context)
    if store is None or len(check.last_seen) > MAX_STORED:
        return
    try:
        store.set(STATE_KEY, {"last_seen": check.last_seen, "last_error": check.last_error})
    except Exception as err:  # bookkeeping for a message: never fail the wait over it
        log.warning("Could not keep the last statuses in the task state store: %s", err)


def _restore_last_seen(check: StatusCheck, context: Context, log: Any) -> None:
    store = _state_store(context)
    if store is None or not context.get("task_reschedule_count"):
        return  # the first poke of a try: what an earlier try saw is not this wait's
    try:
        saved = store.get(STATE_KEY)
    except Exception as err:
        log.warning("Could not read the last statuses from the task state store: %s", err)
        return
    if isinstance(saved, dict) and isinstance(saved.get("last_seen"), dict):
        check.last_seen.update({str(k): str(v) for k, v in saved["last_seen"].items()})
        check.last_error = saved.get("last_error")


def _first_reschedule_date(context: Context, retries: int | None) -> float | None:
    """Epoch seconds of a rescheduled sensor's first poke (the start of its timeout), if rescheduled."""
    ti = context["ti"]
    getter = getattr(ti, "get_first_reschedule_date", None)
    if getter is not None:  # Airflow 3
        first = getter(context)
        return None if first is None else float(first.timestamp())
    # Airflow 2: what BaseSensorOperator.execute itself reads (the first try's first reschedule).
    from airflow.sensors.base import _orig_start_date

    first_try = (ti.max_tries or 0) - (retries or 0) + 1
    first = _orig_start_date(
        dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index, try_number=first_try
    )
    return None if first is None else float(first.timestamp())

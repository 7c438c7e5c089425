"""What one task instance's upload attempts tell their retries: kept where an Airflow retry finds it.

Before an attempt sends an upload it records *what* it sends (the idempotency tag, the size, the
source's version marks, the time it started); when the answer arrives it adds the ``video_no``. A
retry that finds a record without an answer knows that an earlier attempt may have been billed, and
when it started; one that finds the source's version marks changed knows it is another file.

Where the record lives:

* Airflow >= 3.3: the task state store (``context["task_state_store"]``), key :data:`STATE_KEY`.
  It belongs to the task instance, survives retries and clears, and expires with the store's
  retention (``[state_store] default_retention_days``).
* Older Airflow (2.11, 3.0-3.2): an Airflow Variable named :data:`VARIABLE_PREFIX` + the tag,
  deleted when the task succeeds (:meth:`RecordBook.done`) so Variables do not pile up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: Task state store key (Airflow >= 3.3). Its name predates the send record; kept so that retries
#: in flight across an upgrade still find the ``{"video_no", "tag"}`` an older version wrote.
STATE_KEY = "memories_video_no"
#: Prefix of the Airflow Variable holding the record where there is no task state store.
VARIABLE_PREFIX = "memories_upload_attempt__"
_VARIABLE_DESCRIPTION = (
    "airflow-provider-memories: an upload sent by a task instance, kept for its retries; "
    "deleted when the task succeeds"
)


@dataclass(frozen=True)
class AttemptRecord:
    """One upload of one task instance, as its retries need to know it.

    :param tag: the idempotency tag the upload carries (names task instance and source).
    :param size: bytes of the source sent (``None`` when unknown, e.g. a URL without a size).
    :param source_version: the source's version marks when it was sent (``StorageFile.version``:
        mtime and inode, ETag, generation ...); ``None`` when the storage gave none, and in records
        written before they were kept (those are compared by size alone).
    :param started_ms: this worker's clock (epoch ms) just before the upload was sent.
    :param video_no: the service's answer; ``None`` while none has arrived.
    :param looking_try: the try that began looking for this unanswered upload, and
    :param looking_since: when (epoch seconds): a deferred wait resumed in the same try keeps its
        deadline even where the deferral's kwargs are not handed back (``dag.test()``).
    """

    tag: str
    size: int | None = None
    source_version: dict[str, str] | None = None
    started_ms: int | None = None
    video_no: str | None = None
    looking_try: int | None = None
    looking_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (the stored form)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> AttemptRecord | None:
        """The record in ``data``, or ``None`` when it holds none (an unknown shape is no record)."""
        if not isinstance(data, dict) or not isinstance(data.get("tag"), str):
            return None

        def number(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        since = data.get("looking_since")
        video_no = data.get("video_no")
        marks = data.get("source_version")
        version = (
            {
                str(k): str(v)
                for k, v in marks.items()
                if isinstance(v, (str, int)) and not isinstance(v, bool)
            }
            if isinstance(marks, dict)
            else {}
        )
        return cls(
            tag=data["tag"],
            size=number("size"),
            source_version=version or None,
            started_ms=number("started_ms"),
            video_no=str(video_no) if video_no else None,
            looking_try=number("looking_try"),
            looking_since=float(since)
            if isinstance(since, (int, float)) and not isinstance(since, bool)
            else None,
        )


def changed_marks(recorded: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The version marks that both ``recorded`` and ``now`` hold, and that differ: the source was
    written since (empty when they agree, or share none — an old record, a storage that tells
    nothing beyond the size)."""
    if not recorded:
        return []
    return sorted(key for key, value in recorded.items() if key in now and now[key] != value)


def shared_marks(recorded: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The version marks both hold: what the comparison could rest on besides the size."""
    return sorted(set(recorded or {}) & set(now))


class RecordBook(Protocol):
    """Reads and writes the record of one task instance and tag. Errors propagate: the caller
    decides whether going on without the record is safe (it is not before an upload)."""

    def load(self) -> AttemptRecord | None:
        """The record for this tag, if any."""

    def save(self, record: AttemptRecord) -> None:
        """Write (replace) the record."""

    def clear(self) -> None:
        """Forget the record (its upload certainly did not reach the service)."""

    def done(self) -> None:
        """The task instance succeeded: drop what only its retries needed."""


class StateStoreBook:
    """The record in Airflow 3.3's task state store; kept after success (a clear then reuses it)."""

    def __init__(self, store: Any, tag: str) -> None:
        self._store = store
        self._tag = tag

    def load(self) -> AttemptRecord | None:
        record = AttemptRecord.from_json(self._store.get(STATE_KEY))
        return record if record is not None and record.tag == self._tag else None

    def save(self, record: AttemptRecord) -> None:
        self._store.set(STATE_KEY, record.to_json())

    def clear(self) -> None:
        self._store.delete(STATE_KEY)

    def done(self) -> None:
        pass  # the store's retention removes it; until then a clear of the task reuses the video


class VariableBook:
    """The record in an Airflow Variable keyed by the tag (no task state store before Airflow 3.3)."""

    def __init__(self, tag: str) -> None:
        self.key = VARIABLE_PREFIX + tag

    @staticmethod
    def _variable() -> Any:
        from airflow.providers.common.compat.sdk import Variable

        return Variable

    def load(self) -> AttemptRecord | None:
        # Positional default: Airflow 2 calls it ``default_var``, the Task SDK ``default``.
        raw = self._variable().get(self.key, None)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        record = AttemptRecord.from_json(data)
        return record if record is not None and self.key == VARIABLE_PREFIX + record.tag else None

    def save(self, record: AttemptRecord) -> None:
        self._variable().set(self.key, json.dumps(record.to_json()), description=_VARIABLE_DESCRIPTION)

    def clear(self) -> None:
        self._variable().delete(self.key)

    def done(self) -> None:
        self.clear()


def record_book(context: Context, tag: str) -> RecordBook:
    """Where this task instance keeps the record of its upload carrying ``tag``."""
    getter = getattr(context, "get", None)
    store = getter("task_state_store") if getter is not None else None
    if store is not None:
        return StateStoreBook(store, tag)
    return VariableBook(tag)

"""What a download records with the file it writes, so that a later run can prove what the file holds.

A name proves nothing: two videos may both be called ``clip.mp4``, a file may be replaced by hand.
So every file the download operator writes carries a :class:`Provenance` record, kept where the
bytes live and committed with them:

* ``s3://``, ``gs://``, ``azure://``: user metadata of the object (``memories-source``,
  ``memories-evidence``, ``memories-size``, ``memories-writer``; on Azure ``memories_source``...),
  set when the upload starts and committed atomically with the object; an object rewritten by
  anything else loses it.
* local paths and ``sftp://``: a sidecar ``.<name>.memories.json`` beside the file, staged as
  ``.<name>.memories.json.<random>.part`` before the file is renamed into place and renamed itself
  right after (a writer cut off between the two leaves the staged one, which a later run reads as
  the record when its ``stat`` is the file's). It also holds the sha256 and what ``stat`` said of
  the file then (size, mtime, inode locally): a file changed or replaced since no longer matches,
  and is then only accepted when its sha256 still equals the recorded one.

A record is only ever written after the whole body was received and checked, so an object or a
sidecar naming a source means: these are all the bytes the service sent for that source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Object metadata keys (lower case: S3 and Azure fold them).
SOURCE_KEY = "memories-source"
EVIDENCE_KEY = "memories-evidence"
SIZE_KEY = "memories-size"
SHA256_KEY = "memories-sha256"
WRITER_KEY = "memories-writer"
#: Largest sidecar read back (a record is a few hundred bytes).
MAX_SIDECAR_BYTES = 64 * 1024
_SIDECAR_SUFFIX = ".memories.json"
_VERSION = 1


@dataclass
class Provenance:
    """The record of one download, kept with the file it wrote.

    :param source: the source's identity (``video/VI...``, ``asset/re_...``, ``blob/<bucket>/<blob>``),
        ASCII, compared as is.
    :param evidence: a digest of what the service said about the source before the download (for a
        video: ``get_metadata``'s size, create_time, bucket and blob); ``""`` when it says nothing.
    :param size: the file's size in bytes (the expected size when the writer starts, if known).
    :param sha256: the file's sha256 (hex), once known; object stores do not keep it (their
        metadata is fixed before the first byte).
    :param writer: which task instance wrote it, and since which clear (:func:`writer_mark`), when
        one did: a retry finds the download an earlier try committed before failing.
    """

    source: str
    evidence: str = ""
    size: int | None = None
    sha256: str | None = None
    writer: str | None = None

    def to_metadata(self) -> dict[str, str]:
        """Object-store user metadata (ASCII strings)."""
        meta = {SOURCE_KEY: self.source, EVIDENCE_KEY: self.evidence}
        if self.size is not None:
            meta[SIZE_KEY] = str(self.size)
        if self.sha256:
            meta[SHA256_KEY] = self.sha256
        if self.writer:
            meta[WRITER_KEY] = self.writer
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any] | None) -> Provenance | None:
        """The record in an object's user metadata, or None when it has none."""
        # Azure allows only C# identifiers as keys: there they are written with "_".
        folded = {str(k).lower().replace("_", "-"): v for k, v in (meta or {}).items()}
        source = folded.get(SOURCE_KEY)
        if not isinstance(source, str) or not source:
            return None
        return cls(
            source=source,
            evidence=str(folded.get(EVIDENCE_KEY) or ""),
            size=_int_or_none(folded.get(SIZE_KEY)),
            sha256=str(folded[SHA256_KEY]) if folded.get(SHA256_KEY) else None,
            writer=str(folded[WRITER_KEY]) if folded.get(WRITER_KEY) else None,
        )

    def to_sidecar(self, stat: Mapping[str, int]) -> bytes:
        """The sidecar's JSON: this record plus what ``stat`` said of the file when it was written."""
        body = {"version": _VERSION, **self.to_metadata(), "stat": dict(stat)}
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def from_sidecar(cls, data: bytes) -> tuple[Provenance, dict[str, int]] | None:
        """(record, stat at write time) from a sidecar's bytes; None when it is not one of ours."""
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: not ours either
            return None
        if not isinstance(body, dict) or body.get("version") != _VERSION:
            return None
        record = cls.from_metadata(body)
        stat = body.get("stat")
        if record is None or not isinstance(stat, dict):
            return None
        return record, {str(k): int(v) for k, v in stat.items() if isinstance(v, int)}


def writer_mark(dag_id: str, task_id: str, run_id: str, map_index: int, first_try: int) -> str:
    """A task instance's mark in the records it writes: the same on every retry since ``first_try``
    (the first try since it was last cleared), another after a clear, unique otherwise."""
    who = "\0".join((dag_id, task_id, run_id, str(map_index), str(first_try)))
    return "ti-" + hashlib.sha256(who.encode()).hexdigest()[:40]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def sidecar_name(name: str) -> str:
    """The sidecar of the file ``name`` (hidden, so listings of the folder skip it)."""
    return f".{name}{_SIDECAR_SUFFIX}"


@dataclass(frozen=True)
class Existing:
    """What is at a destination name before a download.

    :param uri: the file's URI.
    :param size: its size in bytes.
    :param provenance: its record, or None when it has none (not written by the download operator,
        or its sidecar was lost).
    :param intact: whether the file is still the one the record was written for: the object itself
        carries the record (object stores), or ``stat`` matches the sidecar's (local, SFTP). When
        False the record holds only if the file's sha256 still equals the recorded one.
    :param kind: ``"file"``, or what else holds the name and can never be the download (locally
        and over SFTP: ``"folder"``, ``"symlink to nothing"``, ``"FIFO"``, ``"special file"``), with
        no record and size 0.
    :param version: object stores: the version of the object seen (S3 and Azure: its ETag; GCS: its
        generation), for a commit that replaces only that object (``atomic_writer``'s
        ``replace_version``); None locally and over SFTP.
    """

    uri: str
    size: int
    provenance: Provenance | None
    intact: bool
    kind: str = "file"
    version: str | None = None

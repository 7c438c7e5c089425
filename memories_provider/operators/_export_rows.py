"""Rows of an export of index outputs, and the two file formats they are written in.

One row per segment: :data:`COLUMNS`. Writers take rows one video at a time and hand bytes to a
binary file as they go (JSON Lines: one line per row; Parquet: one row group per
:data:`PARQUET_ROW_GROUP_ROWS` rows), so memory does not grow with the number of videos.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal, cast

from memories_provider.client import Transcript, Video
from memories_provider.client.models import INT64_RANGE
from memories_provider.storage.uris import redact_uri

ExportFormat = Literal["jsonl", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "parquet")

#: Columns of every row, in order. ``start_s``/``end_s`` are seconds from the video's start;
#: ``video_create_time`` is epoch milliseconds.
COLUMNS = (
    "video_no",
    "unique_id",
    "kind",
    "index",
    "start_s",
    "end_s",
    "text",
    "video_name",
    "video_duration_s",
    "video_create_time",
)
#: Rows buffered per Parquet row group (memory is about this many rows) ...
PARQUET_ROW_GROUP_ROWS = 10_000
#: ... or this many bytes of text, whichever comes first (segments may be long).
PARQUET_ROW_GROUP_BYTES = 32 * 1024 * 1024
#: JSON Lines are handed to the file in writes of about this many bytes.
JSONL_WRITE_BYTES = 1024 * 1024
# Line breaks other than "\n" that json.dumps(ensure_ascii=False) leaves raw: tools that split
# on them (Python's str.splitlines, some editors) would see one row as two.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


#: Compressions of JSON Lines, by the destination's suffix: readers (DuckDB, Spark, pandas,
#: BigQuery) take a file's compression from its name, so the file is what its name says.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}
#: Suffixes of compressions not written: a file so named would be taken for one.
_OTHER_COMPRESSIONS = (".zst", ".zstd", ".lz4", ".br", ".zip", ".snappy")


def _name_of(destination: str) -> str:
    """The destination's name, lower case, without a URI's query."""
    return destination.lower().split("?", 1)[0]


def format_for(destination: str, file_format: str | None) -> ExportFormat:
    """``file_format``, or ``parquet`` when the destination ends in ``.parquet`` (a compression
    suffix aside), else ``jsonl``.

    :raises ValueError: naming ``file_format`` when it is neither.
    """
    if file_format is None:
        name = _name_of(destination)
        for suffix in (*COMPRESSIONS, *_OTHER_COMPRESSIONS):
            name = name.removesuffix(suffix)
        return "parquet" if name.endswith(".parquet") else "jsonl"
    if file_format not in FORMATS:
        raise ValueError(f"`file_format` must be 'jsonl' or 'parquet', got {file_format!r}")
    return file_format  # type: ignore[return-value]


def compression_for(destination: str, file_format: ExportFormat) -> str | None:
    """The compression the destination's name asks for (``gzip``, ``bz2``, ``xz``), or ``None``.

    :raises ValueError: naming ``destination`` for a compressed Parquet name (Parquet compresses
        inside the file; readers do not open a gzipped one) or a compression not written.
    """
    name = _name_of(destination)
    suffix = next((s for s in (*COMPRESSIONS, *_OTHER_COMPRESSIONS) if name.endswith(s)), None)
    if suffix is None:
        return None
    if file_format == "parquet":
        raise ValueError(
            f"`destination` {redact_uri(destination)!r} ends in {suffix!r}, but Parquet is compressed "
            f"inside the file and readers do not open a {suffix} Parquet file: name it '.parquet'"
        )
    if suffix not in COMPRESSIONS:
        raise ValueError(
            f"`destination` {redact_uri(destination)!r} ends in {suffix!r}, a compression the export "
            "does not write (readers would take the file for it): end it in .gz, .bz2 or .xz to "
            "compress, or in .jsonl"
        )
    return COMPRESSIONS[suffix]


def compressor(compression: str, out: CountingFile) -> IO[bytes]:
    """A file compressing what is written to it into ``out``; its ``close`` writes the end of the
    stream and leaves ``out`` open. Nothing varies between runs (gzip: no time, no name)."""
    if compression == "gzip":
        return cast(
            IO[bytes], gzip.GzipFile(fileobj=cast(IO[bytes], out), mode="wb", compresslevel=6, mtime=0)
        )
    if compression == "bz2":
        import bz2

        return cast(IO[bytes], bz2.BZ2File(cast(IO[bytes], out), "wb"))
    import lzma

    return cast(IO[bytes], lzma.LZMAFile(cast(IO[bytes], out), "wb"))


def require_pyarrow() -> None:
    """:raises ValueError: when Parquet is asked for but ``pyarrow`` is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError(
            "`file_format`='parquet' needs pyarrow: pip install 'airflow-provider-memories[parquet]'"
        ) from None


def rows_of(video: Video, unique_id: str, transcripts: Iterable[Transcript]) -> Iterator[dict[str, Any]]:
    """The rows of one video's index outputs, kind by kind, in the order the service sent them."""
    for transcript in transcripts:
        for segment in transcript.segments:
            yield {
                "video_no": video.video_no,
                "unique_id": unique_id,
                "kind": transcript.kind,
                "index": segment.index,
                "start_s": segment.start_s,
                "end_s": segment.end_s,
                "text": segment.text,
                "video_name": video.video_name,
                "video_duration_s": video.duration,
                "video_create_time": _int64(video.create_time),
            }


def _int64(value: int | None) -> int | None:
    """``value``, or ``None`` when no int64 column holds it: both formats then carry the same rows."""
    return value if value is None or value in INT64_RANGE else None


class CountingFile:
    """A binary file wrapper counting the bytes written (what pyarrow needs of a sink, too)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.bytes = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._fh.write(data)
        size = memoryview(data).nbytes
        self.bytes += size
        return size

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        pass  # the atomic writer flushes (and syncs) when it commits

    def close(self) -> None:
        # The atomic writer owns the real file: closing it here would commit it early.
        self.closed = True

    def detach(self) -> None:
        """Drop whatever is written from now on: the real file was (or is about to be) discarded."""
        self._fh = _NOWHERE

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


class _Nowhere:
    def write(self, data: bytes | bytearray | memoryview) -> int:
        return memoryview(data).nbytes


_NOWHERE: Any = _Nowhere()


class RowWriter:
    """Writes rows to a :class:`CountingFile`; :meth:`close` completes the file (Parquet footer)."""

    def __init__(self, out: CountingFile) -> None:
        self.out = out
        self.rows = 0

    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Complete the file; a writer that raised before must not be closed (nothing is committed)."""

    def abandon(self) -> None:
        """Give up after a failure: release what the writer holds and write nothing more."""
        self.out.detach()


class JsonLinesWriter(RowWriter):
    """One JSON object per line (UTF-8, ``\\n``-terminated); any text stays on its own line."""

    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        lines: list[bytes] = []
        size = 0
        for row in rows:
            text = json.dumps(row, ensure_ascii=False, allow_nan=False).translate(_LINE_BREAKS)
            try:
                line = text.encode("utf-8") + b"\n"
            except UnicodeEncodeError:  # a lone surrogate (server metadata)
                line = _utf8(text).encode("utf-8") + b"\n"
            lines.append(line)
            size += len(line)
            self.rows += 1
            if size >= JSONL_WRITE_BYTES:  # a video of many segments is not held twice
                self.out.write(b"".join(lines))
                lines, size = [], 0
        if lines:
            self.out.write(b"".join(lines))


class ParquetWriter(RowWriter):
    """Parquet with a fixed schema, one row group per :data:`PARQUET_ROW_GROUP_ROWS` rows."""

    def __init__(self, out: CountingFile, row_group_rows: int = PARQUET_ROW_GROUP_ROWS) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(out)
        self._pa = pa
        self.schema = pa.schema(
            [
                ("video_no", pa.string()),
                ("unique_id", pa.string()),
                ("kind", pa.string()),
                ("index", pa.int64()),
                ("start_s", pa.float64()),
                ("end_s", pa.float64()),
                ("text", pa.large_string()),
                ("video_name", pa.string()),
                ("video_duration_s", pa.float64()),
                ("video_create_time", pa.int64()),
            ]
        )
        self._sink = pa.PythonFile(out, mode="w")
        self._writer = pq.ParquetWriter(self._sink, self.schema)
        self._buffer: list[dict[str, Any]] = []
        self._buffered_bytes = 0
        self._row_group_rows = row_group_rows

    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            clean = {k: _utf8(v) if isinstance(v, str) else v for k, v in row.items()}
            self._buffer.append(clean)
            self.rows += 1
            text = clean["text"]  # its UTF-8 bytes, as Parquet holds it (up to 4 a character)
            self._buffered_bytes += len(text) if text.isascii() else len(text.encode("utf-8"))
            if len(self._buffer) >= self._row_group_rows or self._buffered_bytes >= PARQUET_ROW_GROUP_BYTES:
                self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(self._pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []
            self._buffered_bytes = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abandon(self) -> None:
        # Closed now, into nothing: left open, pyarrow writes its footer whenever the writer is
        # collected, into the aborted temporary object (an error in the log, at a random time).
        super().abandon()
        self._buffer = []
        with contextlib.suppress(Exception):  # a writer that failed may fail to close too
            self._writer.close()


def _utf8(text: str) -> str:
    """``text`` with lone surrogates (server metadata) replaced by U+FFFD, as in a segment's text:
    both formats are UTF-8. (``"replace"`` on encoding gives ``?``, a real character.)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def row_writer(file_format: ExportFormat, out: CountingFile) -> RowWriter:
    """The writer of ``file_format`` on ``out``."""
    return ParquetWriter(out) if file_format == "parquet" else JsonLinesWriter(out)

"""A streaming ``multipart/form-data`` body with an exact ``Content-Length``.

The file part is read from the caller's file object block by block as the HTTP library asks for
it, so memory stays flat whatever the file size; the length is known up front so no chunked
transfer encoding is needed (the API documents none for uploads).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

BLOCK_SIZE = 1024 * 1024


class SourceError(Exception):
    """The caller's file object broke the body while it was being sent, before its closing
    boundary: the service cannot accept such a body."""


class SourceSizeError(SourceError, ValueError):
    """The file object yielded a different number of bytes than the declared ``size``."""


class SourceReadError(SourceError):
    """Reading the file object failed (its storage's connection broke, say) while the body was
    being sent; the original error is the cause."""


def find_source_error(exc: BaseException) -> SourceError | None:
    """The caller's failing upload source hidden inside a transport error, if that is the cause."""
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        if isinstance(item, SourceError):
            return item
        seen.add(id(item))
        item = item.__cause__ or item.__context__
    return None


#: WHATWG form encoding of names/filenames in a part header escapes the quote and line breaks;
#: the other control characters (NUL, ESC ...) are escaped the same way, since servers refuse a
#: header holding them (the whole upload, after its body has gone out). A backslash is doubled:
#: the value is a quoted-string, whose parsers (aiohttp's, Spring's ContentDisposition) read a
#: lone one as escaping the next character and drop it.
_HEADER_ESCAPES = {
    **{code: f"%{code:02X}" for code in (*range(0x20), 0x7F)},
    ord("\t"): "\t",  # allowed in a header value
    ord('"'): "%22",
    ord("\\"): "\\\\",
}


def _quote(value: str) -> str:
    return value.translate(_HEADER_ESCAPES)


def file_size(fileobj: BinaryIO) -> int | None:
    """Bytes left to read in ``fileobj`` (fstat or seek/tell), or None when it cannot tell."""
    try:
        position = fileobj.tell()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        return os.fstat(fileobj.fileno()).st_size - position
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if not fileobj.seekable():
            return None
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(position)
        return end - position
    except (AttributeError, OSError, ValueError):
        return None


class MultipartBody:
    """File-like multipart body: text fields first, then the streamed file part.

    :param fields: form fields as ``(name, value)`` pairs (repeated names allowed).
    :param fileobj: binary file object positioned at the first byte to send.
    :param filename: file name announced in the part header.
    :param content_type: MIME type of the file part.
    :param size: exact number of bytes to send from ``fileobj``.
    :param progress: called with the number of file bytes sent so far.
    :param file_field: name of the file field (``"file"``).
    """

    def __init__(
        self,
        fields: Sequence[tuple[str, str]],
        fileobj: BinaryIO,
        *,
        filename: str,
        content_type: str,
        size: int,
        progress: Callable[[int], None] | None = None,
        file_field: str = "file",
    ) -> None:
        self.boundary = f"memories-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        dash = f"--{self.boundary}\r\n"
        head = "".join(
            f'{dash}Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'
            for name, value in fields
        )
        head += (
            f'{dash}Content-Disposition: form-data; name="{_quote(file_field)}"; '
            f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        self._head = head.encode("utf-8")
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._file = fileobj
        self._size = size
        self._progress = progress
        self.length = len(self._head) + size + len(self._tail)
        try:
            self._start: int | None = fileobj.tell() if fileobj.seekable() else None
        except (AttributeError, OSError, ValueError):
            self._start = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._head_sent = 0
        self._file_sent = 0
        self._tail_sent = 0

    @property
    def rewindable(self) -> bool:
        """Whether the body can be sent again (the file object is seekable)."""
        return self._start is not None

    @property
    def file_bytes_sent(self) -> int:
        """File bytes handed to the HTTP library so far."""
        return self._file_sent

    def rewind(self) -> None:
        """Seek the file back to where it started, to send the body again after a retry."""
        if self._start is None:
            raise ValueError("the file object is not seekable; the upload cannot be resent")
        self._file.seek(self._start)
        self._reset_state()

    def __len__(self) -> int:
        return self.length

    def read(self, amount: int = -1) -> bytes:
        """Up to ``amount`` bytes of the body (one segment at a time, to avoid copies)."""
        if amount is None or amount < 0:
            amount = BLOCK_SIZE
        if self._head_sent < len(self._head):
            chunk = self._head[self._head_sent : self._head_sent + amount]
            self._head_sent += len(chunk)
            return chunk
        if self._file_sent < self._size:
            want = min(amount, self._size - self._file_sent)
            chunk = self._read_file(want)
            if not chunk:
                raise SourceSizeError(
                    f"the file ended after {self._file_sent} bytes but its size was given as {self._size}"
                )
            self._file_sent += len(chunk)
            if self._progress is not None:
                self._progress(self._file_sent)
            return bytes(chunk) if not isinstance(chunk, bytes) else chunk
        if self._tail_sent == 0 and self._size and self._read_file(1):
            raise SourceSizeError(f"the file is longer than its given size of {self._size} bytes")
        if self._tail_sent < len(self._tail):
            chunk = self._tail[self._tail_sent : self._tail_sent + amount]
            self._tail_sent += len(chunk)
            return chunk
        return b""

    def _read_file(self, amount: int) -> bytes:
        try:
            return self._file.read(amount)
        except SourceError:
            raise
        except Exception as err:  # not the transport's: told apart so no one blames the service
            raise SourceReadError(
                f"reading the file failed after {self._file_sent} bytes ({type(err).__name__})"
            ) from err

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.read(BLOCK_SIZE)
            if not chunk:
                return
            yield chunk

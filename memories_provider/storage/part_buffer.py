"""A reusable in-memory buffer for smart-open's S3 parts (its ``writebuffer`` transport parameter).

smart-open collects each part in an ``io.BytesIO`` and empties it with ``truncate(0)`` after the
upload, which frees the memory: the next part grows a new buffer through reallocations, each
page faulted in afresh (on a VM with free-page reporting, from the host). About a CPU-second
per GiB went there. :class:`PartBuffer` keeps its memory between parts; it is the file-like
``BytesIO`` subset smart-open and botocore use (write, read, seek, tell, truncate).

It also keeps the CRC32 of what was appended in order, updated by each write while the bytes are
still in the cache: the part's checksum for :mod:`.s3_part_checksums`, without a pass over the
part from memory afterwards.
"""

from __future__ import annotations

import io
from typing import Any

from memories_provider.storage.s3_part_checksums import crc32


class PartBuffer(io.BufferedIOBase):
    """A seekable in-memory binary file whose memory is kept (not freed) when it is truncated."""

    def __init__(self) -> None:
        super().__init__()
        self._data = bytearray()
        self._size = 0  # bytes of _data in use
        self._pos = 0
        self._crc = 0  # CRC32 of _data[:_crc_end], a prefix of the content
        self._crc_end = 0

    def readable(self) -> bool:
        """Always true."""
        return True

    def writable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Write ``data`` (any bytes-like object) at the current position."""
        self._check_open()
        view = memoryview(data).cast("B")
        if not view:  # as BytesIO: an empty write past the end does not extend the content
            return 0
        end = self._pos + len(view)
        if end > len(self._data):
            self._data.extend(bytes(end - len(self._data)))
        if self._pos > self._size:  # a gap after a seek past the end reads as zeros
            self._data[self._size : self._pos] = bytes(self._pos - self._size)
        # Through a memoryview: ``bytearray[a:b] = view`` would first copy ``view`` into a new bytearray.
        with memoryview(self._data) as target:
            target[self._pos : end] = view
        if self._pos == self._crc_end:
            self._crc, self._crc_end = crc32(view, self._crc), end
        elif self._pos < self._crc_end:  # bytes the CRC covered were overwritten
            self._crc = self._crc_end = 0
        self._pos = end
        self._size = max(self._size, end)
        return len(view)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all that is left if ``size`` < 0)."""
        self._check_open()
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        chunk = bytes(memoryview(self._data)[self._pos : end])
        self._pos = end
        return chunk

    def read1(self, size: int = -1) -> bytes:
        """As :meth:`read`."""
        return self.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (``SEEK_SET``, ``SEEK_CUR``, ``SEEK_END``); returns it."""
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The current position."""
        self._check_open()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        """Cut the content to ``size`` bytes (default: the position); the memory is kept."""
        self._check_open()
        size = self._pos if size is None else size
        if size < 0:
            raise ValueError(f"negative size {size}")
        self._size = min(self._size, size)
        if self._size < self._crc_end:
            self._crc = self._crc_end = 0
        return size

    def getvalue(self) -> bytes:
        """The whole content, as ``BytesIO.getvalue``."""
        return bytes(memoryview(self._data)[: self._size])

    def getbuffer(self) -> memoryview:
        """A view of the content without a copy, as ``BytesIO.getbuffer``: release it (``with``)
        before the next write, which may need to grow the memory."""
        self._check_open()
        with memoryview(self._data) as whole:
            return whole[: self._size]

    def as_body(self) -> bytearray | None:
        """The content as a ``bytearray`` (this buffer's own memory, no copy) for a request body,
        when read from the start; ``None`` otherwise, or while a view of it is held.

        botocore signs a bytes-like body in one ``sha256`` call and urllib3 sends it in one
        ``sendall``, where a file-like body is read back in copies (1 MiB for the signature, 16 KiB
        a ``send``, each a Python call). A ``bytearray`` is also what botocore re-sends as it is on
        a retry. The spare capacity past the content is cut off first (kept allocated by CPython
        when it is small); the caller must not write until the request is done.
        """
        self._check_open()
        if self._pos != 0:
            return None
        if len(self._data) != self._size:
            try:
                del self._data[self._size :]
            except BufferError:  # a getbuffer() view is still held
                return None
            self._crc_end = min(self._crc_end, self._size)
        return self._data

    def crc32(self) -> int:
        """The CRC32 of the whole content (computed only for what was not appended in order)."""
        self._check_open()
        if self._crc_end < self._size:
            with self.getbuffer() as content, content[self._crc_end :] as rest:
                self._crc = crc32(rest, self._crc)
            self._crc_end = self._size
        return self._crc

    def close(self) -> None:
        """Free the memory."""
        self._data = bytearray()
        self._size = self._pos = 0
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed PartBuffer")

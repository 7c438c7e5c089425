"""A local file that is written back to disk while it is being written, not all at the end.

A durable download ends with ``fsync``. Written the usual way, the whole file sits dirty in the
page cache until then (the kernel starts background write-back only past ``dirty_background_ratio``,
gigabytes on a big host), so the transfer takes the download's time *plus* the flush of the whole
file, and every page of it is a fresh page-cache page. On a VM with free-page reporting
(Firecracker, cloud hosts with virtio-balloon) fresh pages are the expensive part: each one the
host has taken back must be faulted in again, which shows up as seconds of kernel CPU per GiB in
the copy into the page cache, more after another big file was deleted.

:class:`WriteBehindFile` keeps the file's dirty and cached footprint to a few windows: every
:data:`WINDOW` bytes it starts write-back of the window just written (``sync_file_range``), waits
for the window written :data:`LAG` windows earlier to be on disk, and drops those now-clean pages
(``posix_fadvise(DONTNEED)``), which the next windows then reuse while they are still warm. Disk
and network overlap; the final ``fsync`` has only the last windows left to flush. The finished
file is not left in the page cache, as with ``O_DIRECT``.

Linux only; elsewhere, or on a filesystem that refuses these calls, it is a plain file. Nothing here
replaces the ``fsync``: ``sync_file_range`` neither flushes metadata nor the disk's cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
from collections.abc import Callable
from typing import Any

#: Bytes between two write-back starts.
WINDOW = 8 * 1024 * 1024
#: Windows in flight: write-back of a window is waited for this many windows after it started.
LAG = 4

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* (linux/fs.h)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_sync_file_range = _load_sync_file_range()


class WriteBehindFile(io.FileIO):
    """An unbuffered local file (``io.FileIO``) written back window by window as it grows.

    Open it like ``FileIO`` (a path or an fd, mode ``"wb"``...); wrap it in ``io.BufferedWriter``
    for small writes. Only sequential writes from the start are tracked: after a ``seek`` it
    stops managing write-back and behaves as a plain file.
    """

    def __init__(self, file: Any, mode: str = "wb", closefd: bool = True) -> None:
        super().__init__(file, mode, closefd=closefd)
        self._written = 0  # bytes written sequentially from offset 0
        self._started = 0  # write-back started up to here
        self._dropped = 0  # on disk and dropped from the page cache up to here
        self._active = _sync_file_range is not None

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Write ``data`` (as ``FileIO.write``), then manage write-back of the windows it completed."""
        count = super().write(data)
        if count and self._active:
            self._written += count
            if self._written - self._started >= WINDOW:
                self._write_back()
        return count or 0

    def seek(self, pos: int, whence: int = 0) -> int:
        """As ``FileIO.seek``; write-back management stops (writes may no longer be sequential)."""
        self._active = False
        return super().seek(pos, whence)

    def _write_back(self) -> None:
        assert _sync_file_range is not None
        fd = self.fileno()
        end = self._written - self._written % WINDOW
        try:
            if _sync_file_range(fd, self._started, end - self._started, _WRITE) != 0:
                raise OSError(ctypes.get_errno(), "sync_file_range")
            self._started = end
            settled = end - LAG * WINDOW
            if settled > self._dropped:
                length = settled - self._dropped
                if _sync_file_range(fd, self._dropped, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) != 0:
                    raise OSError(ctypes.get_errno(), "sync_file_range")
                os.posix_fadvise(fd, self._dropped, length, os.POSIX_FADV_DONTNEED)
                self._dropped = settled
        except OSError:
            # Not supported here (some FUSE and network filesystems): a plain file, fsync does it all.
            self._active = False


def open_write_behind(fd: int) -> io.BufferedWriter:
    """A buffered binary writer on ``fd`` (open for writing, at offset 0) that writes back as it goes."""
    return io.BufferedWriter(WriteBehindFile(fd, "wb"))

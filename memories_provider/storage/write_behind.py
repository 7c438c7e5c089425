"""A local file that reaches the disk while it is being written, not all at the end.

A durable download ends with ``fsync``. Written the usual way, the whole file sits dirty in the
page cache until then (the kernel starts background write-back only past ``dirty_background_ratio``,
gigabytes on a big host), so the transfer takes the download's time *plus* the flush of the whole
file, and every page of it is a fresh page-cache page. On a VM with free-page reporting
(Firecracker, cloud hosts with virtio-balloon) fresh pages are the expensive part: each one the
host has taken back must be faulted in again, which shows up as seconds of kernel CPU per GiB in
the copy into the page cache, more after another big file was deleted.

On ext4 and XFS, :class:`WriteBehindFile` is written with ``O_DIRECT`` for as long as the writes
allow it: each a whole number of :data:`DIRECT_ALIGN` bytes, from memory aligned to it, at an
offset aligned to it, as the buffers of a :class:`~memories_provider.storage.background_writer.BufferRing`
are. The bytes then go from the caller's buffer to the disk, with no copy into the page cache and
no page-cache page at all (measured here: 0.04 s of kernel CPU per GiB written, against 0.3 s).
The first write that does not allow it (a file's last, partial chunk, small writes, a ``seek``)
turns ``O_DIRECT`` off for the rest of the file. Only those two filesystems: their direct I/O is
the kernel's well-trodden path, while on NFS it makes every write a synchronous round trip, and
tmpfs, overlay and FUSE filesystems refuse or emulate it.

Elsewhere, or from then on, it keeps the file's dirty and cached footprint to a few windows: every
:data:`WINDOW` bytes it starts write-back of the window just written (``sync_file_range``), waits
for the window written :data:`LAG` windows earlier to be on disk, and drops those now-clean pages
(``posix_fadvise(DONTNEED)``), which the next windows then reuse while they are still warm. Disk
and network overlap; the final ``fsync`` has only the last windows left to flush. Either way, the
finished file is not left in the page cache.

Linux only; elsewhere, or on a filesystem that refuses these calls, it is a plain file. Nothing here
replaces the ``fsync``: neither ``O_DIRECT`` nor ``sync_file_range`` flushes metadata or the disk's
cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import io
import os
from collections.abc import Callable
from typing import Any

#: Bytes between two write-back starts.
WINDOW = 8 * 1024 * 1024
#: Windows in flight: write-back of a window is waited for this many windows after it started.
LAG = 4
#: What ``O_DIRECT`` needs aligned: a write's memory, length and file offset (logical blocks are
#: 512 or 4096 bytes).
DIRECT_ALIGN = 4096
#: Filesystems written with ``O_DIRECT`` (``statfs`` magic numbers): ext2/3/4, XFS.
DIRECT_FILESYSTEMS = frozenset({0xEF53, 0x58465342})

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* (linux/fs.h)


def _libc_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    if not hasattr(os, "posix_fadvise"):  # not Linux (or a libc without these calls)
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    func.argtypes = argtypes
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_sync_file_range = _libc_function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
)
_fstatfs = _libc_function("fstatfs", [ctypes.c_int, ctypes.c_void_p])
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def filesystem_type(fd: int) -> int | None:
    """The ``statfs`` magic number of the filesystem holding ``fd``, or None where it is not known."""
    if _fstatfs is None:
        return None
    buffer = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux
    if _fstatfs(fd, buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value  # f_type (__fsword_t) comes first


def _aligned_address(data: Any) -> bool:
    """Whether ``data`` is a writable, contiguous buffer starting at a :data:`DIRECT_ALIGN` boundary.

    A read-only buffer's address cannot be read from Python: it counts as unaligned.
    """
    try:
        view = memoryview(data)
    except TypeError:
        return False
    with view:
        if view.readonly or not view.c_contiguous or not view.nbytes:
            return False
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    return address % DIRECT_ALIGN == 0


class WriteBehindFile(io.FileIO):
    """An unbuffered local file (``io.FileIO``) that reaches the disk as it grows: with ``O_DIRECT``
    while the writes allow it, written back window by window otherwise (see the module).

    Open it like ``FileIO`` (a path or an fd, mode ``"wb"``...), at offset 0; wrap it with
    :func:`open_write_behind` for small writes. Only sequential writes from the start are tracked:
    after a ``seek`` it behaves as a plain file.

    :param direct: try ``O_DIRECT`` (on ext4 and XFS).
    """

    def __init__(self, file: Any, mode: str = "wb", closefd: bool = True, *, direct: bool = True) -> None:
        super().__init__(file, mode, closefd=closefd)
        self._written = 0  # bytes written sequentially from offset 0
        self._started = 0  # write-back started up to here
        self._dropped = 0  # on disk and dropped from the page cache up to here
        self._active = _sync_file_range is not None
        self.direct = direct and self._start_direct()

    def _start_direct(self) -> bool:
        fd = self.fileno()
        if not _O_DIRECT or filesystem_type(fd) not in DIRECT_FILESYSTEMS or self.tell() != 0:
            return False
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
        except OSError:
            return False
        return True

    def _stop_direct(self) -> None:
        fd = self.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        self.direct = False
        # What was written so far is on disk and was never in the page cache.
        self._started = self._dropped = self._written

    def takes_direct(self, data: Any) -> bool:
        """Whether writing ``data`` now keeps ``O_DIRECT`` on (see the module for what it needs)."""
        if not self.direct or self._written % DIRECT_ALIGN:
            return False
        size = memoryview(data).nbytes
        return size == 0 or (size % DIRECT_ALIGN == 0 and _aligned_address(data))

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Write ``data`` (as ``FileIO.write``): directly when it allows it; otherwise through the
        page cache, managing write-back of the windows it completed."""
        if self.direct and not self.takes_direct(data):
            self._stop_direct()
        try:
            count = super().write(data)
        except OSError as err:
            if not (self.direct and err.errno == errno.EINVAL):
                raise
            self._stop_direct()  # the filesystem wants more of a direct write than we know
            count = super().write(data)
        if count and (self.direct or self._active):
            self._written += count
            if not self.direct and self._written - self._started >= WINDOW:
                self._write_back()
        return count or 0

    def seek(self, pos: int, whence: int = 0) -> int:
        """As ``FileIO.seek``; from then on a plain file (writes may no longer be sequential)."""
        if self.direct:
            self._stop_direct()
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


class _WriteBehindWriter(io.BufferedWriter):
    """``io.BufferedWriter`` that hands a write ``O_DIRECT`` can take to the file whole.

    ``BufferedWriter`` passes big writes on too, but as a read-only view whose address cannot be
    checked from Python, which would turn ``O_DIRECT`` off at the first chunk.
    """

    raw: WriteBehindFile

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Write all of ``data``: straight to the file while it takes it directly, else buffered."""
        if not self.raw.takes_direct(data):
            return super().write(data)
        self.flush()
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            count = self.raw.write(view[done:])  # the rest, if any, is written the usual way
            if not count:
                raise OSError(errno.EIO, "a write to a local file wrote nothing")
            done += count
        return done


def open_write_behind(fd: int, *, direct: bool = True) -> io.BufferedWriter:
    """A buffered binary writer on ``fd`` (open for writing, at offset 0) that reaches the disk as it
    goes (see the module).

    :param fd: the file, open for writing, at offset 0.
    :param direct: write with ``O_DIRECT`` where the filesystem and the writes allow it.
    """
    return _WriteBehindWriter(WriteBehindFile(fd, "wb", direct=direct))

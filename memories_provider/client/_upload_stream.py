"""Opening the stream an upload sends (a path or a file object), its name and size, for both clients."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from memories_provider.client.errors import MemoriesInvalidArgumentError
from memories_provider.client.multipart import file_size
from memories_provider.client.protocol import MAX_UPLOAD_BYTES


def _check_size(size: int, what: str) -> None:
    """At most 3 GB: a bigger file would be streamed whole, then refused (and the time spent)."""
    if size > MAX_UPLOAD_BYTES:
        raise MemoriesInvalidArgumentError(
            f"`file` {what}has {size} bytes; memories.ai accepts at most {MAX_UPLOAD_BYTES} bytes (3 GB)"
        )


#: Open without waiting: opening a FIFO for reading blocks until a writer comes (in the async
#: client, the whole event loop with it).
_NO_WAIT = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
)
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _open_regular(path: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (symlinks followed); else
    :class:`MemoriesInvalidArgumentError` naming ``file``, before anything is sent."""
    fd = os.open(path, _NO_WAIT)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((kind for test, kind in _KINDS if test(mode)), "a special file")
            raise MemoriesInvalidArgumentError(
                f"`file` {path!r} is {kind}, not a regular file: only a regular file has a size to "
                "announce before it is sent"
            )
        if hasattr(os, "O_NONBLOCK"):  # a regular file: read it blocking (a FUSE file may honour the flag)
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass
class UploadStream:
    """The open stream of an upload: the file object, the name to announce and the bytes to send."""

    fileobj: BinaryIO
    filename: str
    size: int


@contextlib.contextmanager
def open_upload_stream(
    file: str | os.PathLike[str] | BinaryIO, *, filename: str | None, size: int | None
) -> Iterator[UploadStream]:
    """Yield an :class:`UploadStream`; a path is opened (and closed) here, a file object is not closed.

    :raises ValueError: when no file name can be found, or the size of a non-seekable stream is unknown.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        with _open_regular(path) as fh:
            actual = os.fstat(fh.fileno()).st_size if size is None else size
            if actual <= 0:
                raise ValueError(f"the file to upload is empty: {path}")
            _check_size(actual, f"{path!r} ")
            yield UploadStream(fh, filename or os.path.basename(path), actual)
        return
    name = filename
    if name is None:
        raw_name = getattr(file, "name", None)
        if isinstance(raw_name, str) and raw_name:
            name = os.path.basename(raw_name)
    if not name:
        raise ValueError("filename is required when uploading a file object without a name")
    if size is None:
        size = file_size(file)
    if size is None:
        raise ValueError("size is required for a file object whose size cannot be determined (not seekable)")
    if size <= 0:
        raise ValueError("the file to upload is empty")
    _check_size(size, f"{name!r} ")
    yield UploadStream(file, name, size)

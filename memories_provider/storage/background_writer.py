"""Consume chunks in a second thread, so receiving, hashing and writing overlap.

A download spends its time in three places: receiving from the socket, hashing, and writing to
the destination (the page cache, or a part upload to S3/GCS/Azure). Done one after the other
in one thread, their times add up; with hashing and writing each in its own thread the
transfer runs at the speed of the slowest of them. ``socket.recv``, ``hashlib`` on large
buffers and file/socket writes all release the GIL, so the threads really run in parallel.

Memory stays bounded: at most ``depth`` chunks wait in the queue. With a :class:`BufferRing`,
the chunks are a fixed set of buffers that go round (filled by the receiver, handed back once
written): no allocation, no fresh pages, no copy per chunk.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

#: What goes through a writer: immutable bytes, or a view of a buffer lent by a :class:`BufferRing`.
Chunk = bytes | memoryview


class BufferRing:
    """``count`` reusable buffers of ``size`` bytes, lent to a producer and given back by a consumer.

    :meth:`take` blocks until a buffer is free; memory is ``count`` x ``size``, allocated once. Each
    buffer is its own anonymous mapping, so it starts on a page boundary: a local file can take it
    with ``O_DIRECT`` (see :mod:`~memories_provider.storage.write_behind`).
    """

    def __init__(self, count: int, size: int) -> None:
        if count < 1 or size < 1:
            raise ValueError(f"a ring needs at least one buffer of at least one byte, got {count} x {size}")
        self.size = size
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(mmap.mmap(-1, size))

    def take(self) -> memoryview:
        """A free buffer, whole (waits for one to be given back)."""
        return memoryview(self._free.get())

    @property
    def free(self) -> int:
        """How many buffers are free now."""
        return self._free.qsize()

    def give_back(self, view: memoryview) -> None:
        """Return the buffer ``view`` (or any slice of it) looks into."""
        buffer = view.obj
        view.release()
        assert isinstance(buffer, mmap.mmap)
        self._free.put(buffer)


class BackgroundWriter:
    """Context manager that feeds chunks to ``consume`` in a dedicated thread.

    ``consume`` is typically a file's ``write`` or a hash's ``update``; chunks must not change while
    queued (``bytes``, or buffers of a :class:`BufferRing` handed back by ``release``). ``write()``
    hands a chunk over (blocking while ``depth`` chunks are already waiting) and re-raises, in the
    caller's thread, any error the background thread met. Leaving the ``with`` block waits until
    every chunk is consumed; leaving it with an exception stops the background thread first, so
    ``consume`` is never called after the block ends (the caller may then discard or abort what it
    writes to).

    :param consume: called with each chunk, in order, in the background thread.
    :param depth: how many chunks may wait (memory is ``depth`` x chunk size).
    :param release: called with each chunk once it is consumed, or discarded after an error or a
        cancel (so a :class:`BufferRing`'s buffers always come back).
    """

    def __init__(
        self,
        consume: Callable[[Chunk], object],
        depth: int = 4,
        release: Callable[[Any], object] | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"`depth` must be at least 1, got {depth}")
        self._consume = consume
        self._release = release
        self._queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=depth)
        self._cancelled = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="memories-writer", daemon=True)

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def write(self, chunk: Chunk) -> None:
        """Queue ``chunk`` for writing; raises the writing thread's error if it failed."""
        self._raise_if_failed()
        self._queue.put(chunk)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._cancelled.set()
        # The writing thread always drains the queue (it discards after an error or a cancel),
        # so this put cannot block forever.
        self._queue.put(None)  # the end marker
        self._thread.join()
        if exc_type is None:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self._error is None and not self._cancelled.is_set():
                    self._consume(item)
            except BaseException as err:  # handed to the caller's thread by write()/__exit__
                self._error = err
            finally:
                if self._release is not None:
                    self._release(item)

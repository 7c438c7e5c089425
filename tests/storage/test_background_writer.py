"""BackgroundWriter: order, errors handed back to the caller, nothing written after the block."""

from __future__ import annotations

import io
import threading

import pytest

from memories_provider.storage.background_writer import BackgroundWriter, BufferRing


def test_writes_every_chunk_in_order() -> None:
    out = io.BytesIO()
    chunks = [bytes([i]) * (i + 1) for i in range(200)]
    with BackgroundWriter(out.write, depth=2) as writer:
        for chunk in chunks:
            writer.write(chunk)
    assert out.getvalue() == b"".join(chunks)


class _FailingFile(io.RawIOBase):
    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def write(self, b: object) -> int:  # type: ignore[override]
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(28, "No space left on device")
        return len(b)  # type: ignore[arg-type]


def test_a_write_error_reaches_the_caller_and_later_chunks_are_not_written() -> None:
    out = _FailingFile(fail_at=3)
    with pytest.raises(OSError, match="No space left"), BackgroundWriter(out.write, depth=1) as writer:
        for _ in range(50):
            writer.write(b"x" * 10)
    assert out.calls == 3


def test_an_error_in_the_block_stops_writing_before_the_block_ends() -> None:
    written: list[bytes] = []
    writers: list[BackgroundWriter] = []
    first_write_started = threading.Event()

    class _SlowFile(io.RawIOBase):
        def write(self, b: object) -> int:  # type: ignore[override]
            # The first write is still running when the block fails: it finishes, nothing follows.
            first_write_started.set()
            assert writers[0]._cancelled.wait(30)
            written.append(bytes(b))  # type: ignore[arg-type]
            return len(written[-1])

    slow = _SlowFile()
    with pytest.raises(RuntimeError, match="body broke off"), BackgroundWriter(slow.write, depth=4) as writer:
        writers.append(writer)
        for i in range(4):
            writer.write(bytes([i]))
        assert first_write_started.wait(30)
        raise RuntimeError("body broke off")
    assert written == [b"\x00"]
    assert not writer._thread.is_alive()


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="`depth` must be at least 1"):
        BackgroundWriter(io.BytesIO().write, depth=0)


def test_ring_buffers_come_back_even_after_a_write_error() -> None:
    """Buffers queued behind a failed write are discarded and handed back: the receiver, waiting
    for a free buffer, is never stuck; it learns of the error on its next write."""
    ring = BufferRing(3, 10)
    out = _FailingFile(fail_at=2)
    with (
        pytest.raises(OSError, match="No space left"),
        BackgroundWriter(out.write, depth=1, release=ring.give_back) as writer,
    ):
        for _ in range(50):
            view = ring.take()
            view[:] = b"x" * 10
            writer.write(view)
    assert ring.free == 2  # the third is the one in the receiver's hand when the error surfaced
    assert out.calls == 2

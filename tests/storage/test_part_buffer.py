"""PartBuffer behaves like io.BytesIO for what smart-open and botocore do, and keeps its memory."""

from __future__ import annotations

import io
import random

import pytest

from memories_provider.storage.part_buffer import PartBuffer


def test_same_results_as_bytesio_for_random_operations() -> None:
    rng = random.Random(7)
    ours, ref = PartBuffer(), io.BytesIO()
    for _ in range(2000):
        op = rng.choice(["write", "write", "read", "seek", "seek_end", "truncate", "tell"])
        if op == "write":
            data = rng.randbytes(rng.randint(0, 300))
            assert ours.write(memoryview(data)) == ref.write(data)
        elif op == "read":
            n = rng.choice([-1, None, rng.randint(0, 400)])
            assert ours.read(n) == ref.read(n)
        elif op == "seek":
            pos = rng.randint(0, 1200)
            assert ours.seek(pos) == ref.seek(pos)
        elif op == "seek_end":
            assert ours.seek(0, io.SEEK_END) == ref.seek(0, io.SEEK_END)
        elif op == "truncate":
            size = rng.choice([None, 0, rng.randint(0, 600)])
            assert ours.truncate(size) == ref.truncate(size)
        assert ours.tell() == ref.tell()
        assert ours.getvalue() == ref.getvalue()


def test_memory_is_kept_across_parts() -> None:
    buf = PartBuffer()
    buf.write(b"x" * 100_000)
    capacity = len(buf._data)
    buf.seek(0)
    buf.truncate(0)
    assert buf.getvalue() == b"" and len(buf._data) == capacity
    buf.write(b"y" * 10)
    assert buf.getvalue() == b"y" * 10
    assert buf.seek(0, io.SEEK_END) == 10  # botocore's length: the part, not the old capacity
    buf.close()
    with pytest.raises(ValueError, match="closed"):
        buf.write(b"z")

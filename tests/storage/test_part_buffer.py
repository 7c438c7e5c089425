"""PartBuffer behaves like io.BytesIO for what smart-open and botocore do, and keeps its memory."""

from __future__ import annotations

import io
import random
import zlib

import pytest

from memories_provider.storage.part_buffer import PartBuffer


def test_same_results_as_bytesio_for_random_operations() -> None:
    rng = random.Random(7)
    ours, ref = PartBuffer(), io.BytesIO()
    for _ in range(2000):
        op = rng.choice(
            ["write", "write", "read", "seek", "seek_end", "truncate", "tell", "crc32", "as_body"]
        )
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
        elif op == "crc32":
            assert ours.crc32() == zlib.crc32(ref.getvalue())
        elif op == "as_body":
            body = ours.as_body()
            assert (body is None) == (ref.tell() != 0)
            assert body is None or bytes(body) == ref.getvalue()
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


def test_empty_write_past_the_end_does_not_extend_as_in_bytesio() -> None:
    ours, ref = PartBuffer(), io.BytesIO()
    for buffer in (ours, ref):
        buffer.write(b"abc")
        buffer.seek(10)
        assert buffer.write(b"") == 0
    assert ours.getvalue() == ref.getvalue() == b"abc"


def test_running_crc32_follows_appends_and_is_recomputed_after_an_overwrite() -> None:
    buf = PartBuffer()
    for piece in (b"a" * 1000, b"b" * 10, b"c" * 5000):
        buf.write(piece)
    assert buf.crc32() == zlib.crc32(b"a" * 1000 + b"b" * 10 + b"c" * 5000)
    buf.seek(3)
    buf.write(b"XYZ")  # inside what the running CRC covered
    assert buf.crc32() == zlib.crc32(buf.getvalue())
    buf.seek(0)
    buf.truncate(0)  # the next part
    buf.write(b"next part")
    assert buf.crc32() == zlib.crc32(b"next part")
    with buf.getbuffer() as view:
        assert bytes(view) == b"next part"
    buf.write(b" grows")  # the view was released: the memory may grow again
    assert buf.getvalue() == b"next part grows"


def test_as_body_is_the_content_itself_from_the_start_only() -> None:
    buf = PartBuffer()
    buf.write(b"x" * 100_000)
    buf.seek(0)
    buf.truncate(0)
    buf.write(b"part two")  # shorter than the memory kept from the first part
    assert buf.as_body() is None  # read from its position (the end) there is nothing to send
    buf.seek(0)
    body = buf.as_body()
    assert isinstance(body, bytearray) and body == b"part two"
    assert body is buf._data  # no copy
    assert buf.crc32() == zlib.crc32(b"part two")
    with buf.getbuffer():  # a view held: the spare memory cannot be cut, so no body
        buf.seek(0)
        buf.truncate(4)
        assert buf.as_body() is None
    assert buf.as_body() == b"part"
    buf.seek(0, io.SEEK_END)
    buf.write(b" three")  # writes go on after the request
    assert buf.getvalue() == b"part three" and buf.crc32() == zlib.crc32(b"part three")

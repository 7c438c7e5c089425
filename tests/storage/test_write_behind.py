"""WriteBehindFile: the same bytes as a plain file, written back window by window as it grows."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from memories_provider.storage import write_behind
from memories_provider.storage.background_writer import BufferRing
from memories_provider.storage.write_behind import WriteBehindFile, open_write_behind

pytestmark = pytest.mark.skipif(write_behind._sync_file_range is None, reason="Linux only")

WINDOW = 64 * 1024


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Small windows, and every real sync_file_range call recorded as (offset, length, flags)."""
    real = write_behind._sync_file_range
    assert real is not None
    seen: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        seen.append((offset, length, flags))
        return int(real(fd, offset, length, flags))

    monkeypatch.setattr(write_behind, "WINDOW", WINDOW)
    monkeypatch.setattr(write_behind, "LAG", 2)
    monkeypatch.setattr(write_behind, "_sync_file_range", recording)
    return seen


def _data(size: int) -> bytes:
    return os.urandom(size)


def test_bytes_are_written_and_windows_written_back_then_dropped(tmp_path: Path, calls: list[Any]) -> None:
    data = _data(10 * WINDOW + 1234)
    path = tmp_path / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
        for start in range(0, len(data), 50_000):  # writes that straddle the windows
            out.write(memoryview(data)[start : start + 50_000])
    assert path.read_bytes() == data
    started = [(offset, length) for offset, length, flags in calls if flags == 2]
    waited = [(offset, length) for offset, length, flags in calls if flags == 7]
    # Write-back started for every whole window, in order, each exactly once.
    assert started[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(started))
    assert started[-1][0] + started[-1][1] == 10 * WINDOW
    # Waited for (then dropped) only windows LAG behind the last one started.
    assert waited and waited[0][0] == 0
    assert waited[-1][0] + waited[-1][1] == 8 * WINDOW


def test_a_filesystem_that_refuses_is_written_plainly(
    tmp_path: Path, calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []

    def refusing(fd: int, offset: int, length: int, flags: int) -> int:
        refused.append(offset)
        return -1

    monkeypatch.setattr(write_behind, "_sync_file_range", refusing)
    data = _data(5 * WINDOW)
    path = tmp_path / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT)) as out:
        out.write(data)
        out.write(data)
    assert path.read_bytes() == data + data
    assert refused == [0]  # tried once, then a plain file


def test_after_a_seek_it_is_a_plain_file(tmp_path: Path, calls: list[Any]) -> None:
    path = tmp_path / "f"
    with WriteBehindFile(str(path), "wb") as out:
        out.write(b"a" * WINDOW)
        out.seek(10)
        out.write(b"b" * 3 * WINDOW)
    assert path.read_bytes() == b"a" * 10 + b"b" * 3 * WINDOW
    assert len(calls) == 1  # the first window only


# --------------------------------------------------------------------------- O_DIRECT

CHUNK = 256 * 1024


def _direct_filesystem(folder: Path) -> bool:
    fd = os.open(folder, os.O_RDONLY)
    try:
        return write_behind.filesystem_type(fd) in write_behind.DIRECT_FILESYSTEMS
    finally:
        os.close(fd)


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    """A folder on ext4 or XFS, where files are written with O_DIRECT."""
    if not _direct_filesystem(tmp_path):
        pytest.skip("the temporary folder is not on ext4 or XFS")
    return tmp_path


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def _ring_chunks(data: bytes) -> Any:
    """``data`` in page-aligned buffers of CHUNK bytes (the last one partial), as a download lends them."""
    ring = BufferRing(2, CHUNK)
    for start in range(0, len(data), CHUNK):
        view = ring.take()
        piece = data[start : start + CHUNK]
        view[: len(piece)] = piece
        yield view[: len(piece)]
        ring.give_back(view)


def test_aligned_chunks_go_direct_and_the_tail_through_the_page_cache(
    direct_dir: Path, calls: list[Any]
) -> None:
    data = _data(12 * CHUNK + 1234)
    path = direct_dir / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
        states = []
        for view in _ring_chunks(data):
            out.write(view)
            out.flush()  # the partial chunk waits in the buffer until then
            states.append(_is_direct(out.fileno()))
        os.fsync(out.fileno())
    assert path.read_bytes() == data
    assert states == [True] * 12 + [False]  # O_DIRECT until the partial chunk, then off for good
    assert calls == []  # nothing was in the page cache to write back


def test_writes_o_direct_cannot_take_turn_it_off_and_are_written_back(
    direct_dir: Path, calls: list[Any]
) -> None:
    """Read-only bytes (whose address cannot be checked), a length or an offset off the alignment:
    each turns O_DIRECT off at once; the page-cache windows are then managed from where it stopped."""
    aligned = next(_ring_chunks(_data(CHUNK)))
    for first, offset in ((bytes(aligned), 0), (aligned[:1000], 0), (aligned, CHUNK)):
        path = direct_dir / f"f{len(calls)}-{offset}"
        calls.clear()
        with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT)) as out:
            if offset:
                out.write(aligned)  # direct
                out.write(b"x")  # breaks the offset's alignment
            out.write(first)
            out.flush()
            assert not _is_direct(out.fileno())
            out.write(b"y" * 3 * WINDOW)
        expected = (bytes(aligned) + b"x" if offset else b"") + bytes(first) + b"y" * 3 * WINDOW
        assert path.read_bytes() == expected
        assert calls and calls[0][0] == (CHUNK if offset else 0)  # written back from the switch on


def test_small_writes_through_the_buffer_are_exact(direct_dir: Path) -> None:
    """Rows written one by one (an export): buffered, then O_DIRECT off at the first flush."""
    rows = [json.dumps({"i": i, "text": "x" * (i % 97)}).encode() + b"\n" for i in range(20_000)]
    path = direct_dir / "rows.jsonl"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
        for row in rows:
            out.write(row)
    assert path.read_bytes() == b"".join(rows)


def test_any_mix_of_writes_gives_the_same_bytes(direct_dir: Path) -> None:
    rng = random.Random(7)
    for trial in range(20):
        ring = BufferRing(1, 4 * CHUNK)
        expected = bytearray()
        path = direct_dir / f"mix-{trial}"
        with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
            for _ in range(rng.randrange(1, 12)):
                kind = rng.choice(["aligned", "aligned", "odd-length", "bytes", "offset-view"])
                size = rng.choice([4096, CHUNK, 3 * CHUNK]) if kind == "aligned" else rng.randrange(1, CHUNK)
                view = ring.take()
                view[:size] = rng.randbytes(size)
                piece = {"aligned": view[:size], "odd-length": view[:size], "bytes": bytes(view[:size])}.get(
                    kind, view[1 : size + 1]
                )
                out.write(piece)
                expected += piece
                del piece
                ring.give_back(view)
        assert path.read_bytes() == expected, trial


def test_an_empty_write_leaves_o_direct_on(direct_dir: Path) -> None:
    aligned = next(_ring_chunks(_data(CHUNK)))
    path = direct_dir / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
        for piece in (aligned, aligned[:0], b"", aligned):
            out.write(piece)
        out.flush()
        assert out.raw.direct and _is_direct(out.fileno())
    assert path.read_bytes() == bytes(aligned) * 2


def test_a_seek_turns_o_direct_off(direct_dir: Path) -> None:
    aligned = next(_ring_chunks(_data(CHUNK)))
    path = direct_dir / "f"
    with WriteBehindFile(str(path), "wb") as out:
        out.write(aligned)
        assert out.direct and _is_direct(out.fileno())
        out.seek(10)
        assert not out.direct and not _is_direct(out.fileno())
        out.write(b"b" * 10)
    assert path.read_bytes() == bytes(aligned[:10]) + b"b" * 10 + bytes(aligned[20:])


def test_other_filesystems_are_written_through_the_page_cache() -> None:
    """tmpfs refuses O_DIRECT, NFS would make each write a round trip: only ext4 and XFS use it."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or _direct_filesystem(shm):
        pytest.skip("no tmpfs at /dev/shm")
    data = _data(4 * CHUNK + 5)
    path = shm / f"write-behind-test-{os.getpid()}"
    try:
        with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
            assert not out.raw.direct and not _is_direct(out.fileno())
            for view in _ring_chunks(data):
                out.write(view)
        assert path.read_bytes() == data
    finally:
        path.unlink(missing_ok=True)


def test_ring_buffers_start_on_a_page_boundary() -> None:
    ring = BufferRing(4, 1000)
    views = [ring.take() for _ in range(4)]
    assert all(write_behind._aligned_address(view) for view in views)

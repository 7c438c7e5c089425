"""MemoriesUploadOperator's ``source`` when it is no plain, still file: special files, files that
change between their look-up and their last byte sent, hostile names."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_upload import VIDEO, Store, _TaskInstance, run

from memories_provider.client.multipart import SourceSizeError
from memories_provider.operators.upload import MemoriesUploadOperator


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    bound: list[socket.socket] = []

    def bind(path: Path) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        bound.append(sock)

    yield bind
    for sock in bound:
        sock.close()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path, _: os.mkfifo(path), "a FIFO (named pipe)"),
        (lambda path, bind: bind(path), "a socket"),
        (lambda path, _: path.symlink_to("/dev/zero"), "a character device"),
        (lambda path, _: path.symlink_to("/dev/null"), "a character device"),
        (
            lambda path, _: (os.mkfifo(path.with_name("pipe")), path.symlink_to(path.with_name("pipe"))),
            "a FIFO",
        ),
    ],
    ids=["fifo", "socket", "dev-zero", "dev-null", "link-to-fifo"],
)
def test_a_special_file_is_refused_as_not_a_regular_file(
    emu: Any, tmp_path: Path, unix_socket: Callable[[Path], None], make: Any, kind: str
) -> None:
    # It was refused as "does not exist" (the probe's None for anything but a regular file): a
    # FIFO the user can see with ls, named as missing. Only stat is used: opening a FIFO blocks.
    source = tmp_path / "clip.mp4"
    make(source, unix_socket)
    with pytest.raises(
        ValueError, match=re.escape(f"`source` '{source}' is {kind}") + ".*not a regular file"
    ):
        run(source=str(source))
    assert emu.control.request_log() == []


# ---------------------------------------------------------------------------- sources that change


MIB = 1024 * 1024


@pytest.fixture
def while_sending(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """``while_sending(action)``: run ``action`` (another process writing the source, say) once
    the upload has handed the first block of the source to the HTTP library, before the next."""
    from memories_provider.operators import upload

    def install(action: Callable[[], None]) -> None:
        done = [False]

        class Interrupted(upload.TransferProgress):
            def update(self, sent: int, *, final: bool = False) -> None:
                if not done[0] and sent > 0 and not final:
                    done[0] = True
                    action()
                super().update(sent, final=final)

        monkeypatch.setattr(upload, "TransferProgress", Interrupted)

    return install


def _context() -> dict[str, Any]:
    return {"ti": _TaskInstance(), "task_state_store": Store()}


def _run(context: dict[str, Any], **kwargs: Any) -> str:
    return MemoriesUploadOperator(task_id="upload", **kwargs).execute(context)


def test_a_source_that_grows_while_sent_is_not_accepted_and_its_record_is_dropped(
    emu: Any, tmp_path: Path, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # A file still being written by another process: the body sends the size looked up and stops
    # before its closing boundary when more follows, so the service cannot accept it. The record
    # of the attempt was kept ("unknown whether accepted"), as for a dropped answer, although
    # the body never ended: a retry with no version mark to compare (an http(s) source without
    # ETag or Last-Modified) went looking for a lost upload that cannot exist.
    source = tmp_path / "recording.mp4"
    source.write_bytes(VIDEO * 300)  # > 1 MiB: more than one block
    while_sending(lambda: source.open("ab").write(b"more frames"))
    context = _context()
    with pytest.raises(SourceSizeError, match="longer than its given size"):
        _run(context, source=str(source))
    assert emu.control.videos() == []
    assert context["task_state_store"] == {}

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
from test_upload import run


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

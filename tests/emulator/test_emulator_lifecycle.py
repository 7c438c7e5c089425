"""Starting and stopping: a start that fails leaves nothing behind and says why; a stop or a reset
is not held by a callback receiver that never answers."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from memories_provider.emulator import run_emulator
from memories_provider.emulator.__main__ import main


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Any:
    """Temp dirs the emulator makes land here, where a leftover can be seen."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_run_emulator_on_a_busy_port_raises_and_leaves_no_temp_dir(busy_port, private_tmp):
    with pytest.raises(OSError, match="address already in use"), run_emulator(port=busy_port):
        pass  # pragma: no cover - never reached
    assert list(private_tmp.iterdir()) == []


def test_cli_on_a_busy_port_says_so_and_leaves_no_temp_dir(busy_port, private_tmp, capsys):
    assert main(["--port", str(busy_port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{busy_port}" in err and "Traceback" not in err
    assert list(private_tmp.iterdir()) == []


def test_cli_refuses_a_data_dir_it_cannot_create(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--port", "0", "--data-dir", str(blocker / "store")])
    assert exc.value.code == 2 and "--data-dir: cannot create" in capsys.readouterr().err


def _upload_with_callback(emu: Any, url: str) -> None:
    resp = requests.post(
        f"{emu.v1_url}/upload",
        headers={"Authorization": emu.api_key},
        files={"file": ("a.mp4", b"\x00video" * 10, "video/mp4")},
        data={"callback": url},
        timeout=30,
    )
    assert resp.json()["code"] == "0000"


# The callback's own timeout is 30 s: without the cut, the connection stays open that long.
_BEFORE_CALLBACK_TIMEOUT = 25


def test_stop_cuts_a_callback_the_receiver_never_answers(silent_receiver):
    running = run_emulator(rate_limits=False)
    emu = running.__enter__()
    try:
        _upload_with_callback(emu, silent_receiver.url)
        assert emu.control.videos()[0]["status"] == "PARSE"  # parse delay 0: the callback goes out
        assert silent_receiver.got.wait(30)
    finally:
        stopping = threading.Thread(target=running.__exit__, args=(None, None, None))
        stopping.start()
    assert silent_receiver.closed.wait(_BEFORE_CALLBACK_TIMEOUT)
    stopping.join()


def test_reset_cuts_the_previous_tests_callbacks(memories_emulator, silent_receiver):
    _upload_with_callback(memories_emulator, silent_receiver.url)
    assert memories_emulator.control.videos()[0]["status"] == "PARSE"
    assert silent_receiver.got.wait(30)
    memories_emulator.control.reset()
    assert silent_receiver.closed.wait(_BEFORE_CALLBACK_TIMEOUT)
    assert memories_emulator.control.callbacks() == []

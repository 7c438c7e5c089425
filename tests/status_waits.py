"""What the tests of status waits (sensor, export) share: changing a video once the wait has looked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def after_first_status_check(emu: Any, action: Callable[[], None], *, timeout: float = 30) -> Iterator[None]:
    """Run ``action`` in a thread once the emulator has answered its first ``list_videos`` request.

    So the wait under test sees the video as it was set up before it sees the change. The thread
    polls the emulator's request log (it waits for an event, not for a guessed duration); leaving
    the ``with`` block joins it, and an error the action raised is raised there. Answered, not only
    received: the emulator logs a request as it arrives, before it reads the video's status, so an
    action run at the request's arrival could be what that first answer shows.
    """
    errors: list[BaseException] = []

    def answered() -> bool:
        return any(r["http_status"] is not None for r in emu.control.request_log("list_videos"))

    def act() -> None:
        deadline = time.monotonic() + timeout
        while not answered() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            action()
        except BaseException as error:  # handed to the test's thread
            errors.append(error)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout)
    if errors:
        raise errors[0]

"""Running the emulator: on a background thread with its own event loop, or in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from memories_provider.emulator.app import Emulator
from memories_provider.emulator.config import (
    DEFAULT_API_KEY,
    EmulatorConfig,
    check_config,
    resolve_rate_limits,
    server_defaults,
)
from memories_provider.emulator.control import EmulatorHandle

log = logging.getLogger(__name__)


def build_config(
    *, api_keys: list[str] | None = None, rate_limits: Any = True, **settings: Any
) -> EmulatorConfig:
    """An :class:`EmulatorConfig` from keyword settings (``rate_limits`` as in ``configure``).

    :raises ValueError: a setting the emulator cannot run with (named, with its rule).
    """
    config = server_defaults(**settings)
    config.rate_limits = resolve_rate_limits(rate_limits)
    if api_keys:
        config.api_keys = list(api_keys)
    check_config(config)
    return config


async def _start_site(emulator: Emulator, host: str, port: int) -> tuple[web.AppRunner, int]:
    # A 4 MiB read buffer lets the multipart reader hand out ~1 MiB chunks instead of 64 KiB ones.
    runner = web.AppRunner(
        emulator.make_app(), access_log=None, handle_signals=False, read_bufsize=4 * 1024 * 1024
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=256)
    try:
        await site.start()
    except BaseException:  # e.g. the port is in use: close what setup opened (its HTTP session)
        await runner.cleanup()
        raise
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, int(bound)


class EmulatorThread:
    """An emulator serving from a daemon thread (what the fixture and ``run_emulator`` use).

    :param host: interface to bind.
    :param port: port (0 = any free port).
    :param data_dir: where uploads are kept (a temp dir, removed on stop, when None).
    :param config: behaviour settings.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        config: EmulatorConfig | None = None,
    ) -> None:
        self.host = host
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="memories-emulator-"))
        self.config = config or server_defaults()
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> EmulatorHandle:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="memories-emulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            if self._owns_dir:  # nothing was served; leave nothing behind
                shutil.rmtree(self.data_dir, ignore_errors=True)
            raise self._error
        return EmulatorHandle(f"http://{self.host}:{self.port}", self.config.api_keys[0], self.data_dir)

    @contextlib.contextmanager
    def serving(self) -> Iterator[EmulatorHandle]:
        """Serve for the ``with`` block: started, then its control client closed and the thread stopped."""
        handle = self.start()
        try:
            yield handle
        finally:
            handle.control.close()
            self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            emulator = Emulator(self.data_dir, self.config)
            self._runner, self.port = loop.run_until_complete(_start_site(emulator, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving, join the thread and remove a temp data dir."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.contextmanager
def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: str | Path | None = None,
    api_keys: list[str] | None = None,
    rate_limits: bool | dict[str, tuple[int, float] | None] = True,
    **settings: Any,
) -> Iterator[EmulatorHandle]:
    """Run an emulator in this process for the ``with`` block.

    Spec rate limits are ON by default here (``rate_limits=False`` for speed). Other keyword
    arguments are :class:`EmulatorConfig` fields (``parse_delay``, ``indexing_cap``, ``credits``, ...).

    >>> with run_emulator(parse_delay=5) as emu:  # doctest: +SKIP
    ...     os.environ["AIRFLOW_CONN_MEMORIES_DEFAULT"] = emu.conn_uri
    """
    config = build_config(api_keys=api_keys or [DEFAULT_API_KEY], rate_limits=rate_limits, **settings)
    with EmulatorThread(host, port, data_dir, config).serving() as handle:
        yield handle


def serve_forever(host: str, port: int, data_dir: Path, config: EmulatorConfig, announce: Any) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; ``announce(port)`` runs once the port is bound."""

    async def main() -> None:
        emulator = Emulator(data_dir, config)
        runner, bound = await _start_site(emulator, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        announce(bound)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())

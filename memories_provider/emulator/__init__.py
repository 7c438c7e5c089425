"""A local emulator of the memories.ai HTTP API, for tests, the demo and users' own DAG tests.

Three ways to run it:

* ``python -m memories_provider.emulator --port 8787`` (foreground; prints ``AIRFLOW_CONN_MEMORIES_DEFAULT``),
* ``with run_emulator(parse_delay=5) as emu: ...`` (in-process, background thread),
* the ``memories_emulator`` pytest fixture (session server, reset before each test).

It is an independent reading of ``memories-api.md`` and deliberately does not import the client.
Where the service makes a client's life harder, it does too: for instance ``list_videos``'
metadata filters (``tag``, ``camera_model``, ``datetime_taken``, ``latitude``/``longitude``) match
only ``PARSE`` videos, and tags and capture metadata are absent from list rows and ``get_metadata``
until ``PARSE`` (never shown for a ``FAILED`` video) — so a video still ``UNPARSE`` cannot be found
by its tags. ``metadata_before_parse=True`` (``configure()`` or ``--metadata-before-parse``)
restores the old, lenient emulator for tests that relied on it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memories_provider.emulator.config import (
        DEFAULT_API_KEY,
        ENDPOINTS,
        SPEC_RATE_LIMITS,
        EmulatorConfig,
    )
    from memories_provider.emulator.control import EmulatorControl, EmulatorHandle
    from memories_provider.emulator.process import emulator_process
    from memories_provider.emulator.server import EmulatorThread, run_emulator

# Lazy exports: the pytest plugin lives in this package and must not pull in aiohttp/requests
# for test runs that never start an emulator.
_EXPORTS = {
    "DEFAULT_API_KEY": "config",
    "ENDPOINTS": "config",
    "SPEC_RATE_LIMITS": "config",
    "EmulatorConfig": "config",
    "EmulatorControl": "control",
    "EmulatorHandle": "control",
    "emulator_process": "process",
    "EmulatorThread": "server",
    "run_emulator": "server",
}

__all__ = [
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "SPEC_RATE_LIMITS",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorHandle",
    "EmulatorThread",
    "emulator_process",
    "run_emulator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

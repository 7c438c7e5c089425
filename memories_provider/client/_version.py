"""The User-Agent sent with every request, built once at import time (not per call)."""

from __future__ import annotations

import sys

from memories_provider import __version__

USER_AGENT = (
    f"airflow-provider-memories/{__version__} python/{sys.version_info.major}.{sys.version_info.minor}"
)

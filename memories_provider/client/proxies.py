"""The proxy for a request, read from the environment by requests' rules, for the async client.

The sync client leaves it to requests. aiohttp reads the same variables differently: it ignores
``ALL_PROXY``, a network in ``NO_PROXY`` (``10.0.0.0/8``, common in corporate lists) and a proxy
given without a scheme, so a trigger's calls went through a proxy (or directly) where a task's
did not. This module reads them as requests does, without importing it (the async client must
import without requests).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.request
from urllib.parse import urlsplit


def _variable(name: str) -> str | None:
    """An environment variable, the lower-case spelling first (as curl, wget and requests)."""
    return os.environ.get(name) or os.environ.get(name.upper())


def _in_network(address: str, entry: str) -> bool:
    """Whether IPv4 ``address`` is in ``entry`` when that is an IPv4 network with a 1-32 mask."""
    base, slash, mask = entry.partition("/")
    if not slash or not mask.isdigit() or not 1 <= int(mask) <= 32:
        return False
    try:
        socket.inet_aton(base)
        return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(entry, strict=False)
    except (OSError, ValueError):
        return False


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def bypassed(url: str) -> bool:
    """Whether ``NO_PROXY`` (or the platform's own list) says to reach ``url`` directly."""
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        return True
    no_proxy = _variable("no_proxy")
    if no_proxy:
        entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
        if _is_ipv4(host):
            if any(_in_network(host, entry) if "/" in entry else host == entry for entry in entries):
                return True
        else:
            with_port = f"{host}:{parts.port}" if parts.port else host
            for entry in (entry.lstrip(".") for entry in entries):
                if host == entry or with_port == entry:
                    return True
                if host.endswith("." + entry) or with_port.endswith("." + entry):
                    return True
    try:
        return bool(urllib.request.proxy_bypass(host))
    except (TypeError, socket.gaierror):
        return False


def env_proxy(url: str) -> str | None:
    """The proxy URL (with any user-info) requests would send ``url`` through, or ``None``."""
    if bypassed(url):
        return None
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    keys = [parts.scheme, "all"]
    if parts.hostname is not None:
        keys = [f"{parts.scheme}://{parts.hostname}", parts.scheme, f"all://{parts.hostname}", "all"]
    chosen = next((proxies[key] for key in keys if proxies.get(key)), None)
    if not chosen:
        return None
    # requests' prepend_scheme_if_needed: "proxy.corp:3128" is an http proxy.
    return chosen if "://" in chosen else f"http://{chosen}"


__all__ = ["bypassed", "env_proxy"]

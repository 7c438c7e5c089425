"""Which servers both clients trust: one TLS context, the same for ``requests`` and ``aiohttp``.

Left alone, the two libraries trust different stores: requests trusts certifi's bundle, or the
file in ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``; aiohttp trusts the system store (OpenSSL's
default paths, ``SSL_CERT_FILE``/``SSL_CERT_DIR``) and ignores both variables. Behind a
TLS-inspecting proxy or with an internal gateway, a corporate CA set for one reached the other
too late: the worker's calls went through and the triggerer's failed the handshake (or the reverse).

Both clients now verify against :func:`ssl_context`: the connection's CA bundle if it names one,
else ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (each replaces the default store, as requests
reads them), else the system store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured) together with
certifi's bundle. Certificates are always verified, host names always checked: there is no
switch to turn verification off (give the CA that signed the server's certificate instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import threading

import certifi

from memories_provider.client.errors import MemoriesInvalidArgumentError

#: Environment variables naming a CA bundle that replaces the default store (requests' order).
CA_BUNDLE_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
#: OpenSSL's variables for its default store (read when the system store is loaded).
_OPENSSL_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")

TrustKey = tuple[str | None, ...]

#: key -> (the bundle's file signature when last looked at, its content's digest, the context).
_CONTEXTS: dict[TrustKey, tuple[tuple[int, ...] | None, bytes | None, ssl.SSLContext]] = {}
_LOCK = threading.Lock()
#: key -> the signature of a version of its bundle that held no usable certificates, while a
#: context had been built from an earlier one (kept meanwhile, see :func:`ssl_context`).
_UNUSABLE: dict[TrustKey, tuple[int, ...] | None] = {}
_NONE = object()
log = logging.getLogger("memories_provider.client")


def trust_key(ca_bundle: str | None) -> TrustKey:
    """What decides the trusted certificates now: the bundle given and the environment's."""
    return (ca_bundle, *(os.environ.get(name) or None for name in (*CA_BUNDLE_ENV, *_OPENSSL_ENV)))


def _source(key: TrustKey) -> tuple[str | None, str]:
    """The bundle that replaces the default store (or ``None``) and where it was named."""
    ca_bundle, *env = key
    if ca_bundle:
        return ca_bundle, "`ca_bundle`"
    for name, value in zip(CA_BUNDLE_ENV, env[: len(CA_BUNDLE_ENV)], strict=True):
        if value:
            return value, f"the CA bundle in {name}"
    return None, ""


def _build(key: TrustKey) -> ssl.SSLContext:
    bundle, where = _source(key)
    context = ssl.create_default_context()  # system store; verification and host names on
    if bundle is None:
        context.load_verify_locations(cafile=certifi.where())
        return context
    try:  # the bundle alone, as requests reads it
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise MemoriesInvalidArgumentError(
            f"{where} {bundle!r} cannot be used on this machine ({reason}): it must be a file of "
            "PEM certificates (or a folder of them prepared by c_rehash) readable here"
        ) from None


def _signature(key: TrustKey) -> tuple[int, ...] | None:
    """What tells the bundle's file (or folder) apart once replaced on disk: a CA rotated in place
    (same path, new certificates) is read again, as requests reads its bundle for each new
    connection. ``None`` without a bundle, or when it cannot be looked at (building says why)."""
    bundle, _ = _source(key)
    if bundle is None:
        return None
    try:
        stat = os.stat(bundle)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _digest(key: TrustKey) -> bytes | None:
    """The digest of the bundle's file, or ``None`` (no bundle, a folder, a file not readable)."""
    bundle, _ = _source(key)
    if bundle is None or os.path.isdir(bundle):
        return None
    try:
        with open(bundle, "rb") as file:
            return hashlib.sha256(file.read()).digest()
    except OSError:
        return None


def is_cached(key: TrustKey) -> bool:
    """Whether :func:`ssl_context` for ``key`` is built already (no file to read)."""
    cached = _CONTEXTS.get(key)
    if cached is None:
        return False
    signature = _signature(key)
    return cached[0] == signature or _UNUSABLE.get(key, _NONE) == signature


def ssl_context(key: TrustKey) -> ssl.SSLContext:
    """The TLS context both clients verify servers with, for ``key`` (see :func:`trust_key`).

    Built once per process for each key, and again once the bundle's file is replaced by other
    certificates (loading a store reads files: an async caller builds a new one off its event loop,
    see :func:`is_cached`); a file written again with the same content keeps its context, and
    one that holds no usable certificate once a context was built from it (caught mid-rewrite)
    keeps that context until it holds certificates again (a warning says so).

    :raises MemoriesInvalidArgumentError: when the bundle named cannot be read or holds no
        certificate, naming where it was given.
    """
    signature = _signature(key)
    cached = _CONTEXTS.get(key)
    if cached is None or cached[0] != signature:
        if cached is not None and _UNUSABLE.get(key, _NONE) == signature:
            return cached[2]  # still the version that could not be read: not read again
        with _LOCK:
            cached = _CONTEXTS.get(key)
            if cached is None or cached[0] != signature:
                digest = _digest(key)
                if cached is not None and digest is not None and digest == cached[1]:
                    # Written again as it was (configuration management, a touch): the same
                    # context, so the pools and sessions verified with it are kept.
                    cached = _CONTEXTS[key] = (signature, digest, cached[2])
                else:
                    try:
                        context = _build(key)
                    except MemoriesInvalidArgumentError as err:
                        if cached is None:
                            raise
                        # A file being written in place (truncated, then filled) or replaced by
                        # a remove and a write: for a moment it holds no certificate. The context
                        # read before stays until the file holds certificates again, as a client
                        # that loaded it once kept it; failing the request failed every deferred
                        # wait of the triggerer's poller (not a transient error).
                        if _UNUSABLE.get(key, _NONE) != signature:
                            log.warning("%s; still verifying with the certificates read before", err)
                        _UNUSABLE[key] = signature
                        return cached[2]
                    cached = _CONTEXTS[key] = (signature, digest, context)
                _UNUSABLE.pop(key, None)
    return cached[2]


# The environment's context is built at import (as aiohttp builds its own), which triggers do
# off the event loop: their first request reads no file. A bundle that cannot be read is said
# by the first https request, not by the import (a DAG file importing the provider still parses).
with contextlib.suppress(MemoriesInvalidArgumentError):
    ssl_context(trust_key(None))

__all__ = ["CA_BUNDLE_ENV", "TrustKey", "is_cached", "ssl_context", "trust_key"]

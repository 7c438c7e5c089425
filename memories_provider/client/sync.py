"""Synchronous memories.ai client on ``requests``: one pooled session, streamed uploads and downloads."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import ssl
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
import urllib3
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from memories_provider.client import core, protocol, proxies, tls
from memories_provider.client._upload_stream import open_upload_stream
from memories_provider.client.deadline import request_timeouts, time_left, within
from memories_provider.client.errors import (
    MemoriesConnectionError,
    MemoriesProxyError,
    MemoriesTimeoutError,
)
from memories_provider.client.metadata import UploadMetadata
from memories_provider.client.models import Transcript, TranscriptKind, UploadResult, Video, VideoPage
from memories_provider.client.multipart import BLOCK_SIZE, MultipartBody
from memories_provider.client.upload import VideoUpload, upload_arguments, with_parameters_of
from memories_provider.redaction import NO_SECRETS, Redactor

if TYPE_CHECKING:
    from typing_extensions import Unpack


class _Urllib3Redaction(logging.Filter):
    """Redacts the secrets of every live sync client, and URL credentials, from urllib3's log records.

    urllib3 logs what the server sent when it cannot parse it (``Failed to parse headers ...,
    unparsed data: 'Authorization sk-...'``, a WARNING with its traceback) and, at DEBUG, each
    request line it sent. A record that holds a secret is rewritten: its message and traceback,
    redacted, become its text (no ``exc_info`` left to format again).
    """

    def __init__(self) -> None:
        super().__init__()
        self.redactors: weakref.WeakSet[Redactor] = weakref.WeakSet()

    def _live(self) -> list[Redactor]:
        """The live clients' redactors. A client made in another thread meanwhile changes the set
        under the look ("RuntimeError: Set changed size during iteration"): look again."""
        while True:
            try:
                return list(self.redactors)
            except RuntimeError:
                continue

    def filter(self, record: logging.LogRecord) -> bool:
        # URL credentials whatever they are (NO_SECRETS): at DEBUG urllib3 logs each request line,
        # the query of a presigned URL a download was redirected to included.
        redactors = [*self._live(), NO_SECRETS]
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:  # a malformed record: logging reports it itself, a filter must not raise
            return True
        shown = text
        for redactor in redactors:
            shown = redactor.redact(shown)
        if shown != text:
            record.msg, record.args, record.exc_info, record.exc_text = shown, None, None, None
        return True


_URLLIB3_REDACTION = _Urllib3Redaction()
for _name in ("urllib3.connection", "urllib3.connectionpool", "urllib3.response"):
    logging.getLogger(_name).addFilter(_URLLIB3_REDACTION)


class _Wire(threading.local):
    """Whether the request this thread is sending has written a byte to a server (its headers)."""

    sent = False


_WIRE = _Wire()


def _never_dumped(cls: type[Any]) -> type[Any]:
    """``cls`` (a urllib3 connection class) whose ``debuglevel`` is always 0, and which notes in
    :data:`_WIRE` when a request's first bytes go out.

    ``http.client`` prints each request and answer, headers included, to stdout when
    ``HTTPConnection.debuglevel`` is set (the requests docs' recipe for debugging): our
    ``Authorization`` header and a server's echo of it, on no logger that any masker or filter
    sees. The client's connections never dump; urllib3's DEBUG log (filtered above) still shows
    each request line.

    The note tells a failure before the request (a TLS handshake that never ends, which urllib3
    reports as a *read* timeout, a proxy's tunnel refused) from one after it: only the first is
    certainly not accepted, and may be sent again (an upload included).
    """

    class Connection(cls):  # type: ignore[valid-type, misc]
        debuglevel = property(lambda self: 0, lambda self, value: None)
        _memories_connecting = False

        def connect(self) -> None:
            self._memories_connecting = True  # a proxy tunnel's CONNECT is not the request
            try:
                super().connect()
            finally:
                self._memories_connecting = False

        def send(self, data: Any) -> None:
            if self.sock is None and self.auto_open:
                self.connect()
            if not self._memories_connecting:
                _WIRE.sent = True
            super().send(data)

        def getresponse(self) -> Any:
            """The answer's status line and headers, within the read timeout in all (shrunk to
            the caller's deadline when the request started): the socket's timeout bounds each
            read alone, which headers that trickle in a byte at a time pass every time. At the
            bound the socket is shut for reading, and the wait ends as a read timeout."""
            bound = self.timeout if isinstance(self.timeout, (int, float)) else None
            sock = self.sock
            # https through an https proxy: urllib3's SSLTransport (TLS in TLS), over the socket.
            while sock is not None and not isinstance(sock, socket.socket):
                sock = getattr(sock, "socket", None)
            if bound is None or sock is None:
                return super().getresponse()
            lock, state = threading.Lock(), {"waiting": True, "cut": False}

            def cut() -> None:
                with lock:
                    if state["waiting"]:
                        state["cut"] = True
                        # Reading only: what was sent (an upload's last bytes) still reaches
                        # the server. socket.socket's own shutdown: an SSLSocket's would drop its
                        # TLS state under the reading thread.
                        with contextlib.suppress(OSError):
                            socket.socket.shutdown(sock, socket.SHUT_RD)

            def timed_out() -> TimeoutError:
                # The cut closed the connection (http.client does on a connection error), which
                # forgets the proxy tunnel it went through: urllib3 would call the read timeout
                # 'Unable to connect to proxy', a connection error, not the timeout it is.
                if hasattr(self, "_has_connected_to_proxy"):
                    self._has_connected_to_proxy = bool(getattr(self, "proxy", None))
                return TimeoutError(f"the answer's headers did not arrive within {bound:g} s")

            timer = threading.Timer(max(bound, 0.0), cut)
            timer.daemon = True
            timer.start()
            try:
                response = super().getresponse()
            except Exception as exc:
                if state["cut"]:
                    raise timed_out() from exc
                raise
            finally:
                with lock:
                    state["waiting"] = False
                timer.cancel()
            if state["cut"]:  # cut as the headers were done: the body cannot be read
                response.close()
                raise timed_out()
            return response

    Connection.__name__ = Connection.__qualname__ = cls.__name__
    return Connection


def _quiet_pool(pool: type[Any]) -> type[Any]:
    """``pool`` over :func:`_never_dumped` connections, under the same name (urllib3's errors name
    the pool: ``HTTPSConnectionPool(host=...): Max retries exceeded``)."""
    return type(pool.__name__, (pool,), {"ConnectionCls": _never_dumped(pool.ConnectionCls)})


_QUIET_POOLS = {
    "http": _quiet_pool(urllib3.HTTPConnectionPool),
    "https": _quiet_pool(urllib3.HTTPSConnectionPool),
}
#: Each pool class a manager uses -> its quiet subclass (made once), the quiet ones to themselves.
_QUIETED: dict[type[Any], type[Any]] = {
    urllib3.HTTPConnectionPool: _QUIET_POOLS["http"],
    urllib3.HTTPSConnectionPool: _QUIET_POOLS["https"],
    **{quiet: quiet for quiet in _QUIET_POOLS.values()},
}
_QUIETED_LOCK = threading.Lock()


def _quiet_pools(pools: dict[str, type[Any]]) -> dict[str, type[Any]]:
    """A manager's pool classes made quiet, each keeping its own kind: a SOCKS proxy manager's
    (requests[socks]) still connect through the proxy, with the options it hands them."""
    with _QUIETED_LOCK:
        for pool in pools.values():
            if pool not in _QUIETED:
                quiet = _quiet_pool(pool)
                _QUIETED[pool] = _QUIETED[quiet] = quiet
        return {scheme: _QUIETED[pool] for scheme, pool in pools.items()}


class _LargeBlockAdapter(HTTPAdapter):
    """Sends request bodies in 1 MiB blocks (urllib3's default 16 KiB caps upload throughput),
    over connections that never print the wire (:func:`_never_dumped`), verifying https servers
    against the client's TLS context (:mod:`~memories_provider.client.tls`), the async client's
    too, not requests' own choice of store."""

    def __init__(self, trust: tls.TrustKey, **kwargs: Any) -> None:
        self._trust = trust
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params: Any
        pool_kwargs: Any
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            # requests' verify (REQUESTS_CA_BUNDLE included) is already in the context.
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
            pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
            pool_kwargs["ssl_context"] = tls.ssl_context(self._trust)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The pool's ssl_context decides what is trusted; a bundle set here would be added to it.
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = None
        else:
            super().cert_verify(conn, url, verify, cert)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.setdefault("blocksize", BLOCK_SIZE)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _QUIET_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if proxy.lower().startswith("https:"):
            # An https proxy's certificate is verified with the client's context too, as the async
            # client does: urllib3 checked it against the system store alone (the pools' bundle is
            # cleared for their context), so a proxy the connection's ca_bundle or REQUESTS_CA_BUNDLE
            # trusts was refused by tasks and trusted by triggers. A bundle rotated since the
            # manager was made gives it a new one.
            context = tls.ssl_context(self._trust)
            cached = self.proxy_manager.get(proxy)
            if cached is not None and cached.proxy_ssl_context is not context:
                self.proxy_manager.pop(proxy).clear()
            proxy_kwargs["proxy_ssl_context"] = context
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # Not _QUIET_POOLS: a SOCKS proxy manager's pools connect through the proxy, and plain
        # ones refused its `_socks_options` (a bare TypeError for every call through it).
        manager.pool_classes_by_scheme = _quiet_pools(manager.pool_classes_by_scheme)
        return manager


class _KeyAuth(requests.auth.AuthBase):
    """Raw key in ``Authorization`` (no ``Bearer``). Set as session auth so ``.netrc`` never overrides it."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._api_key
        return request

    def __repr__(self) -> str:
        return "_KeyAuth(***)"


class _Session(requests.Session):
    """A session that refuses to follow a redirect :func:`protocol.redirect_refusal` refuses
    (the same refusals, with the same errors, as the async client's), and follows at most
    :data:`protocol.MAX_REDIRECTS`."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self.max_redirects = protocol.MAX_REDIRECTS

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        error = protocol.redirect_refusal(resp.status_code, target, self._redactor)
        if error is not None:
            resp.close()
            raise error
        return target


def _never_connected(exc: BaseException) -> bool:
    """True when the request certainly never reached the server (refused, DNS, connect timeout, TLS)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(
            item,
            (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
                ConnectionRefusedError,
                # The server's certificate refused in the handshake, before any byte of the
                # request (aiohttp's ClientConnectorCertificateError says the same).
                ssl.SSLCertVerificationError,
            ),
        ):
            return True
        if isinstance(item, BaseException):
            stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *item.args])
    return False


def _transport_error(
    exc: BaseException, endpoint: str, redactor: Redactor, *, unsent: bool = False
) -> MemoriesConnectionError:
    """Map a requests/urllib3 transport exception to the client's hierarchy (its text redacted).

    ``exc`` itself, which the caller chains as the new error's ``__cause__``, is redacted in place
    (see :func:`core.scrub_chain`).

    :param unsent: no byte of the request was written (see :data:`_WIRE`): whatever urllib3 calls
        it, the request was not sent.
    """
    core.scrub_chain(exc, redactor)
    text = redactor.redact(str(exc))
    timeout = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or (unsent and isinstance(exc, timeout)):
        return MemoriesTimeoutError(f"timed out connecting: {text}", endpoint=endpoint, request_sent=False)
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return MemoriesTimeoutError(f"timed out waiting for the response: {text}", endpoint=endpoint)
    sent = not unsent and not _never_connected(exc)
    return MemoriesConnectionError(f"connection failed: {text}", endpoint=endpoint, request_sent=sent)


#: http.client's error for a tunnel the proxy refused (urllib3 wraps it in a ProxyError).
_TUNNEL_REFUSED = re.compile(r"^Tunnel connection failed: (\d{3})\b")


def _tunnel_status(exc: BaseException) -> int | None:
    """The status the proxy answered a tunnel (``CONNECT``) with, when it refused it."""
    for item in core.chained_exceptions(exc):
        if isinstance(item, OSError) and not isinstance(item, urllib3.exceptions.HTTPError):
            found = _TUNNEL_REFUSED.match(str(item))
            if found:
                return int(found.group(1))
    return None


def _socks_unavailable(url: str, endpoint: str) -> MemoriesProxyError | None:
    """The error for a SOCKS proxy named by the environment (``ALL_PROXY=socks5://…``) without
    PySocks, which requests needs for it ('Missing dependencies for SOCKS support', a connection
    error retried ``max_retries`` times though nothing can change between tries)."""
    chosen = proxies.env_proxy(url)
    if chosen is None or urlsplit(chosen).scheme in ("http", "https"):
        return None
    shown = core.shown_proxy(chosen)
    return MemoriesProxyError(
        f"the proxy {shown} the environment names for {urlsplit(url).hostname} (HTTPS_PROXY, HTTP_PROXY "
        f"or ALL_PROXY) is a {urlsplit(chosen).scheme} proxy, which requests reaches only with PySocks "
        "(pip install 'requests[socks]'); nothing was sent. Note that the async client (triggers, "
        "deferrable tasks) speaks only to http and https proxies",
        proxy=shown,
        endpoint=endpoint,
    )


def _send_error(exc: BaseException, endpoint: str, redactor: Redactor, url: str = "") -> Exception:
    """The error for a send that failed: a redirect loop is the server's answer, not a broken
    connection (the other client's error for it too, not retried); a tunnel the proxy refused for
    good (:func:`core.proxy_refusal`: 407, 403...) is the proxy's error, not retried; else
    :func:`_transport_error`."""
    refused = core.proxy_refusal(url, _tunnel_status(exc), endpoint) if url else None
    if refused is None and url and isinstance(exc, requests.exceptions.InvalidSchema):
        refused = _socks_unavailable(url, endpoint)
    if refused is not None:
        core.scrub_chain(exc, redactor)
        return refused
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        last = exc.response.status_code if exc.response is not None else None
        core.scrub_chain(exc, redactor)
        return protocol.too_many_redirects(last, endpoint)
    return _transport_error(exc, endpoint, redactor, unsent=not _WIRE.sent)


_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


def _read_limited(response: requests.Response, limit: int, endpoint: str = "") -> bytes:
    """Read at most ``limit`` bytes of a body (the rest is dropped with the connection).

    Stops at the caller's deadline: requests' read timeout bounds each socket read, not a body
    that trickles in. Each step reads what one socket read brings (``read1``), so the deadline is
    looked at between socket reads, not only once 64 KiB have gathered. The request has been sent
    by then (an upload may have been accepted and billed): the error says so (``request_sent``).
    """
    parts: list[bytes] = []
    total = 0
    while total < limit:
        left = time_left()
        if left is not None and left <= 0:
            raise MemoriesTimeoutError(
                "the answer did not arrive whole in time (the read timeout, or the caller's "
                "deadline, passed while it was being read); the request was sent",
                endpoint=endpoint,
            )
        chunk = response.raw.read1(min(64 * 1024, limit - total), decode_content=True)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:limit]


class DownloadResponse(core.DownloadCore):
    """A streamed file download; use as a context manager so the HTTP response is closed.

    Its first bytes were already checked (see :class:`protocol.BodySniffer`): it is not an API
    envelope, an HTML page or an empty body.

    :param response: the streamed ``requests`` response (status 2xx, not an error document).
    :param endpoint: logical endpoint name, for errors.
    :param prefix: bytes already read from the body while checking it.
    :param complete: whether ``prefix`` is the whole body.
    :param redactor: the client's redaction of error texts.

    Reading the body (:meth:`iter_into`, :meth:`iter_chunks`, iteration) raises
    :class:`MemoriesIncompleteBodyError` when the body ends short of the expected size or the
    connection drops or times out mid-body (the message counts the bytes really received), and
    :class:`MemoriesResponseError` before the first byte when ``Content-Length`` and
    ``expected_size`` disagree, or when neither is known and the body is not chunked (a cut could
    not be noticed); after it, when the body runs past the expected size.
    """

    def __init__(
        self,
        response: requests.Response,
        endpoint: str,
        prefix: bytes = b"",
        complete: bool = False,
        redactor: Redactor = NO_SECRETS,
    ) -> None:
        super().__init__(endpoint, redactor)
        self._response = response
        self._prefix = prefix
        self._complete = complete
        self.status_code: int = response.status_code
        self._take_headers(CaseInsensitiveDict(response.headers))

    def iter_chunks(
        self, chunk_size: int = BLOCK_SIZE, *, expected_size: int | None = None
    ) -> Iterator[bytes]:
        """Yield the body in chunks of up to ``chunk_size`` bytes (each a new ``bytes``).

        The checks and errors of :meth:`iter_into`, which moves the body without a copy.
        """
        for view in self.iter_into(lambda: memoryview(bytearray(chunk_size)), expected_size=expected_size):
            yield view.tobytes()

    def iter_into(
        self,
        take: Callable[[], memoryview],
        give_back: Callable[[memoryview], object] | None = None,
        *,
        expected_size: int | None = None,
    ) -> Iterator[memoryview]:
        """Fill the caller's buffers with the body; yield the filled part of each.

        Every buffer but the last is filled whole; a plain body with a ``Content-Length`` goes from
        the socket straight into the buffer (no allocation, no copy). Errors: see the class.

        :param take: returns an empty buffer (called once per buffer, e.g. ``BufferRing.take``);
            the caller owns each yielded view and may reuse its buffer once done with it.
        :param give_back: called with a taken buffer the body did not need (it ended first).
        :param expected_size: the size the service reports for the file (``get_metadata``), if
            known: checked against ``Content-Length``, and the only measure of a body that has none.
        """
        status = self.status_code
        expected = self._expected_size(status, expected_size)
        received, done, pending, self._prefix = 0, self._complete, memoryview(self._prefix), b""
        read = self._body_reader()
        try:
            while pending or not done:
                view = take()
                filled = 0
                while filled < len(view):
                    if pending:
                        count = min(len(pending), len(view) - filled)
                        view[filled : filled + count] = pending[:count]
                        pending = pending[count:]
                    elif done:
                        break
                    else:
                        count = read(view[filled:])
                        if not count:
                            done = True
                            break
                    filled += count
                    received += count
                    if expected is not None and received > expected:
                        # Checked as bytes arrive: nothing past the expected end is handed on.
                        self._check_end(status, received, expected)
                if filled:
                    yield view[:filled]
                elif give_back is not None:
                    give_back(view)
        except _TRANSPORT_ERRORS as exc:
            raise self._broken(status, received, expected, exc) from exc
        self._check_end(status, received, expected)

    def _body_reader(self) -> Callable[[memoryview], int]:
        """``read(view)``: the next 1 to ``len(view)`` body bytes into ``view``, 0 at the end.

        Each call reads from the socket at most once, so the count stays exact if the connection
        drops. A plain body of known length is read straight from http.client's socket reader
        into ``view`` (urllib3's ``read1`` would allocate and copy every piece, twice); anything
        else (a Content-Encoding, chunked, no length) goes through urllib3, which decodes it.
        """
        raw = self._response.raw
        plain = getattr(raw, "_fp", None)  # the http.client.HTTPResponse under urllib3's
        sock: Any = getattr(plain, "fp", None)
        left = getattr(plain, "length", None)
        if (
            self.content_length is not None
            and hasattr(sock, "readinto1")
            and isinstance(left, int)
            and getattr(plain, "chunked", True) is False
            and len(getattr(raw, "_decoded_buffer", ())) == 0
        ):
            remaining = left

            def read_plain(view: memoryview) -> int:
                nonlocal remaining
                if remaining <= 0:
                    return 0
                count = int(sock.readinto1(view[:remaining] if len(view) > remaining else view))
                remaining -= count
                return count

            # Not reused afterwards: requests closes a connection whose body it did not consume.
            return read_plain

        def read_decoded(view: memoryview) -> int:
            piece = raw.read1(len(view), decode_content=True)
            view[: len(piece)] = piece
            return len(piece)

        return read_decoded

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks()

    def close(self) -> None:
        """Close the HTTP response (returns or drops the connection)."""
        self._response.close()

    def __enter__(self) -> DownloadResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoriesClient(core.ClientCore):
    """Synchronous client of the memories.ai API (v1 and v2 hosts), on one pooled ``requests`` session.

    Constructor parameters (``api_key``, ``base_url``, ``v2_base_url``, ``timeout``, ``retry``,
    ``user_agent``, ``connect_timeout``, ``upload_timeout``): see :class:`ClientCore`.
    """

    def _open(self) -> None:
        """The pooled session: 1 MiB send blocks, the key as session auth (``.netrc`` never overrides
        it), no redirect followed to a location quoting the key."""
        session = _Session(self._redactor)
        _URLLIB3_REDACTION.redactors.add(self._redactor)
        adapter = _LargeBlockAdapter(self._trust, pool_connections=4, pool_maxsize=8)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.auth = _KeyAuth(self._api_key)
        session.headers.update({"User-Agent": self.user_agent, "Accept": "application/json"})
        # Published whole, then said to be this process's: another thread of a forked child must
        # never send on a session without its adapter or the key (see _own_session).
        self._session = session
        self._pid = os.getpid()
        if not hasattr(self, "_fork_lock"):
            self._fork_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> MemoriesClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP session (in a forked child, only the child's own connections)."""
        self._own_session().close()

    def _own_session(self) -> requests.Session:
        """The session, this process's own: after a fork (multiprocessing, a prefork pool) the
        pooled keep-alive connections are the parent's sockets as well, and two processes writing
        on one connection read each other's answers. The child leaves them to the parent (not
        closed: the parent still uses them) and opens its own."""
        if self._pid != os.getpid():
            with self._fork_lock:  # the child's threads make one session, not one each
                if self._pid != os.getpid():
                    self._open()
        return self._session

    def _send(self, spec: protocol.RequestSpec, *, body: MultipartBody | None = None) -> requests.Response:
        if spec.url.startswith("https:"):
            tls.ssl_context(self._trust)  # a CA bundle that cannot be read: said before sending
        unusable = core.unusable_proxy(spec.url, spec.endpoint)
        if unusable is not None:
            raise unusable
        headers = self._request_headers(spec, body)
        data: Any = body if body is not None else self._form_body(spec)
        timeouts = request_timeouts(self.connect_timeout, self._read_timeout(spec), spec.endpoint)
        _WIRE.sent = False
        with self._send_errors(spec, _TRANSPORT_ERRORS, functools.partial(_send_error, url=spec.url)):
            return self._own_session().request(
                spec.method,
                spec.url,
                json=spec.json_body,
                data=data,
                headers=headers,
                timeout=timeouts,
                stream=True,
            )

    def _read(self, response: requests.Response, spec: protocol.RequestSpec, limit: int) -> bytes:
        try:
            # The whole answer within the read timeout: each socket read has one of its own, which
            # an answer trickling in a byte at a time passes every time, for as long as it likes.
            with within(self._read_timeout(spec)):
                return _read_limited(response, limit, spec.endpoint)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, spec.endpoint, self._redactor_for(spec)) from exc
        finally:
            response.close()

    def _json_attempt(
        self,
        spec: protocol.RequestSpec,
        body: MultipartBody | None = None,
        read: Callable[[Any], Any] | None = None,
    ) -> Any:
        response = self._send(spec, body=body)
        content = self._read(response, spec, protocol.JSON_READ_BYTES)
        return self._answer(spec, response.status_code, response.headers, content, read)

    def _run(
        self,
        spec: protocol.RequestSpec,
        attempt: Callable[[], Any],
        can_retry: Callable[[], bool] | None = None,
    ) -> Any:
        # Errors are redacted where they are built, so the retry warnings are clean too.
        return self.retry.retrying(spec.endpoint, idempotent=spec.idempotent, can_retry=can_retry)(attempt)

    def _call(self, spec: protocol.RequestSpec, read: Callable[[Any], Any] | None = None) -> Any:
        return self._run(spec, lambda: self._json_attempt(spec, read=read))

    def _step(self, step: core.Call) -> Any:
        return self._call(step.spec, step.read)

    # ------------------------------------------------------------------ uploads

    @with_parameters_of(upload_arguments)
    def upload_video(self, *args: Any, **kwargs: Any) -> UploadResult:
        """Upload a video file as a streamed multipart body (never read whole into memory).

        Retried only when the server certainly did not accept it (connection never made,
        ``0429``/HTTP 429) and the source can be re-read (a path or a seekable file object).
        The parameters are :func:`~memories_provider.client.upload.upload_arguments`'.

        :raises MemoriesInvalidArgumentError: (a ``ValueError``) when a field or the file name
            breaks a documented rule, before anything is sent; ``TypeError`` for an unknown keyword.
        """
        return self.upload(upload_arguments(*args, **kwargs))

    def upload(self, upload: VideoUpload) -> UploadResult:
        """Send one :class:`~memories_provider.client.upload.VideoUpload` (what ``upload_video`` binds)."""
        form = upload.metadata.form_fields()
        spec = protocol.upload_request(self.base_url)
        with open_upload_stream(upload.file, filename=upload.filename, size=upload.size) as source:
            body = self._upload_body(form, source, upload.content_type, upload.progress)
            attempts = 0

            def attempt() -> Any:
                nonlocal attempts
                if attempts:
                    body.rewind()
                attempts += 1
                return self._json_attempt(spec, body, protocol.read_upload)

            result: UploadResult = self._run(spec, attempt, can_retry=lambda: body.rewindable)
        return result

    def upload_video_from_url(
        self, url: str, *, metadata: UploadMetadata | None = None, **fields: Any
    ) -> UploadResult:
        """Ask the service to fetch a video from a public URL (same metadata as :meth:`upload_video`).

        :param url: URL the service downloads with an unauthenticated GET.
        :param metadata: what to tell the service about the video.
        :param fields: :class:`UploadMetadata` fields as keywords, applied over ``metadata``.
        """
        form = UploadMetadata.merged(metadata, fields).form_fields()
        spec = protocol.upload_url_request(self.base_url, url, form)
        result: UploadResult = self._call(spec, protocol.read_upload)
        return result

    # ------------------------------------------------------------------ queries

    def get_video(self, video_no: str, *, unique_id: str | None = None) -> Video:
        """Status and metadata of one video (``get_metadata``).

        :param video_no: the video's id.
        :param unique_id: its scope.
        :raises MemoriesNotFoundError: when the video does not exist.
        """
        return core.follow(core.get_video_plan(self.base_url, video_no, unique_id), self._step)

    def list_videos(
        self, *, page: int = 1, size: int = 100, **filters: Unpack[protocol.VideoFilters]
    ) -> VideoPage:
        """One page of videos matching the filters (``None`` filters are not sent).

        :param page: 1-based page number.
        :param size: page size.
        :param filters: :class:`~memories_provider.client.protocol.VideoFilters` (``unique_id``,
            ``video_name``, ``video_no``, ``video_nos``, ``status``, ``camera_model``, ``tag``,
            ``datetime_taken``, ``latitude`` with ``longitude``).
        """
        spec = protocol.list_videos_request(self.base_url, page=page, size=size, **filters)
        result: VideoPage = self._call(spec, protocol.video_page_reader(page, size))
        return result

    def iter_videos(
        self, *, page_size: int = 100, cursor: core.PageCursor | None = None, **filters: Any
    ) -> Iterator[Video]:
        """Every video matching ``filters`` (the keyword arguments of :meth:`list_videos`), page by page.

        :param cursor: a fresh :class:`~memories_provider.client.core.PageCursor` of ``page_size``
            to page with, to ask it afterwards what the pages showed (``may_have_skipped``).
        :raises MemoriesPagingError: when the pages cannot be read whole: a page holding exactly the
            videos of an earlier page under the same ``total_count`` (the service ignores ``page``),
            or pages that end before ``total_count`` (see :class:`~memories_provider.client.core.PageCursor`).
        """
        pages = cursor or core.PageCursor(page_size)
        pages.scope = pages.scope or filters.get("unique_id")  # the scope listed, for its errors
        while pages.next is not None:
            result = self.list_videos(page=pages.next, size=page_size, **filters)
            pages.advance(result)  # raises on pages that cannot be read whole, before their videos
            yield from result.videos

    def list_unique_ids(self) -> list[str]:
        """All scopes (``unique_id`` values) of the account."""
        spec = protocol.list_unique_ids_request(self.base_url)
        ids: list[str] = self._call(spec, protocol.read_unique_ids)
        return ids

    def delete_videos(self, video_nos: Iterable[str], *, unique_id: str | None = None) -> None:
        """Delete videos, 100 ids per request. Unknown ids are not an error (per the current docs);
        an older edition's ``0409`` for deleting twice is not one either once ``list_videos`` counts
        none of the batch left (it is raised if any is listed, or the listing gives no count).

        :param video_nos: ids to delete.
        :param unique_id: their scope.
        """
        core.follow(core.delete_videos_plan(self.base_url, video_nos, unique_id), self._step)

    # ------------------------------------------------------------------ index outputs

    def get_transcript(
        self, video_no: str, kind: TranscriptKind, *, unique_id: str | None = None
    ) -> Transcript:
        """One index output of a video: ``"visual"`` captions or the ``"audio"`` transcription.

        No segments (``data: null`` or an empty list) when the video has no audio track or is not
        ``PARSE`` yet: check its status first, the answer cannot tell the two apart. A deployment
        of the older edition (HTTP 404 on ``get_video_caption``) is asked its
        ``/serve/api/video/get_video_transcription`` for captions instead.

        :param video_no: the video's id.
        :param kind: ``"visual"`` or ``"audio"``.
        :param unique_id: its scope.
        """
        plan = core.transcript_plan(self._transcript_routes, kind, video_no, unique_id)
        return core.follow(plan, self._step)

    def get_video_caption(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """Visual captions (scene descriptions) of a video; see :meth:`get_transcript`."""
        return self.get_transcript(video_no, "visual", unique_id=unique_id)

    def get_audio_transcription(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """The audio transcription (speech to text) of a video; see :meth:`get_transcript`."""
        return self.get_transcript(video_no, "audio", unique_id=unique_id)

    # ------------------------------------------------------------------ downloads

    def _download(self, spec: protocol.RequestSpec) -> DownloadResponse:
        def attempt() -> DownloadResponse:
            response = self._send(spec)
            status, headers = response.status_code, response.headers
            if not core.is_success(status):
                content = self._read(response, spec, protocol.MAX_ERROR_BYTES)
                raise self._download_refused(spec, status, headers, content)
            # The body is judged by its first bytes, whatever the headers say.
            sniffer = protocol.BodySniffer()
            try:
                while sniffer.needs_more:
                    sniffer.feed(response.raw.read1(protocol.MAX_ERROR_BYTES, decode_content=True))
            except _TRANSPORT_ERRORS as exc:
                response.close()
                raise self._sniff_broken(
                    spec, status, headers, sniffer.received, exc, _transport_error
                ) from exc
            self._check_download(spec, status, headers, sniffer, response.close)
            return DownloadResponse(response, spec.endpoint, sniffer.prefix, sniffer.complete, self._redactor)

        result: DownloadResponse = self._run(spec, attempt)
        return result

    def download_video(self, video_no: str, *, unique_id: str | None = None) -> DownloadResponse:
        """Download a video by id (A: ``POST {v1}/download``); use the result as a context manager.

        :param video_no: the video's id.
        :param unique_id: its scope.
        """
        return self._download(protocol.download_video_request(self.base_url, video_no, unique_id))

    def download_blob(self, bucket: str, blob: str, *, api: Literal["v1", "v2"] = "v2") -> DownloadResponse:
        """Download by storage bucket and blob (B: v1, D: v2 ``GET .../download?bucket=&blob=``).

        :param bucket: storage bucket.
        :param blob: blob path (slashes are sent unencoded).
        :param api: which endpoint to use, ``"v2"`` (default) or ``"v1"``.
        """
        return self._download(
            protocol.download_blob_request(self.base_url, self.v2_base_url, bucket, blob, api)
        )

    def download_asset(self, asset_id: str) -> DownloadResponse:
        """Download a v2 asset (C: ``GET {v2}/{asset_id}/download``).

        :param asset_id: the asset's id (``re_...``).
        """
        return self._download(protocol.download_asset_request(self.v2_base_url, asset_id))

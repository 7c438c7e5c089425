"""Asynchronous memories.ai client on ``aiohttp``: one session per client, same protocol layer as ``sync.py``.

Meant for triggers: nothing here blocks the event loop (file reads for uploads run in the
default executor), and the whole client is used as ``async with AsyncMemoriesClient(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from memories_provider.client import core, protocol, proxies, tls
from memories_provider.client._upload_stream import open_upload_stream
from memories_provider.client.deadline import request_timeouts, time_left
from memories_provider.client.errors import (
    MemoriesConnectionError,
    MemoriesInvalidArgumentError,
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

_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
#: Sessions a client keeps open after CA bundle rotations, for the requests still reading from
#: them; the oldest beyond this is closed (a bundle's content changes seldom: see tls.ssl_context).
_MAX_RETIRED = 4
#: Request headers that carry credentials: never kept in an error aiohttp raised.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _scrub(exc: BaseException, redactor: Redactor) -> None:
    """Take the request's credentials out of the aiohttp errors in ``exc``'s chain, in place.

    A ``ClientResponseError`` (a malformed answer, too many redirects ...) holds the request's
    headers, the API key among them, in its ``request_info`` and ``args``: shown by its ``repr``,
    by a debugger or an error tracker, though never by its ``str``. The clients chain it as the
    ``__cause__`` of their own error, so it is kept for debugging, without them; the server's
    text it quotes (``message``, response headers) is redacted, and the earlier responses of a
    redirect chain (``history``, each with the request again) are dropped. Every other text in the
    chain is redacted too (see :func:`core.scrub_chain`).
    """
    core.scrub_chain(exc, redactor)
    for item in core.chained_exceptions(exc):
        if isinstance(item, aiohttp.ClientConnectorError):
            _drop_proxy_auth(item)
        if isinstance(item, aiohttp.ClientResponseError):
            info = item.request_info
            kept = CIMultiDict((k, v) for k, v in info.headers.items() if k.lower() not in _SECRET_HEADERS)
            item.request_info = aiohttp.RequestInfo(
                info.url, info.method, CIMultiDictProxy(kept), info.real_url
            )
            item.history = ()
            if item.headers is not None:
                item.headers = CIMultiDict((k, redactor.redact(v)) for k, v in item.headers.items())
            item.message = redactor.redact(item.message)
            item.args = (item.request_info, item.history)


def _drop_proxy_auth(error: aiohttp.ClientConnectorError) -> None:
    """Take the proxy's credentials out of the connection key ``error`` holds (its ``args``, so its
    ``repr``: ``proxy_auth=BasicAuth(login='corp', password='…')``), in place. A connection failed
    once the proxy's tunnel was open (the tunnel dropped, the host's certificate refused through
    it) keeps the request's key, which carries them."""
    keys = [getattr(error, "_conn_key", None), *error.args[:1]]
    for key in keys:
        if getattr(key, "proxy_auth", None) is None or not hasattr(key, "_replace"):
            continue
        clean = key._replace(proxy_auth=None)
        with contextlib.suppress(AttributeError, TypeError):
            if error.args[:1] == (key,):
                error.args = (clean, *error.args[1:])
            if getattr(error, "_conn_key", None) is key:
                error._conn_key = clean


def _transport_error(exc: BaseException, endpoint: str, redactor: Redactor) -> MemoriesConnectionError:
    """Map an aiohttp/asyncio transport exception to the client's hierarchy (its text redacted).

    ``exc`` itself, which the caller chains as the new error's ``__cause__``, loses the request's
    credentials (see :func:`_scrub`).
    """
    _scrub(exc, redactor)
    text = redactor.redact(str(exc) or type(exc).__name__)
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    if connect_timeout is not None and isinstance(exc, connect_timeout):
        return MemoriesTimeoutError(f"timed out connecting: {text}", endpoint=endpoint, request_sent=False)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return MemoriesTimeoutError(f"timed out: {text}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Refused, DNS, TLS handshake: the request never left this process.
        return MemoriesConnectionError(f"cannot connect: {text}", endpoint=endpoint, request_sent=False)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # The proxy refused the tunnel (CONNECT answered 407, 403, 502...): the host was never reached.
        return MemoriesConnectionError(f"connection failed: {text}", endpoint=endpoint, request_sent=False)
    return MemoriesConnectionError(f"connection failed: {text}", endpoint=endpoint)


def _send_error(exc: BaseException, endpoint: str, redactor: Redactor, url: str = "") -> Exception:
    """The error for a send that failed: a redirect loop is the server's answer, not a broken
    connection (the other client's error for it too, not retried); a tunnel the proxy refused for
    good (:func:`core.proxy_refusal`: 407, 403...) is the proxy's error, not retried; else
    :func:`_transport_error`."""
    if url and isinstance(exc, aiohttp.ClientHttpProxyError):
        refused = core.proxy_refusal(url, exc.status, endpoint)
        if refused is not None:
            _scrub(exc, redactor)
            return refused
    if isinstance(exc, aiohttp.TooManyRedirects):
        last = exc.history[-1].status if exc.history else None
        _scrub(exc, redactor)
        return protocol.too_many_redirects(last, endpoint)
    return _transport_error(exc, endpoint, redactor)


def _redirect_guard(redactor: Redactor) -> aiohttp.TraceConfig:
    """Tracing that refuses to follow a redirect to a location quoting the API key (raised before
    aiohttp reads the location)."""

    async def on_redirect(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        response = params.response
        location = response.headers.get("Location") or response.headers.get("URI")
        error = protocol.redirect_refusal(response.status, location, redactor)
        if error is not None:
            raise error

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(on_redirect)
    trace.freeze()
    return trace


def _env_proxy(url: URL, endpoint: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the sync client would use for ``url`` (see :mod:`~memories_provider.client.proxies`);
    its credentials become ``proxy_auth``, never part of a URL aiohttp may quote.

    :raises MemoriesProxyError: for a proxy that is not an http(s) one (``ALL_PROXY=socks5://…``,
        as curl users set it): aiohttp speaks HTTP to whatever it is given, and sent a SOCKS proxy
        the request in clear text, the API key and the proxy's credentials in it, then waited for
        the read timeout. Nothing is sent; not retried.
    """
    chosen = proxies.env_proxy(str(url))
    if chosen is None:
        return None, None
    unusable = core.unusable_proxy(str(url), endpoint)
    if unusable is not None:
        raise unusable
    proxy = URL(chosen)
    if proxy.scheme not in ("http", "https"):
        shown = core.shown_proxy(chosen)
        raise MemoriesProxyError(
            f"the proxy {shown} the environment names for {url.host} (HTTPS_PROXY, HTTP_PROXY or "
            f"ALL_PROXY) is a {proxy.scheme} proxy, which the async client (triggers, deferrable "
            "tasks) cannot use: it speaks only to http and https proxies; nothing was sent. Name an "
            "http proxy in HTTPS_PROXY (it wins over ALL_PROXY), or the host in NO_PROXY",
            proxy=shown,
            endpoint=endpoint,
        )
    if proxy.user is None and proxy.password is None:
        return proxy, None
    return proxy.with_user(None), aiohttp.BasicAuth(proxy.user or "", proxy.password or "")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while total < limit:
        chunk = await response.content.read(min(64 * 1024, limit - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


class AsyncDownloadResponse(core.DownloadCore):
    """A streamed download; an async context manager that sends the request on entry.

    ``async with client.download_video(no) as resp: async for chunk in resp.iter_chunks(): ...``
    The attributes (``content_type``, ``content_length``, ``filename``, ``headers``) are set on entry.

    :param opener: coroutine function performing the request (with retries) and returning the
        response, the body prefix already read while checking it, and whether that is the whole body.
    :param endpoint: logical endpoint name, for errors.
    :param redactor: the client's redaction of error texts.
    """

    def __init__(
        self,
        opener: Callable[[], Awaitable[tuple[aiohttp.ClientResponse, bytes, bool]]],
        endpoint: str,
        redactor: Redactor = NO_SECRETS,
    ) -> None:
        super().__init__(endpoint, redactor)
        self._opener = opener
        self._response: aiohttp.ClientResponse | None = None
        self._prefix = b""
        self._complete = False
        self.status_code: int | None = None
        self.headers = CIMultiDict()

    async def __aenter__(self) -> AsyncDownloadResponse:
        self._response, self._prefix, self._complete = await self._opener()
        self.status_code = self._response.status
        self._take_headers(CIMultiDict(self._response.headers))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP response (drops the connection if the body was not read to the end)."""
        if self._response is not None:
            self._response.close()

    async def iter_chunks(
        self, chunk_size: int = BLOCK_SIZE, *, expected_size: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the body in chunks of up to ``chunk_size`` bytes; see ``DownloadResponse.iter_chunks``.

        :param expected_size: the size the service reports for the file, if known.
        :raises MemoriesIncompleteBodyError: when the body ends short of the expected size or the
            connection drops or times out mid-body.
        :raises MemoriesResponseError: when the sizes disagree, or no size can be checked at all.
        """
        if self._response is None:
            raise RuntimeError("use 'async with client.download_...(...) as response' before reading")
        status, endpoint = self.status_code, self.endpoint
        expected = self._expected_size(status, expected_size)
        received = 0

        def too_long(size: int) -> None:
            error = protocol.body_size_error(size, expected, status=status, endpoint=endpoint)
            if error is not None and expected is not None and size > expected:
                raise error

        try:
            if self._prefix:
                received = len(self._prefix)
                too_long(received)
                yield self._prefix
                self._prefix = b""
            if not self._complete:
                # read(n) returns what has arrived (up to n): the count stays exact on a drop.
                async for chunk in self._response.content.iter_chunked(chunk_size):
                    received += len(chunk)
                    too_long(received)
                    yield chunk
        except _TRANSPORT_ERRORS as exc:
            _scrub(exc, self._redactor)
            raise self._broken(status, received, expected, exc) from exc
        self._check_end(status, received, expected)


class AsyncMemoriesClient(core.ClientCore):
    """Asynchronous client of the memories.ai API; same constructor and methods as ``MemoriesClient``.

    Use ``async with AsyncMemoriesClient(...) as client:`` (or ``await client.close()``); the
    aiohttp session is created on first use inside the running event loop.

    Constructor parameters: see :class:`ClientCore` (``timeout`` bounds each socket read).
    """

    def _open(self) -> None:
        """No session yet: it is made inside the running event loop, on first use."""
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None
        #: Sessions left for one over a newer TLS context (see _load_tls): closed with the client,
        #: as requests may still be reading from them.
        self._retired: list[aiohttp.ClientSession] = []

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # Not the key: aiohttp merges a session's headers into a proxy's, and took an
                # Authorization there for the proxy's credentials (see _send).
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.timeout
                ),
                read_bufsize=BLOCK_SIZE,
                # The sync client's TLS context (built off the loop first: see _load_tls).
                connector=aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True),
                # trust_env would also read ~/.netrc and clash with the key header; proxies
                # from the environment are applied per request instead (see _env_proxy).
                trust_env=False,
                trace_configs=[_redirect_guard(self._redactor)],
            )
        return self._session

    def _timeouts(
        self, read_timeout: float, endpoint: str = "", *, whole: bool = False
    ) -> aiohttp.ClientTimeout:
        """The timeouts of one request.

        :param whole: the request sends no streamed body and reads no file: its whole exchange
            (connect, a small form, status line, headers, answer) ends within connect + read
            timeout. ``sock_read`` bounds each read alone, which headers or an answer trickling
            in a byte at a time pass every time.
        """
        # aiohttp starts sock_read only once the request body is written, like requests' read timeout.
        connect, read = request_timeouts(self.connect_timeout, read_timeout, endpoint)
        # Under a caller's deadline the whole exchange, body included, ends by it.
        total = time_left()
        if whole:
            total = connect + read if total is None else min(total, connect + read)
        return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)

    async def __aenter__(self) -> AsyncMemoriesClient:
        await self._load_tls()
        self._get_session()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the aiohttp session (and those a rotated CA bundle retired)."""
        sessions, self._retired = [*self._retired, self._session], []
        for session in sessions:
            if session is not None and not session.closed:
                await session.close()
        self._session = None

    async def _send(
        self,
        spec: protocol.RequestSpec,
        *,
        body: MultipartBody | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> aiohttp.ClientResponse:
        headers = self._request_headers(spec, body)
        # On the request alone: in the session's headers, aiohttp also sent it to a proxy as
        # 'Proxy-Authorization: <key>' (a CONNECT in clear text, the proxy's logs).
        headers["Authorization"] = self._api_key
        # progress is called here, on the event loop thread, not by the body in the executor.
        data: Any = _stream_body(body, progress) if body is not None else self._form_body(spec)
        whole = body is None and not spec.download
        timeouts = self._timeouts(self._read_timeout(spec), spec.endpoint, whole=whole)
        url = URL(spec.url, encoded=True)
        proxy, proxy_auth = _env_proxy(url, spec.endpoint)
        if not await self._load_tls() and url.scheme == "https":
            tls.ssl_context(self._trust)  # raises what is wrong with the CA bundle, before sending
        with self._send_errors(spec, _TRANSPORT_ERRORS, functools.partial(_send_error, url=spec.url)):
            return await self._get_session().request(
                spec.method,
                url,
                json=spec.json_body,
                data=data,
                headers=headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
                timeout=timeouts,
                # aiohttp counts the first answer among its max_redirects, requests does not.
                max_redirects=protocol.MAX_REDIRECTS + 1,
            )

    async def _load_tls(self) -> bool:
        """Load the TLS context the sync client verifies with too (off the loop when it reads files),
        shared by every client of the process with the same trust (:func:`tls.ssl_context`).

        Looked up again before each request, as the sync client does: a CA bundle replaced on disk
        (a CA rotated in place) gives a new context, and the session its connector holds is left
        for a new one (a client the triggerer's poller keeps open for as long as waits are deferred
        refused the new CA until a restart). False, the context left as it was, when the CA bundle
        cannot be read, which an https request then raises.
        """
        try:
            if tls.is_cached(self._trust):
                context = tls.ssl_context(self._trust)
            else:
                context = await asyncio.to_thread(tls.ssl_context, self._trust)
        except MemoriesInvalidArgumentError:
            return False
        if context is not self._tls:
            if self._session is not None and not self._session.closed:
                self._retired.append(self._session)
                self._session = None
            while len(self._retired) > _MAX_RETIRED:  # a request still on it this late fails
                await self._retired.pop(0).close()
            self._tls = context
        return True

    async def _read(self, response: aiohttp.ClientResponse, spec: protocol.RequestSpec, limit: int) -> bytes:
        try:
            # The whole answer within the read timeout (sock_read bounds each read alone, which an
            # answer trickling in a byte at a time passes every time); the deadline's total too.
            return await asyncio.wait_for(_read_limited(response, limit), self._read_timeout(spec))
        except _TRANSPORT_ERRORS as exc:
            if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ClientError):
                raise MemoriesTimeoutError(  # wait_for's, not one of aiohttp's own timeouts
                    "the answer did not arrive whole in time (the read timeout, or the caller's "
                    "deadline, passed while it was being read); the request was sent",
                    endpoint=spec.endpoint,
                ) from None
            raise _transport_error(exc, spec.endpoint, self._redactor_for(spec)) from exc
        finally:
            response.close()

    async def _json_attempt(
        self,
        spec: protocol.RequestSpec,
        body: MultipartBody | None = None,
        progress: Callable[[int], None] | None = None,
        read: Callable[[Any], Any] | None = None,
    ) -> Any:
        response = await self._send(spec, body=body, progress=progress)
        content = await self._read(response, spec, protocol.JSON_READ_BYTES)
        return self._answer(spec, response.status, response.headers, content, read)

    async def _run(
        self,
        spec: protocol.RequestSpec,
        attempt: Callable[[], Awaitable[Any]],
        can_retry: Callable[[], bool] | None = None,
    ) -> Any:
        # Errors are redacted where they are built, so the retry warnings are clean too.
        retrying = self.retry.async_retrying(spec.endpoint, idempotent=spec.idempotent, can_retry=can_retry)
        return await retrying(attempt)

    async def _call(self, spec: protocol.RequestSpec, read: Callable[[Any], Any] | None = None) -> Any:
        # tenacity awaits only coroutine *functions*: a lambda returning a coroutine would not be awaited.
        async def attempt() -> Any:
            return await self._json_attempt(spec, read=read)

        return await self._run(spec, attempt)

    async def _step(self, step: core.Call) -> Any:
        return await self._call(step.spec, step.read)

    # ------------------------------------------------------------------ uploads

    @with_parameters_of(upload_arguments)
    async def upload_video(self, *args: Any, **kwargs: Any) -> UploadResult:
        """Upload a video as a streamed multipart body; see ``MemoriesClient.upload_video``.

        File reads run in the default executor so the event loop is never blocked; ``progress``
        is called on the event loop thread.
        """
        return await self.upload(upload_arguments(*args, **kwargs))

    async def upload(self, upload: VideoUpload) -> UploadResult:
        """Send one :class:`~memories_provider.client.upload.VideoUpload` (what ``upload_video`` binds)."""
        form = upload.metadata.form_fields()
        spec = protocol.upload_request(self.base_url)
        # Opening a path is a quick local syscall; reads happen in the executor below.
        with open_upload_stream(upload.file, filename=upload.filename, size=upload.size) as source:
            body = self._upload_body(form, source, upload.content_type)
            attempts = 0

            async def attempt() -> Any:
                nonlocal attempts
                if attempts:
                    await asyncio.get_running_loop().run_in_executor(None, body.rewind)
                attempts += 1
                return await self._json_attempt(spec, body, upload.progress, protocol.read_upload)

            result: UploadResult = await self._run(spec, attempt, can_retry=lambda: body.rewindable)
        return result

    async def upload_video_from_url(
        self, url: str, *, metadata: UploadMetadata | None = None, **fields: Any
    ) -> UploadResult:
        """Have the service fetch a video from a URL; see ``MemoriesClient.upload_video_from_url``."""
        form = UploadMetadata.merged(metadata, fields).form_fields()
        spec = protocol.upload_url_request(self.base_url, url, form)
        result: UploadResult = await self._call(spec, protocol.read_upload)
        return result

    # ------------------------------------------------------------------ queries

    async def get_video(self, video_no: str, *, unique_id: str | None = None) -> Video:
        """Status and metadata of one video (``get_metadata``); see ``MemoriesClient.get_video``."""
        return await core.afollow(core.get_video_plan(self.base_url, video_no, unique_id), self._step)

    async def list_videos(
        self, *, page: int = 1, size: int = 100, **filters: Unpack[protocol.VideoFilters]
    ) -> VideoPage:
        """One page of videos matching the filters; see ``MemoriesClient.list_videos``."""
        spec = protocol.list_videos_request(self.base_url, page=page, size=size, **filters)
        result: VideoPage = await self._call(spec, protocol.video_page_reader(page, size))
        return result

    async def iter_videos(
        self, *, page_size: int = 100, cursor: core.PageCursor | None = None, **filters: Any
    ) -> AsyncIterator[Video]:
        """Every video matching ``filters`` (keyword arguments of :meth:`list_videos`), page by page.

        :param cursor: as in the sync client's ``iter_videos``.
        """
        pages = cursor or core.PageCursor(page_size)
        pages.scope = pages.scope or filters.get("unique_id")  # the scope listed, for its errors
        while pages.next is not None:
            result = await self.list_videos(page=pages.next, size=page_size, **filters)
            pages.advance(result)  # raises on pages that cannot be read whole, before their videos
            for video in result.videos:
                yield video

    async def list_unique_ids(self) -> list[str]:
        """All scopes (``unique_id`` values) of the account."""
        spec = protocol.list_unique_ids_request(self.base_url)
        ids: list[str] = await self._call(spec, protocol.read_unique_ids)
        return ids

    async def delete_videos(self, video_nos: Iterable[str], *, unique_id: str | None = None) -> None:
        """Delete videos, 100 ids per request; see ``MemoriesClient.delete_videos``."""
        await core.afollow(core.delete_videos_plan(self.base_url, video_nos, unique_id), self._step)

    # ------------------------------------------------------------------ index outputs

    async def get_transcript(
        self, video_no: str, kind: TranscriptKind, *, unique_id: str | None = None
    ) -> Transcript:
        """One index output of a video; see ``MemoriesClient.get_transcript``."""
        plan = core.transcript_plan(self._transcript_routes, kind, video_no, unique_id)
        return await core.afollow(plan, self._step)

    async def get_video_caption(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """Visual captions (scene descriptions) of a video; see :meth:`get_transcript`."""
        return await self.get_transcript(video_no, "visual", unique_id=unique_id)

    async def get_audio_transcription(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """The audio transcription (speech to text) of a video; see :meth:`get_transcript`."""
        return await self.get_transcript(video_no, "audio", unique_id=unique_id)

    # ------------------------------------------------------------------ downloads

    def _download(self, spec: protocol.RequestSpec) -> AsyncDownloadResponse:
        async def attempt() -> tuple[aiohttp.ClientResponse, bytes, bool]:
            response = await self._send(spec)
            status, headers = response.status, response.headers
            if not core.is_success(status):
                content = await self._read(response, spec, protocol.MAX_ERROR_BYTES)
                raise self._download_refused(spec, status, headers, content)
            # The body is judged by its first bytes, whatever the headers say.
            sniffer = protocol.BodySniffer()
            try:
                while sniffer.needs_more:
                    sniffer.feed(await response.content.read(protocol.MAX_ERROR_BYTES))
            except _TRANSPORT_ERRORS as exc:
                response.close()
                raise self._sniff_broken(
                    spec, status, headers, sniffer.received, exc, _transport_error
                ) from exc
            self._check_download(spec, status, headers, sniffer, response.close)
            return response, sniffer.prefix, sniffer.complete

        async def opener() -> tuple[aiohttp.ClientResponse, bytes, bool]:
            result: tuple[aiohttp.ClientResponse, bytes, bool] = await self._run(spec, attempt)
            return result

        return AsyncDownloadResponse(opener, spec.endpoint, self._redactor)

    def download_video(self, video_no: str, *, unique_id: str | None = None) -> AsyncDownloadResponse:
        """Download a video by id (A); ``async with client.download_video(no) as resp: ...``."""
        return self._download(protocol.download_video_request(self.base_url, video_no, unique_id))

    def download_blob(
        self, bucket: str, blob: str, *, api: Literal["v1", "v2"] = "v2"
    ) -> AsyncDownloadResponse:
        """Download by bucket and blob (B: v1, D: v2); an async context manager."""
        return self._download(
            protocol.download_blob_request(self.base_url, self.v2_base_url, bucket, blob, api)
        )

    def download_asset(self, asset_id: str) -> AsyncDownloadResponse:
        """Download a v2 asset (C); an async context manager."""
        return self._download(protocol.download_asset_request(self.v2_base_url, asset_id))


async def _stream_body(body: MultipartBody, progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    """Feed the multipart body to aiohttp in 1 MiB blocks read off the event loop."""
    loop = asyncio.get_running_loop()
    reported = 0
    while True:
        chunk = await loop.run_in_executor(None, body.read, BLOCK_SIZE)
        if not chunk:
            return
        yield chunk
        if progress is not None and body.file_bytes_sent != reported:
            reported = body.file_bytes_sent
            progress(reported)

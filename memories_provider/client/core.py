"""What the sync and async clients share: settings, request headers, reading answers, paging, checks,
and the operations that take more than one call (the plans: :data:`Plan`).

Sans-IO like :mod:`protocol`: neither ``requests`` nor ``aiohttp`` is imported here, so each
client loads without the other's library. :class:`ClientCore` holds every decision that does not
depend on how bytes move; ``sync.py`` and ``aio.py`` keep only their I/O (sessions, sending,
reading bodies) and their library's transport errors.
"""

from __future__ import annotations

import contextlib
import http
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

from memories_provider.client import protocol, proxies, tls
from memories_provider.client._upload_stream import UploadStream
from memories_provider.client._version import USER_AGENT
from memories_provider.client.errors import (
    MemoriesConnectionError,
    MemoriesDuplicateError,
    MemoriesError,
    MemoriesInvalidArgumentError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    MemoriesProxyAuthError,
    MemoriesProxyError,
    MemoriesResponseError,
)
from memories_provider.client.models import Transcript, TranscriptKind, Video, VideoPage
from memories_provider.client.multipart import MultipartBody, find_source_error
from memories_provider.client.retry import RetryPolicy
from memories_provider.redaction import NO_SECRETS, Redactor

log = logging.getLogger("memories_provider.client")

#: The Content-Type of a url-encoded form body (``upload_url``).
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def content_length(headers: Mapping[str, str]) -> int | None:
    """The body's size from ``Content-Length``, or ``None`` when absent, invalid or encoded."""
    # With a Content-Encoding the header counts encoded bytes, not what iter_chunks yields.
    if headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
        return None
    try:
        value = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def last_page(result: VideoPage, seen: int, page_size: int) -> bool:
    """Whether paging should stop: an empty page, everything counted, or a short page."""
    if not result.videos:
        return True
    if result.total_count is not None:
        return seen >= result.total_count
    return len(result.videos) < (result.page_size or page_size)


class PageCursor:
    """Where ``iter_videos`` stands: the page to ask for next, ``None`` once paging should stop.

    It also checks that the pages can be read whole (:meth:`advance` raises
    :class:`~memories_provider.client.errors.MemoriesPagingError` otherwise): a page holding exactly
    the videos of an earlier page under the same ``total_count`` is a service that does not honour
    ``page`` (every page is page 1: with a ``total_count`` paging stopped after part of the listing,
    without one it never stopped), and pages that end before they held ``total_count`` videos end
    the listing short. A page pushed down whole by videos added ahead is no repeat: its
    ``total_count`` moved.

    Pages are read by offset, newest first, so a video deleted ahead of the next page between two
    page reads moves every later video up a place, the first of the next page onto a page already
    read: :attr:`may_have_skipped` says when that may have happened to a video listed all along.

    :param page_size: the page size asked for.
    :param scope: the ``unique_id`` listed, named in the error (``None``: not named).
    """

    def __init__(self, page_size: int, *, scope: str | None = None) -> None:
        self.page_size = page_size
        self.next: int | None = 1
        self.scope = scope
        self._seen = 0
        self._total: int | None = None
        self._skips = False
        # Each page's ids (non-empty) -> its number and total_count.
        self._pages: dict[tuple[str, ...], tuple[int, int | None]] = {}

    @property
    def listed(self) -> int:
        """The videos the pages read so far held, repeats included."""
        return self._seen

    @property
    def may_have_skipped(self) -> bool:
        """Whether a video listed all along may be missing from the pages read so far.

        Videos are added ahead of every page (newest first), which only pushes the others down (a
        repeat, never a gap); a deletion ahead of the next page pulls them up. Between two page
        reads, the others move up at most by the deletions and down by the additions, so a
        ``total_count`` that did not drop from one page to the next proves nothing moved up; after a
        drop, or a page without ``total_count`` after the first, a video may have been skipped.
        """
        return self._skips

    def advance(self, result: VideoPage) -> None:
        """Take in the page just read (see :func:`last_page`), before its videos are used.

        :raises MemoriesPagingError: when the page repeats an earlier one, or it ends the listing
            short of its ``total_count``; ``next`` is then ``None``.
        """
        if self.next is None:
            return
        number = self.next
        ids = tuple(v.video_no for v in result.videos)
        earlier, earlier_total = self._pages.get(ids, (None, None))
        if ids and earlier is not None and earlier_total == result.total_count:
            self.next = None
            counted = "no total_count" if result.total_count is None else f"total_count {result.total_count}"
            raise MemoriesPagingError(
                f"list_videos answered page {number} of {self._listing()} with exactly the "
                f"videos of page {earlier} ({len(ids)}, {counted}): the service does not seem to "
                "honour `page`, so the listing cannot be read whole",
                endpoint="list_videos",
                page=number,
                repeated_page=earlier,
                listed=self._seen,
                total_count=result.total_count,
            )
        if ids:
            self._pages[ids] = (number, result.total_count)
        if number > 1 and (
            result.total_count is None or self._total is None or result.total_count < self._total
        ):
            self._skips = True
        self._seen += len(ids)
        self._total = result.total_count
        if not last_page(result, self._seen, self.page_size):
            self.next = number + 1
            return
        self.next = None
        if self._total is not None and self._seen < self._total:
            raise MemoriesPagingError(
                f"the pages of {self._listing()} ended at page {number} after {self._seen} "
                f"video(s), though list_videos counts {self._total} (total_count): they never "
                "reach the total, so the listing cannot be read whole",
                endpoint="list_videos",
                page=number,
                listed=self._seen,
                total_count=self._total,
            )

    def _listing(self) -> str:
        return "the listing" if self.scope is None else f"the listing of unique_id {self.scope!r}"


def is_success(status: int) -> bool:
    """Whether an HTTP status is 2xx."""
    return 200 <= status < 300


def none_left(listing: VideoPage) -> bool:
    """Whether ``list_videos(video_nos=batch)`` shows that none of a ``delete_videos`` batch is left.

    Older docs answer ``0409`` to deleting twice (a retry after a lost answer, a re-run cleanup
    task): the batch is then done if the listing counts nothing. Anything listed (even another id:
    a service that ignored the filter), or a listing without its ``total_count`` (``data: null``),
    proves nothing: the refusal stands.
    """
    return not listing.videos and listing.total_count == 0


@dataclass(frozen=True)
class Call:
    """One JSON call a :data:`Plan` asks its client to make: ``spec`` sent (with its retries), its
    ``data`` read by ``read``. The client sends the result back into the plan, or throws the error."""

    spec: protocol.RequestSpec
    read: Callable[[Any], Any] | None = None


_T = TypeVar("_T")

#: A call sequence decided once for both clients: a generator that yields each :class:`Call`, is
#: sent its result or thrown its error, and returns the operation's result. The sync client runs
#: it with :func:`follow`, the async one with :func:`afollow` (they differ only by an ``await``).
Plan = Generator[Call, Any, _T]


def follow(plan: Plan[_T], call: Callable[[Call], Any]) -> _T:
    """Run ``plan`` on the sync client: each :class:`Call` made by ``call``, its result sent back
    into the plan, its error thrown into it (where the plan handles it or lets it rise)."""
    try:
        step = next(plan)
        while True:
            try:
                result = call(step)
            except Exception as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as stop:
        done: _T = stop.value
        return done


async def afollow(plan: Plan[_T], call: Callable[[Call], Awaitable[Any]]) -> _T:
    """:func:`follow` for the async client (``call`` awaited)."""
    try:
        step = next(plan)
        while True:
            try:
                result = await call(step)
            except Exception as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as stop:
        done: _T = stop.value
        return done


def get_video_plan(base_url: str, video_no: str, unique_id: str | None) -> Plan[Video]:
    """``get_metadata``; ``data: null`` is a video that does not exist."""
    spec = protocol.get_metadata_request(base_url, video_no, unique_id)
    video: Video | None = yield Call(spec, protocol.read_video)
    if video is None:
        raise MemoriesNotFoundError(f"video {video_no} not found", endpoint=spec.endpoint)
    return video


def delete_videos_plan(base_url: str, video_nos: Iterable[str], unique_id: str | None) -> Plan[None]:
    """``delete_videos``, 100 ids a request. Older docs answer ``0409`` to deleting twice: the batch
    is then done if ``list_videos`` shows none of it left (see :func:`none_left`), else it stands."""
    for batch in protocol.delete_batches(video_nos):
        try:
            yield Call(protocol.delete_videos_request(base_url, batch, unique_id))
        except MemoriesDuplicateError:
            size = len(batch)
            spec = protocol.list_videos_request(
                base_url, page=1, size=size, unique_id=unique_id, video_nos=batch
            )
            listing: VideoPage = yield Call(spec, protocol.video_page_reader(1, size))
            if not none_left(listing):
                raise


def transcript_plan(
    routes: protocol.TranscriptRoutes, kind: TranscriptKind, video_no: str, unique_id: str | None
) -> Plan[Transcript]:
    """One index output, asked of the current path, then the older edition's (see
    :class:`protocol.TranscriptRoutes`)."""
    specs = routes.specs(kind, video_no, unique_id)
    for spec in specs:
        with routes.trying(spec, specs):
            transcript: Transcript = yield Call(spec, protocol.transcript_reader(kind, video_no))
            return transcript
    raise AssertionError("unreachable")  # pragma: no cover


class DownloadCore:
    """What both download responses share: the labels read from the headers, the size checks, the repr.

    The clients' responses add only how the body is read (their per-chunk loops stay theirs).

    :param endpoint: logical endpoint name, for errors.
    :param redactor: the client's redaction of error texts.
    """

    def __init__(self, endpoint: str, redactor: Redactor = NO_SECRETS) -> None:
        self.endpoint = endpoint
        self._redactor = redactor
        self.headers: Mapping[str, str] = {}
        self.content_type: str | None = None
        self.filename: str | None = None
        self.content_length: int | None = None

    def _take_headers(self, headers: Mapping[str, str]) -> None:
        """Keep the response's headers and what they say of the file (type, name, length)."""
        self.headers = headers
        self.content_type, self.filename = protocol.file_labels(headers, self._redactor)
        self.content_length = content_length(headers)

    def expected_size(self, known_size: int | None) -> int | None:
        """The size the body will be held to: ``Content-Length``, else ``known_size`` (the size the
        service reports), checked as reading the body checks it, before any of it is read.

        :raises MemoriesResponseError: when the two disagree, or when neither is known and the body
            is not chunked.
        """
        return self._expected_size(getattr(self, "status_code", None), known_size)

    def _expected_size(self, status: int | None, expected_size: int | None) -> int | None:
        """The body's size to hold it to (see :func:`protocol.expected_body_size`)."""
        return protocol.expected_body_size(
            self.headers, self.content_length, expected_size, status=status, endpoint=self.endpoint
        )

    def _broken(
        self, status: int | None, received: int, expected: int | None, exc: BaseException
    ) -> Exception:
        """The error for a connection that broke mid-body after ``received`` bytes (``exc``, its
        cause, redacted in place: see :func:`scrub_chain`)."""
        scrub_chain(exc, self._redactor)
        return protocol.broken_body_error(
            received, expected, exc, status=status, endpoint=self.endpoint, redactor=self._redactor
        )

    def _check_end(self, status: int | None, received: int, expected: int | None) -> None:
        """Raise when the body ended at a size other than the expected one."""
        error = protocol.body_size_error(received, expected, status=status, endpoint=self.endpoint)
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, filename={self.filename!r}, "
            f"content_type={self.content_type!r}, content_length={self.content_length!r})"
        )


#: Attributes in which the HTTP libraries' errors keep text from the wire (a status line, a header
#: line, the parser's complaint quoting it), besides their ``args``.
_TEXT_ATTRIBUTES = ("message", "msg", "line", "reason")


def scrub_chain(exc: BaseException, redactor: Redactor) -> None:
    """Redact, in place, the texts of ``exc`` and of every exception chained to it.

    The clients raise their own, redacted, error ``from`` the HTTP library's, which stays the
    ``__cause__`` for debugging: a traceback prints its text, and that of everything it wraps, as
    raised. Those texts may quote the server (http.client's ``BadStatusLine``, aiohttp's parser
    errors) or a URL: each string in the ``args`` (and in :data:`_TEXT_ATTRIBUTES`) of every
    exception reachable through ``__cause__``, ``__context__``, ``reason`` and ``args`` goes through
    ``redactor``. Texts that hold no secret are left as they are.
    """
    for item in chained_exceptions(exc):
        args = tuple(redactor.redact(a) if isinstance(a, str) else a for a in item.args)
        if args != item.args:
            with contextlib.suppress(AttributeError, TypeError):
                item.args = args
        for name in _TEXT_ATTRIBUTES:
            value = getattr(item, name, None)
            if isinstance(value, str) and redactor.redact(value) != value:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(item, name, redactor.redact(value))


def chained_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it through ``__cause__``, ``__context__``,
    ``reason`` and ``args``, each once. An item's links are followed after the caller's loop body
    has run for it, so what the body changes (its ``args``) is what is walked."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])


#: A proxy's answers to a tunnel that asking again cannot change (:func:`proxy_refusal`): the
#: request or method refused (400, 405: CONNECT not allowed), its credentials (407, or a 401 from a
#: proxy that says it so), its policy (403, 451). Any other (404 or 5xx for a host it cannot
#: resolve or reach, 408, 429...) may be answered otherwise later: a connection error, retried.
_PROXY_REFUSALS = frozenset({400, 401, 403, 405, 407, 451})


def shown_proxy(proxy: str) -> str:
    """``proxy`` as errors and logs may show it: ``scheme://host:port``, never its credentials."""
    parts = urlsplit(proxy)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _malformed(proxy: str) -> str | None:
    """Why ``proxy`` (a URL from the environment) cannot be used as it is written, else ``None``."""
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in proxy):
        return "it holds white space or control characters (a trailing newline?)"
    # urlsplit's own words are not said: they may quote the password. A '/', '?' or '#' left
    # unencoded in it ends the host there, so the rest of the password is read as the port
    # ("Port could not be cast to integer value as '<password>'") or, after a '[', as an IPv6
    # host ("'<password>' does not appear to be an IPv4 or IPv6 address").
    encode = (
        "a '/', '?', '#', '[' or ']' in the user or password must be percent-encoded "
        "(%2F, %3F, %23, %5B, %5D)"
    )
    try:
        parts = urlsplit(proxy)
    except ValueError:
        return f"Invalid IPv6 URL (a '[' not closed, or not an address between brackets; {encode})"
    try:
        parts.port  # noqa: B018  (raises for a port that is not a number from 0 to 65535)
    except ValueError as err:
        if str(err).startswith("Port out of range"):
            return "Port out of range 0-65535"
        return f"its port is not a number from 0 to 65535 ({encode})"
    if "@" in parts.path + parts.query + parts.fragment:
        # 'user:p@ss/word@proxy': the host read is a piece of the password (looked up in the DNS,
        # named by every connection error); a proxy URL has nothing after its host but a '/'.
        return (
            "an '@' follows what is read as its host: a '/', '?' or '#' in the user or password "
            "ends the host early, so they must be percent-encoded (%2F, %3F, %23), and an '@' (%40)"
        )
    if not parts.hostname:
        return "it names no host"
    return None


def unusable_proxy(url: str, endpoint: str) -> MemoriesProxyError | None:
    """The error for the proxy the environment names for ``url`` when it cannot be used, else
    ``None``: a URL that cannot be read (the sync client retried requests' 'Failed to parse' as a
    connection error, the async one raised a bare ``ValueError`` or ignored white space the other
    refused), or credentials HTTP Basic authentication cannot carry (a user or password with
    characters outside Latin-1, which both HTTP libraries encode them to: both raised a bare
    ``UnicodeEncodeError`` whose repr quoted the password). The message never quotes the URL."""
    proxy = proxies.env_proxy(url)
    if proxy is None:
        return None
    malformed = _malformed(proxy)
    if malformed is not None:
        return MemoriesProxyError(
            f"the proxy URL the environment names for {urlsplit(url).hostname} (HTTPS_PROXY, HTTP_PROXY "
            f"or ALL_PROXY) cannot be used: {malformed}; nothing was sent. Give it as "
            "http://host:port, with user:password@ before the host if the proxy asks for them",
            proxy="(unreadable)",
            endpoint=endpoint,
        )
    parts = urlsplit(proxy)
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    try:
        credentials.encode("latin-1")
    except UnicodeEncodeError:
        shown = shown_proxy(proxy)
        return MemoriesProxyError(
            f"the user or password of the proxy {shown} (in its URL in HTTPS_PROXY, HTTP_PROXY or "
            "ALL_PROXY) has characters outside Latin-1, which HTTP Basic authentication cannot send; "
            "nothing was sent. Give the proxy credentials of Latin-1 characters",
            proxy=shown,
            endpoint=endpoint,
        )
    return None


def proxy_refusal(url: str, status: int | None, endpoint: str) -> MemoriesProxyError | None:
    """The error for the proxy of ``url`` answering ``status`` instead of carrying the request (a
    tunnel refused, or a 407 to a forwarded request), or ``None`` when no proxy is used for ``url``
    or asking again may be answered otherwise (see :data:`_PROXY_REFUSALS`: a plain connection
    error, retried).

    The message names the proxy by its host, never its user or password (in its URL in the
    environment), nor any text of the proxy's (its own reason phrase included), and says whether
    credentials were given.
    """
    if status not in _PROXY_REFUSALS:
        return None
    proxy = proxies.env_proxy(url)
    if proxy is None:
        return None
    try:
        answer = f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        answer = f"HTTP {status}"
    shown = shown_proxy(proxy)
    if status == 407:
        parts = urlsplit(proxy)
        given = parts.username is not None or parts.password is not None
        why = (
            "the user and password in its URL were refused"
            if given
            else "its URL gives no credentials: set them as http://user:password@host:port"
        )
        return MemoriesProxyAuthError(
            f"the proxy {shown} refused authentication ({answer}): {why} (HTTPS_PROXY, HTTP_PROXY or "
            "ALL_PROXY); the request never reached memories.ai and is not retried",
            proxy=shown,
            http_status=status,
            endpoint=endpoint,
        )
    host = urlsplit(url).hostname
    return MemoriesProxyError(
        f"the proxy {shown} refused to carry the request to {host} ({answer}); the request never "
        "reached memories.ai and is not retried: the proxy must allow that host, or NO_PROXY name it",
        proxy=shown,
        http_status=status,
        endpoint=endpoint,
    )


class SendErrors:
    """Context manager around a send: maps the HTTP library's ``errors`` to the client's hierarchy.

    An error the upload body raised while being read (its source broke its size) is raised as
    itself; any other becomes ``transport_error(exc, endpoint, redactor)`` (its text redacted).
    """

    def __init__(
        self,
        endpoint: str,
        errors: tuple[type[BaseException], ...],
        transport_error: Callable[[BaseException, str, Redactor], Exception],
        redactor: Redactor,
    ) -> None:
        self._endpoint = endpoint
        self._errors = errors
        self._transport_error = transport_error
        self._redactor = redactor

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, MemoriesError) and exc.endpoint is None:
            exc.endpoint = self._endpoint  # raised by the transport's hooks (a refused redirect)
        if exc is None or not isinstance(exc, self._errors):
            return
        source_error = find_source_error(exc)
        if source_error is not None:
            raise source_error from None
        raise self._transport_error(exc, self._endpoint, self._redactor) from exc


class ClientCore:
    """Settings and I/O-free decisions of a memories.ai client (the base of both clients).

    :param api_key: the account's API key (sent raw in ``Authorization``; never logged or shown).
    :param base_url: v1 base URL, including ``/serve/api/v1``.
    :param v2_base_url: v2 base URL, including ``/serve/api/v2``.
    :param timeout: read timeout in seconds for every request (also caps the connect timeout).
    :param retry: retry policy; default ``RetryPolicy()``.
    :param user_agent: overrides the default ``airflow-provider-memories/<version> python/<x.y>``.
    :param connect_timeout: connect timeout in seconds; default ``min(timeout, 30)``.
    :param upload_timeout: seconds to wait for the answer to ``upload``/``upload_url`` once the
        request is sent (the service stores the video, or fetches the URL, before answering);
        never shorter than ``timeout``. An upload that times out is not retried, since the
        service may have accepted it: a generous value avoids a second, billed, upload.
    :param ca_bundle: a file of PEM certificates (or a c_rehash'ed folder) to verify https
        servers against instead of the default store, e.g. the corporate CA of a TLS-inspecting
        proxy. Without it ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` are honoured, else the system
        store with certifi's bundle; both clients alike (see :mod:`~memories_provider.client.tls`).
        Verification cannot be turned off.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = protocol.DEFAULT_BASE_URL,
        v2_base_url: str = protocol.DEFAULT_V2_BASE_URL,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        user_agent: str | None = None,
        connect_timeout: float | None = None,
        upload_timeout: float = protocol.DEFAULT_UPLOAD_TIMEOUT,
        ca_bundle: str | None = None,
    ) -> None:
        self._api_key = protocol.check_api_key(api_key)
        # Every error built from a response or a transport failure goes through it, at creation.
        self._redactor = Redactor([self._api_key])
        self.base_url = protocol.normalize_base_url(base_url, name="base_url")
        self.v2_base_url = protocol.normalize_base_url(v2_base_url, name="v2_base_url")
        self.timeout, self.upload_timeout = protocol.check_timeouts(timeout, upload_timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout else min(self.timeout, 30.0)
        self.retry = retry if retry is not None else RetryPolicy()
        self.user_agent = user_agent or USER_AGENT
        self._transcript_routes = protocol.TranscriptRoutes(self.base_url)
        if ca_bundle is not None and (not isinstance(ca_bundle, str) or not ca_bundle.strip()):
            raise MemoriesInvalidArgumentError("`ca_bundle` must be the path of a CA bundle, or None")
        # Read now: the environment of the process that made the client decides, at every request.
        self._trust = tls.trust_key(ca_bundle.strip() if ca_bundle else None)
        self._open()

    def _open(self) -> None:
        """Set up the transport (called last by ``__init__``, once the settings are checked)."""

    def __repr__(self) -> str:
        urls = f"base_url={self.base_url!r}, v2_base_url={self.v2_base_url!r}"
        return f"{type(self).__name__}({urls}, api_key='***')"

    # ------------------------------------------------------------------ requests

    def _read_timeout(self, spec: protocol.RequestSpec) -> float:
        """How long to wait for the answer once the request is sent."""
        return self.upload_timeout if spec.slow_answer else self.timeout

    def _request_headers(
        self, spec: protocol.RequestSpec, body: MultipartBody | None = None
    ) -> dict[str, str]:
        """The headers of one request (the session adds the key and ``User-Agent``); logs it."""
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = body.content_type
            # An explicit length keeps the body from being sent with chunked transfer encoding.
            headers["Content-Length"] = str(body.length)
        elif spec.form is not None:
            headers["Content-Type"] = FORM_CONTENT_TYPE
        if spec.download:
            # Videos do not compress; identity keeps Content-Length equal to the bytes we count.
            headers["Accept-Encoding"] = "identity"
            headers["Accept"] = "*/*"
        else:
            headers["Accept"] = "application/json"
        log.debug("memories.ai %s %s", spec.method, spec.endpoint)
        return headers

    def _redactor_for(self, spec: protocol.RequestSpec) -> Redactor:
        """The redaction of what ``spec`` leads to: the key, and the secrets the request carries."""
        return self._redactor.with_secrets(*spec.secrets) if spec.secrets else self._redactor

    def _send_errors(
        self,
        spec: protocol.RequestSpec,
        errors: tuple[type[BaseException], ...],
        transport_error: Callable[[BaseException, str, Redactor], Exception],
    ) -> SendErrors:
        """Around a send: the HTTP library's ``errors`` become the client's (``transport_error``)."""
        return SendErrors(spec.endpoint, errors, transport_error, self._redactor_for(spec))

    @staticmethod
    def _form_body(spec: protocol.RequestSpec) -> bytes | None:
        """The url-encoded form body of ``spec``, if it has one."""
        return None if spec.form is None else urlencode(list(spec.form)).encode()

    @staticmethod
    def _upload_body(
        form: list[tuple[str, str]],
        source: UploadStream,
        content_type: str | None,
        progress: Callable[[int], None] | None = None,
    ) -> MultipartBody:
        """The multipart body of an upload; the part's Content-Type from the name unless given."""
        detected = protocol.video_content_type(source.filename)
        return MultipartBody(
            form,
            source.fileobj,
            filename=source.filename,
            content_type=content_type or detected,
            size=source.size,
            progress=progress,
        )

    # ------------------------------------------------------------------ answers

    def _answer(
        self,
        spec: protocol.RequestSpec,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        read: Callable[[Any], Any] | None = None,
    ) -> Any:
        """The result of a JSON answer (``read`` applied to its ``data``), or its error raised."""
        log.debug("memories.ai %s -> HTTP %s", spec.endpoint, status)
        refused = self._forward_refused(spec, status)
        if refused is not None:
            raise refused
        return protocol.read_response(
            protocol.Answer(status, headers, content, spec.endpoint, self._redactor_for(spec)), read=read
        )

    @staticmethod
    def _forward_refused(spec: protocol.RequestSpec, status: int) -> MemoriesProxyError | None:
        """A 407 answered to a request a plain http proxy was to forward: the proxy refused its
        credentials (:func:`proxy_refusal`). Any other status may be the service's own."""
        return proxy_refusal(spec.url, status, spec.endpoint) if status == 407 else None

    def _download_refused(
        self, spec: protocol.RequestSpec, status: int, headers: Mapping[str, str], content: bytes
    ) -> Exception:
        """The error for a download answered with a non-2xx status (``content``: its first bytes)."""
        log.debug("memories.ai %s -> HTTP %s", spec.endpoint, status)
        refused = self._forward_refused(spec, status)
        if refused is not None:
            return refused
        return protocol.download_error(
            protocol.Answer(status, headers, content, spec.endpoint, self._redactor)
        )

    def _sniff_broken(
        self,
        spec: protocol.RequestSpec,
        status: int,
        headers: Mapping[str, str],
        received: int,
        exc: BaseException,
        transport_error: Callable[[BaseException, str, Redactor], MemoriesConnectionError],
    ) -> Exception:
        """The error for a connection that broke after ``received`` bytes, while the first bytes of a
        download were read: ``exc`` mapped by ``transport_error``, counted against Content-Length."""
        error = transport_error(exc, spec.endpoint, self._redactor)
        return protocol.broken_sniff_error(received, content_length(headers), error, status=status)

    def _check_download(
        self,
        spec: protocol.RequestSpec,
        status: int,
        headers: Mapping[str, str],
        sniffer: protocol.BodySniffer,
        close: Callable[[], object],
    ) -> None:
        """Raise (after ``close``) when the sniffed first bytes are an error document, not a file,
        or the answer says it holds only part of the file (``206``: nothing asked for a range)."""
        log.debug("memories.ai %s -> HTTP %s", spec.endpoint, status)
        if status == 206:
            close()
            content_range = headers.get("Content-Range") or "no Content-Range"
            raise MemoriesResponseError(
                "the download was answered HTTP 206 Partial Content "
                f"({protocol.server_text(content_range, self._redactor)}) "
                "although no range was asked for: not the whole file; nothing was written",
                http_status=status,
                endpoint=spec.endpoint,
            )
        error = sniffer.error(status, headers, endpoint=spec.endpoint, redactor=self._redactor)
        if error is not None:
            close()
            raise error

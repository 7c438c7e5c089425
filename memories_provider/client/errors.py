"""Exceptions raised by the memories.ai clients.

Every error carries the business ``code`` (``"0402"``, or the v2 integer code as a string),
the server ``message``, the ``http_status`` and the logical ``endpoint`` name. None of them
ever contains the API key, whole or in part: the clients build every message from a response or
a transport failure through their :class:`~memories_provider.redaction.Redactor`
(redact, then cut), so the retry warnings that log an error are as clean as the error raised.
"""

from __future__ import annotations


class MemoriesError(Exception):
    """Base class of every error raised by the memories.ai clients.

    :param message: human-readable description (the server's ``msg`` when there is one).
    :param code: business code from the response envelope, if any (``"0001"``, ``"0429"``, ``"400"``).
    :param http_status: HTTP status of the response, if a response was received.
    :param endpoint: logical endpoint name (``"upload"``, ``"list_videos"``, ``"download"`` ...).
    :param retry_after: seconds the server asked us to wait (``Retry-After``), if it said so; the
        retry policy honours it for rate limits and server errors.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.endpoint = endpoint
        self.retry_after = retry_after

    def __str__(self) -> str:
        details = []
        if self.endpoint:
            details.append(f"endpoint={self.endpoint}")
        if self.code is not None:
            details.append(f"code={self.code}")
        if self.http_status is not None:
            details.append(f"http_status={self.http_status}")
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, endpoint={self.endpoint!r})"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword-only constructor arguments: make errors picklable (Airflow ships them across processes).
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[MemoriesError], message: str, state: dict) -> MemoriesError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class MemoriesAuthError(MemoriesError):
    """The API key is invalid (``0401``), the account is disabled (``0403``), permission is denied
    (``9009``) or the server answered HTTP 401/403. Never retried."""


class MemoriesInsufficientCreditsError(MemoriesError):
    """The account has not enough credits for the operation (``0402``). Never retried."""


class MemoriesRateLimitError(MemoriesError):
    """The request was rejected by a rate limit (``0429`` or HTTP 429). Retried with backoff,
    waiting at least ``retry_after`` when the server sent ``Retry-After``."""


class MemoriesInvalidRequestError(MemoriesError):
    """A parameter is missing or invalid (``0001``/``0003``, HTTP 400). Never retried."""


class MemoriesInvalidArgumentError(MemoriesInvalidRequestError, ValueError):
    """An argument breaks a documented rule; found before any request is sent (no ``endpoint``).

    The message names the parameter and the rule. Also a ``ValueError``, so the operators' pre-flight
    checks treat it as bad input that no retry can fix.
    """


class MemoriesNotFoundError(MemoriesInvalidRequestError):
    """The video, asset or blob does not exist: a business code says so (``0001``/``0003`` with a
    "not found" message, a v2 ``404``). An HTTP 404 without a business code is a
    :class:`MemoriesRouteNotFoundError` instead, which is not this class. Never retried."""


class MemoriesRouteNotFoundError(MemoriesError):
    """The server has no such path: HTTP 404 without a business code.

    An infrastructure error (a gateway without the route, or an older edition of the API): it says
    nothing about the video or asset asked for, so it is not a :class:`MemoriesNotFoundError` — a
    caller that acts on "the video is gone" (upload again, leave it out) must not act on it. Not
    retried by the client; an Airflow retry asks again.
    """


class MemoriesDuplicateError(MemoriesError):
    """A duplicate or non-repeatable operation (``0409``). Never retried."""


class MemoriesServerError(MemoriesError):
    """The server failed (HTTP 5xx). Retried for idempotent calls; a ``Retry-After`` (e.g. on a 503)
    replaces the policy's own backoff."""


class MemoriesResponseError(MemoriesServerError):
    """The response is not one the API documents (non-JSON body, unknown shape or code).

    The message quotes the HTTP status and the first bytes of the body. Retried only when the
    HTTP status is 5xx.
    """


class MemoriesPagingError(MemoriesError):
    """The pages of a listing cannot be read whole: the service answered a page with exactly the
    videos of an earlier page under the same ``total_count`` (it does not honour ``page``: a gateway
    or an edition that drops the parameter), or its pages ended before they held ``total_count``
    videos.

    Every page came back fine on its own, so it is no transient failure: reading on would take part
    of the listing for all of it (or, without a ``total_count``, ask for page 1 again for ever).
    Never retried by the client; a caller that acts on "not listed" must not act on it.

    :param page: the page at which the listing was given up.
    :param repeated_page: the earlier page that ``page`` repeated, or ``None`` when the pages
        ended short of ``total_count``.
    :param listed: the videos the pages held up to ``page``, repeats included.
    :param total_count: the ``total_count`` of the last page read.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        page: int,
        repeated_page: int | None = None,
        listed: int = 0,
        total_count: int | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.page = page
        self.repeated_page = repeated_page
        self.listed = listed
        self.total_count = total_count


class MemoriesConnectionError(MemoriesError):
    """The HTTP transport failed (refused, reset, DNS, TLS ...).

    :param request_sent: False when the request certainly never reached the server (connection
        refused, name resolution or connect timeout) — the only case in which a non-idempotent
        upload is retried.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status, endpoint=endpoint)
        self.request_sent = request_sent


class MemoriesProxyError(MemoriesConnectionError):
    """The proxy the environment names (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``) refused to
    carry the request: its tunnel (``CONNECT``) answered ``403`` (the proxy's policy), ``400``,
    ``405`` or ``451``; or it cannot be used at all (a SOCKS proxy the client cannot speak to, a
    URL that cannot be read, credentials HTTP Basic cannot carry: ``http_status`` None). The
    request never reached memories.ai (``request_sent`` is False), and asked again the proxy
    answers the same: never retried. A ``404``, ``502``, ``503`` or ``504`` from a proxy (it could
    not resolve or reach the service, or is overloaded) is a plain
    :class:`MemoriesConnectionError`, retried.

    :param proxy: the proxy, ``scheme://host:port``, never its credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        proxy: str,
        code: str | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status, endpoint=endpoint, request_sent=False)
        self.proxy = proxy


class MemoriesProxyAuthError(MemoriesProxyError):
    """The proxy refused its credentials, or asked for some where none were given (HTTP ``407``
    Proxy Authentication Required). Never retried: the proxy's user and password (in its URL in the
    environment) do not change between tries."""


class MemoriesTimeoutError(MemoriesConnectionError):
    """Connecting or reading timed out."""


class MemoriesIncompleteBodyError(MemoriesConnectionError):
    """A download body ended before ``Content-Length`` or the connection dropped mid-body.

    The download call itself is not retried from the middle: restart it from the beginning.
    """


__all__ = [
    "MemoriesAuthError",
    "MemoriesConnectionError",
    "MemoriesDuplicateError",
    "MemoriesError",
    "MemoriesIncompleteBodyError",
    "MemoriesInsufficientCreditsError",
    "MemoriesInvalidArgumentError",
    "MemoriesInvalidRequestError",
    "MemoriesNotFoundError",
    "MemoriesPagingError",
    "MemoriesProxyAuthError",
    "MemoriesProxyError",
    "MemoriesRateLimitError",
    "MemoriesResponseError",
    "MemoriesRouteNotFoundError",
    "MemoriesServerError",
    "MemoriesTimeoutError",
]

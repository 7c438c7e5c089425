"""The emulated memories.ai service: v1 and v2 API routes plus the ``/_emulator`` control routes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from memories_provider.emulator.config import ENDPOINTS, EmulatorConfig, check_config, resolve_rate_limits
from memories_provider.emulator.faults import (
    DOWNLOAD_BODY_KINDS,
    EARLY_KINDS,
    NO_FAULT,
    REFUSING_ENDPOINTS,
    Fault,
    FaultBook,
)
from memories_provider.emulator.index_outputs import AUDIO, KINDS, VISUAL, index_data
from memories_provider.emulator.ratelimit import SlidingWindowLimiter
from memories_provider.emulator.state import (
    BUCKET,
    FAILED,
    PARSE,
    STATUSES,
    UNPARSE,
    Asset,
    IdFactory,
    Video,
    now_ms,
)
from memories_provider.emulator.validation import (
    AUTH,
    CREDITS,
    LIMITED,
    ApiError,
    bad,
    check_filename,
    check_video_content_type,
    check_video_no,
    delete_ids,
    haversine_km,
    list_filters,
    unique_id_value,
    unknown_fields,
    upload_metadata,
)
from memories_provider.redaction import NO_SECRETS

log = logging.getLogger(__name__)

V1 = "/serve/api/v1"
V2 = "/serve/api/v2"
#: The older edition's path prefix of the visual index output (spec section 2, Index outputs).
OLDER_VIDEO = "/serve/api/video"
CONTROL = "/_emulator"
#: Read/write size for streamed bodies: big reads keep per-chunk overhead negligible at GB sizes.
CHUNK = 1024 * 1024
RATE_LIMIT_MSG = "Request has exceeded the limit."
_MAX_FIELD_BYTES = 64 * 1024
_MAX_LOG = 100_000


@dataclass
class JsonReply:
    """A JSON answer before faults are applied."""

    payload: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FileReply:
    """A file answer (a download) before faults are applied.

    :param disposition: whether to send ``Content-Disposition`` (the spec: "may be absent on A").
    """

    asset: Asset
    disposition: bool = True

    def headers(self) -> dict[str, str]:
        """``Content-Type`` and, unless left out, ``Content-Disposition`` with the original name."""
        headers = {"Content-Type": self.asset.content_type}
        if self.disposition:
            headers["Content-Disposition"] = content_disposition(self.asset.filename)
        return headers


Reply = JsonReply | FileReply
Handler = Callable[[web.Request, dict[str, Any]], Awaitable[Reply]]


def ok(data: Any) -> JsonReply:
    """The v1 success envelope."""
    return JsonReply({"code": "0000", "msg": "success", "data": data, "success": True, "failed": False})


def content_disposition(filename: str) -> str:
    """``attachment`` with the original name; RFC 6266 ``filename*`` when it is not plain ASCII."""
    try:
        filename.encode("ascii")
        ascii_ok = '"' not in filename and "\\" not in filename and filename.isprintable()
    except UnicodeEncodeError:
        ascii_ok = False
    if ascii_ok:
        return f'attachment; filename="{filename}"'
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


#: What a proxy or single-sign-on gateway answers in place of the file.
LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body><form method='post' action='/login'><input name='user'><input name='password' type='password'>"
    b"</form></body></html>\n"
)


def _read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _type_header(content_type: str) -> dict[str, str]:
    """``{"Content-Type": content_type}``, or no header at all for ``""``."""
    return {"Content-Type": content_type} if content_type else {}


def _retry_after_header(seconds: float) -> str:
    # Fractional seconds: the spec does not fix a format and tests use sub-second windows.
    return format(round(max(seconds, 0.001), 3), "g")


async def _stall(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds`` mid-body; True as soon as the client has closed the connection."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        await asyncio.sleep(min(left, 0.1))
    return False


def request_echo(request: web.Request, *, offset: int = 0, auth_at: int | None = None) -> str:
    """The request as a careless server dumps it into an error: request line (full URL), headers.

    :param offset: characters of the body in front of the echo.
    :param auth_at: put the ``Authorization`` line first and pad the echo so that the header's
        value starts at this character of the body (or as soon after it as the request line allows):
        tests place the key across a client's cut.
    """
    line = f"{request.method} {request.url} HTTP/{request.version.major}.{request.version.minor}"
    headers = list(request.headers.items())
    if auth_at is not None:
        headers.sort(key=lambda item: item[0].lower() != "authorization")
    text = "\n".join([line, *(f"{name}: {value}" for name, value in headers)])
    if auth_at is not None:
        found = text.lower().find("\nauthorization: ")
        if found >= 0:
            start = offset + found + len("\nauthorization: ")
            text = "." * max(0, int(auth_at) - start) + text
    return text


#: Request headers that would make aiohttp's FileResponse answer 206/304/412 instead of the file.
_CONDITIONAL_HEADERS = (
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)


class _PlainFileResponse(web.FileResponse):
    """``FileResponse`` (sendfile) without the validators and ``Accept-Ranges`` the service never sends."""

    async def _write_headers(self) -> None:
        for name in ("Accept-Ranges", "ETag", "Last-Modified"):
            self._headers.pop(name, None)
        await super()._write_headers()


class _Sink:
    """Writes a stream to a temp file in the data dir while hashing it; renamed into place when done."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.tmp = directory / f".incoming-{uuid.uuid4().hex}.part"
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()/discard()
        self._sha = hashlib.sha256()
        self._pending: asyncio.Future[None] | None = None
        self.size = 0
        self.limit = limit
        self.too_big = False

    def _write(self, chunk: bytes) -> None:
        # Runs in a worker thread: hashing and writing release the GIL, so the loop keeps reading.
        self._sha.update(chunk)
        self._file.write(chunk)

    async def feed(self, chunk: bytes) -> None:
        """Queue one chunk (overlapping the disk write with the next network read)."""
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_big = True
            return
        if self._pending is not None:
            await self._pending
        self._pending = asyncio.get_running_loop().run_in_executor(None, self._write, chunk)

    async def finish(self, final: Path) -> str:
        """Flush, close and rename to ``final``; returns the sha256 hex digest."""
        if self._pending is not None:
            await self._pending
        self._file.close()
        os.replace(self.tmp, final)
        return self._sha.hexdigest()

    async def discard(self) -> None:
        """Drop the partial file."""
        if self._pending is not None:
            with contextlib.suppress(OSError):
                await self._pending
        self._file.close()
        self.tmp.unlink(missing_ok=True)


async def _control_body(request: web.Request) -> dict[str, Any]:
    """A control call's JSON object; anything else is the caller's mistake (HTTP 400), not a 500."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body: not valid JSON"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body: must be a JSON object, got {type(body).__name__}"}),
            content_type="application/json",
        )
    return body


def _filename_from_response(resp: aiohttp.ClientResponse, url: str) -> str:
    header = resp.headers.get("Content-Disposition")
    if header:
        msg = Message()
        msg["content-disposition"] = header
        name = msg.get_filename()
        if name:
            return os.path.basename(name)
    return os.path.basename(unquote(urlsplit(url).path)) or "video"


#: Largest JSON body read to see which videos a call names (for a fault aimed at one video).
_NAMING_BODY_MAX = 1024 * 1024


async def _named_videos(request: web.Request) -> list[str]:
    """The video ids a call names: the query's ``video_no`` and a JSON body's ``video_no``,
    ``video_nos`` or bare id array (the body is read once; the handler reads it again from aiohttp's
    cache). Anything else (a multipart upload, a body too large or not JSON) names none."""
    names: list[str] = list(request.query.getall("video_no", []))
    if request.content_type == "application/json" and (request.content_length or 0) <= _NAMING_BODY_MAX:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            body = None
        if isinstance(body, dict):
            single, many = body.get("video_no"), body.get("video_nos")
            names += [single] if isinstance(single, str) else []
            names += [v for v in many if isinstance(v, str)] if isinstance(many, list) else []
        elif isinstance(body, list):
            names += [v for v in body if isinstance(v, str)]
    return list(dict.fromkeys(names))


def query_value(request: web.Request, name: str) -> str | None:
    """The one value of a query parameter (None when absent); sending it twice is refused, as the
    form fields are (a Spring ``@RequestParam`` would join both values with a comma, not pick one)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad(f"{name}: sent {len(values)} times; send it once")
    return values[0] if values else None


class Emulator:
    """All state of one emulated account plus the aiohttp application serving it.

    :param data_dir: where uploaded bytes are kept (a ``files`` sub-directory is used).
    :param config: the startup configuration; ``reset()`` returns to it.
    """

    def __init__(self, data_dir: str | os.PathLike[str], config: EmulatorConfig) -> None:
        self.data_dir = Path(data_dir)
        self.files_dir = self.data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.base_config = config.copy()
        self.config = config.copy()
        self.ids = IdFactory()
        self.limiter = SlidingWindowLimiter()
        self.faults = FaultBook()
        self.videos: dict[str, Video] = {}
        self.assets: dict[str, Asset] = {}
        self.blobs: dict[tuple[str, str], Asset] = {}
        self.unique_ids: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.credits: float | None = config.credits
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_callback: dict[str, asyncio.Task[Any]] = {}
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ application

    def make_app(self) -> web.Application:
        """The aiohttp application (API + control routes)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        api: list[tuple[str, str, str, str, Handler]] = [
            ("POST", f"{V1}/upload", "upload", "v1", self.upload),
            ("POST", f"{V1}/upload_url", "upload_url", "v1", self.upload_url),
            ("GET", f"{V1}/get_metadata", "get_metadata", "v1", self.get_metadata),
            ("POST", f"{V1}/list_videos", "list_videos", "v1", self.list_videos),
            ("GET", f"{V1}/list_unique_ids", "list_unique_ids", "v1", self.list_unique_ids),
            ("POST", f"{V1}/delete_videos", "delete_videos", "v1", self.delete_videos),
            ("POST", f"{V1}/download", "download", "v1", self.download_by_video),
            ("GET", f"{V1}/download", "download", "v1", self.download_by_blob),
            ("GET", f"{V2}/download", "v2_download", "v2", self.download_by_blob),
            ("GET", f"{V2}/{{asset_id}}/download", "v2_download", "v2", self.download_asset),
            (
                "GET",
                f"{V1}/get_audio_transcription",
                "get_audio_transcription",
                "v1",
                self.audio_transcription,
            ),
        ]
        for method, path, endpoint, version, handler in api:
            app.router.add_route(method, path, self._wrap(endpoint, version, handler))
        # One edition of the visual output at a time: the other path is unknown (HTTP 404).
        caption = self._wrap("get_video_caption", "v1", self.video_caption)
        older = self._wrap("get_video_transcription", "v1", self.older_video_transcription)
        app.router.add_get(f"{V1}/get_video_caption", self._edition("current", caption))
        app.router.add_get(f"{OLDER_VIDEO}/get_video_transcription", self._edition("older", older))
        app.router.add_route("*", "/serve/api/{tail:.*}", self._not_found)
        app.router.add_post(f"{CONTROL}/reset", self.c_reset)
        app.router.add_get(f"{CONTROL}/config", self.c_config)
        app.router.add_post(f"{CONTROL}/config", self.c_configure)
        app.router.add_post(f"{CONTROL}/faults", self.c_inject_fault)
        app.router.add_get(f"{CONTROL}/faults", self.c_faults)
        app.router.add_get(f"{CONTROL}/videos", self.c_videos)
        app.router.add_post(f"{CONTROL}/videos/{{video_no}}/status", self.c_set_status)
        app.router.add_post(f"{CONTROL}/statuses", self.c_set_statuses)
        app.router.add_post(f"{CONTROL}/videos/{{video_no}}/index_outputs", self.c_set_index_outputs)
        app.router.add_post(f"{CONTROL}/assets", self.c_add_asset)
        app.router.add_get(f"{CONTROL}/requests", self.c_requests)
        app.router.add_get(f"{CONTROL}/callbacks", self.c_callbacks)
        app.router.add_get(f"{CONTROL}/health", self.c_health)
        app.router.add_get(f"{CONTROL}/public/{{asset_id}}", self.c_public_file)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        # trust_env=False: callbacks and URL fetches go straight to the target, never via a proxy.
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def _cleanup(self, app: web.Application) -> None:
        for timer in self._timers.values():
            timer.cancel()
        # Callbacks still in flight are cut, not awaited: a receiver that never answers would
        # otherwise hold the emulator's stop for the callback's 30 s timeout.
        self._cancel_callbacks()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # ------------------------------------------------------------------ request pipeline

    def _wrap(self, endpoint: str, version: str, handler: Handler) -> Callable[..., Any]:
        async def route(request: web.Request) -> web.StreamResponse:
            entry: dict[str, Any] = {
                "endpoint": endpoint,
                "method": request.method,
                "path": request.path_qs,
                "time": time.time(),
                "http_status": None,
                "code": None,
            }
            self.requests.append(entry)
            if len(self.requests) > _MAX_LOG:  # a long-running demo server must not grow forever
                del self.requests[: _MAX_LOG // 10]
            named: list[str] = []
            if self.faults.aimed(endpoint):  # read what the call names only for a fault aimed at a video
                named = await _named_videos(request)
                if endpoint == "list_videos" and named:
                    entry["video_nos"] = named  # also when the fault answers instead of the handler
            fault = self.faults.take(endpoint, frozenset(named))
            if fault is not None and fault.kind == NO_FAULT:
                fault = None  # a call let through, so that the next fault hits a later one
            if fault is not None:
                entry["fault"] = fault.kind
            try:
                if fault is not None and fault.kind in EARLY_KINDS:
                    return await self._early_fault(request, fault, entry, version)
                self._check_auth(request)
                if self.config.account_disabled:
                    raise ApiError("0403", "account disabled", v2_status=403)
                if endpoint in self.config.permission_denied:
                    raise ApiError(
                        "9009", f"permission denied: this key may not call {endpoint}", v2_status=403
                    )
                wait = self.limiter.acquire(endpoint, self.config.rate_limits.get(endpoint))
                if wait is not None:
                    raise ApiError(LIMITED, RATE_LIMIT_MSG, retry_after=wait)
                reply: Reply
                if fault is not None and fault.kind == "json_error" and endpoint in REFUSING_ENDPOINTS:
                    await request.release()  # refused unread: the answer below replaces any
                    reply = JsonReply({})
                else:
                    reply = await handler(request, entry)
            except ApiError as exc:
                await request.release()  # drain an unread upload so the client sees the answer
                reply = self._error_reply(exc, version, request)
            if fault is not None and fault.kind == "accept_then_drop":
                return self._drop(request, entry)
            if fault is not None and fault.kind == "json_error":
                code = fault.params.get("code", "0001" if version == "v1" else 400)
                msg = fault.params.get("msg", "Resource does not exist")
                msg_key = fault.params.get("msg_key", "msg")
                payload = {"code": code, msg_key: msg, "data": None, "success": False, "failed": True}
                content_type = fault.params.get("content_type", "application/json")
                if content_type != "application/json":
                    entry["code"] = code
                    return self._raw(
                        request, entry, 200, _type_header(content_type), json.dumps(payload).encode()
                    )
                reply = JsonReply(payload)
            if fault is not None and fault.kind in DOWNLOAD_BODY_KINDS:
                return await self._bad_download_body(request, reply, fault, entry)
            return await self._render(request, reply, fault, entry)

        return route

    def _check_auth(self, request: web.Request) -> None:
        key = request.headers.get("Authorization")
        if key and key in self.config.api_keys:
            return
        if key and key.lower().startswith("bearer "):
            raise ApiError(AUTH, "API key invalid: send the raw key in Authorization, without 'Bearer '")
        if not key:
            raise ApiError(AUTH, "API key missing: send it in the Authorization header")
        raise ApiError(AUTH, "API key invalid")

    def _error_reply(self, exc: ApiError, version: str, request: web.Request) -> JsonReply:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = _retry_after_header(exc.retry_after)
        status = exc.v2_status if version == "v2" else exc.http_status
        msg = exc.msg
        if exc.code in (AUTH, LIMITED) or status in (401, 500):
            msg = self._echoed(msg, request)
        if version == "v2":
            payload = {"code": exc.v2_status, "msg": msg, "data": None, "success": False, "failed": True}
            return JsonReply(payload, exc.v2_status, headers)
        payload = {"code": exc.code, "msg": msg, "data": None, "success": False, "failed": True}
        return JsonReply(payload, exc.http_status, headers)

    def _echoed(self, msg: str, request: web.Request, auth_at: int | None = None) -> str:
        """``msg``, followed by the request's echo when ``echo_requests`` is on."""
        if not self.config.echo_requests:
            return msg
        prefix = f"{msg}; request was: "
        return prefix + request_echo(request, offset=len(prefix), auth_at=auth_at)

    async def _early_fault(
        self, request: web.Request, fault: Fault, entry: dict[str, Any], version: str
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == "drop_mid_request":
            # Read a little, then close with the rest unread: the kernel resets the connection and
            # the client fails while still sending its body.
            want = int(fault.params.get("after_bytes", 64 * 1024))
            got = 0
            while got < want and (chunk := await request.content.read(min(CHUNK, want - got))):
                got += len(chunk)
            entry["body_bytes_read"] = got
            return self._drop(request, entry)
        await request.release()  # the request is read whole first, as a real server would
        if kind == "drop_before_response":
            return self._drop(request, entry)
        retry_after = fault.params.get("retry_after", self.config.retry_after)
        headers = {"Retry-After": _retry_after_header(retry_after)} if retry_after is not None else {}
        auth_at = fault.params.get("auth_at")
        if kind == "http_500" and self.config.echo_requests:
            # A debugging page rather than Spring's JSON: the client can only quote the body.
            entry["http_status"] = 500
            head = "500 Internal Server Error\n"
            return web.Response(
                status=500, text=head + request_echo(request, offset=len(head), auth_at=auth_at)
            )
        if kind == "http_500":
            payload = {
                "timestamp": now_ms(),
                "path": request.path,
                "status": 500,
                "error": "Internal Server Error",
            }
            reply = JsonReply(payload, 500)
        elif kind == "http_404":
            # An infrastructure 404 (spec section 1): Spring-style, no business code.
            payload = {"timestamp": now_ms(), "path": request.path, "status": 404, "error": "Not Found"}
            reply = JsonReply(payload, 404)
        elif kind == "http_503":
            # Infrastructure errors may carry no JSON at all.
            entry["http_status"] = 503
            return web.Response(
                status=503,
                text="<html><body>503 Service Temporarily Unavailable</body></html>",
                content_type="text/html",
            )
        elif kind == "http_401":
            code: Any = AUTH if version == "v1" else 401
            msg = self._echoed("API key invalid", request, auth_at)
            reply = JsonReply({"code": code, "msg": msg, "data": None, "success": False, "failed": True}, 401)
        elif kind == "code_0429":
            msg = self._echoed(RATE_LIMIT_MSG, request, auth_at)
            reply = JsonReply(
                {"code": LIMITED, "msg": msg, "data": None, "success": False, "failed": True}, 200, headers
            )
        else:  # http_429
            code = LIMITED if version == "v1" else 429
            msg = self._echoed(RATE_LIMIT_MSG, request, auth_at)
            payload = {"code": code, "msg": msg, "data": None, "success": False, "failed": True}
            reply = JsonReply(payload, 429, headers)
        return await self._render(request, reply, None, entry)

    @staticmethod
    def _raw(
        request: web.Request,
        entry: dict[str, Any],
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        length: bool = True,
    ) -> web.StreamResponse:
        """Write a response byte for byte and close the connection (what aiohttp would not send:
        no Content-Type at all, or a body framed only by the connection closing)."""
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        lines += ["Connection: close", "", ""]
        if request.transport is not None:
            request.transport.write("\r\n".join(lines).encode("latin-1") + body)
            request.transport.close()  # flushes first; aiohttp then writes nothing more
        entry["http_status"] = status
        return web.Response()

    async def _bad_download_body(
        self, request: web.Request, reply: Reply, fault: Fault, entry: dict[str, Any]
    ) -> web.StreamResponse:
        """Answer a download with HTTP 200 and something that is not the file."""
        if fault.kind == "html_page":
            content_type = fault.params.get("content_type", "text/html; charset=utf-8")
            return self._raw(request, entry, 200, _type_header(content_type), LOGIN_PAGE)
        if not isinstance(reply, FileReply):  # the request failed: its error, unchanged
            return await self._render(request, reply, None, entry)
        asset = reply.asset
        headers = reply.headers()
        if fault.kind == "empty_body":
            return self._raw(request, entry, 200, headers, b"")
        after = max(0, min(int(fault.params.get("after", min(asset.size // 2, CHUNK))), asset.size))
        body = await asyncio.get_running_loop().run_in_executor(None, _read_head, asset.path, after)
        return self._raw(request, entry, 200, headers, body, length=False)

    @staticmethod
    def _drop(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        # Closing the transport before aiohttp writes anything: the client sees the connection end
        # without a status line. aiohttp treats the failed write as a client disconnect.
        if request.transport is not None:
            request.transport.close()
        entry["http_status"] = None
        return web.Response()

    async def _render(
        self, request: web.Request, reply: Reply, fault: Fault | None, entry: dict[str, Any]
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if isinstance(reply, JsonReply):
            entry["http_status"] = reply.status
            entry["code"] = reply.payload.get("code")
            body = json.dumps(reply.payload).encode()
            headers = {"Content-Type": "application/json", **reply.headers}
            if kind in ("drop_mid_body", "slow_body"):
                assert fault is not None
                return await self._stream(request, reply.status, headers, None, body, fault, entry)
            return web.Response(body=body, status=reply.status, headers=headers)
        asset = reply.asset
        entry["http_status"] = 200
        headers = reply.headers()
        conditional = any(h in request.headers for h in _CONDITIONAL_HEADERS)
        if kind in ("drop_mid_body", "slow_body") or self.config.chunked_downloads or conditional:
            # By hand: the spec documents no Range or conditional requests, so always the whole file.
            return await self._stream(request, 200, headers, asset.path, None, fault, entry)
        # sendfile: the kernel copies the file to the socket, no userspace buffers.
        return _PlainFileResponse(asset.path, chunk_size=CHUNK, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        status: int,
        headers: dict[str, str],
        path: Path | None,
        body: bytes | None,
        fault: Fault | None,
        entry: dict[str, Any],
    ) -> web.StreamResponse:
        """Send a body by hand: chunked mode, or a fault that cuts or stalls it half-way.

        A ``slow_body`` stall shows in the request log: ``stalled_at`` (bytes sent before it) while
        it lasts, ``stall_ended`` (``"resumed"`` or ``"client gone"``) after; a stall ends early
        when the client has gone (nothing is left to send it to).
        """
        loop = asyncio.get_running_loop()
        fh = await loop.run_in_executor(None, open, path, "rb") if path is not None else None
        try:
            size = os.fstat(fh.fileno()).st_size if fh is not None else len(body or b"")
            resp = web.StreamResponse(status=status, headers=headers)
            if self.config.chunked_downloads and path is not None and fault is None:
                resp.enable_chunked_encoding()
            else:
                resp.content_length = size
            await resp.prepare(request)
            half = min(size // 2, CHUNK) if path is not None else size // 2
            kind = fault.kind if fault is not None else None
            sent = 0
            while True:
                if kind is not None and sent >= half:
                    if kind == "drop_mid_body":
                        if request.transport is not None:
                            request.transport.close()
                        return resp
                    if kind == "slow_body":
                        assert fault is not None
                        entry["stalled_at"] = sent
                        gone = await _stall(request, float(fault.params.get("delay", 1.0)))
                        entry["stall_ended"] = "client gone" if gone else "resumed"
                        if gone:
                            return resp
                        kind = None
                want = CHUNK if kind is None else half - sent
                if fh is None:
                    chunk = (body or b"")[sent : sent + want]
                else:
                    chunk = await loop.run_in_executor(None, fh.read, want)
                if not chunk:
                    break
                await resp.write(chunk)
                sent += len(chunk)
        finally:
            if fh is not None:
                fh.close()
        await resp.write_eof()
        return resp

    def _edition(
        self, edition: str, route: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def gated(request: web.Request) -> web.StreamResponse:
            if self.config.index_edition != edition:
                return await self._not_found(request)
            return await route(request)

        return gated

    async def _not_found(self, request: web.Request) -> web.Response:
        payload = {"timestamp": now_ms(), "path": request.path, "status": 404, "error": "Not Found"}
        return web.json_response(payload, status=404)

    # ------------------------------------------------------------------ status machine

    def _refresh(self, video: Video) -> None:
        """Apply a due UNPARSE -> PARSE/FAILED transition (reads never see a stale status)."""
        if video.status == UNPARSE and time.monotonic() >= video.ready_at:
            pattern = self.config.fail_pattern
            if pattern and re.search(pattern, video.asset.filename):
                self._set_status(video, FAILED, f"video could not be parsed (fail_pattern {pattern!r})")
            else:
                self._set_status(video, PARSE, None)

    def _set_status(self, video: Video, status: str, cause: str | None) -> None:
        changed = video.status != status
        video.status = status
        video.cause = cause if status == FAILED else None
        timer = self._timers.pop(video.video_no, None)
        if timer is not None:
            timer.cancel()
        if changed and video.callback:
            self._fire_callback(video)

    def _schedule(self, video: Video) -> None:
        if math.isinf(video.ready_at):
            return
        delay = max(video.ready_at - time.monotonic(), 0.0)
        loop = asyncio.get_running_loop()

        def settle() -> None:
            self._timers.pop(video.video_no, None)
            if video.video_no in self.videos and not math.isinf(video.ready_at):
                # asyncio may run a timer a clock tick early: the timer, not the clock, decides.
                video.ready_at = min(video.ready_at, time.monotonic())
                self._refresh(video)

        self._timers[video.video_no] = loop.call_later(delay, settle)

    def _fire_callback(self, video: Video) -> None:
        payload = {"videoNo": video.video_no, "status": video.status}
        record: dict[str, Any] = {
            "url": video.callback,
            "payload": payload,
            "http_status": None,
            "error": None,
        }
        self.callbacks.append(record)
        # Callbacks of one video go out in order: each waits for the previous one to finish.
        previous = self._last_callback.get(video.video_no)
        coro = self._post_callback(video.callback or "", record, previous)
        task = asyncio.get_running_loop().create_task(coro)
        self._last_callback[video.video_no] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_callbacks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _post_callback(
        self, url: str, record: dict[str, Any], previous: asyncio.Task[Any] | None
    ) -> None:
        assert self._http is not None
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            async with self._http.post(
                url, json=record["payload"], timeout=aiohttp.ClientTimeout(total=30)
            ) as resp:
                record["http_status"] = resp.status
                await resp.read()
        except Exception as exc:  # a dead callback receiver must never hurt the service
            # A receiver's URL often carries its credentials (user-info, ?token=): logged masked.
            record["error"] = NO_SECRETS.redact(repr(exc))
            log.warning("callback to %s failed: %s", NO_SECRETS.redact(url), record["error"])

    def _unparsed(self) -> list[Video]:
        for video in self.videos.values():
            self._refresh(video)
        return [v for v in self.videos.values() if v.status == UNPARSE]

    # ------------------------------------------------------------------ account checks

    def _check_upload_allowed(self) -> None:
        cap = self.config.indexing_cap
        if cap is not None:
            busy = self._unparsed()
            if len(busy) >= cap:
                wait = min((v.ready_at for v in busy), default=math.inf) - time.monotonic()
                raise ApiError(
                    LIMITED,
                    f"indexing cap reached: {len(busy)} videos are still UNPARSE (cap {cap}); "
                    "upload again when one has finished",
                    retry_after=wait if math.isfinite(wait) else None,
                )
        self._charge(self.config.upload_cost, "upload")

    def _charge(self, cost: float, what: str) -> None:
        if self.credits is None:
            return
        if self.credits < cost:
            if what == "upload":
                msg = f"Insufficient balance: an upload costs ${cost:.4f}, balance ${self.credits:.4f}"
            else:
                msg = (
                    f"Insufficient balance to download the resource: it costs ${cost:.4f}, "
                    f"balance ${self.credits:.4f}"
                )
            raise ApiError(CREDITS, msg)
        self.credits -= cost

    # ------------------------------------------------------------------ storing

    def _new_asset(self, filename: str, content_type: str, size: int, sha: str, prefix: str) -> Asset:
        asset_id = self.ids.asset_id()
        blob = f"{prefix}/{asset_id}/{filename}"
        asset = Asset(asset_id, BUCKET, blob, self.files_dir / asset_id, filename, content_type, size, sha)
        return asset

    def _register_asset(self, asset: Asset) -> None:
        self.assets[asset.asset_id] = asset
        self.blobs[(asset.bucket, asset.blob)] = asset

    async def _store_video(
        self, sink: _Sink, filename: str, content_type: str, meta: dict[str, Any], source_url: str | None
    ) -> Video:
        video_no = self.ids.video_no()
        asset = self._new_asset(filename, content_type, sink.size, "", "videos")
        asset.sha256 = await sink.finish(asset.path)
        self._register_asset(asset)
        delay = self.config.parse_delay
        video = Video(
            video_no=video_no,
            video_name=uuid.uuid4().hex,
            unique_id=meta["unique_id"],
            asset=asset,
            create_time=now_ms(),
            ready_at=time.monotonic() + delay,
            callback=meta["callback"],
            datetime_taken=meta["datetime_taken"],
            camera_model=meta["camera_model"],
            latitude=meta["latitude"],
            longitude=meta["longitude"],
            tags=meta["tags"],
            retain_original_video=meta["retain_original_video"],
            video_transcription_prompt=meta["video_transcription_prompt"],
            source_url=source_url,
        )
        self.videos[video_no] = video
        self.unique_ids.add(video.unique_id)
        if video.callback and self.config.callback_on_upload:
            self._fire_callback(video)
        self._schedule(video)
        return video

    @staticmethod
    def _upload_data(video: Video) -> JsonReply:
        return ok(
            {
                "videoNo": video.video_no,
                "videoName": video.video_name,
                "videoStatus": UNPARSE,
                "uploadTime": str(video.create_time),
            }
        )

    # ------------------------------------------------------------------ v1 endpoints

    async def upload(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``POST /upload``: a multipart body streamed part by part straight to disk."""
        if not request.content_type.startswith("multipart/form-data"):
            raise bad("upload: body must be multipart/form-data with a 'file' part")
        self._check_upload_allowed()
        fields: dict[str, list[str]] = {}
        sink: _Sink | None = None
        filename = content_type = ""
        error: ApiError | None = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, aiohttp.BodyPartReader):
                    error = error or bad("upload: nested multipart bodies are not supported")
                    await part.release()
                    continue
                name = part.name or ""
                if name == "file":
                    if sink is not None:
                        error = error or bad("file: send exactly one 'file' part")
                        await part.release()
                        continue
                    try:
                        filename = check_filename(part.filename)
                        content_type = check_video_content_type(part.headers.get("Content-Type"))
                    except ApiError as exc:
                        error = error or exc
                        await part.release()
                        continue
                    sink = _Sink(self.files_dir, self.config.max_upload_bytes)
                    while chunk := await part.read_chunk(CHUNK):
                        await sink.feed(chunk)
                else:
                    raw = bytearray()
                    while chunk := await part.read_chunk(CHUNK):
                        raw += chunk
                        if len(raw) > _MAX_FIELD_BYTES:
                            error = error or bad(f"{name}: field longer than {_MAX_FIELD_BYTES} bytes")
                            await part.release()
                            break
                    fields.setdefault(name, []).append(raw.decode("utf-8", "replace"))
            if error is not None:
                raise error
            if sink is None:
                raise bad("file: required (a multipart part named 'file')")
            if sink.too_big:
                raise bad(
                    f"file: larger than the {self.config.max_upload_bytes} byte upload limit "
                    f"(got {sink.size} bytes)"
                )
            if sink.size == 0:
                raise bad("file: is empty")
            meta = upload_metadata(fields)
            if ignored := unknown_fields(fields):
                entry["ignored_fields"] = ignored
            video = await self._store_video(sink, filename, content_type, meta, None)
            sink = None
        except (ValueError, BadHttpMessage) as exc:
            # Only the multipart reader raises these here: a body that is not the multipart it says
            # it is (no boundary parameter, no opening or closing boundary). The client's mistake,
            # answered 0001 like any other bad request, not an HTTP 500.
            self._refund(self.config.upload_cost)
            raise bad(f"upload: malformed multipart/form-data body ({exc})") from None
        except BaseException:
            self._refund(self.config.upload_cost)
            raise
        finally:
            if sink is not None:
                await sink.discard()
        return self._upload_data(video)

    def _refund(self, cost: float) -> None:
        if self.credits is not None:
            self.credits += cost

    async def upload_url(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``POST /upload_url``: the service fetches the URL itself (unauthenticated GET, streamed)."""
        if request.content_type != "application/x-www-form-urlencoded" and request.body_exists:
            raise bad("upload_url: body must be application/x-www-form-urlencoded")
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for key, value in form.items():
            fields.setdefault(key, []).append(str(value))
        url = fields.get("url", [None])[0]
        if not url:
            raise bad("url: required")
        if len(fields["url"]) > 1:
            raise bad("url: sent more than once")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad(f"url: must be an http(s) URL, got {url!r}")
        meta = upload_metadata(fields)
        if ignored := unknown_fields(fields):
            entry["ignored_fields"] = ignored
        self._check_upload_allowed()
        try:
            return await self._fetch_url(url, meta)
        except BaseException:
            self._refund(self.config.upload_cost)
            raise

    async def _fetch_url(self, url: str, meta: dict[str, Any]) -> Reply:
        assert self._http is not None
        sink: _Sink | None = None
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                if resp.status != 200:
                    raise bad(f"url: fetching it returned HTTP {resp.status}")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                filename = _filename_from_response(resp, url)
                if not ctype.startswith("video/"):
                    if ctype != "application/octet-stream":
                        raise bad(f"url: did not return a video (Content-Type {ctype or 'none'!r})")
                    check_filename(filename)
                    ctype = "video/mp4"
                cap = min(self.config.max_upload_bytes, self.config.max_url_upload_bytes)
                sink = _Sink(self.files_dir, cap)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await sink.feed(chunk)
                    if sink.too_big:
                        raise bad(
                            f"url: the file is larger than {cap} bytes, the most a URL upload may be "
                            "without special permission; upload the file itself instead"
                        )
            if sink.size == 0:
                raise bad("url: the file is empty")
            video = await self._store_video(sink, filename, ctype, meta, url)
            sink = None
            return self._upload_data(video)
        except aiohttp.ClientError as exc:
            raise bad(f"url: could not be fetched ({type(exc).__name__})") from None
        finally:
            if sink is not None:
                await sink.discard()

    def _find_video(self, video_no: str, unique_id: str) -> Video:
        video = self.videos.get(video_no)
        if video is None or video.unique_id != unique_id:
            raise bad("video not found")
        self._refresh(video)
        return video

    def _video_dict(self, video: Video) -> dict[str, Any]:
        """A video as get_metadata and list_videos show it; its duration is what its index outputs cover."""
        return video.api_dict(
            tags_before_parse=self.config.metadata_before_parse,
            duration=float(self.config.index_segments) * float(self.config.segment_seconds),
        )

    async def get_metadata(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET /get_metadata?video_no=&unique_id=``."""
        video_no = check_video_no(query_value(request, "video_no"))
        unique_id = unique_id_value(query_value(request, "unique_id"))
        video = self._find_video(video_no, unique_id)
        return ok(self._video_dict(video))

    async def _json_body(self, request: web.Request, default: Any) -> Any:
        raw = await request.read()
        if not raw.strip():
            return default
        try:
            return json.loads(raw)
        except ValueError:
            raise bad("body: not valid JSON") from None

    async def list_videos(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``POST /list_videos``: filters and 1-based paging, newest first.

        The basic filters (``video_name``, ``video_no``, ``video_nos``, ``status``) match from the
        upload on; the metadata filters (``tag``, ``camera_model``, ``datetime_taken``,
        ``latitude``/``longitude``) match only ``PARSE`` videos, whose metadata row exists — as the
        service documents. ``metadata_before_parse`` restores the old, lenient matching.
        """
        flt = list_filters(await self._json_body(request, {}), STATUSES)
        if flt["video_nos"] is not None:
            entry["video_nos"] = list(flt["video_nos"])  # lets tests see which ids each call asked for
        matches = []
        wanted_nos = set(flt["video_nos"]) if flt["video_nos"] is not None else None
        for video in reversed(list(self.videos.values())):
            self._refresh(video)
            if video.unique_id != flt["unique_id"]:
                continue
            if wanted_nos is not None and video.video_no not in wanted_nos:
                continue
            if not self._matches(video, flt, lenient=self.config.metadata_before_parse):
                continue
            matches.append(video)
        page, size = flt["page"], flt["size"]
        if self.config.max_page_size is not None:
            size = min(size, self.config.max_page_size)
        if entry.get("fault") == "ignore_page":  # injected: a service that drops `page`
            page = 1
        chunk = matches[(page - 1) * size : page * size]
        if entry.get("fault") == "no_rows":  # injected: pages that never reach the total
            chunk = []
        return ok(
            {
                "current_page": page,
                "page_size": size,
                "total_count": len(matches),
                "videos": [self._video_dict(v) for v in chunk],
            }
        )

    @staticmethod
    def _matches(video: Video, flt: dict[str, Any], *, lenient: bool = False) -> bool:
        checks = [
            flt["video_name"] is None or video.video_name == flt["video_name"],
            flt["video_no"] is None or video.video_no == flt["video_no"],
            flt["status"] is None or video.status == flt["status"],
        ]
        metadata_filtered = any(
            flt[name] is not None for name in ("camera_model", "tag", "datetime_taken", "latitude")
        )
        if metadata_filtered and video.status != PARSE and not lenient:
            return False  # no metadata row before PARSE: a metadata filter cannot match it
        checks += [
            flt["camera_model"] is None or video.camera_model == flt["camera_model"],
            flt["tag"] is None or flt["tag"] in video.tags,
            flt["datetime_taken"] is None
            or (video.datetime_taken is not None and video.datetime_taken >= flt["datetime_taken"]),
        ]
        if flt["latitude"] is not None:
            checks.append(
                video.latitude is not None
                and video.longitude is not None
                and haversine_km(flt["latitude"], flt["longitude"], video.latitude, video.longitude) <= 20.0
            )
        return all(checks)

    async def list_unique_ids(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET /list_unique_ids``."""
        return ok({"unique_ids": sorted(self.unique_ids)})

    async def delete_videos(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``POST /delete_videos?unique_id=``: body a JSON array; unknown ids are ignored."""
        unique_id = unique_id_value(query_value(request, "unique_id"))
        ids = delete_ids(await self._json_body(request, None))
        for video_no in ids:
            video = self.videos.get(video_no)
            if video is None or video.unique_id != unique_id:
                continue
            self._forget_video(video)
        return ok(None)

    def _forget_video(self, video: Video) -> None:
        del self.videos[video.video_no]
        timer = self._timers.pop(video.video_no, None)
        if timer is not None:
            timer.cancel()
        self.assets.pop(video.asset.asset_id, None)
        self.blobs.pop((video.asset.bucket, video.asset.blob), None)
        video.asset.path.unlink(missing_ok=True)

    def _download(self, asset: Asset, *, disposition: bool = True) -> FileReply:
        self._charge(self.config.download_cost_per_gb * asset.size / 1e9, "download")
        return FileReply(asset, disposition)

    async def download_by_video(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``POST /download`` with ``{"video_no", "unique_id"}`` (A)."""
        body = await self._json_body(request, None)
        if not isinstance(body, dict):
            raise bad("body: must be a JSON object with video_no")
        video_no = check_video_no(body.get("video_no"))
        video = self._find_video(video_no, unique_id_value(body.get("unique_id")))
        # "Content-Disposition ... (original name; may be absent on A)": the strict pick is absent.
        return self._download(video.asset, disposition=self.config.video_download_disposition)

    async def download_by_blob(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET download?bucket=&blob=`` on v1 (B) and v2 (D)."""
        bucket = query_value(request, "bucket") or ""
        blob = query_value(request, "blob") or ""
        if not bucket.strip():
            raise bad("Bucket cannot be null or empty")
        if not blob.strip():
            raise bad("Blob cannot be null or empty")
        asset = self.blobs.get((bucket, blob))
        if asset is None:
            raise bad("Resource does not exist")
        return self._download(asset)

    async def download_asset(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET {v2}/{asset_id}/download`` (C)."""
        asset = self.assets.get(request.match_info["asset_id"])
        if asset is None:
            raise bad("Asset not found")
        return self._download(asset)

    # ------------------------------------------------------------------ index outputs

    def _index_reply(self, video: Video, kind: str) -> JsonReply:
        pattern = self.config.no_audio_pattern
        data = index_data(
            video,
            kind,
            count=int(self.config.index_segments),
            seconds=float(self.config.segment_seconds),
            has_audio=not (pattern and re.search(pattern, video.asset.filename)),
        )
        return ok(data)

    def _index_video(self, request: web.Request) -> Video:
        video_no = check_video_no(query_value(request, "video_no"))
        return self._find_video(video_no, unique_id_value(query_value(request, "unique_id")))

    async def video_caption(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET {v1}/get_video_caption?video_no=&unique_id=``: what is seen, segment by segment."""
        return self._index_reply(self._index_video(request), VISUAL)

    async def audio_transcription(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET {v1}/get_audio_transcription?video_no=&unique_id=``: what is said (null: no audio)."""
        return self._index_reply(self._index_video(request), AUDIO)

    async def older_video_transcription(self, request: web.Request, entry: dict[str, Any]) -> Reply:
        """``GET /serve/api/video/get_video_transcription?video_no=`` (older edition; no unique_id)."""
        video_no = check_video_no(query_value(request, "video_no"))
        video = self.videos.get(video_no)
        if video is None:
            raise bad("video not found")
        self._refresh(video)
        return self._index_reply(video, VISUAL)

    # ------------------------------------------------------------------ control routes

    def reset(self) -> None:
        """Back to the startup configuration with no videos, assets, faults or logs."""
        for video in list(self.videos.values()):
            self._forget_video(video)
        for asset in self.assets.values():
            asset.path.unlink(missing_ok=True)
        self.assets.clear()
        self.blobs.clear()
        self.unique_ids.clear()
        self.requests.clear()
        self.callbacks.clear()
        self._cancel_callbacks()  # the previous test's receiver must not get them after the reset
        self._last_callback.clear()
        self.faults.reset()
        self.limiter.reset()
        self.config = self.base_config.copy()
        self.credits = self.config.credits
        shutil.rmtree(self.files_dir, ignore_errors=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)

    async def c_reset(self, request: web.Request) -> web.Response:
        """``POST /_emulator/reset``."""
        self.reset()
        return web.json_response({"ok": True})

    async def c_config(self, request: web.Request) -> web.Response:
        """``GET /_emulator/config``: the current configuration and balance."""
        return web.json_response({**self.config.to_dict(), "balance": self.credits})

    async def c_configure(self, request: web.Request) -> web.Response:
        """``POST /_emulator/config``: change only the keys sent, all of them or (refused) none."""
        body = await _control_body(request)
        config = self.config.copy()
        try:
            for key, value in body.items():
                if key == "rate_limits":
                    config.rate_limits = resolve_rate_limits(value)
                elif key == "credits":
                    config.credits = value if value is None or isinstance(value, bool) else float(value)
                elif key in ("api_keys", "permission_denied"):
                    setattr(config, key, list(value) if isinstance(value, list) else value)
                elif key in config.__dataclass_fields__:
                    setattr(config, key, value)
                else:
                    raise ValueError(f"unknown setting {key!r}")
            check_config(config)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.config = config
        if "rate_limits" in body:
            self.limiter.reset()
        if "credits" in body:
            self.credits = config.credits
        return web.json_response({**self.config.to_dict(), "balance": self.credits})

    async def c_inject_fault(self, request: web.Request) -> web.Response:
        """``POST /_emulator/faults`` with ``{"endpoint", "kind", "count", "params"}``."""
        body = await _control_body(request)
        try:
            self.faults.add(
                body["endpoint"],
                body["kind"],
                int(body.get("count", 1)),
                body.get("params"),
                every=int(body.get("every", 1)),
                video_no=body.get("video_no"),
            )
        except KeyError as exc:
            return web.json_response({"error": f"{exc.args[0]}: required"}, status=400)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.pending())

    async def c_faults(self, request: web.Request) -> web.Response:
        """``GET /_emulator/faults``: what is still queued."""
        return web.json_response(self.faults.pending())

    async def c_videos(self, request: web.Request) -> web.Response:
        """``GET /_emulator/videos``: every stored video, oldest first."""
        for video in self.videos.values():
            self._refresh(video)
        return web.json_response([v.control_dict() for v in self.videos.values()])

    async def c_set_status(self, request: web.Request) -> web.Response:
        """``POST /_emulator/videos/{video_no}/status`` with ``{"status", "cause"}``."""
        video = self.videos.get(request.match_info["video_no"])
        if video is None:
            return web.json_response({"error": "video not found"}, status=404)
        body = await _control_body(request)
        status = body.get("status")
        if status not in STATUSES:
            return web.json_response({"error": f"status must be one of {STATUSES}"}, status=400)
        if status == UNPARSE:
            video.ready_at = math.inf  # held until forced again
        cause = body.get("cause") or ("forced by the emulator control API" if status == FAILED else None)
        self._set_status(video, status, cause)
        return web.json_response(video.control_dict())

    async def c_set_index_outputs(self, request: web.Request) -> web.Response:
        """``POST /_emulator/videos/{video_no}/index_outputs`` with ``{"visual": [...], "audio": null}``:
        the ``transcriptions`` served for that kind (verbatim), or ``null`` for ``data: null``."""
        video = self.videos.get(request.match_info["video_no"])
        if video is None:
            return web.json_response({"error": "video not found"}, status=404)
        body = await _control_body(request)
        if not isinstance(body, dict) or set(body) - set(KINDS):
            return web.json_response({"error": f"body: an object with keys among {KINDS}"}, status=400)
        for kind, items in body.items():
            if items is not None and not isinstance(items, list):
                return web.json_response({"error": f"{kind}: a list or null"}, status=400)
            video.index_outputs[kind] = items
        return web.json_response({"video_no": video.video_no, "index_outputs": video.index_outputs})

    async def c_set_statuses(self, request: web.Request) -> web.Response:
        """``POST /_emulator/statuses`` with ``{"video_nos": [...], "status", "cause"}``: all at once."""
        body = await _control_body(request)
        status, nos = body.get("status"), body.get("video_nos")
        if status not in STATUSES or not isinstance(nos, list):
            return web.json_response({"error": f"need video_nos and a status of {STATUSES}"}, status=400)
        missing = [n for n in nos if n not in self.videos]
        if missing:
            return web.json_response({"error": f"videos not found: {missing[:10]}"}, status=404)
        for video_no in nos:  # one handler run: no request sees some changed and others not
            video = self.videos[video_no]
            if status == UNPARSE:
                video.ready_at = math.inf
            cause = body.get("cause") or ("forced by the emulator control API" if status == FAILED else None)
            self._set_status(video, status, cause)
        return web.json_response({"changed": len(nos)})

    async def c_add_asset(self, request: web.Request) -> web.Response:
        """``POST /_emulator/assets?filename=&content_type=``: the raw body becomes a v2 asset."""
        filename = request.query.get("filename") or "asset.mp4"
        content_type = request.query.get("content_type") or "application/octet-stream"
        sink = _Sink(self.files_dir, 2**63)
        try:
            while chunk := await request.content.read(CHUNK):
                await sink.feed(chunk)
            asset = self._new_asset(filename, content_type, sink.size, "", "assets")
            asset.sha256 = await sink.finish(asset.path)
        except BaseException:
            await sink.discard()
            raise
        self._register_asset(asset)
        return web.json_response(asset.to_dict())

    async def c_requests(self, request: web.Request) -> web.Response:
        """``GET /_emulator/requests[?endpoint=]``: the API request log."""
        endpoint = request.query.get("endpoint")
        if endpoint is not None and endpoint not in ENDPOINTS:
            return web.json_response({"error": f"unknown endpoint {endpoint!r}"}, status=400)
        rows = [r for r in self.requests if endpoint is None or r["endpoint"] == endpoint]
        return web.json_response(rows)

    async def c_callbacks(self, request: web.Request) -> web.Response:
        """``GET /_emulator/callbacks``: callbacks fired so far and how they went."""
        return web.json_response(self.callbacks)

    async def c_public_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/public/{asset_id}``: an asset without auth (a source for ``upload_url``)."""
        asset = self.assets.get(request.match_info["asset_id"])
        if asset is None:
            return web.json_response({"error": "asset not found"}, status=404)
        headers = {
            "Content-Type": asset.content_type,
            "Content-Disposition": content_disposition(asset.filename),
        }
        return web.FileResponse(asset.path, chunk_size=CHUNK, headers=headers)

    async def c_health(self, request: web.Request) -> web.Response:
        """``GET /_emulator/health``."""
        return web.json_response({"ok": True, "pid": os.getpid()})

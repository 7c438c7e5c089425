"""Helpers for emulator tests: raw HTTP (``requests``) written from the spec, and a callback receiver."""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from local_http import LocalServer, QuietHandler


class Api:
    """A raw-HTTP caller of one emulator (the key in ``Authorization``, no ``Bearer``)."""

    def __init__(self, emu: Any, key: str | None = None) -> None:
        self.emu = emu
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.headers["Authorization"] = key or emu.api_key

    def v1(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.s.request(method, f"{self.emu.v1_url}/{path}", timeout=30, **kw)

    def v2(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.s.request(method, f"{self.emu.v2_url}/{path}", timeout=30, **kw)

    def upload_raw(
        self,
        name: str = "clip.mp4",
        data: bytes = b"\x00video" * 100,
        ctype: str = "video/mp4",
        **fields: Any,
    ) -> requests.Response:
        return self.v1("POST", "upload", files={"file": (name, io.BytesIO(data), ctype)}, data=fields)

    def upload(self, name: str = "clip.mp4", data: bytes = b"\x00video" * 100, **fields: Any) -> dict:
        body = self.upload_raw(name, data, **fields).json()
        assert body["code"] == "0000", body
        return body["data"]

    @staticmethod
    def error(resp: requests.Response) -> tuple[int, Any, str]:
        """``(http_status, code, msg)`` of an error answer (asserting the error envelope)."""
        assert resp.headers["Content-Type"].startswith("application/json")
        body = resp.json()
        assert body["data"] is None and body["success"] is False and body["failed"] is True
        return resp.status_code, body["code"], body["msg"]

    def meta(self, video_no: str, unique_id: str | None = None) -> dict:
        params = {"video_no": video_no}
        if unique_id is not None:
            params["unique_id"] = unique_id
        return self.v1("GET", "get_metadata", params=params).json()


@pytest.fixture
def api(memories_emulator) -> Iterator[Api]:
    a = Api(memories_emulator)
    yield a
    a.s.close()


class Receiver:
    """A callback receiver on 127.0.0.1 (served by :class:`local_http.LocalServer`).

    Each POST is recorded in ``posts`` (its JSON and Content-Type) and ``got`` is set. It is
    answered ``status``; or, with ``hold``, never: the receiver keeps the connection open and sets
    ``closed`` once the emulator drops it (a receiver that hangs, until :meth:`close`).
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.posts: queue.Queue[dict] = queue.Queue()
        self.status = 200
        self.got = threading.Event()
        self.closed = threading.Event()
        self._release = threading.Event()
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.0"  # one callback a connection

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                post = {"json": json.loads(body), "content_type": self.headers["Content-Type"]}
                if hold:
                    outer.posts.put(post)
                    outer.got.set()
                    outer._hold(self.connection)
                    return
                self.send_body(outer.status, {}, b"")
                outer.posts.put(post)
                outer.got.set()

        self._server = LocalServer(Handler, poll_interval=0.02)
        self._server.__enter__()
        self.url = f"{self._server.url}/hook"

    def _hold(self, connection: Any) -> None:
        """Wait, without answering, until the peer closes ``connection`` or :meth:`close` is called."""
        connection.settimeout(0.05)
        while not self._release.is_set():
            try:
                if connection.recv(1) == b"":
                    self.closed.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                self.closed.set()
                return

    def next(self, timeout: float = 10.0) -> dict:
        return self.posts.get(timeout=timeout)

    def close(self) -> None:
        self._release.set()
        self._server.__exit__(None, None, None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def silent_receiver() -> Iterator[Receiver]:
    """A receiver that takes a callback POST and never answers (``Receiver(hold=True)``)."""
    r = Receiver(hold=True)
    yield r
    r.close()

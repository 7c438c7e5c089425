"""Helpers for emulator tests: raw HTTP (``requests``) written from the spec, and a callback receiver."""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests


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
    """A tiny local HTTP server recording callback POSTs into a queue."""

    def __init__(self) -> None:
        self.posts: queue.Queue[dict] = queue.Queue()
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.posts.put({"json": json.loads(body), "content_type": self.headers["Content-Type"]})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def next(self, timeout: float = 10.0) -> dict:
        return self.posts.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()

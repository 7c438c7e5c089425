"""Small HTTP servers on 127.0.0.1 for the tests that need a server other than the emulator: one
that serves a folder, lies about its body, echoes the request, or plays a scripted memories.ai."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class LocalServer:
    """``handler`` served on a free port of 127.0.0.1 from a thread while the ``with`` block runs.

    :param poll_interval: how often ``serve_forever`` looks for the shutdown request (seconds).
    """

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], *, poll_interval: float = 0.5) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(poll_interval,), daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive (HTTP/1.1) handler that logs nothing to stderr."""

    protocol_version = "HTTP/1.1"

    def send_body(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Answer ``status`` with ``headers``, a matching ``Content-Length`` and ``body``."""
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def folder_handler(folder: str | Path) -> Callable[..., BaseHTTPRequestHandler]:
    """A handler serving the files of ``folder`` (GET and HEAD, no authentication), quietly."""
    return partial(_QuietFiles, directory=str(folder))


def echo_handler(content_type: str = "application/octet-stream", html: bool = False) -> type[QuietHandler]:
    """A handler answering every GET with HTTP 200, ``content_type`` and the request itself (headers
    included, so the API key too): a misrouted host or an echo service. ``html`` wraps it in a page."""

    class Echo(QuietHandler):
        def do_GET(self) -> None:
            text = f"{self.requestline}\r\n{self.headers}"
            body = f"<html><body><pre>{text}</pre></body></html>" if html else text
            self.send_body(200, {"Content-Type": content_type}, body.encode())

    return Echo

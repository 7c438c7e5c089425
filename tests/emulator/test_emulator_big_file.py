"""A 1 GiB upload and download through an emulator in a child process whose RSS must stay flat."""

from __future__ import annotations

import hashlib
import http.client
import threading
import uuid
from urllib.parse import urlsplit

import psutil
import pytest

GIB = 1024**3
#: Peak RSS growth allowed while 1 GiB passes through (the file itself would be 1024 MiB).
MAX_GROWTH = 64 * 1024**2


class RssSampler:
    """Samples a process's RSS every 10 ms on a thread; ``peak`` is the highest value seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _zero_hash(size: int) -> str:
    sha = hashlib.sha256()
    block = bytes(1024 * 1024)
    for _ in range(size // len(block)):
        sha.update(block)
    return sha.hexdigest()


def _multipart_upload(url: str, key: str, path, size: int) -> dict:
    """POST /upload with the file sent by ``socket.sendfile`` between a multipart head and tail."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="unique_id"\r\n\r\nbig\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.putrequest("POST", f"{parts.path}/upload")
    conn.putheader("Authorization", key)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.sock.sendall(head)
    with open(path, "rb") as fh:
        conn.sock.sendfile(fh)
    conn.sock.sendall(tail)
    resp = conn.getresponse()
    import json

    body = json.loads(resp.read())
    conn.close()
    return body


@pytest.mark.timeout(120)
def test_one_gib_upload_and_download_keep_emulator_rss_flat(memories_emulator_process, tmp_path):
    emu = memories_emulator_process()
    src = tmp_path / "big.mp4"
    with open(src, "wb") as fh:
        fh.truncate(GIB)  # sparse: no disk or page-cache cost to create
    emu.control.health()  # warm the server up before the baseline

    with RssSampler(emu.pid) as upload_rss:
        body = _multipart_upload(emu.v1_url, emu.api_key, src, GIB)
    assert body["code"] == "0000", body
    (stored,) = emu.control.videos()
    expected = _zero_hash(GIB)
    assert stored["size"] == GIB and stored["sha256"] == expected

    import requests

    s = requests.Session()
    s.trust_env = False
    sha = hashlib.sha256()
    got = 0
    with RssSampler(emu.pid) as download_rss:
        resp = s.get(
            f"{emu.v2_url}/{stored['asset_id']}/download",
            headers={"Authorization": emu.api_key},
            stream=True,
            timeout=60,
        )
        assert resp.headers["Content-Length"] == str(GIB)
        for chunk in resp.iter_content(1024 * 1024):
            sha.update(chunk)
            got += len(chunk)
    assert got == GIB and sha.hexdigest() == expected

    growth_up = upload_rss.peak - upload_rss.baseline
    growth_down = download_rss.peak - download_rss.baseline
    print(
        f"emulator RSS baseline {upload_rss.baseline / 2**20:.1f} MiB; peak growth upload "
        f"{growth_up / 2**20:.1f} MiB, download {growth_down / 2**20:.1f} MiB"
    )
    assert growth_up < MAX_GROWTH, f"upload grew the emulator's RSS by {growth_up / 2**20:.0f} MiB"
    assert growth_down < MAX_GROWTH, f"download grew the emulator's RSS by {growth_down / 2**20:.0f} MiB"

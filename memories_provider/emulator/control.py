"""Test-side handles: ``EmulatorControl`` (HTTP to ``/_emulator/...``) and ``EmulatorHandle`` (URLs)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import requests

_UNSET: Any = object()


class EmulatorControl:
    """Control client of a running emulator (works in-process and across processes alike).

    :param url: the emulator's origin, e.g. ``http://127.0.0.1:8787``.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._session.trust_env = False  # never route control calls through a proxy

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._session.request(method, f"{self.url}/_emulator{path}", timeout=60, **kwargs)
        if resp.status_code != 200:
            raise ValueError(f"emulator control {method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def close(self) -> None:
        """Close the pooled HTTP session."""
        self._session.close()

    def health(self) -> dict[str, Any]:
        """``{"ok": True, "pid": ...}`` when the emulator answers."""
        return dict(self._call("GET", "/health"))

    def reset(self) -> None:
        """Forget all videos, assets, faults, logs and counters; restore the startup configuration."""
        self._call("POST", "/reset")

    def configure(
        self,
        *,
        parse_delay: float | None = _UNSET,
        rate_limits: bool | dict[str, tuple[int, float] | None] | None = _UNSET,
        indexing_cap: int | None = _UNSET,
        credits: float | None = _UNSET,
        chunked_downloads: bool | None = _UNSET,
        fail_pattern: str | None = _UNSET,
        retry_after: float | None = _UNSET,
        max_upload_bytes: int | None = _UNSET,
        echo_requests: bool = _UNSET,
        **other: Any,
    ) -> dict[str, Any]:
        """Change settings; only the arguments passed are changed (``None`` clears cap/credits/pattern).

        :param parse_delay: seconds a new upload stays ``UNPARSE``.
        :param rate_limits: ``True`` = spec limits, ``False`` = none, or ``{"list_videos": (5, 1.0)}``
            to override single endpoints (on top of the spec limits).
        :param indexing_cap: max videos in ``UNPARSE`` at once (``None``: no cap).
        :param credits: account balance in USD (``None``: unlimited).
        :param chunked_downloads: send downloads chunked, without ``Content-Length``.
        :param fail_pattern: regex on the original filename; matches end ``FAILED`` with a cause.
        :param retry_after: seconds sent in ``Retry-After`` with injected 0429/429 faults.
        :param max_upload_bytes: upload size cap.
        :param echo_requests: error answers with HTTP 500/401 or code ``0401``/``0429`` echo the
            request, ``Authorization`` header included (see :class:`EmulatorConfig`).
        :param other: further :class:`EmulatorConfig` fields (``upload_cost``, ``download_cost_per_gb``,
            ``api_keys``).
        """
        given = {
            "parse_delay": parse_delay,
            "rate_limits": rate_limits,
            "indexing_cap": indexing_cap,
            "credits": credits,
            "chunked_downloads": chunked_downloads,
            "fail_pattern": fail_pattern,
            "retry_after": retry_after,
            "max_upload_bytes": max_upload_bytes,
            "echo_requests": echo_requests,
            **other,
        }
        body = {k: v for k, v in given.items() if v is not _UNSET}
        if body.get("chunked_downloads") is None and "chunked_downloads" in body:
            body["chunked_downloads"] = False
        if "rate_limits" in body and body["rate_limits"] is None:
            body["rate_limits"] = False
        return dict(self._call("POST", "/config", json=body))

    def config(self) -> dict[str, Any]:
        """The current configuration plus ``balance`` (remaining credits)."""
        return dict(self._call("GET", "/config"))

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        count: int = 1,
        every: int = 1,
        video_no: str | None = None,
        **params: Any,
    ) -> None:
        """Make ``count`` calls of ``endpoint`` fail with ``kind`` (see the README for kinds).

        :param every: hit one call in ``every`` (the ``every``-th, then the ``2 * every``-th ...) and
            let the calls between through; 1 (default) hits the next ``count`` calls.
        :param video_no: hit only calls naming this video (query ``video_no``, or ``video_no``,
            ``video_nos`` or an id array in a JSON body), e.g. every ``list_videos`` batch holding
            one bad row; the other calls pass untouched and are not counted.
        :param params: per kind: ``retry_after`` (``code_0429``, ``http_429``),
            ``auth_at`` (with ``echo_requests``: the character of the body where the echoed key
            starts), ``delay`` (``slow_body``), ``code``/``msg`` (``json_error``).
        """
        body: dict[str, Any] = {
            "endpoint": endpoint,
            "kind": kind,
            "count": count,
            "every": every,
            "params": params,
        }
        if video_no is not None:
            body["video_no"] = video_no
        self._call("POST", "/faults", json=body)

    def pending_faults(self) -> dict[str, list[dict[str, Any]]]:
        """Faults not consumed yet, per endpoint."""
        return dict(self._call("GET", "/faults"))

    def set_status(self, video_no: str, status: str, cause: str | None = None) -> dict[str, Any]:
        """Force a video's status (``UNPARSE`` holds it there until forced again); fires its callback."""
        return dict(
            self._call("POST", f"/videos/{quote(video_no)}/status", json={"status": status, "cause": cause})
        )

    def set_statuses(self, video_nos: list[str], status: str, cause: str | None = None) -> int:
        """Force many videos' status at once (atomically for API calls); returns how many changed."""
        body = {"video_nos": list(video_nos), "status": status, "cause": cause}
        return int(self._call("POST", "/statuses", json=body)["changed"])

    def set_index_outputs(self, video_no: str, **outputs: list[Any] | None) -> dict[str, Any]:
        """Set what a video's index outputs answer: ``visual=[...]``/``audio=[...]`` are served
        verbatim as ``transcriptions`` (items ``{"index", "content", "startTime", "endTime"}``),
        ``audio=None`` answers ``data: null``. Kinds not given keep the deterministic defaults."""
        return dict(self._call("POST", f"/videos/{quote(video_no)}/index_outputs", json=outputs))

    def videos(self) -> list[dict[str, Any]]:
        """Every stored video (filename, size, sha256, tags, asset_id, bucket, blob, status, ...)."""
        return list(self._call("GET", "/videos"))

    def add_asset(
        self, path_or_bytes: str | os.PathLike[str] | bytes, filename: str, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store a file as a v2 asset; returns ``{"asset_id", "bucket", "blob", ...}``. Paths are streamed."""
        params = {"filename": filename}
        if content_type:
            params["content_type"] = content_type
        if isinstance(path_or_bytes, bytes):
            return dict(self._call("POST", "/assets", params=params, data=path_or_bytes))
        with open(path_or_bytes, "rb") as fh:
            return dict(self._call("POST", "/assets", params=params, data=_iter_file(fh)))

    def public_url(self, asset_id: str) -> str:
        """A URL serving the asset without auth (what ``upload_url`` needs: an unauthenticated GET)."""
        return f"{self.url}/_emulator/public/{quote(asset_id)}"

    def request_log(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """API calls received (control calls excluded): endpoint, method, path, time, http_status, code;
        for ``list_videos`` with a ``video_nos`` filter, the ids asked for (``video_nos``)."""
        params = {"endpoint": endpoint} if endpoint else None
        return list(self._call("GET", "/requests", params=params))

    def count(self, endpoint: str) -> int:
        """How many calls of ``endpoint`` arrived (including faulted and rejected ones)."""
        return len(self.request_log(endpoint))

    def callbacks(self) -> list[dict[str, Any]]:
        """Callbacks fired: ``{"url", "payload", "http_status", "error"}``."""
        return list(self._call("GET", "/callbacks"))


def _iter_file(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(1024 * 1024):
        yield chunk


@dataclass
class EmulatorHandle:
    """Where a running emulator is and how to reach it.

    :param url: origin, e.g. ``http://127.0.0.1:54321``.
    :param api_key: a key it accepts.
    :param data_dir: where it keeps uploaded bytes.
    :param pid: the emulator's process id when it runs in a child process
        (:func:`~memories_provider.emulator.emulator_process`); ``None`` in this process.
    """

    url: str
    api_key: str
    data_dir: Path
    control: EmulatorControl = field(init=False, repr=False)
    pid: int | None = None

    def __post_init__(self) -> None:
        self.control = EmulatorControl(self.url)

    @property
    def v1_url(self) -> str:
        """Base URL of the v1 API."""
        return f"{self.url}/serve/api/v1"

    @property
    def v2_url(self) -> str:
        """Base URL of the v2 API."""
        return f"{self.url}/serve/api/v2"

    @property
    def conn_uri(self) -> str:
        """An ``AIRFLOW_CONN_...`` value (URI form) for a ``memories`` connection to this emulator."""
        scheme, _, hostport = self.url.partition("://")
        return (
            f"memories://{scheme}://:{quote(self.api_key, safe='')}@{hostport}"
            f"?v2_host={quote(self.url, safe='')}"
        )

    @property
    def conn_json(self) -> str:
        """The same connection in Airflow's JSON form."""
        return json.dumps(
            {
                "conn_type": "memories",
                "password": self.api_key,
                "host": self.url,
                "extra": {"v2_host": self.url},
            }
        )

    def __repr__(self) -> str:
        # The key is a test key, but keep the habit: no secrets in reprs.
        return f"EmulatorHandle(url={self.url!r}, data_dir={str(self.data_dir)!r})"

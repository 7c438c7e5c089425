"""What a download fetches — its source, the memories.ai object (a video, an asset or a blob; not a
storage file as in :mod:`memories_provider.storage.files`) — its identity, and the names its files get.

Identity, not names: a source is ``video/<video_no>``, ``asset/<asset_id>`` or
``blob/<bucket>/<blob>``. That identity is recorded with every file written (see
:mod:`memories_provider.storage.provenance`), and in a folder destination it starts the file's
name (``<key>.<name from Content-Disposition>``), so two sources can never be given the same name
and a later run finds a source's file without asking the service for the name.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from memories_provider.client.protocol import check_asset_id, check_blob, check_id, check_video_no
from memories_provider.preflight import checked_unique_id
from memories_provider.storage.destinations import prefixed_name, sanitize_filename
from memories_provider.templating import rendered_list

if TYPE_CHECKING:
    from memories_provider.client import DownloadResponse, Video

# Characters kept as they are in a name key; any other is written ~XX (UTF-8 bytes), so the key
# is unambiguous: it ends at the first "." of the name.
_KEY_SAFE = re.compile(r"[A-Za-z0-9_-]")


@dataclass(frozen=True)
class DownloadSource:
    """What to fetch: exactly one kind of id, already validated."""

    kind: str  # "video" | "asset" | "blob"
    video_no: str | None = None
    asset_id: str | None = None
    bucket: str | None = None
    blob: str | None = None
    unique_id: str | None = None

    @property
    def label(self) -> str:
        """Human-readable id for logs and errors."""
        if self.kind == "video":
            return f"video {self.video_no}"
        if self.kind == "asset":
            return f"asset {self.asset_id}"
        return f"blob {self.bucket}/{self.blob}"

    @property
    def identity(self) -> str:
        """The identity recorded with the file (ASCII; compared as is)."""
        if self.kind == "video":
            return f"video/{quote(str(self.video_no), safe='')}"
        if self.kind == "asset":
            return f"asset/{quote(str(self.asset_id), safe='')}"
        return f"blob/{quote(str(self.bucket), safe='')}/{quote(str(self.blob), safe='/')}"

    @property
    def name_key(self) -> str:
        """The start of this source's file names in a folder: its id, or a digest of bucket+blob."""
        if self.kind == "blob":
            digest = hashlib.sha256(f"{self.bucket}\n{self.blob}".encode()).hexdigest()[:20]
            return f"blob~{digest}"
        value = str(self.video_no if self.kind == "video" else self.asset_id)
        return "".join(
            ch if _KEY_SAFE.fullmatch(ch) else "".join(f"~{b:02X}" for b in ch.encode()) for ch in value
        )

    def folder_entry_name(self, resp: DownloadResponse) -> str:
        """``<key>.<name>``: the name from Content-Disposition (sanitised), else the blob's last
        segment or the extension of the Content-Type."""
        ctype = (resp.content_type or "").split(";", 1)[0].strip().lower()
        ext = mimetypes.guess_extension(ctype) if ctype else None
        # No Content-Disposition: the blob's own name, else just the extension ("VI1.mp4").
        fallback = str(self.blob).rsplit("/", 1)[-1] if self.kind == "blob" else (ext or ".bin").lstrip(".")
        return prefixed_name(
            f"{self.name_key}.", sanitize_filename(resp.filename, sanitize_filename(fallback, "bin"))
        )


def describe_identity(identity: str) -> str:
    """An identity as :attr:`DownloadSource.label` would say it (for errors naming another source)."""
    kind, _, rest = identity.partition("/")
    if kind in ("video", "asset", "blob") and rest:
        return f"{kind} {unquote(rest)}"
    return repr(identity)


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _unrendered(value: Any) -> bool:
    """A value known only at run time: an XComArg, or a string with a Jinja template."""
    return not isinstance(value, str) or "{{" in value or "{%" in value


def select_source(
    *,
    video_no: Any,
    asset_id: Any,
    bucket: Any,
    blob: Any,
    unique_id: Any = None,
    rendered: bool = True,
    unique_id_templated: bool = False,
) -> DownloadSource:
    """Validate that exactly one of video_no / asset_id / bucket+blob is given before any request:
    ``video_no`` a video id (``VI`` and 18 digits), ``asset_id`` an asset id (``re_`` and digits),
    each stripped of surrounding whitespace; ``bucket`` a safe path segment, ``blob`` segments.

    :param rendered: False at DAG parse time: values still to be rendered (templates, XComArgs)
        are checked only for presence; execute() checks them again once rendered.
    :param unique_id_templated: ``unique_id`` was rendered from a template (see
        :func:`~memories_provider.preflight.checked_unique_id`).
    """

    def check(name: str, value: Any) -> Any:
        if not rendered and (_unrendered(value) or rendered_list(value) is not None):
            return value  # a list as text: execute() says it is many values (single_value)
        if name == "video_no":  # the format the spec gives, as the sensor and the client check it
            return check_video_no(value.strip() if isinstance(value, str) else value)
        if name == "asset_id":
            return check_asset_id(value.strip() if isinstance(value, str) else value)
        return check_blob(value) if name == "blob" else check_id(name, value)

    kinds = [name for name, ok in (("video_no", _given(video_no)), ("asset_id", _given(asset_id))) if ok]
    if _given(bucket) or _given(blob):
        if not (_given(bucket) and _given(blob)):
            raise ValueError("`bucket` and `blob` must be given together")
        kinds.append("bucket+blob")
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise ValueError(f"give exactly one of `video_no`, `asset_id` or `bucket`+`blob` (got: {got})")
    if kinds[0] == "video_no":
        video = check("video_no", video_no)
        scope = unique_id or None
        if rendered:
            scope = checked_unique_id(unique_id, templated=unique_id_templated)
        return DownloadSource("video", video_no=video, unique_id=scope)
    if kinds[0] == "asset_id":
        return DownloadSource("asset", asset_id=check("asset_id", asset_id))
    return DownloadSource("blob", bucket=check("bucket", bucket), blob=check("blob", blob))


@dataclass(frozen=True)
class ServiceFacts:
    """What the service says about a source before it is downloaded (nothing for assets and blobs,
    which have no metadata call).

    :param size: the file's size in bytes, if reported.
    :param evidence: ``size=..;create_time=..;bucket=<digest>;blob=<digest>`` for a video, recorded
        with the file: a later run re-downloads instead of skipping when it has changed.
    """

    size: int | None = None
    evidence: str = ""


def facts_of(video: Video) -> ServiceFacts:
    """The facts ``get_metadata`` gives about a video."""
    fields = {
        "size": video.size,
        "create_time": video.create_time,
        "bucket": video.bucket,
        "blob": video.blob,
    }
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if name in ("bucket", "blob"):  # arbitrary text: a short digest keeps the record ASCII and small
            text = hashlib.sha256(text.encode()).hexdigest()[:16]
        parts.append(f"{name}={text}")
    size = int(video.size) if video.size is not None else None
    return ServiceFacts(size=size, evidence=";".join(parts))


def same_evidence(recorded: str, now: str) -> bool:
    """Whether two evidence strings agree on every field both have (the service reports ``bucket``
    and ``blob`` only once a video is parsed: a field that appeared since is no change)."""
    then_fields = dict(part.partition("=")[::2] for part in recorded.split(";") if part)
    now_fields = dict(part.partition("=")[::2] for part in now.split(";") if part)
    return all(now_fields[key] == value for key, value in then_fields.items() if key in now_fields)

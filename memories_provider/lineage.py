"""OpenLineage names for the operators: a storage URI as a dataset, the service as a namespace.

Every operator names its datasets here, so an upload's output and a later download's input are the
same dataset. Never a secret: user-info and query strings (presigned tokens) are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from memories_provider.storage.destinations import canonical_uri
from memories_provider.storage.uris import SCHEME_FAMILY, object_location, scheme_of, split_userinfo

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from memories_provider.hooks.memories import MemoriesHook

__all__ = ["annotate_outlets", "lineage_dataset", "namespace_of", "video_dataset_name"]


def namespace_of(hook: MemoriesHook) -> str:
    """OpenLineage namespace for the service: ``memories://<host[:port]>``."""
    try:
        netloc = urlsplit(hook.config.base_url).netloc
    except Exception:  # lineage must never break the task
        return "memories"
    return f"memories://{netloc}" if netloc else "memories"


def video_dataset_name(unique_id: str | None, video_no: str) -> str:
    """The dataset name of a memories.ai video in :func:`namespace_of`'s namespace."""
    return f"video/{unique_id}/{video_no}"


def lineage_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a storage URI, per the OpenLineage dataset naming conventions."""
    canonical = canonical_uri(uri)
    scheme = scheme_of(canonical)
    # Credentials and presigned tokens stay out of lineage: no user-info, no query string.
    parts = urlsplit(split_userinfo(canonical)[1])
    family = SCHEME_FAMILY.get(scheme)
    if family == "file":
        return "file", parts.path
    if family == "sftp":
        return f"{scheme}://{parts.hostname or ''}:{parts.port or 22}", parts.path
    host = parts.netloc
    if family == "http":
        return f"{parts.scheme}://{host}", parts.path
    location = object_location(split_userinfo(canonical)[1])  # the object smart-open reads or writes
    if location is not None:  # keys keep their '?', '#' and '%'; azure://blob.mp4 is in $root
        return f"{scheme}://{location.bucket}", location.key
    return f"{scheme}://{host}", parts.path.lstrip("/")


def annotate_outlets(task: Any, context: Context, uri: str, extra: dict[str, Any]) -> None:
    """Attach ``extra`` to the outlet event of each of ``task``'s outlets whose URI is ``uri``.

    The event itself is Airflow's; an outlet matches by ``uri`` as written or in canonical form.
    """
    targets = {uri, canonical_uri(uri)}
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is None:
        return
    for outlet in getattr(task, "outlets", None) or []:
        if getattr(outlet, "uri", None) in targets:
            events[outlet].extra = dict(extra)

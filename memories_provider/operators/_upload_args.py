"""MemoriesUploadOperator's own rules (size, idempotency tag), checked before any request.

The metadata's rules live in :class:`~memories_provider.client.metadata.UploadMetadata` and the
file name's in :func:`~memories_provider.client.protocol.video_content_type`; each error names the
operator parameter and the rule, so a bad backfill fails at once without spending a credit.
"""

from __future__ import annotations

import hashlib
from typing import Any

from memories_provider.client.protocol import MAX_UPLOAD_BYTES
from memories_provider.storage.uris import scheme_family
from memories_provider.templating import rendered_list

# MAX_UPLOAD_BYTES (3 GB) is the client's: one cap, checked by the client for every upload and
# here, earlier, from the source's stat/HEAD/object metadata.
#: Largest file one edition of the docs allows through ``upload_url`` without special permission (1 GB).
URL_UPLOAD_SOFT_LIMIT = 10**9
IDEMPOTENCY_TAG_PREFIX = "airflow-"
#: Why a user's 20th tag is refused when ``idempotent`` (for the error message).
IDEMPOTENCY_TAG_WHY = "one of the 20 is the idempotency tag; idempotent=False frees it"


def check_size(size: int | None, uri: str) -> None:
    """At most 3 GB (``size`` comes from stat/HEAD/object metadata, never from reading the file)."""
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"`source` {uri!r} has {size} bytes; memories.ai accepts at most {MAX_UPLOAD_BYTES} bytes (3 GB)"
        )


def idempotency_tag(*, dag_id: str, task_id: str, run_id: str, map_index: int, source: str) -> str:
    """A tag naming one task instance's upload of one source: the same on every try, unique otherwise.

    An http(s) source counts without its query string and fragment: a presigned URL rendered at
    run time is signed anew (date, expiry, signature) on every try, and is still the same file.
    """
    if scheme_family(source) == "http":
        source = source.split("#", 1)[0].split("?", 1)[0]
    key = "\x1f".join((dag_id, task_id, run_id, str(map_index), source))
    return IDEMPOTENCY_TAG_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def rendered_tags(tags: Any) -> Any:
    """``tags`` as given, or the list a template rendered as text (``"['a', 'b']"``, without
    ``render_template_as_native_obj``) read back as that list; a tag like ``"[draft]"`` stays one tag."""
    listed = rendered_list(tags)
    return tags if listed is None else listed

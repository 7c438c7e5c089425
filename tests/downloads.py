"""What the download operator's tests share: running it as a task would, and looking at what it left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memories_provider.operators.download import MemoriesDownloadOperator


def run_download(**kwargs: Any) -> dict[str, Any]:
    """Build a :class:`MemoriesDownloadOperator` (task id ``download`` unless given) and execute it."""
    kwargs.setdefault("task_id", "download")
    return dict(MemoriesDownloadOperator(**kwargs).execute(context={}))


def files_in(folder: Path) -> list[str]:
    """Everything under ``folder`` but the records (sidecars) the download keeps: temp files show."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".memories.json")
    )

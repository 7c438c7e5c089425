"""One measured export of index outputs, in its own process: prints JSON with rows, seconds and RSS.

``python bench/_export.py '<json args>'`` exports the captions and transcripts of ``video_nos``
(parsed by the parent, each with ``index_segments`` segments per kind) to ``destination`` with
:class:`~memories_provider.operators.export.MemoriesExportOperator`, after a one-video warm-up
export, so the RSS baseline already holds everything imported and the first connection; the peak
is the process's VmHWM.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from _child import vm_kib


def export(video_nos: list[str], destination: str, file_format: str) -> dict[str, Any]:
    from memories_provider.operators.export import MemoriesExportOperator

    operator = MemoriesExportOperator(
        task_id="export", video_nos=video_nos, destination=destination, file_format=file_format
    )
    return dict(operator.execute({}))


def main() -> None:
    args = json.loads(sys.argv[1])
    video_nos: list[str] = args["video_nos"]
    export(video_nos[:1], args["warm_destination"], args["format"])
    base = vm_kib("VmRSS") * 1024
    cpu = time.process_time()
    start = time.perf_counter()
    result = export(video_nos, args["destination"], args["format"])
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": time.process_time() - cpu,
                "rows": result["rows"],
                "videos": result["videos"],
                "bytes": result["bytes"],
                "rss_before": base,
                "peak": vm_kib("VmHWM") * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()

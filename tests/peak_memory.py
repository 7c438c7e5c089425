"""Peak memory measured in a fresh Python process (its own peak RSS, not pytest's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

#: Put before a measuring script: ``vm_hwm()`` is the peak RSS of this process image in bytes.
#: Unlike ru_maxrss, VmHWM is not inherited from the parent across fork+exec (pytest's own RSS
#: would otherwise count as the script's).
_VM_HWM = textwrap.dedent(
    """
    def vm_hwm():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    """
)


def run_measuring_script(script: str, args: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run ``script`` (which may call ``vm_hwm()``) in a fresh interpreter, ``args`` as JSON in
    ``sys.argv[1]``; returns the JSON object it prints last. Fails the test, quoting its stderr, if
    it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", _VM_HWM + script, json.dumps(args)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result

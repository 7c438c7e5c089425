"""What plain Jinja makes of a list: its text, read back here."""

from __future__ import annotations

import ast
import os
from typing import Any


def rendered_list(value: Any) -> list[Any] | None:
    """The list a template rendered as text, read back; ``None`` when ``value`` is no such text.

    Without ``render_template_as_native_obj``, ``"{{ dag_run.conf['tags'] }}"`` renders a list as
    its Python text (``"['a', 'b']"``). Only a literal list counts: ``"[draft]"`` does not.
    """
    if not isinstance(value, str) or not value.strip().startswith("["):
        return None
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, list) else None


def single_value(name: str, value: Any, *, operator: str) -> str:
    """``value`` as the one path, URI or id ``name`` takes (a ``Path`` becomes its text).

    A list — given as one, or a list a template rendered as text (``"['a.mp4', 'b.mp4']"``) — is
    the mistake of passing many values to a task that takes one: refused naming ``name`` and how
    to run one task per value (task mapping), instead of being read as one odd path or id.

    :param operator: the operator's class name, for the mapping example.
    :raises ValueError: naming ``name``, for a list or what is not text.
    """
    listed = list(value) if isinstance(value, (list, tuple)) else rendered_list(value)
    if listed is not None:
        raise ValueError(
            f"`{name}` takes one value, got a list of {len(listed)}: to run one task per value, map "
            f"the task, e.g. {operator}.partial(task_id=...).expand({name}=<the list>)"
        )
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        # str() would make a name of it: b'clip.mp4' read as the path "b'clip.mp4'", "does not exist".
        raise ValueError(f"`{name}` must be text (a path, URI or id), got {type(value).__name__} {value!r}")
    return value

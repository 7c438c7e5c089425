"""What plain Jinja makes of a list: its text, read back here."""

from __future__ import annotations

import ast
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

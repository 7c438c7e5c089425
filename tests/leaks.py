"""What a leak of a secret looks like to the tests: the whole secret, any 8 characters of it, or
(at the end of a text that was cut) its first 4 or more characters."""

from __future__ import annotations

from memories_provider.redaction import MIN_EDGE, MIN_FRAGMENT


def pieces(secret: str, size: int = MIN_FRAGMENT) -> list[str]:
    """Every run of ``size`` characters of ``secret`` (the secret itself when it is shorter)."""
    if len(secret) <= size:
        return [secret]
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def leaks(text: str, *secrets: str) -> list[str]:
    """The pieces of ``secrets`` found in ``text``: 8-character runs anywhere, and a trailing
    prefix of 4+ characters (before a final ``...``), which no whole-secret masker would catch."""
    found = [piece for secret in secrets for piece in pieces(secret) if piece in text]
    body = text.removesuffix("...").removesuffix("'").removesuffix("...")
    found += [
        secret[:n] for secret in secrets for n in range(MIN_EDGE, len(secret)) if body.endswith(secret[:n])
    ]
    return found


def error_leaks(error: BaseException, *secrets: str) -> list[str]:
    """:func:`leaks` in everything an error shows: ``str``, ``repr``, ``args`` and its message."""
    texts = [str(error), repr(error), *map(str, error.args), str(getattr(error, "message", ""))]
    return [piece for text in texts for piece in leaks(text, *secrets)]


def chain_leaks(error: BaseException, *secrets: str) -> list[str]:
    """:func:`error_leaks` in ``error`` and every exception chained to it (``__cause__``,
    ``__context__``, and exceptions among the ``args``), each's ``repr`` of its ``args`` included:
    a traceback, a debugger or an error tracker shows them all."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[object] = [error]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        found += error_leaks(item, *secrets)
        found += [piece for arg in item.args for piece in leaks(repr(arg), *secrets)]
        stack += [item.__cause__, item.__context__, *item.args]
    return found

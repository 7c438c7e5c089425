"""Pre-flight checks in operators and sensors: input no retry can fix fails at once.

Every check made before the first request raises ``ValueError`` naming the parameter and the rule
(or :class:`~memories_provider.hooks.connection.MemoriesConnectionConfigError` naming the
connection field). Retrying such a task only delays the failure by ``retries * retry_delay``, so
inside :func:`bad_input_fails_at_once` it becomes :class:`BadInputError`, an
:class:`AirflowFailException` (no retries).
A store that could not be asked (:class:`~memories_provider.storage.errors.StoreUnavailableError`)
is left to the retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.providers.common.compat.sdk import AirflowFailException

from memories_provider.storage.errors import StoreUnavailableError


class BadInputError(AirflowFailException, ValueError):
    """Input no retry can fix: the task fails at once (an :class:`AirflowFailException`).

    Still a ``ValueError``, as the check that found it raised, for code that catches that.
    """


def flags(**values: object) -> None:
    """Check that each named argument is ``True`` or ``False``.

    A string is the usual mistake (``overwrite="false"``, from a config or a param): it is truthy,
    so it would silently do the opposite. Raises ``ValueError`` naming the first argument that is
    not a bool.
    """
    for name, value in values.items():
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be True or False, got {value!r}")


@contextlib.contextmanager
def bad_input_fails_at_once() -> Iterator[None]:
    """Turn a pre-flight ``ValueError`` into :class:`BadInputError` (same message).

    Wrap only the checks made before the first request: a ``ValueError`` raised later (a library's
    JSON decoding, say) says nothing about the input.
    """
    try:
        yield
    except StoreUnavailableError:
        raise
    except ValueError as err:
        raise BadInputError(str(err)) from err

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

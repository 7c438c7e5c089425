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
import math
from collections.abc import Iterator
from datetime import timedelta

from airflow.providers.common.compat.sdk import AirflowFailException

from memories_provider.client.errors import (
    MemoriesAuthError,
    MemoriesError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidArgumentError,
    MemoriesInvalidRequestError,
)
from memories_provider.storage.errors import StoreUnavailableError


class BadInputError(AirflowFailException, ValueError):
    """Input no retry can fix: the task fails at once (an :class:`AirflowFailException`).

    Still a ``ValueError``, as the check that found it raised, for code that catches that.
    """


class RefusedError(AirflowFailException, MemoriesInvalidRequestError):
    """memories.ai refused the request itself (an unknown or malformed id: ``0001``/``0003``, HTTP 400,
    not found): asked again, it answers the same, so the task fails at once.

    Still the :class:`MemoriesInvalidRequestError` it was, with the service's ``code``,
    ``http_status`` and ``endpoint``, for code that catches that.
    """


class AccountRefusedError(AirflowFailException, MemoriesAuthError):
    """memories.ai refused the key or the account (``0401`` key invalid, ``0403`` account disabled,
    ``9009`` permission denied, HTTP 401/403): the spec says fail fast, so the task fails at once
    instead of sending the same key again after each ``retry_delay``. Fixing it (a new key in the
    connection, an enabled account) is a person's job; clear the task once it is done.

    Still the :class:`MemoriesAuthError` it was, with the service's ``code``, ``http_status`` and
    ``endpoint``.
    """


class CreditsRefusedError(AirflowFailException, MemoriesInsufficientCreditsError):
    """memories.ai refused the request for want of credits (``0402``): fail fast (spec), as
    :class:`AccountRefusedError`. Still the :class:`MemoriesInsufficientCreditsError` it was."""


def account_refusal(err: MemoriesError) -> AirflowFailException | None:
    """The task-failing twin of an auth or credits refusal, else ``None``."""
    if isinstance(err, (AccountRefusedError, CreditsRefusedError)):
        return err
    kind: type[AccountRefusedError] | type[CreditsRefusedError]
    if isinstance(err, MemoriesAuthError):
        kind, fix = AccountRefusedError, "fix the key or the account"
    elif isinstance(err, MemoriesInsufficientCreditsError):
        kind, fix = CreditsRefusedError, "add credits to the account"
    else:
        return None
    return kind(
        f"{err.message}; retrying the task cannot change that ({fix}, then clear the task)",
        code=err.code,
        http_status=err.http_status,
        endpoint=err.endpoint,
    )


@contextlib.contextmanager
def account_refusal_fails_at_once() -> Iterator[None]:
    """Turn an auth or credits refusal (``0401``/``0402``/``0403``/``9009``, HTTP 401/402/403) into
    an :class:`AirflowFailException` (:func:`account_refusal`): Airflow does not retry it."""
    try:
        yield
    except MemoriesError as err:
        refused = account_refusal(err)
        if refused is None or refused is err:
            raise
        raise refused from err


@contextlib.contextmanager
def refusal_fails_at_once(what: str) -> Iterator[None]:
    """Turn a :class:`MemoriesInvalidRequestError` into :class:`RefusedError` naming ``what``.

    :param what: the input the request was about, as the error should name it (``"video VI…"``).
    """
    try:
        yield
    except RefusedError:
        raise
    except MemoriesInvalidArgumentError as err:  # our own check, before any request: not the service's
        raise BadInputError(str(err)) from err
    except MemoriesInvalidRequestError as err:
        refused = RefusedError(
            f"memories.ai refused {what}: {err.message}; asking again cannot change that",
            code=err.code,
            http_status=err.http_status,
            endpoint=err.endpoint,
        )
        raise refused from err


#: What a template renders for a value that is not there: Python's ``None``, JSON's ``null``.
MISSING_VALUE_TEXTS = frozenset({"None", "null"})


def checked_unique_id(unique_id: object, *, templated: bool = False) -> str | None:
    """A task's ``unique_id``: ``None`` (or ``""``, as an empty template renders) for the
    connection's default, else the name as given.

    The service refuses a blank name on every call, and a non-string would be sent as its repr:
    both raise ``ValueError`` naming ``unique_id``. So does ``"None"`` or ``"null"`` rendered from
    a template (``{{ ti.xcom_pull(...) }}`` of a value that is not there): the service would take
    it as a name, and an upload would create a ``unique_id`` of that name. Given as such (not from
    a template), it is a name like any other.

    :param templated: whether the value was rendered from a template (see
        :meth:`~memories_provider.hooks.task_mixin.MemoriesHookMixin.rendered_from_template`).
    """
    if unique_id is None or unique_id == "":
        return None
    if not isinstance(unique_id, str) or not unique_id.strip():
        raise ValueError(
            f"`unique_id` must be a name that is not blank, or empty for the connection's default, "
            f"got {unique_id!r}"
        )
    refuse_missing_value_text(unique_id, templated=templated)
    return unique_id


def refuse_missing_value_text(unique_id: object, *, templated: bool) -> None:
    """Refuse a ``unique_id`` that a template rendered as ``"None"`` or ``"null"`` (see
    :func:`checked_unique_id`; the upload, whose other rules are the client's, calls it alone).

    :raises ValueError: naming ``unique_id``.
    """
    if templated and isinstance(unique_id, str) and unique_id.strip() in MISSING_VALUE_TEXTS:
        raise ValueError(
            f"`unique_id` rendered to {unique_id!r}, the text of a missing value (an XCom or a param "
            "that is not there?): refused rather than taken as a name"
        )


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


def seconds(name: str, value: object, *, zero: bool = False) -> float:
    """A duration parameter in seconds: a number, or a ``timedelta`` as Airflow's sensors take for
    ``poke_interval`` and ``timeout``. It must be finite and above 0 (or 0 too, with ``zero``).

    :raises ValueError: naming ``name`` and the rule (a string, ``None``, ``True``, NaN or infinity).
    """
    given = value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        rule = ">= 0" if zero else "> 0"
        raise ValueError(
            f"`{name}` must be a finite number of seconds {rule} (or a timedelta), got {given!r}"
        )
    return float(value)

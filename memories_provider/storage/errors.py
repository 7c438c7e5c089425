"""The one storage error that is not the user's input: a store that could not be asked."""

from __future__ import annotations


class StoreUnavailableError(ValueError):
    """A pre-flight check could not reach its store (network, throttling, a 5xx): try again later.

    Every other ``ValueError`` of a pre-flight check is input no retry can fix; this one is not,
    so operators let Airflow retry it. A ``ValueError`` still, so callers that catch the checks'
    errors as ``ValueError`` see no change.
    """

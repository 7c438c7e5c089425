"""The ``hook`` every memories.ai operator and sensor has, as Airflow's official providers give it."""

from __future__ import annotations

from functools import cached_property

from memories_provider.hooks.memories import MemoriesHook

__all__ = ["MemoriesHookMixin"]


class MemoriesHookMixin:
    """Gives a task a ``hook`` property for its ``memories_conn_id``.

    Put it before ``BaseOperator``/``BaseSensorOperator`` in the bases; the task sets
    ``memories_conn_id`` in its constructor.
    """

    memories_conn_id: str

    @cached_property
    def hook(self) -> MemoriesHook:
        """The hook of ``memories_conn_id``, built on first use and kept for this task instance."""
        return MemoriesHook(memories_conn_id=self.memories_conn_id)

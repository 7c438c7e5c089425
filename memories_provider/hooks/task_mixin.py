"""The ``hook`` every memories.ai operator and sensor has, as Airflow's official providers give it,
and the masking of credentials in its URI-valued template fields."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, cast

from memories_provider.client.errors import MemoriesError
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.preflight import account_refusal

__all__ = ["MemoriesHookMixin"]


class MemoriesHookMixin:
    """Gives a task a ``hook`` property for its ``memories_conn_id``.

    Put it before ``BaseOperator``/``BaseSensorOperator`` in the bases; the task sets
    ``memories_conn_id`` in its constructor.

    The credentials of its :attr:`uri_template_fields` (``sftp://user:pw@``, a presigned URL's
    signature, an Azure SAS) are registered with Airflow's secret masker before and after their
    templates are rendered: Airflow stores the rendered template fields (shown in the UI) and logs a
    template that fails to render through that masker, before ``execute`` runs.
    """

    memories_conn_id: str
    #: Template fields holding a URI whose credentials must be masked.
    uri_template_fields: ClassVar[tuple[str, ...]] = ()

    @cached_property
    def hook(self) -> MemoriesHook:
        """The hook of ``memories_conn_id``, built on first use and kept for this task instance."""
        return MemoriesHook(memories_conn_id=self.memories_conn_id)

    def _hook_edited_after(self, err: MemoriesError) -> MemoriesHook | None:
        """After ``err`` in a long wait: when it refused the key or account and the connection now
        holds other settings (the key rotated, the old one revoked), the hook of the connection as
        it is now, made this task's :attr:`hook` (the old one closed). ``None``: the refusal stands.
        """
        fresh = self.hook.edited() if account_refusal(err) is not None else None
        if fresh is not None:
            cast(Any, self).log.warning(
                "%s; connection %r was edited meanwhile: checking again with it", err, self.memories_conn_id
            )
            self.hook.close()
            self.__dict__["hook"] = fresh
        return fresh

    # Airflow's one renderer of template fields: ``render_template_fields`` calls it for a task, and
    # a mapped task's ``render_template_fields`` calls it on the unmapped task directly.
    def _do_render_template_fields(self, parent: Any, *args: Any, **kwargs: Any) -> None:
        if parent is self:
            self._mask_uri_fields()
            fields = getattr(self, "template_fields", ())
            self.__dict__["_from_template"] = frozenset(
                name for name in fields if _is_template(getattr(self, name, None))
            )
        super()._do_render_template_fields(parent, *args, **kwargs)  # type: ignore[misc]
        if parent is self:
            self._mask_uri_fields()

    def rendered_from_template(self, name: str) -> bool:
        """Whether template field ``name`` held a template (or an XCom reference) before rendering:
        its value is what the template gave (``"None"`` for a value that was not there), not one
        the DAG's author typed."""
        return name in self.__dict__.get("_from_template", ())

    def _mask_uri_fields(self) -> None:
        from memories_provider.storage.credentials import mask_uri_secrets

        for name in self.uri_template_fields:
            mask_uri_secrets(getattr(self, name, None))


def _is_template(value: Any) -> bool:
    """A Jinja template text, or a reference resolved at run time (an ``XComArg``)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return hasattr(value, "resolve")

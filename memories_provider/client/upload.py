"""One upload, as a value: the file, how it is announced, what the service is told about it.

Both clients and the hook offer the same ``upload_video(file, *, filename=..., tags=..., ...)``.
Its parameters are declared once, by :func:`upload_arguments`; each ``upload_video`` borrows
that signature (:func:`with_parameters_of`) and hands the bound :class:`VideoUpload` to its
``upload``, where the work happens.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Concatenate, ParamSpec, TypeVar

from memories_provider.client.errors import MemoriesInvalidArgumentError
from memories_provider.client.metadata import UploadMetadata

P = ParamSpec("P")
R = TypeVar("R")

#: What can be uploaded: a local path, or a binary file object positioned at the video's start.
UploadFile = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class VideoUpload:
    """Everything one ``upload`` call sends (see :func:`upload_arguments` for each field)."""

    file: UploadFile
    filename: str | None = None
    size: int | None = None
    content_type: str | None = None
    metadata: UploadMetadata = field(default_factory=UploadMetadata)
    progress: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, UploadMetadata):
            raise TypeError(f"`metadata` must be an UploadMetadata, got {type(self.metadata).__name__}")
        if self.content_type and not self.content_type.strip().lower().startswith("video/"):
            # Spec: the file part's Content-Type must start with video/ (refused before sending).
            raise MemoriesInvalidArgumentError(
                f"`content_type` must start with 'video/', got {self.content_type!r}"
            )
        if self.content_type and not _one_header_line(self.content_type):
            # It goes verbatim into the part's header: a line break would add headers or parts.
            raise MemoriesInvalidArgumentError(
                "`content_type` must be one line of printable ASCII (a media type such as "
                f"'video/mp4'), got {self.content_type!r}"
            )
        if self.content_type:
            # The media type in lowercase (its case means nothing by RFC, but the service's rule is
            # "starts with video/"), its parameters as given.
            media, sep, params = self.content_type.strip().partition(";")
            object.__setattr__(self, "content_type", media.strip().lower() + sep + params)
        if self.progress is not None and not callable(self.progress):
            raise TypeError("`progress` must be callable (it is called with the bytes sent so far)")


def _one_header_line(value: str) -> bool:
    """Whether ``value`` can be sent as a header value as it is: printable ASCII, no line break."""
    return value.isascii() and all(" " <= char < "\x7f" for char in value)


def upload_arguments(
    file: UploadFile,
    *,
    filename: str | None = None,
    size: int | None = None,
    content_type: str | None = None,
    metadata: UploadMetadata | None = None,
    progress: Callable[[int], None] | None = None,
    **fields: Any,
) -> VideoUpload:
    """The parameters of every ``upload_video``, bound into a :class:`VideoUpload`.

    :param file: a path, or a binary file object positioned at the start of the video.
    :param filename: name announced to the server (default: the path's or object's name);
        its extension (.mp4 .avi .mkv .mov) decides the part's Content-Type.
    :param size: bytes to send (default: from the file); required for unseekable streams.
    :param content_type: override the part's Content-Type (must start with ``video/``).
    :param metadata: what to tell the service about the video (an :class:`UploadMetadata`).
    :param progress: called with the number of file bytes sent so far.
    :param fields: :class:`UploadMetadata` fields as keywords (``tags=[...]``), over ``metadata``.
    :raises MemoriesInvalidArgumentError: (a ``ValueError``) when a field breaks a documented rule;
        ``TypeError`` for an unknown keyword.
    """
    merged = UploadMetadata.merged(metadata, fields)
    return VideoUpload(file, filename, size, content_type, merged, progress)


def with_parameters_of(
    parameters: Callable[P, object],
) -> Callable[[Callable[..., R]], Callable[Concatenate[Any, P], R]]:
    """Give a method ``(self, *args, **kwargs)`` the parameters of ``parameters``.

    Type checkers then check every call against that one declaration, and ``inspect.signature``
    (``help()``, IDEs, the docs) shows it; the method binds its arguments by calling ``parameters``.
    """

    def borrow(method: Callable[..., R]) -> Callable[Concatenate[Any, P], R]:
        own = inspect.signature(method)
        this = next(iter(own.parameters.values()))
        method.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[this, *inspect.signature(parameters).parameters.values()]
        )
        return method

    return borrow

"""The parameters of every ``upload_video`` are declared once and bound the same way everywhere."""

from __future__ import annotations

import inspect
import io

import pytest

from memories_provider.client import MemoriesInvalidArgumentError, UploadMetadata, VideoUpload
from memories_provider.client.aio import AsyncMemoriesClient
from memories_provider.client.sync import MemoriesClient
from memories_provider.client.upload import upload_arguments
from memories_provider.hooks.memories import MemoriesHook


@pytest.mark.parametrize("owner", [MemoriesClient, AsyncMemoriesClient, MemoriesHook])
def test_each_upload_video_shows_the_one_declaration(owner: type) -> None:
    shown = list(inspect.signature(owner.upload_video).parameters.values())
    assert shown[0].name == "self"
    assert shown[1:] == list(inspect.signature(upload_arguments).parameters.values())


def test_keywords_bind_into_one_validated_upload() -> None:
    fh = io.BytesIO(b"v")
    base = UploadMetadata(tags=["a"], camera_model="x")
    upload = upload_arguments(fh, filename="v.mp4", size=1, metadata=base, tags=["b"])
    assert upload == VideoUpload(fh, "v.mp4", 1, None, UploadMetadata(tags=["b"], camera_model="x"), None)


def test_unknown_keyword_and_bad_field_fail_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="colour"):
        upload_arguments("v.mp4", colour="red")
    with pytest.raises(MemoriesInvalidArgumentError, match="latitude"):
        upload_arguments("v.mp4", latitude=91.0, longitude=0.0)
    with pytest.raises(TypeError):
        upload_arguments("v.mp4", "v.mp4")  # type: ignore[misc]


def test_a_value_built_by_hand_is_checked_too() -> None:
    with pytest.raises(TypeError, match="`metadata` must be an UploadMetadata"):
        VideoUpload("v.mp4", metadata={"tags": ["a"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`progress` must be callable"):
        upload_arguments("v.mp4", progress=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content_type", ["video/mp4\r\nX-Injected: 1", "video/mp4\n\r\n--b\r\n", "video/mp4\x00", "video/mp4é"]
)
def test_a_content_type_that_is_not_one_header_line_is_refused_before_sending(content_type: str) -> None:
    # The override goes verbatim into the file part's header: a line break there adds headers,
    # or whole form fields, to the billed upload.
    with pytest.raises(MemoriesInvalidArgumentError, match="`content_type` must be one line"):
        upload_arguments(io.BytesIO(b"v"), filename="v.mp4", size=1, content_type=content_type)
    assert upload_arguments("v.mp4", content_type="video/mp4; codecs=avc1").content_type

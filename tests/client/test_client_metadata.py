"""UploadMetadata: every rule checked once, at construction, naming the parameter; its own form fields."""

from __future__ import annotations

import pickle
from datetime import datetime

import pendulum
import pytest

from memories_provider.client import MemoriesInvalidArgumentError, MemoriesInvalidRequestError, UploadMetadata


def test_form_fields_repeat_tags_and_format_values_in_order():
    metadata = UploadMetadata(
        unique_id="u",
        callback="https://example.com/hook",
        datetime_taken=pendulum.datetime(2024, 1, 2, 3, 4, 5),
        camera_model="cam",
        latitude=1.5,
        longitude=2,
        tags=["a", "b"],
        retain_original_video=False,
        video_transcription_prompt="say it",
    )
    assert metadata.form_fields() == [
        ("unique_id", "u"),
        ("callback", "https://example.com/hook"),
        ("datetime_taken", "2024-01-02 03:04:05"),
        ("camera_model", "cam"),
        ("latitude", "1.5"),
        ("longitude", "2.0"),
        ("tags", "a"),
        ("tags", "b"),
        ("retain_original_video", "false"),
        ("video_transcription_prompt", "say it"),
    ]


def test_values_are_normalised_once_and_unset_fields_are_not_sent():
    metadata = UploadMetadata(tags="one", callback="", datetime_taken="", video_transcription_prompt="")
    assert metadata.tags == ("one",)
    assert (metadata.callback, metadata.datetime_taken, metadata.video_transcription_prompt) == (None,) * 3
    assert metadata.form_fields() == [("tags", "one")]
    assert UploadMetadata().form_fields() == []
    assert UploadMetadata(datetime_taken=datetime(2024, 5, 1, 13, 45)).datetime_taken == "2024-05-01 13:45:00"
    assert UploadMetadata(retain_original_video=True).form_fields() == [("retain_original_video", "true")]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tags": [str(i) for i in range(21)]}, "`tags`"),
        ({"tags": [""]}, "`tags`"),
        ({"tags": 5}, "`tags`"),
        ({"tags": b"ab"}, "`tags`"),
        ({"callback": "http://x/" + "a" * 300}, "`callback`"),
        ({"callback": "not-a-url"}, "`callback`"),
        ({"camera_model": "c" * 201}, "`camera_model`"),
        ({"camera_model": 3}, "`camera_model`"),
        ({"datetime_taken": "2024-01-02"}, "`datetime_taken`"),
        ({"datetime_taken": 1714571100}, "`datetime_taken`"),
        ({"latitude": 1.0}, "`latitude` and `longitude`"),
        ({"latitude": 91.0, "longitude": 0.0}, "`latitude`"),
        ({"latitude": 0.0, "longitude": float("nan")}, "`longitude`"),
        ({"latitude": True, "longitude": 0.0}, "`latitude`"),
        ({"unique_id": ""}, "`unique_id`"),
        ({"unique_id": "  "}, "`unique_id`"),
        ({"retain_original_video": "yes"}, "`retain_original_video`"),
        ({"video_transcription_prompt": 3}, "`video_transcription_prompt`"),
    ],
)
def test_documented_limits_are_refused_naming_the_parameter(kwargs, param):
    with pytest.raises(MemoriesInvalidArgumentError) as info:
        UploadMetadata(**kwargs)
    # Both kinds of caller catch it: client users (MemoriesInvalidRequestError), operators (ValueError).
    assert isinstance(info.value, MemoriesInvalidRequestError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(param)


def test_replace_and_merged_validate_again():
    base = UploadMetadata(tags=["a"])
    assert UploadMetadata.merged(base, {}) is base
    assert UploadMetadata.merged(None, {"camera_model": "c"}) == UploadMetadata(camera_model="c")
    assert UploadMetadata.merged(base, {"unique_id": "u"}) == UploadMetadata(unique_id="u", tags=("a",))
    with pytest.raises(ValueError, match="`camera_model`"):
        UploadMetadata.merged(base, {"camera_model": "c" * 201})
    with pytest.raises(TypeError, match="tag"):
        UploadMetadata.merged(None, {"tag": "a"})


def test_with_tag_keeps_room_for_the_callers_tag():
    why = "one of the 20 is ours"
    assert UploadMetadata(tags=["a"]).with_tag("mine", why=why).tags == ("a", "mine")
    nineteen = UploadMetadata(tags=[f"t{i}" for i in range(19)])
    assert len(nineteen.with_tag("mine", why=why).tags) == 20
    with pytest.raises(
        ValueError, match=r"^`tags` may hold at most 19 tags \(one of the 20 is ours\), got 20"
    ):
        UploadMetadata(tags=[f"t{i}" for i in range(20)]).with_tag("mine", why=why)


def test_the_error_survives_pickling_as_airflow_ships_it():
    with pytest.raises(MemoriesInvalidArgumentError) as info:
        UploadMetadata(camera_model=3)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is MemoriesInvalidArgumentError and str(again) == str(info.value)


@pytest.mark.parametrize("value", ["2024-5-1 10:11:12", "2024-05-01 1:2:3", "2024-05-01  13:45:00"])
def test_datetime_taken_must_be_exactly_the_documented_format_before_any_request(
    client, memories_emulator, make_video, value
):
    # Spec: datetime_taken "exactly yyyy-MM-dd HH:mm:ss" (the emulator refuses anything else): a
    # string strptime forgives is refused here, before the file is sent and a credit spent.
    path, _ = make_video()
    with pytest.raises(MemoriesInvalidArgumentError, match=r"^`datetime_taken`"):
        client.upload_video(path, datetime_taken=value)
    assert memories_emulator.control.request_log() == []


def test_a_datetime_before_year_1000_is_written_with_four_digits():
    assert UploadMetadata(datetime_taken=datetime(999, 1, 2, 3, 4, 5)).datetime_taken == "0999-01-02 03:04:05"


def test_tiny_coordinates_are_sent_as_plain_decimals(client, memories_emulator, make_video):
    # Spec: latitude/longitude are "decimal numbers (sent as form strings)"; repr(1e-05) is "1e-05".
    metadata = UploadMetadata(latitude=0.00001, longitude=-0.000005)
    assert metadata.form_fields() == [("latitude", "0.00001"), ("longitude", "-0.000005")]
    path, _ = make_video()
    client.upload_video(path, metadata=metadata)
    [video] = memories_emulator.control.videos()
    assert (video["latitude"], video["longitude"]) == (0.00001, -0.000005)


@pytest.mark.parametrize(
    "callback", ["http://", "https:///hook", "http:hook", "http://example.com:99999/hook"]
)
def test_a_callback_without_a_host_is_refused_before_any_request(
    client, memories_emulator, make_video, callback
):
    # Spec: callback is a URL (the emulator refuses one without a host): e.g. a template that
    # rendered its host empty. Refused before the file is sent, not by the service after.
    path, _ = make_video()
    with pytest.raises(MemoriesInvalidArgumentError, match=r"^`callback`"):
        client.upload_video(path, callback=callback)
    assert memories_emulator.control.request_log() == []


@pytest.mark.parametrize(
    "callback", ["hooks.example.com/cb?token=TOKENsecret123", "ftp://ops:PASSWORDsecret@hooks.example.com/cb"]
)
def test_a_refused_callback_is_quoted_without_its_credentials(
    client, memories_emulator, make_video, callback
):
    # A callback receiver's URL often carries a token or a password; the refusal shows the URL
    # with them masked, as an upload_url refusal shows its url.
    path, _ = make_video()
    with pytest.raises(MemoriesInvalidArgumentError, match=r"^`callback`") as info:
        client.upload_video(path, callback=callback)
    assert "secret" not in str(info.value) and "***" in str(info.value), str(info.value)
    assert memories_emulator.control.request_log() == []


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", "videos/mp4"])
def test_a_content_type_override_that_is_not_video_is_refused_before_any_request(
    client, memories_emulator, make_video, content_type
):
    # Spec: "the part's Content-Type must start with video/" (the emulator refuses anything else).
    path, _ = make_video()
    with pytest.raises(MemoriesInvalidArgumentError, match=r"^`content_type`"):
        client.upload_video(path, content_type=content_type)
    assert memories_emulator.control.request_log() == []
    # Sent as "video/mp4": the media type's case means nothing by RFC, but the service's rule is a
    # prefix, and the emulator (strict) now refuses "Video/MP4" as such a service would.
    client.upload_video(path, content_type=" Video/MP4; codecs=avc1")
    (stored,) = memories_emulator.control.videos()
    assert stored["content_type"] == "video/mp4; codecs=avc1"

"""Tolerant parsing of every documented response variant into the typed models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memories_provider.client import UploadResult, Video, VideoPage, VideoStatus


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("UNPARSE", VideoStatus.UNPARSE),
        ("PARSE", VideoStatus.PARSE),
        ("parse", VideoStatus.PARSE),
        ("PARSE_ERROR", VideoStatus.FAILED),
        ("FAILED", VideoStatus.FAILED),
        ("FAIL", VideoStatus.FAILED),
        ("SOMETHING_NEW", VideoStatus.UNKNOWN),
        (None, VideoStatus.UNKNOWN),
    ],
)
def test_status_parse_accepts_every_spelling(raw, expected):
    assert VideoStatus.parse(raw) is expected


def test_status_terminal_sets():
    assert {VideoStatus.PARSE, VideoStatus.FAILED} == VideoStatus.TERMINAL
    assert {VideoStatus.FAILED} == VideoStatus.FAILURE
    assert VideoStatus.PARSE.is_terminal and VideoStatus.PARSE.is_success and not VideoStatus.PARSE.is_failure
    assert VideoStatus.FAILED.is_terminal and VideoStatus.FAILED.is_failure
    assert not VideoStatus.UNPARSE.is_terminal
    assert not VideoStatus.UNKNOWN.is_terminal
    assert VideoStatus.PARSE == "PARSE"  # str enum: compares equal to the wire value


def test_upload_result_from_camel_case_with_string_time():
    data = {
        "videoNo": "VI568102998803353600",
        "videoName": "a1b2",
        "videoStatus": "UNPARSE",
        "uploadTime": "1700000000123",
    }
    result = UploadResult.from_api(data)
    assert result == UploadResult("VI568102998803353600", "a1b2", VideoStatus.UNPARSE, 1700000000123)
    assert result.raw == data
    assert json.loads(json.dumps(result.to_dict())) == {
        "video_no": "VI568102998803353600",
        "video_name": "a1b2",
        "status": "UNPARSE",
        "upload_time": 1700000000123,
    }


def test_upload_result_from_snake_case_with_number_time():
    result = UploadResult.from_api(
        {"video_no": "VI000000000000000001", "video_name": "n", "status": "UNPARSE", "upload_time": 5}
    )
    assert (result.video_no, result.upload_time, result.status) == (
        "VI000000000000000001",
        5,
        VideoStatus.UNPARSE,
    )


def test_upload_result_without_id_is_rejected():
    with pytest.raises(ValueError, match="videoNo"):
        UploadResult.from_api({"videoName": "x"})


FULL_METADATA = {
    "video_no": "VI000000000000000001",
    "video_name": "clip.mp4",
    "duration": 12.5,
    "size": 1048576,
    "status": "PARSE",
    "create_time": 1700000000000,
    "resolution_label": "1080p",
    "fps": 30,
    "width": 1920,
    "height": 1080,
    "datetime_taken": 1690000000000,
    "camera_model": "GoPro",
    "latitude": 1.5,
    "longitude": -2.25,
    "tags": ["a", "api"],
    "bucket": "b",
    "blob": "x/y.mp4",
    "cause": None,
}


def test_video_from_snake_case_numbers():
    video = Video.from_api(FULL_METADATA)
    assert video.status is VideoStatus.PARSE
    assert (video.duration, video.size, video.create_time) == (12.5, 1048576, 1700000000000)
    assert (video.width, video.height, video.fps, video.resolution_label) == (1920, 1080, 30.0, "1080p")
    assert (video.latitude, video.longitude, video.camera_model) == (1.5, -2.25, "GoPro")
    assert video.tags == ("a", "api")
    assert (video.bucket, video.blob, video.cause) == ("b", "x/y.mp4", None)


def test_video_from_older_string_fields_and_null_cause():
    video = Video.from_api(
        {
            "video_no": "VI000000000000000002",
            "video_name": "n",
            "duration": "7",
            "size": "2048",
            "create_time": "1700000000000",
            "status": "PARSE_ERROR",
            "cause": "null",
        }
    )
    assert (video.duration, video.size, video.create_time) == (7.0, 2048, 1700000000000)
    assert video.status is VideoStatus.FAILED
    assert video.cause is None


def test_string_integers_are_read_exactly():
    # Older editions send size and times as strings: past 2**53 a float cannot hold every integer
    # (size "9007199254740993" was read as ...992).
    video = Video.from_api(
        {"video_no": "VI000000000000000003", "size": "9007199254740993", "create_time": " 1700000000001 "}
    )
    assert (video.size, video.create_time) == (9007199254740993, 1700000000001)
    assert Video.from_api({"video_no": "VI000000000000000003", "size": "2048.0"}).size == 2048


def test_video_from_camel_case_with_cause():
    video = Video.from_api(
        {"videoNo": "VI000000000000000003", "videoName": "n", "status": "FAIL", "cause": "codec unsupported"}
    )
    assert (video.video_no, video.status, video.cause) == (
        "VI000000000000000003",
        VideoStatus.FAILED,
        "codec unsupported",
    )


def test_video_bad_numbers_become_none_and_bucket_absent():
    video = Video.from_api(
        {"video_no": "VI000000000000000004", "duration": "", "size": "n/a", "status": "UNPARSE"}
    )
    assert (video.duration, video.size, video.bucket, video.blob, video.tags) == (None, None, None, None, ())


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["null", "none", " x ", "", None, "api"], ("null", "none", "x", "api")),  # a tag named null is a tag
        ("a, null,b", ("a", "null", "b")),
        ("null", ()),  # the whole field "null": absent, as older samples send it
        (None, ()),
        (7, ()),
    ],
)
def test_video_tags_keep_every_named_tag(tags: Any, expected: tuple[str, ...]) -> None:
    assert (
        Video.from_api({"video_no": "VI000000000000000005", "status": "PARSE", "tags": tags}).tags == expected
    )


def test_video_to_dict_is_json_safe_and_round_trips():
    video = Video.from_api(FULL_METADATA)
    as_dict = json.loads(json.dumps(video.to_dict()))
    assert as_dict["status"] == "PARSE" and as_dict["tags"] == ["a", "api"]
    assert Video.from_api(as_dict) == video


def test_video_page_numbers_and_strings():
    page = VideoPage.from_api(
        {
            "current_page": "2",
            "page_size": "10",
            "total_count": "11",
            "videos": [{"video_no": "VI000000000000000001", "status": "PARSE"}],
        }
    )
    assert (page.current_page, page.page_size, page.total_count) == (2, 10, 11)
    assert [v.video_no for v in page.videos] == ["VI000000000000000001"]
    assert page.to_dict()["videos"][0]["video_no"] == "VI000000000000000001"


def test_video_page_empty_data_uses_request_values():
    page = VideoPage.from_api(None, page=3, size=50)
    assert (page.current_page, page.page_size, page.total_count, page.videos) == (3, 50, None, [])

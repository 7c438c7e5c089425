"""Index outputs through the sync and async clients, against the emulator over real sockets."""

from __future__ import annotations

import pytest

from memories_provider.client import (
    MemoriesNotFoundError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesRouteNotFoundError,
    Segment,
    Transcript,
)
from memories_provider.client.models import Transcript as TranscriptModel


def _video(client, make_video, name="clip.mp4", unique_id=None) -> str:
    path, _ = make_video(name, size=1000)
    return client.upload_video(path, unique_id=unique_id).video_no


def test_sync_both_kinds_exact_segments(client, memories_emulator, make_video):
    video_no = _video(client, make_video, "walk.mp4", "s1")
    caption = client.get_video_caption(video_no, unique_id="s1")
    assert isinstance(caption, Transcript)
    assert caption.kind == "visual" and caption.video_no == video_no
    assert caption.segments == (
        Segment(0, "Scene 0 of walk.mp4", 0.0, 7.0),
        Segment(1, "Scene 1 of walk.mp4", 7.0, 14.0),
        Segment(2, "Scene 2 of walk.mp4", 14.0, 21.0),
    )
    stored = memories_emulator.control.videos()[0]
    assert caption.create_time == stored["create_time"]
    assert caption.video_blob == stored["blob"]
    audio = client.get_audio_transcription(video_no, unique_id="s1")
    assert [s.text for s in audio.segments] == [f"Words {i} spoken in walk.mp4" for i in range(3)]


async def test_async_both_kinds_and_no_audio(aclient, client, memories_emulator, make_video):
    memories_emulator.control.configure(no_audio_pattern="mute")
    video_no = _video(client, make_video, "mute.mp4")
    caption = await aclient.get_video_caption(video_no)
    assert len(caption.segments) == 3
    audio = await aclient.get_audio_transcription(video_no)
    assert audio == TranscriptModel(video_no=video_no, kind="audio")


def test_not_parsed_gives_no_segments_and_unknown_video_raises(client, memories_emulator, make_video):
    video_no = _video(client, make_video)
    memories_emulator.control.set_status(video_no, "UNPARSE")
    assert client.get_video_caption(video_no).segments == ()
    with pytest.raises(MemoriesNotFoundError):
        client.get_video_caption("VI000000000000000001")


def test_bad_input_is_refused_before_any_request(client, memories_emulator):
    for bad in ("", "../x", "a/b", "VI000000000000000001\n"):
        with pytest.raises(ValueError, match="video_no"):
            client.get_video_caption(bad)
    with pytest.raises(ValueError, match="kind"):
        client.get_transcript("VI000000000000000001", "subtitles")  # type: ignore[arg-type]
    assert memories_emulator.control.request_log() == []


def test_tolerant_numbers_and_hostile_text(client, memories_emulator, make_video):
    video_no = _video(client, make_video)
    huge = "x" * 3_000_000
    items = [
        {"index": "3", "content": "line\nbreak\x00nul\u2028sep", "startTime": 1.5, "endTime": "2.25"},
        {"content": huge, "startTime": "abc", "endTime": None},
        {"index": 9, "content": None, "startTime": "NaN", "endTime": "1e400"},
        {"index": 10, "content": "\ud800lone", "start_time": "4", "end_time": 5},
    ]
    memories_emulator.control.set_index_outputs(video_no, visual=items)
    segments = client.get_video_caption(video_no).segments
    assert segments[0] == Segment(3, "line\nbreak\x00nul\u2028sep", 1.5, 2.25)
    assert segments[1] == Segment(1, huge, None, None)
    assert segments[2] == Segment(9, "", None, None)
    assert segments[3] == Segment(10, "\ufffdlone", 4.0, 5.0)


def test_an_item_that_is_not_an_object_is_refused(client, memories_emulator, make_video):
    video_no = _video(client, make_video)
    memories_emulator.control.set_index_outputs(video_no, visual=["not an object"])
    with pytest.raises(MemoriesResponseError, match="not an object"):
        client.get_video_caption(video_no)


def test_older_edition_fallback_is_remembered(client, memories_emulator, make_video):
    video_no = _video(client, make_video, "old.mp4")
    memories_emulator.control.configure(index_edition="older")
    assert client.get_video_caption(video_no).segments[0].text == "Scene 0 of old.mp4"
    assert client.get_video_caption(video_no).segments[2].end_s == 21.0
    # One 404 on the current path, then the older path only.
    assert memories_emulator.control.count("get_video_transcription") == 2
    assert len(client.get_audio_transcription(video_no).segments) == 3


def test_one_infrastructure_404_does_not_switch_to_the_older_edition_for_good(
    client, memories_emulator, make_video
):
    # Spec section 1: a 404 may be a passing infrastructure error. The older path is used for good
    # only once it has answered; a current deployment (no older path) keeps the current one.
    video_no = _video(client, make_video)
    memories_emulator.control.inject_fault("get_video_caption", "http_404")
    with pytest.raises(MemoriesRouteNotFoundError):
        client.get_video_caption(video_no)  # the current path 404s once; the older one is not there
    assert len(client.get_video_caption(video_no).segments) == 3
    assert memories_emulator.control.count("get_video_caption") == 2


async def test_async_older_edition(aclient, client, memories_emulator, make_video):
    video_no = _video(client, make_video, "old.mp4")
    memories_emulator.control.configure(index_edition="older")
    assert (await aclient.get_video_caption(video_no)).segments[1].text == "Scene 1 of old.mp4"


def test_0429_is_retried(client, memories_emulator, make_video):
    video_no = _video(client, make_video)
    memories_emulator.control.inject_fault("get_audio_transcription", "code_0429", count=2, retry_after=0.01)
    assert len(client.get_audio_transcription(video_no).segments) == 3
    assert memories_emulator.control.count("get_audio_transcription") == 3
    memories_emulator.control.inject_fault("get_video_caption", "code_0429", count=10, retry_after=0.01)
    with pytest.raises(MemoriesRateLimitError):
        client.get_video_caption(video_no)


def test_dropped_connection_mid_body_is_retried(client, memories_emulator, make_video):
    video_no = _video(client, make_video)
    memories_emulator.control.inject_fault("get_video_caption", "drop_mid_body")
    assert len(client.get_video_caption(video_no).segments) == 3


def test_an_answer_naming_another_video_is_refused() -> None:
    from memories_provider.client import protocol

    body = b'{"code": "0000", "msg": "ok", "data": {"videoNo": "VI000000000000000002", "transcriptions": []}}'
    with pytest.raises(MemoriesResponseError, match="not 'VI000000000000000001'"):
        protocol.read_response(
            protocol.Answer(200, {}, body, endpoint="get_video_caption"),
            read=protocol.transcript_reader("visual", "VI000000000000000001"),
        )
    same = (
        b'{"code": "0000", "data": '
        b'{"videoNo": "VI000000000000000001", "transcriptions": null, "createTime": "17"}}'
    )
    reader = protocol.transcript_reader("audio", "VI000000000000000001")
    read = protocol.read_response(protocol.Answer(200, {}, same, endpoint="x"), read=reader)
    assert (read.segments, read.create_time) == ((), 17)


def test_integers_too_large_for_a_float_read_as_absent(client, memories_emulator, make_video):
    # JSON integers have no size limit: float(10**400) raises OverflowError, which escaped the
    # client as a bare exception (no MemoriesError) and failed every export of the video for good.
    video_no = _video(client, make_video)
    items = [{"index": 0, "content": "x", "startTime": 10**400, "endTime": -(10**400)}]
    memories_emulator.control.set_index_outputs(video_no, visual=items)
    assert client.get_video_caption(video_no).segments == (Segment(0, "x", None, None),)


def test_an_index_that_is_not_a_whole_number_is_the_segment_s_position(client, memories_emulator, make_video):
    # "7.9" was truncated to 7, and 9.5 to 9, the index of another segment: an export had two
    # segments 9 of one kind. It is as unreadable as "abc" (the README: its position); 2.0 and
    # "3e0" are whole.
    video_no = _video(client, make_video)
    items = [
        {"index": index, "content": str(i), "startTime": "0", "endTime": "1"}
        for i, index in enumerate(["0", "7.9", 2.0, "3e0", 9.5, "9"])
    ]
    memories_emulator.control.set_index_outputs(video_no, visual=items)
    assert [s.index for s in client.get_video_caption(video_no).segments] == [0, 1, 2, 3, 4, 9]


def test_strings_of_more_digits_than_python_converts_read_as_absent(client, memories_emulator, make_video):
    # int() refuses a string of more than 4 300 digits (ValueError, Python >= 3.11): the answer
    # was "undocumented data" and every export of the video failed, each retry too. Such a number
    # is as unreadable as "abc": the index is the segment's position, the creation time absent.
    video_no = _video(client, make_video)
    digits = "9" * 5000
    items = [{"index": digits, "content": "x", "startTime": digits, "endTime": "1"}]
    memories_emulator.control.set_index_outputs(video_no, visual=items)
    assert client.get_video_caption(video_no).segments == (Segment(0, "x", None, 1.0),)
    data = {"videoNo": video_no, "transcriptions": [], "createTime": digits}
    assert TranscriptModel.from_api(data, video_no=video_no, kind="audio").create_time is None


def test_a_text_that_is_not_a_string_is_written_as_its_json(client, memories_emulator, make_video):
    # The spec sends `content` as a string. Anything else was Python's text of it ('True',
    # "{'a': 1}", 'None' inside a list): no JSON reader, nor the service, writes those. Its JSON
    # text now ('true', '{"a": 1}'), the same in every export format.
    video_no = _video(client, make_video)
    contents = [True, {"a": 1, "é": [None]}, [1, "x"], 7, 1.5]
    items = [{"index": i, "content": c, "startTime": "0", "endTime": "1"} for i, c in enumerate(contents)]
    memories_emulator.control.set_index_outputs(video_no, visual=items)
    texts = [s.text for s in client.get_video_caption(video_no).segments]
    assert texts == ["true", '{"a": 1, "é": [null]}', '[1, "x"]', "7", "1.5"]

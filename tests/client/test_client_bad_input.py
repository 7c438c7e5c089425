"""Bad arguments are refused before anything is sent, by both clients, naming the parameter and the
rule (against the emulator, which counts the requests it gets)."""

from __future__ import annotations

import io
import os
import re

import pytest

from memories_provider.client import MemoriesInvalidArgumentError


@pytest.mark.parametrize(
    "url",
    [
        # Not a URL the service can fetch: upload_url is metered and limited to one a minute, so a
        # URL it cannot fetch must not cost one.
        "ftp://example.com/clip.mp4",
        "example.com/clip.mp4",
        "file:///tmp/clip.mp4",
        # Not a URL at all: urlsplit's own "Invalid IPv6 URL" (or .port's "Port out of range")
        # named neither `url` nor the rule, and was not the MemoriesInvalidArgumentError the
        # method documents.
        "http://[::1/clip.mp4",
        "https://example.com:99999/clip.mp4",
    ],
)
async def test_upload_from_a_url_the_service_cannot_fetch_is_refused_before_it_is_sent(
    client, aclient, memories_emulator, url
):
    with pytest.raises(MemoriesInvalidArgumentError, match=r"`url` must be an http\(s\) URL"):
        client.upload_video_from_url(url)
    with pytest.raises(MemoriesInvalidArgumentError, match=r"`url` must be an http\(s\) URL"):
        await aclient.upload_video_from_url(url)
    assert memories_emulator.control.count("upload_url") == 0


async def test_a_single_id_as_video_nos_is_one_id_not_its_characters(client, aclient, make_video):
    # As delete_videos takes it: before, "VI..." was sent as ["V", "I", "0", ...] and refused by
    # the service with "video_nos: must be 'VI' followed by 18 digits, got 'V'".
    video_no = client.upload_video(make_video()[0]).video_no
    assert [v.video_no for v in client.list_videos(video_nos=video_no).videos] == [video_no]
    assert [v.video_no for v in (await aclient.list_videos(video_nos=video_no)).videos] == [video_no]


async def test_a_refused_url_is_named_without_its_query(client, aclient, memories_emulator):
    # A presigned URL's signature is a storage credential, which no error may show (README,
    # "Secrets"): a URL refused for its scheme (here a typo) is named without its query.
    url = "htps://bucket.s3.example.com/v.mp4?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=5ecret5ig"
    with pytest.raises(MemoriesInvalidArgumentError) as info:
        client.upload_video_from_url(url)
    with pytest.raises(MemoriesInvalidArgumentError) as ainfo:
        await aclient.upload_video_from_url(url)
    for error in (info.value, ainfo.value):
        assert "5ecret5ig" not in str(error) and "AKIAEXAMPLE" not in str(error)
        assert "htps://bucket.s3.example.com/v.mp4?***" in str(error)
    assert memories_emulator.control.count("upload_url") == 0


_VNO = "VI" + "1" * 18


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # Each was sent, and refused by the service after a call spent on the 5/s limit (or, for
        # page="2", a bare TypeError from comparing it with 1; a NaN made the body invalid JSON).
        ({"page": "2"}, r"`page` must be an integer >= 1, got '2'"),
        ({"page": True}, r"`page` must be an integer >= 1"),
        ({"size": 10.5}, r"`size` must be an integer >= 1"),
        ({"size": 0}, r"`size` must be an integer >= 1"),
        ({"unique_id": ""}, r"`unique_id` must be a non-empty string"),
        ({"tag": 5}, r"`tag` must be a string"),
        ({"status": 1}, r"`status` must be a string"),
        ({"video_nos": [1]}, r"`video_nos` must hold video ids \(.VI. and 18 digits"),
        ({"video_nos": ["VI1"]}, r"`video_nos` must hold video ids \(.VI. and 18 digits"),
        ({"video_no": " VI568102998803353600"}, r"`video_no` must be a video id \(.VI. and 18 digits"),
        ({"datetime_taken": "1700000000000"}, r"`datetime_taken` must be an integer \(epoch ms\)"),
        ({"latitude": "1", "longitude": 2.0}, r"`latitude` must be a number"),
        ({"latitude": float("nan"), "longitude": 2.0}, r"`latitude` must be between -90 and 90"),
        ({"latitude": 1.0, "longitude": 181}, r"`longitude` must be between -180 and 180"),
        ({"latitude": 1.0}, r"`latitude` and `longitude` must be given together"),
    ],
)
async def test_bad_list_filters_are_refused_before_they_are_sent(
    client, aclient, memories_emulator, kwargs, match
):
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        client.list_videos(**kwargs)
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        await aclient.list_videos(**kwargs)
    assert memories_emulator.control.count("list_videos") == 0


async def test_an_empty_unique_id_is_refused_before_it_is_sent(client, aclient, memories_emulator):
    # Spec: unique_id is "non-empty if sent"; each of these sent "" and met the service's refusal.
    calls = [
        ("get_metadata", lambda c: c.get_video(_VNO, unique_id="")),
        ("delete_videos", lambda c: c.delete_videos([_VNO], unique_id="")),
        ("get_audio_transcription", lambda c: c.get_audio_transcription(_VNO, unique_id=" ")),
        ("download", lambda c: c.download_video(_VNO, unique_id="")),
    ]
    for endpoint, call in calls:
        with pytest.raises(MemoriesInvalidArgumentError, match="`unique_id` must be a non-empty string"):
            call(client)
        with pytest.raises(MemoriesInvalidArgumentError, match="`unique_id` must be a non-empty string"):
            await call(aclient)
        assert memories_emulator.control.count(endpoint) == 0, endpoint


#: Ids of the wrong shape (spec: a video id is "VI" + 18 digits, an asset id "re_" + digits).
_BAD_VIDEO_NOS = [
    "VI1",
    "vi568102998803353600",
    _VNO + "0",
    " " + _VNO,
    "VI" + "\u0663" * 18,
    568102998803353600,
]


@pytest.mark.parametrize("bad", _BAD_VIDEO_NOS, ids=repr)
async def test_a_malformed_video_no_is_refused_before_it_is_sent(client, aclient, memories_emulator, bad):
    # Each was sent, and the service refused it after a call spent on the rate limit (a download
    # on the 12-a-minute one): the sensor alone checked the documented shape, before any request.
    calls = [
        ("video_no", lambda c: c.get_video(bad)),
        ("video_no", lambda c: c.get_video_caption(bad)),
        ("video_no", lambda c: c.get_audio_transcription(bad)),
        ("video_no", lambda c: c.download_video(bad)),
        ("video_no", lambda c: c.list_videos(video_no=bad)),
        ("video_nos", lambda c: c.list_videos(video_nos=[_VNO, bad])),
        # The bad id in the second batch of 100: the first batch is not sent either.
        ("video_nos", lambda c: c.delete_videos([_VNO] * 100 + [bad])),
    ]
    for name, call in calls:
        rule = rf"`{name}` must (be a video id|hold video ids) \('VI' and 18 digits"
        with pytest.raises(MemoriesInvalidArgumentError, match=rule):
            call(client)
        with pytest.raises(MemoriesInvalidArgumentError, match=rule):
            result = call(aclient)
            if hasattr(result, "__await__"):
                await result
    assert memories_emulator.control.request_log() == []


@pytest.mark.parametrize("bad", ["re_", "RE_1", "re_1a", "asset_1", "1", " re_1", 1], ids=repr)
async def test_a_malformed_asset_id_is_refused_before_it_is_sent(client, aclient, memories_emulator, bad):
    rule = r"`asset_id` must be an asset id \('re_' and digits"
    with pytest.raises(MemoriesInvalidArgumentError, match=rule):
        client.download_asset(bad)
    with pytest.raises(MemoriesInvalidArgumentError, match=rule):
        aclient.download_asset(bad)
    assert memories_emulator.control.request_log() == []


def _sparse_file_over_3_gb(tmp_path):
    path = tmp_path / "big.mp4"
    with open(path, "wb") as fh:  # sparse: no 3 GB written to disk
        fh.truncate(3 * 10**9 + 1)
    return path


async def test_a_file_over_3_gb_is_refused_before_it_is_sent(client, aclient, memories_emulator, tmp_path):
    # Spec: "max 3 GB" (read strictly, 3 * 10**9 bytes). The client streamed such a file whole, and
    # only then did the service refuse it.
    path = _sparse_file_over_3_gb(tmp_path)
    match = r"`file` .*big\.mp4.* has 3000000001 bytes; memories.ai accepts at most 3000000000 bytes \(3 GB\)"
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        client.upload_video(path)
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        await aclient.upload_video(path)
    assert memories_emulator.control.count("upload") == 0


def test_a_file_object_over_3_gb_is_refused_before_it_is_sent(client, memories_emulator, tmp_path):
    path = _sparse_file_over_3_gb(tmp_path)
    with open(path, "rb") as fh, pytest.raises(MemoriesInvalidArgumentError, match="3000000001 bytes"):
        client.upload_video(fh)  # its size from fstat
    with pytest.raises(MemoriesInvalidArgumentError, match="3000000001 bytes"):
        client.upload_video(io.BytesIO(b"v"), filename="v.mp4", size=3 * 10**9 + 1)  # a declared size
    assert memories_emulator.control.count("upload") == 0


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: os.mkfifo(path), "a FIFO (named pipe)"),
        (lambda path: path.symlink_to("/dev/zero"), "a character device"),
    ],
    ids=["fifo", "dev-zero"],
)
async def test_a_special_file_is_refused_before_it_is_sent(
    client, aclient, memories_emulator, tmp_path, make, kind
):
    # A FIFO's open() waited for a writer for good (in the async client, with the event loop);
    # /dev/zero was refused as "the file to upload is empty", naming no parameter.
    path = tmp_path / "clip.mp4"
    make(path)
    match = re.escape(f"`file` '{path}' is {kind}, not a regular file")
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        client.upload_video(path)
    with pytest.raises(MemoriesInvalidArgumentError, match=match):
        await aclient.upload_video(str(path))
    assert memories_emulator.control.count("upload") == 0

"""Bad arguments are refused before anything is sent, by both clients, naming the parameter and the
rule (against the emulator, which counts the requests it gets)."""

from __future__ import annotations

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

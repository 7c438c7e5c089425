"""The emulator's index outputs (spec 2, "Index outputs") read with plain HTTP: the wire format itself."""

from __future__ import annotations

import requests


def _upload(emu, name: str = "clip.mp4", unique_id: str = "default") -> str:
    resp = requests.post(
        f"{emu.v1_url}/upload",
        headers={"Authorization": emu.api_key},
        files={"file": (name, b"\x00" * 1000, "video/mp4")},
        data={"unique_id": unique_id},
        timeout=10,
    )
    return str(resp.json()["data"]["videoNo"])


def _get(emu, path: str, **params: str) -> dict:
    resp = requests.get(f"{emu.url}{path}", params=params, headers={"Authorization": emu.api_key}, timeout=10)
    return {"status": resp.status_code, "body": resp.json()}


def test_parsed_video_has_string_typed_segments(memories_emulator):
    emu = memories_emulator
    video_no = _upload(emu, "beach.mp4", "scope")
    stored = next(v for v in emu.control.videos() if v["video_no"] == video_no)
    for endpoint, label in (("get_video_caption", "Scene"), ("get_audio_transcription", "Words")):
        answer = _get(emu, f"/serve/api/v1/{endpoint}", video_no=video_no, unique_id="scope")
        assert answer["status"] == 200
        data = answer["body"]["data"]
        assert answer["body"]["code"] == "0000"
        assert data["videoNo"] == video_no
        assert data["createTime"] == str(stored["create_time"])
        assert (data["video_bucket"], data["video_blob"]) == (stored["bucket"], stored["blob"])
        assert data["transcriptions"][0] == {
            "index": 0,
            "content": f"{label} 0 of beach.mp4" if label == "Scene" else "Words 0 spoken in beach.mp4",
            "startTime": "0",
            "endTime": "7",
        }
        assert [t["endTime"] for t in data["transcriptions"]] == ["7", "14", "21"]


def test_not_parsed_is_empty_no_audio_is_null_unknown_is_0001(memories_emulator):
    emu = memories_emulator
    emu.control.configure(no_audio_pattern="silent")
    pending = _upload(emu, "pending.mp4")
    emu.control.set_status(pending, "UNPARSE")
    silent = _upload(emu, "silent.mp4")
    caption = _get(emu, "/serve/api/v1/get_video_caption", video_no=pending)["body"]["data"]
    assert caption["transcriptions"] == []
    audio = _get(emu, "/serve/api/v1/get_audio_transcription", video_no=silent)["body"]
    assert audio["code"] == "0000" and audio["data"] is None
    visual = _get(emu, "/serve/api/v1/get_video_caption", video_no=silent)["body"]["data"]
    assert len(visual["transcriptions"]) == 3
    # Another scope does not see the video.
    other = _get(emu, "/serve/api/v1/get_video_caption", video_no=silent, unique_id="other")["body"]
    assert other["code"] == "0001" and other["data"] is None


def test_older_edition_serves_only_the_older_path(memories_emulator):
    emu = memories_emulator
    video_no = _upload(emu, "old.mp4", "scope")
    assert _get(emu, "/serve/api/video/get_video_transcription", video_no=video_no)["status"] == 404
    emu.control.configure(index_edition="older")
    assert _get(emu, "/serve/api/v1/get_video_caption", video_no=video_no, unique_id="scope")["status"] == 404
    older = _get(emu, "/serve/api/video/get_video_transcription", video_no=video_no)
    assert older["status"] == 200
    assert older["body"]["data"]["transcriptions"][1]["content"] == "Scene 1 of old.mp4"
    audio = _get(emu, "/serve/api/v1/get_audio_transcription", video_no=video_no, unique_id="scope")
    assert len(audio["body"]["data"]["transcriptions"]) == 3


def test_set_index_outputs_serves_them_verbatim_and_rate_limits_apply(memories_emulator):
    emu = memories_emulator
    video_no = _upload(emu)
    items = [{"index": 5, "content": "a\nb\x00c", "startTime": 1.5, "endTime": "x"}]
    emu.control.set_index_outputs(video_no, visual=items, audio=None)
    caption = _get(emu, "/serve/api/v1/get_video_caption", video_no=video_no)["body"]["data"]
    assert caption["transcriptions"] == items
    assert _get(emu, "/serve/api/v1/get_audio_transcription", video_no=video_no)["body"]["data"] is None
    emu.control.configure(rate_limits={"get_video_caption": (1, 60.0)})
    assert _get(emu, "/serve/api/v1/get_video_caption", video_no=video_no)["body"]["code"] == "0000"
    assert _get(emu, "/serve/api/v1/get_video_caption", video_no=video_no)["body"]["code"] == "0429"
    assert emu.control.count("get_video_caption") == 3

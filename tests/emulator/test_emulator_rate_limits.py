"""Per-endpoint sliding-window rate limits (spec section 3)."""

from __future__ import annotations

import time

import pytest

from memories_provider.emulator import SPEC_RATE_LIMITS


def test_off_by_default_in_the_fixture(api):
    for _ in range(20):
        assert api.v1("GET", "list_unique_ids").json()["code"] == "0000"


def test_spec_limits_restored_with_true(api, memories_emulator):
    cfg = memories_emulator.control.configure(rate_limits=True)
    assert {k: tuple(v) for k, v in cfg["rate_limits"].items()} == SPEC_RATE_LIMITS
    assert SPEC_RATE_LIMITS["upload"] == (1, 60.0)
    assert SPEC_RATE_LIMITS["download"] == (12, 60.0)
    assert SPEC_RATE_LIMITS["v2_download"] == (1, 1.0)
    api.upload()
    status, code, msg = api.error(api.upload_raw())
    assert (status, code, msg) == (200, "0429", "Request has exceeded the limit.")
    assert 55 < float(api.upload_raw().headers["Retry-After"]) <= 60


def test_list_videos_five_per_second(api, memories_emulator):
    memories_emulator.control.configure(rate_limits=True)
    codes = [api.v1("POST", "list_videos", json={}).json()["code"] for _ in range(6)]
    assert codes == ["0000"] * 5 + ["0429"]


def test_window_slides_and_retry_after_is_the_wait(api, memories_emulator):
    memories_emulator.control.configure(rate_limits={"list_videos": (2, 0.3)})
    t0 = time.monotonic()
    assert api.v1("POST", "list_videos", json={}).json()["code"] == "0000"
    assert api.v1("POST", "list_videos", json={}).json()["code"] == "0000"
    limited = api.v1("POST", "list_videos", json={})
    assert limited.json()["code"] == "0429"
    wait = float(limited.headers["Retry-After"])
    assert 0 < wait <= 0.3
    # Other endpoints keep their own windows.
    assert api.v1("GET", "list_unique_ids").json()["code"] == "0000"
    # Waiting exactly what Retry-After says frees a slot (this sleep IS the behaviour under test).
    time.sleep(wait + 0.02)
    assert api.v1("POST", "list_videos", json={}).json()["code"] == "0000"
    assert time.monotonic() - t0 >= 0.3


def test_rejected_calls_take_no_slot(api, memories_emulator):
    memories_emulator.control.configure(rate_limits={"get_metadata": (1, 0.25)})
    api.meta("VI000000000000000001")
    first = float(
        api.v1("GET", "get_metadata", params={"video_no": "VI000000000000000001"}).headers["Retry-After"]
    )
    time.sleep(first + 0.02)
    assert api.meta("VI000000000000000001")["code"] == "0001"  # admitted (not found), not limited


def test_v2_limit_is_http_429(api, memories_emulator):
    asset = memories_emulator.control.add_asset(b"x", "x.mp4")
    memories_emulator.control.configure(rate_limits=True)
    assert api.v2("GET", f"{asset['asset_id']}/download").status_code == 200
    resp = api.v2("GET", f"{asset['asset_id']}/download")
    assert api.error(resp) == (429, 429, "Request has exceeded the limit.")
    assert "Retry-After" in resp.headers


def test_limits_are_logged(api, memories_emulator):
    memories_emulator.control.configure(rate_limits={"delete_videos": (1, 60)})
    api.v1("POST", "delete_videos", json=[])
    api.v1("POST", "delete_videos", json=[])
    assert [r["code"] for r in memories_emulator.control.request_log("delete_videos")] == ["0000", "0429"]


def test_override_can_remove_a_limit_and_bad_values_are_refused(api, memories_emulator):
    memories_emulator.control.configure(rate_limits={"upload": None})
    api.upload()
    api.upload()
    with pytest.raises(ValueError, match="unknown endpoint"):
        memories_emulator.control.configure(rate_limits={"nope": (1, 1)})
    with pytest.raises(ValueError, match="requests >= 1"):
        memories_emulator.control.configure(rate_limits={"upload": (0, 1)})


def test_false_switches_limits_off(api, memories_emulator):
    memories_emulator.control.configure(rate_limits=True)
    memories_emulator.control.configure(rate_limits=False)
    for _ in range(3):
        api.upload()


def test_upload_and_upload_url_share_one_per_minute(api, memories_emulator):
    memories_emulator.control.configure(rate_limits=True)
    asset = memories_emulator.control.add_asset(b"\x00video" * 100, "remote.mp4", content_type="video/mp4")
    api.upload()
    resp = api.v1("POST", "upload_url", data={"url": memories_emulator.control.public_url(asset["asset_id"])})
    assert resp.json()["code"] == "0429"


def test_upload_url_and_upload_share_one_per_minute_either_way(api, memories_emulator):
    memories_emulator.control.configure(rate_limits=True)
    asset = memories_emulator.control.add_asset(b"\x00video" * 100, "remote.mp4", content_type="video/mp4")
    resp = api.v1("POST", "upload_url", data={"url": memories_emulator.control.public_url(asset["asset_id"])})
    assert resp.json()["code"] == "0000"
    assert api.upload_raw().json()["code"] == "0429"


def test_a_shared_budget_keeps_calls_as_long_as_its_longest_window(monkeypatch):
    # upload (here 2 per 60 s) and upload_url (here 5 per 1 s) share a budget: a URL upload's short
    # window must not make the limiter forget a file upload that upload's own window still counts.
    from memories_provider.emulator import ratelimit

    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limiter = ratelimit.SlidingWindowLimiter()
    assert limiter.acquire("upload", (2, 60.0)) is None
    clock[0] += 2
    assert limiter.acquire("upload_url", (5, 1.0)) is None  # its own window no longer sees the upload
    clock[0] += 2
    # Two calls within upload's 60 s: the next slot frees 60 s after the first.
    assert limiter.acquire("upload", (2, 60.0)) == pytest.approx(56.0)
    clock[0] += 56
    assert limiter.acquire("upload", (2, 60.0)) is None

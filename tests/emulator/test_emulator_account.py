"""Auth, credits and the concurrent-indexing cap."""

from __future__ import annotations

import pytest

ENDPOINT_CALLS = [
    ("v1", "POST", "upload", {"files": {"file": ("a.mp4", b"x", "video/mp4")}}),
    ("v1", "POST", "upload_url", {"data": {"url": "http://127.0.0.1:9/a.mp4"}}),
    ("v1", "GET", "get_metadata", {"params": {"video_no": "VI000000000000000001"}}),
    ("v1", "POST", "list_videos", {"json": {}}),
    ("v1", "GET", "list_unique_ids", {}),
    ("v1", "POST", "delete_videos", {"json": []}),
    ("v1", "POST", "download", {"json": {"video_no": "VI000000000000000001"}}),
    ("v1", "GET", "download", {"params": {"bucket": "b", "blob": "c"}}),
]


@pytest.mark.parametrize(("version", "method", "path", "kw"), ENDPOINT_CALLS)
@pytest.mark.parametrize("key", [None, "sk-wrong", "Bearer sk-mavi-emulator-key"])
def test_v1_auth_is_code_0401_with_http_200(api, memories_emulator, version, method, path, kw, key):
    headers = {"Authorization": key} if key else {}
    if key is None:
        api.s.headers.pop("Authorization")
    resp = getattr(api, version)(method, path, headers=headers, **kw)
    status, code, msg = api.error(resp)
    assert (status, code) == (200, "0401")
    assert "API key" in msg
    if key and key.startswith("Bearer"):
        assert "without 'Bearer '" in msg
    assert memories_emulator.control.videos() == []


@pytest.mark.parametrize("path", ["re_1/download", "download?bucket=b&blob=c"])
def test_v2_auth_is_http_401(api, path):
    resp = api.v2("GET", path, headers={"Authorization": "sk-wrong"})
    assert api.error(resp) == (401, 401, "API key invalid")


def test_extra_keys_can_be_configured(api, memories_emulator):
    memories_emulator.control.configure(api_keys=["sk-one", "sk-two"])
    assert api.v1("GET", "list_unique_ids", headers={"Authorization": "sk-two"}).json()["code"] == "0000"
    assert api.v1("GET", "list_unique_ids").json()["code"] == "0401"  # the default key is gone


def test_upload_costs_credits_and_0402_when_short(api, memories_emulator):
    memories_emulator.control.configure(credits=0.015, upload_cost=0.01)
    api.upload()
    assert memories_emulator.control.config()["balance"] == pytest.approx(0.005)
    status, code, msg = api.error(api.upload_raw())
    assert (status, code) == (200, "0402")
    assert "Insufficient balance" in msg and "upload" in msg
    assert len(memories_emulator.control.videos()) == 1
    assert memories_emulator.control.config()["balance"] == pytest.approx(0.005)


def test_rejected_upload_is_refunded(api, memories_emulator):
    memories_emulator.control.configure(credits=0.01)
    assert api.error(api.upload_raw("bad.txt"))[1] == "0001"
    assert memories_emulator.control.config()["balance"] == pytest.approx(0.01)
    api.upload()


def test_credits_none_is_unlimited(api, memories_emulator):
    memories_emulator.control.configure(credits=0)
    memories_emulator.control.configure(credits=None)
    api.upload()


def test_indexing_cap(api, memories_emulator):
    memories_emulator.control.configure(indexing_cap=2, parse_delay=3600)
    first = api.upload()["videoNo"]
    api.upload()
    status, code, msg = api.error(api.upload_raw())
    assert (status, code) == (200, "0429")
    assert "indexing cap" in msg and "2" in msg
    assert float(api.upload_raw().headers["Retry-After"]) > 3000  # until the first parse finishes
    url_resp = api.v1("POST", "upload_url", data={"url": "http://127.0.0.1:9/a.mp4"})
    assert api.error(url_resp)[1] == "0429"
    memories_emulator.control.set_status(first, "PARSE")
    api.upload()  # a slot freed
    assert len(memories_emulator.control.videos()) == 3


def test_account_disabled_is_0403(api, memories_emulator):
    memories_emulator.control.configure(account_disabled=True)
    assert api.error(api.v1("POST", "list_videos", json={})) == (200, "0403", "account disabled")
    assert api.error(api.v2("GET", "re_1/download")) == (403, 403, "account disabled")
    # A wrong key is still reported as a wrong key.
    assert api.error(api.v1("GET", "list_unique_ids", headers={"Authorization": "x"}))[1] == "0401"


def test_permission_denied_is_9009_per_endpoint(api, memories_emulator):
    memories_emulator.control.configure(permission_denied=["upload_url"])
    resp = api.v1("POST", "upload_url", data={"url": "http://127.0.0.1:9/a.mp4"})
    status, code, msg = api.error(resp)
    assert (status, code) == (200, "9009") and "permission denied" in msg and "upload_url" in msg
    api.upload()  # other endpoints still work
    with pytest.raises(ValueError, match="unknown endpoints"):
        memories_emulator.control.configure(permission_denied=["nope"])

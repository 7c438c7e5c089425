"""``echo_requests``: 500, 401/0401 and 0429 answers quote the request, key included; faults on some calls."""

from __future__ import annotations

import pytest
import requests


@pytest.fixture
def echo(memories_emulator):
    memories_emulator.control.configure(echo_requests=True)
    return memories_emulator


def test_a_500_is_a_plain_page_echoing_the_full_url_and_every_header(api, echo):
    echo.control.inject_fault("get_metadata", "http_500")
    resp = api.v1("GET", "get_metadata", params={"video_no": "VI000000000000000001", "unique_id": "u"})
    assert resp.status_code == 500 and resp.headers["Content-Type"].startswith("text/plain")
    lines = resp.text.splitlines()
    assert lines[0] == "500 Internal Server Error"
    assert lines[1] == f"GET {echo.v1_url}/get_metadata?video_no=VI000000000000000001&unique_id=u HTTP/1.1"
    assert f"Authorization: {echo.api_key}" in lines
    assert any(line.startswith("User-Agent: ") for line in lines)
    assert echo.control.request_log("get_metadata")[0]["http_status"] == 500


def test_auth_at_puts_the_key_at_that_character(api, echo):
    for auth_at in (150, 190, 199):
        echo.control.inject_fault("list_videos", "http_500", auth_at=auth_at)
        assert api.v1("POST", "list_videos", json={}).text.index(echo.api_key) == auth_at
    echo.control.inject_fault("list_videos", "code_0429", auth_at=300)
    assert api.v1("POST", "list_videos", json={}).json()["msg"].index(echo.api_key) == 300


def test_401_0401_and_0429_answers_echo_the_request_in_msg(api, echo, memories_emulator):
    echo.control.inject_fault("list_unique_ids", "http_401")
    resp = api.v1("GET", "list_unique_ids")
    assert resp.status_code == 401 and resp.json()["code"] == "0401"
    assert resp.json()["msg"].startswith("API key invalid; request was: GET ")
    assert f"Authorization: {echo.api_key}" in resp.json()["msg"]

    echo.control.inject_fault("v2_download", "http_401")
    resp = api.v2("GET", "re_1/download")
    assert (resp.status_code, resp.json()["code"]) == (401, 401) and echo.api_key in resp.json()["msg"]

    wrong = type(api)(memories_emulator, key="sk-not-the-right-one")  # a real 0401 echoes the key sent
    body = wrong.v1("GET", "list_unique_ids").json()
    assert body["code"] == "0401" and "Authorization: sk-not-the-right-one" in body["msg"]

    for kind in ("code_0429", "http_429"):
        echo.control.inject_fault("list_videos", kind)
        body = api.v1("POST", "list_videos", json={}).json()
        assert body["code"] == "0429" and body["msg"].startswith(
            "Request has exceeded the limit.; request was"
        )
        assert echo.api_key in body["msg"]

    echo.control.configure(rate_limits={"list_unique_ids": (1, 60.0)})  # a real rate limit too
    api.v1("GET", "list_unique_ids")
    body = api.v1("GET", "list_unique_ids").json()
    assert body["code"] == "0429" and echo.api_key in body["msg"]


def test_other_errors_and_echo_mode_off_echo_nothing(api, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500")
    resp = api.v1("POST", "list_videos", json={})
    assert resp.json()["error"] == "Internal Server Error" and memories_emulator.api_key not in resp.text
    memories_emulator.control.inject_fault("list_videos", "code_0429")
    assert memories_emulator.api_key not in api.v1("POST", "list_videos", json={}).text
    memories_emulator.control.configure(echo_requests=True)
    body = api.v1("GET", "get_metadata", params={"video_no": "VI000000000000000001"}).json()
    assert body["code"] == "0001" and memories_emulator.api_key not in body["msg"]  # only 500/401/0429


def test_a_fault_can_hit_one_call_in_n(api, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500", count=2, every=3)
    assert memories_emulator.control.pending_faults()["list_videos"][0]["every"] == 3
    statuses = [api.v1("POST", "list_videos", json={}).status_code for _ in range(8)]
    assert statuses == [200, 200, 500, 200, 200, 500, 200, 200]
    assert memories_emulator.control.pending_faults() == {}
    log = memories_emulator.control.request_log("list_videos")
    assert [r.get("fault") for r in log] == [None, None, "http_500", None, None, "http_500", None, None]


def test_every_must_be_positive(memories_emulator):
    with pytest.raises(ValueError, match="every must be >= 1"):
        memories_emulator.control.inject_fault("list_videos", "http_500", every=0)
    resp = requests.post(
        f"{memories_emulator.url}/_emulator/faults",
        json={"endpoint": "list_videos", "kind": "http_401", "every": "x"},
        timeout=10,
    )
    assert resp.status_code == 400

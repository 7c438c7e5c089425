"""Injected faults: each kind, consumed per call, counted, and visible in the request log."""

from __future__ import annotations

import time

import pytest
import requests

from memories_provider.emulator.app import CHUNK


def test_http_500_is_spring_style_and_consumed_per_call(api, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500", count=2)
    for _ in range(2):
        resp = api.v1("POST", "list_videos", json={})
        assert resp.status_code == 500
        assert resp.json()["status"] == 500 and resp.json()["error"] == "Internal Server Error"
    assert api.v1("POST", "list_videos", json={}).json()["code"] == "0000"
    log = memories_emulator.control.request_log("list_videos")
    assert [(r["http_status"], r.get("fault")) for r in log] == [
        (500, "http_500"),
        (500, "http_500"),
        (200, None),
    ]
    assert memories_emulator.control.count("list_videos") == 3
    assert memories_emulator.control.pending_faults() == {}


def test_none_lets_calls_through_to_aim_a_fault_at_a_later_call(api, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "none", count=2)
    memories_emulator.control.inject_fault("list_videos", "http_503")
    codes = [api.v1("POST", "list_videos", json={}).status_code for _ in range(4)]
    assert codes == [200, 200, 503, 200]
    log = memories_emulator.control.request_log("list_videos")
    assert [r.get("fault") for r in log] == [None, None, "http_503", None]


def test_http_503_has_no_json(api, memories_emulator):
    memories_emulator.control.inject_fault("get_metadata", "http_503")
    resp = api.v1("GET", "get_metadata", params={"video_no": "VI000000000000000001"})
    assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("text/html")


def test_faults_are_per_endpoint_and_queued_in_order(api, memories_emulator):
    memories_emulator.control.inject_fault("download", "http_500")
    memories_emulator.control.inject_fault("download", "http_503")
    assert api.v1("GET", "list_unique_ids").status_code == 200
    assert api.v1("GET", "download").status_code == 500
    assert api.v1("GET", "download").status_code == 503
    assert api.v1("GET", "download").json()["code"] == "0001"


def test_code_0429_with_and_without_retry_after(api, memories_emulator):
    memories_emulator.control.inject_fault("upload", "code_0429")
    resp = api.upload_raw()
    assert api.error(resp) == (200, "0429", "Request has exceeded the limit.")
    assert "Retry-After" not in resp.headers
    memories_emulator.control.configure(retry_after=0.4)
    memories_emulator.control.inject_fault("upload", "code_0429")
    assert api.upload_raw().headers["Retry-After"] == "0.4"
    memories_emulator.control.inject_fault("upload", "code_0429", retry_after=2)
    assert api.upload_raw().headers["Retry-After"] == "2"
    assert memories_emulator.control.videos() == []  # a limited upload stores nothing


def test_http_429(api, memories_emulator):
    memories_emulator.control.configure(retry_after=1.5)
    memories_emulator.control.inject_fault("list_videos", "http_429")
    resp = api.v1("POST", "list_videos", json={})
    assert api.error(resp) == (429, "0429", "Request has exceeded the limit.")
    assert resp.headers["Retry-After"] == "1.5"


def test_faults_come_before_auth(api, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500")
    assert api.v1("POST", "list_videos", json={}, headers={"Authorization": "bad"}).status_code == 500


def test_drop_before_response(api, memories_emulator):
    memories_emulator.control.inject_fault("get_metadata", "drop_before_response")
    with pytest.raises(requests.ConnectionError):
        api.meta("VI000000000000000001")
    assert api.meta("VI000000000000000001")["code"] == "0001"
    first, _ = memories_emulator.control.request_log("get_metadata")
    assert (first["http_status"], first["fault"]) == (None, "drop_before_response")


def test_drop_before_response_on_upload_stores_nothing(api, memories_emulator):
    memories_emulator.control.inject_fault("upload", "drop_before_response")
    with pytest.raises(requests.ConnectionError):
        api.upload_raw(data=b"x" * 3_000_000)
    assert memories_emulator.control.videos() == []


def test_drop_mid_request_cuts_the_upload_body_and_stores_nothing(api, memories_emulator):
    memories_emulator.control.inject_fault("upload", "drop_mid_request", after_bytes=4096)
    sent = 0
    total = 32 * 1024 * 1024

    def body():  # counts what the client managed to hand to its socket
        nonlocal sent
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        yield head + b"Content-Type: video/mp4\r\n\r\n"
        for _ in range(total // (1024 * 1024)):
            yield b"x" * (1024 * 1024)
            sent += 1024 * 1024
        yield b"\r\n--b--\r\n"

    with pytest.raises(requests.ConnectionError):
        api.v1("POST", "upload", data=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert sent < total  # the body never finished going out
    assert memories_emulator.control.videos() == []
    [entry] = memories_emulator.control.request_log("upload")
    assert (entry["fault"], entry["http_status"]) == ("drop_mid_request", None)
    assert entry["body_bytes_read"] == 4096


def test_accept_then_drop_stores_the_upload(api, memories_emulator):
    memories_emulator.control.inject_fault("upload", "accept_then_drop")
    with pytest.raises(requests.ConnectionError):
        api.upload_raw(data=b"x" * 2_000_000)
    (v,) = memories_emulator.control.videos()
    assert v["size"] == 2_000_000


@pytest.mark.parametrize("endpoint", ["upload", "upload_url"])
def test_json_error_on_an_upload_refuses_it_and_stores_nothing(api, memories_emulator, endpoint):
    # An upload answered with an error was not accepted (spec): a stored, billed video behind a
    # 0001 is a state the service never shows, and a client test built on it would be wrong.
    memories_emulator.control.inject_fault(endpoint, "json_error", code="0001", msg="bad request")
    if endpoint == "upload":
        resp = api.upload_raw(data=b"x" * 2_000_000)
    else:
        resp = api.v1("POST", "upload_url", data={"url": "http://127.0.0.1:9/clip.mp4"})
    assert api.error(resp) == (200, "0001", "bad request")
    assert memories_emulator.control.videos() == []
    api.upload()  # the next upload is served as usual
    assert len(memories_emulator.control.videos()) == 1


def test_a_fault_aimed_at_one_video_hits_only_the_calls_naming_it(api, memories_emulator):
    # One bad row: every list_videos batch holding it fails, the same calls without it do not.
    ok, bad = api.upload()["videoNo"], api.upload()["videoNo"]
    memories_emulator.control.inject_fault("list_videos", "http_500", count=3, video_no=bad)
    memories_emulator.control.inject_fault("get_metadata", "http_503", video_no=bad)
    assert memories_emulator.control.pending_faults()["list_videos"][0]["video_no"] == bad
    calls = [[ok], [ok, bad], [ok], [bad], {"video_no": bad}, [ok, bad], [bad]]
    codes = []
    for ids in calls:
        body = ids if isinstance(ids, dict) else {"video_nos": ids}
        codes.append(api.v1("POST", "list_videos", json=body).status_code)
    assert codes == [200, 500, 200, 500, 500, 200, 200]  # three hits, then the fault is spent
    log = memories_emulator.control.request_log("list_videos")
    assert [r.get("fault") for r in log] == [None, "http_500", None, "http_500", "http_500", None, None]
    assert log[1]["video_nos"] == [ok, bad]  # what the faulted call named is in the log too
    assert api.v1("GET", "get_metadata", params={"video_no": ok}).json()["code"] == "0000"
    assert api.v1("GET", "get_metadata", params={"video_no": bad}).status_code == 503
    assert memories_emulator.control.pending_faults() == {}


def test_a_fault_is_aimed_at_a_video_only_where_calls_name_videos(memories_emulator):
    with pytest.raises(ValueError, match="upload requests name no video"):
        memories_emulator.control.inject_fault("upload", "http_500", video_no="VI" + "1" * 18)


def test_accept_then_drop_only_for_uploads(memories_emulator):
    with pytest.raises(ValueError, match="upload"):
        memories_emulator.control.inject_fault("list_videos", "accept_then_drop")


def test_listing_faults_only_for_list_videos(memories_emulator):
    for kind in ("ignore_page", "no_rows"):
        with pytest.raises(ValueError, match=f"{kind} applies to list_videos only"):
            memories_emulator.control.inject_fault("get_metadata", kind)


def test_ignore_page_and_no_rows_serve_the_wrong_page_with_the_true_total(api, memories_emulator):
    made = [api.upload(f"v{i}.mp4")["videoNo"] for i in range(3)]
    memories_emulator.control.inject_fault("list_videos", "ignore_page")
    memories_emulator.control.inject_fault("list_videos", "no_rows")
    listing = [api.v1("POST", "list_videos", json={"page": 2, "size": 2}).json()["data"] for _ in range(3)]
    assert [[v["video_no"] for v in data["videos"]] for data in listing] == [
        [made[2], made[1]],  # page 1, newest first
        [],
        [made[0]],  # the fault spent: page 2 as it is
    ]
    assert [data["total_count"] for data in listing] == [3, 3, 3]


def test_unknown_fault_names_are_refused(memories_emulator):
    with pytest.raises(ValueError, match="unknown fault kind"):
        memories_emulator.control.inject_fault("upload", "explode")
    with pytest.raises(ValueError, match="unknown endpoint"):
        memories_emulator.control.inject_fault("uploads", "http_500")


@pytest.fixture
def asset(memories_emulator):
    data = bytes(range(256)) * 16_000  # ~4 MB
    return data, memories_emulator.control.add_asset(data, "f.mp4", content_type="video/mp4")


def _raw_get(api, url):
    """Stream a response and report (Content-Length header, bytes received, error)."""
    got = 0
    with api.s.get(url, stream=True, timeout=10) as resp:
        length = resp.headers.get("Content-Length")
        try:
            for chunk in resp.raw.stream(65536, decode_content=False):
                got += len(chunk)
        except Exception as exc:
            return length, got, exc
    return length, got, None


def test_drop_mid_body_sends_part_then_closes(api, memories_emulator, asset):
    data, a = asset
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body")
    length, got, exc = _raw_get(api, f"{api.emu.v2_url}/{a['asset_id']}/download")
    assert int(length) == len(data)
    assert 0 < got < len(data)
    assert exc is not None  # urllib3 notices the body ended short of Content-Length
    # The next call is whole again.
    assert api.v2("GET", f"{a['asset_id']}/download").content == data


def test_drop_mid_body_on_a_json_endpoint(api, memories_emulator):
    memories_emulator.control.inject_fault("list_unique_ids", "drop_mid_body")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.v1("GET", "list_unique_ids")


def test_slow_body_stalls_mid_body(api, memories_emulator, asset):
    data, a = asset
    url = f"{api.emu.v1_url}/download?bucket={a['bucket']}&blob={a['blob']}"
    half = min(len(data) // 2, CHUNK)  # what the emulator sends before it stalls
    # The stall comes after the first half: that half arrives (however slowly), then nothing more for
    # a read timeout far shorter than the 10 s stall. A stall anywhere else would let the rest through.
    memories_emulator.control.inject_fault("download", "slow_body", delay=10.0)
    with api.s.get(url, stream=True, timeout=(10, 60)) as resp:
        assert resp.raw.read(half) == data[:half]
        resp.raw.connection.sock.settimeout(0.5)
        # (requests raises ConnectionError for urllib3's ReadTimeoutError mid-body)
        with pytest.raises(requests.exceptions.ConnectionError):
            b"".join(resp.iter_content(1 << 20))
    # After the stall the rest comes, whole; nothing of it before the delay (a bound load only widens).
    memories_emulator.control.inject_fault("download", "slow_body", delay=0.5)
    t0 = time.monotonic()
    with api.s.get(url, stream=True, timeout=10) as resp:
        body = b"".join(resp.iter_content(1 << 20))
    assert body == data
    assert time.monotonic() - t0 >= 0.5


def test_a_stall_shows_in_the_request_log_and_ends_when_the_client_goes(api, memories_emulator, asset):
    """What lets a test act "mid-body" from the emulator's state: ``stalled_at`` once the first
    part is out, and a stall that ends as soon as its client has gone (not after ``delay``)."""
    _, a = asset
    memories_emulator.control.inject_fault("download", "slow_body", delay=120.0)
    url = f"{api.emu.v1_url}/download?bucket={a['bucket']}&blob={a['blob']}"
    control = memories_emulator.control
    with api.s.get(url, stream=True, timeout=10) as resp:
        next(resp.iter_content(1024))
        deadline = time.monotonic() + 30
        while "stalled_at" not in control.request_log("download")[-1]:
            assert time.monotonic() < deadline, control.request_log("download")
            time.sleep(0.02)  # polling the emulator's state
        entry = control.request_log("download")[-1]
        assert 0 < entry["stalled_at"] < int(resp.headers["Content-Length"])
        assert "stall_ended" not in entry
    # Leaving the block closed the half-read response and its connection.
    deadline = time.monotonic() + 30
    while "stall_ended" not in control.request_log("download")[-1]:
        assert time.monotonic() < deadline, "the stall outlived its client"
        time.sleep(0.02)  # polling the emulator's state
    assert control.request_log("download")[-1]["stall_ended"] == "client gone"


def test_json_error_instead_of_the_file(api, memories_emulator, asset):
    _, a = asset
    memories_emulator.control.inject_fault("v2_download", "json_error", code="0001", msg="video not found")
    resp = api.v2("GET", f"{a['asset_id']}/download")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.json()["code"] == "0001" and resp.json()["msg"] == "video not found"
    memories_emulator.control.inject_fault("download", "json_error")
    resp = api.v1("GET", "download", params={"bucket": a["bucket"], "blob": a["blob"]})
    assert api.error(resp) == (200, "0001", "Resource does not exist")
    log = memories_emulator.control.request_log()
    assert [(r["endpoint"], r["code"]) for r in log] == [("v2_download", "0001"), ("download", "0001")]


def test_request_log_fields(api, memories_emulator):
    before = time.time()
    api.v1("GET", "list_unique_ids")
    api.v1("GET", "download", params={"bucket": "b"})
    memories_emulator.control.health()  # control calls are not logged
    log = memories_emulator.control.request_log()
    assert len(log) == 2
    first = log[0]
    assert {k: first[k] for k in ("endpoint", "method", "path", "http_status", "code")} == {
        "endpoint": "list_unique_ids",
        "method": "GET",
        "path": "/serve/api/v1/list_unique_ids",
        "http_status": 200,
        "code": "0000",
    }
    assert before <= first["time"] <= time.time()
    assert log[1]["path"] == "/serve/api/v1/download?bucket=b"
    assert memories_emulator.control.request_log("download") == [log[1]]


def test_http_404_is_an_infrastructure_404_without_a_business_code(api, memories_emulator):
    # Spec section 1: infrastructure errors (404/503/5xx) can come with Spring-style bodies.
    memories_emulator.control.inject_fault("get_metadata", "http_404")
    resp = api.v1("GET", "get_metadata", params={"video_no": "VI000000000000000001"})
    assert resp.status_code == 404
    body = resp.json()
    assert body["status"] == 404 and body["error"] == "Not Found" and "code" not in body
    assert body["path"].endswith("/get_metadata")
    assert api.meta("VI000000000000000001")["code"] == "0001"  # the next call: the business answer

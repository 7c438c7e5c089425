"""The four download endpoints: bodies, headers, chunked mode, errors and per-GB credits."""

from __future__ import annotations

import pytest


@pytest.fixture
def video(api, memories_emulator):
    data = bytes(range(256)) * 4000
    d = api.upload("Scene 1.mp4", data, unique_id="dl")
    (v,) = memories_emulator.control.videos()
    return {"data": data, "no": d["videoNo"], **v}


def _check_file(resp, data, filename='attachment; filename="Scene 1.mp4"', ctype="video/mp4"):
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == ctype
    assert resp.headers.get("Content-Disposition") == filename
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.content == data


def test_a_post_by_video_no(api, video, memories_emulator):
    # Spec: Content-Disposition "may be absent on A"; the strict pick leaves it out.
    resp = api.v1("POST", "download", json={"video_no": video["no"], "unique_id": "dl"})
    assert "Content-Disposition" not in resp.headers
    _check_file(resp, video["data"], filename=None)
    memories_emulator.control.configure(video_download_disposition=True)  # the other variant
    resp = api.v1("POST", "download", json={"video_no": video["no"], "unique_id": "dl"})
    _check_file(resp, video["data"])


def test_b_v1_get_by_bucket_and_blob(api, video):
    assert "/" in video["blob"]
    resp = api.v1("GET", "download", params={"bucket": video["bucket"], "blob": video["blob"]})
    _check_file(resp, video["data"])


def test_b_blob_slashes_may_stay_unencoded(api, video):
    url = f"{api.emu.v1_url}/download?bucket={video['bucket']}&blob={video['blob'].replace(' ', '%20')}"
    _check_file(api.s.get(url, timeout=10), video["data"])


def test_c_v2_asset(api, video):
    _check_file(api.v2("GET", f"{video['asset_id']}/download"), video["data"])


def test_d_v2_bucket_and_blob(api, video):
    resp = api.v2("GET", "download", params={"bucket": video["bucket"], "blob": video["blob"]})
    _check_file(resp, video["data"])


def test_added_asset_non_ascii_name_uses_rfc6266(api, memories_emulator):
    asset = memories_emulator.control.add_asset(b"abc" * 10, "été clip.mp4")
    resp = api.v2("GET", f"{asset['asset_id']}/download")
    assert resp.content == b"abc" * 10
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=\"_t_ clip.mp4\"; filename*=UTF-8''%C3%A9t%C3%A9%20clip.mp4"
    )


def test_added_asset_from_path_is_streamed(api, memories_emulator, tmp_path):
    path = tmp_path / "f.mkv"
    path.write_bytes(b"z" * 3_000_000)
    asset = memories_emulator.control.add_asset(path, "f.mkv", content_type="video/x-matroska")
    assert asset["size"] == 3_000_000 and asset["asset_id"].startswith("re_")
    resp = api.v1("GET", "download", params={"bucket": asset["bucket"], "blob": asset["blob"]})
    assert resp.headers["Content-Type"] == "video/x-matroska" and resp.content == b"z" * 3_000_000


def test_chunked_mode_has_no_content_length(api, memories_emulator, video):
    memories_emulator.control.configure(chunked_downloads=True)
    resp = api.v2("GET", f"{video['asset_id']}/download")
    assert "Content-Length" not in resp.headers
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.content == video["data"]


def test_v1_download_errors(api, video):
    cases = [
        ("POST", {"json": {"video_no": "VI000000000000000001"}}, "video not found"),
        ("POST", {"json": {"video_no": video["no"]}}, "video not found"),  # wrong scope (default)
        ("POST", {"json": {}}, "video_no: required"),
        ("POST", {"json": ["x"]}, "body: must be a JSON object with video_no"),
        ("GET", {"params": {"blob": "x"}}, "Bucket cannot be null or empty"),
        ("GET", {"params": {"bucket": "b"}}, "Blob cannot be null or empty"),
        ("GET", {"params": {"bucket": "b", "blob": "x"}}, "Resource does not exist"),
    ]
    for method, kw, msg in cases:
        assert api.error(api.v1(method, "download", **kw)) == (200, "0001", msg)


def test_v2_download_errors_use_http_status_codes(api):
    assert api.error(api.v2("GET", "re_1/download")) == (400, 400, "Asset not found")
    assert api.error(api.v2("GET", "download", params={"bucket": ""})) == (
        400,
        400,
        "Bucket cannot be null or empty",
    )
    assert api.error(api.v2("GET", "download", params={"bucket": "b", "blob": "c"})) == (
        400,
        400,
        "Resource does not exist",
    )


def test_download_costs_credits_per_gb(api, memories_emulator, video):
    cost = 0.12 * len(video["data"]) / 1e9
    memories_emulator.control.configure(credits=cost * 1.5)
    assert api.v2("GET", f"{video['asset_id']}/download").status_code == 200
    assert memories_emulator.control.config()["balance"] == pytest.approx(cost * 0.5)
    status, code, msg = api.error(
        api.v1("POST", "download", json={"video_no": video["no"], "unique_id": "dl"})
    )
    assert (status, code) == (200, "0402")
    assert "Insufficient balance to download the resource" in msg
    assert api.error(api.v2("GET", f"{video['asset_id']}/download"))[:2] == (402, 402)


def test_no_range_or_conditional_support(api, video):
    """The spec documents no Range support: the whole file, 200, and no Accept-Ranges advertised."""
    url = f"{video['asset_id']}/download"
    plain = api.v2("GET", url)
    assert "Accept-Ranges" not in plain.headers and "ETag" not in plain.headers
    for headers in (
        {"Range": "bytes=0-9"},
        {"If-None-Match": "*"},
        {"If-Modified-Since": "Sun, 01 Jan 2090 00:00:00 GMT"},
    ):
        resp = api.v2("GET", url, headers=headers)
        assert resp.status_code == 200 and resp.content == video["data"], headers
        assert resp.headers["Content-Length"] == str(len(video["data"]))

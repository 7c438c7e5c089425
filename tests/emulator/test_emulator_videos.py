"""get_metadata, list_videos (filters, paging, rules), list_unique_ids and delete_videos."""

from __future__ import annotations

import pytest


def test_get_metadata_snake_case_numbers(api):
    d = api.upload("a.mp4", b"x" * 1234, unique_id="u", camera_model="Cam", tags=["k"])
    body = api.meta(d["videoNo"], "u")
    assert body["code"] == "0000"
    m = body["data"]
    assert m["video_no"] == d["videoNo"] and m["video_name"] == d["videoName"]
    assert m["status"] == "PARSE"  # parse delay 0: PARSE on the first read
    assert m["size"] == 1234 and isinstance(m["create_time"], int)
    assert m["create_time"] == int(d["uploadTime"])
    assert m["camera_model"] == "Cam" and m["tags"] == ["k", "api"] and m["cause"] is None
    assert {"duration", "fps", "width", "height", "resolution_label", "bucket", "blob"} <= set(m)


def test_get_metadata_is_scoped_by_unique_id(api):
    d = api.upload(unique_id="u")
    for unique_id in (None, "other"):
        body = api.meta(d["videoNo"], unique_id)
        assert (body["code"], body["msg"]) == ("0001", "video not found")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, ["video_no", "required"]),
        ({"video_no": "VI123"}, ["video_no", "18 digits"]),
        ({"video_no": "VI000000000000000001", "unique_id": ""}, ["unique_id"]),
    ],
)
def test_get_metadata_rules(api, params, words):
    status, code, msg = api.error(api.v1("GET", "get_metadata", params=params))
    assert (status, code) == (200, "0001")
    assert all(w in msg for w in words), msg


def test_capture_metadata_only_after_parse(api, memories_emulator):
    memories_emulator.control.configure(parse_delay=3600)
    d = api.upload(camera_model="Cam", latitude="1", longitude="2")
    m = api.meta(d["videoNo"])["data"]
    assert m["status"] == "UNPARSE" and m["camera_model"] is None and m["latitude"] is None
    assert m["duration"] is None  # only the indexing knows it
    memories_emulator.control.set_status(d["videoNo"], "PARSE")
    m = api.meta(d["videoNo"])["data"]
    assert (m["status"], m["camera_model"], m["latitude"]) == ("PARSE", "Cam", 1.0)
    # A JSON number of seconds: what the index outputs cover (3 segments of 7 s by default).
    assert m["duration"] == 21.0 and _list(api)["videos"][0]["duration"] == 21.0


def test_tags_only_after_parse_and_never_for_failed(api, memories_emulator):
    memories_emulator.control.configure(parse_delay=3600)
    d = api.upload("a.mp4", b"x" * 77, tags=["mine"], camera_model="Cam")
    m = api.meta(d["videoNo"])["data"]
    assert m["status"] == "UNPARSE" and m["tags"] is None
    # The basic fields are there from the upload on: that is all a retry can go by.
    assert (m["video_no"], m["video_name"], m["size"], m["create_time"]) == (
        d["videoNo"],
        d["videoName"],
        77,
        int(d["uploadTime"]),
    )
    [row] = _list(api)["videos"]
    assert row["tags"] is None and row["size"] == 77 and row["status"] == "UNPARSE"
    memories_emulator.control.set_status(d["videoNo"], "FAILED", "bad codec")
    assert api.meta(d["videoNo"])["data"]["tags"] is None
    assert _list(api)["videos"][0]["tags"] is None
    assert memories_emulator.control.videos()[0]["tags"] == ["mine", "api"]  # the control API sees all
    memories_emulator.control.set_status(d["videoNo"], "PARSE")
    assert api.meta(d["videoNo"])["data"]["tags"] == ["mine", "api"]
    assert _list(api)["videos"][0]["tags"] == ["mine", "api"]


@pytest.mark.parametrize(
    "flt",
    [
        {"tag": "mine"},
        {"tag": "api"},
        {"camera_model": "Cam"},
        {"datetime_taken": 0},
        {"latitude": 1.0, "longitude": 2.0},
    ],
)
def test_metadata_filters_match_only_parsed_videos(api, memories_emulator, flt):
    memories_emulator.control.configure(parse_delay=3600)
    d = api.upload(
        tags=["mine"], camera_model="Cam", datetime_taken="2024-01-01 00:00:00", latitude="1", longitude="2"
    )
    for status in ("UNPARSE", "FAILED"):
        memories_emulator.control.set_status(d["videoNo"], status)
        assert _list(api, **flt)["total_count"] == 0, status
    # The basic filters match whatever the status.
    assert _list(api, video_name=d["videoName"])["total_count"] == 1
    assert _list(api, status="FAILED")["total_count"] == 1
    memories_emulator.control.set_status(d["videoNo"], "PARSE")
    assert [v["video_no"] for v in _list(api, **flt)["videos"]] == [d["videoNo"]]


def test_metadata_before_parse_restores_the_lenient_reading(api, memories_emulator):
    memories_emulator.control.configure(parse_delay=3600, metadata_before_parse=True)
    d = api.upload(tags=["mine"], camera_model="Cam")
    assert [v["video_no"] for v in _list(api, tag="mine")["videos"]] == [d["videoNo"]]
    assert _list(api, camera_model="Cam")["total_count"] == 1
    assert api.meta(d["videoNo"])["data"]["tags"] == ["mine", "api"]
    assert api.meta(d["videoNo"])["data"]["camera_model"] is None  # capture metadata: still after PARSE
    memories_emulator.control.reset()  # back to the documented reading
    assert memories_emulator.control.config()["metadata_before_parse"] is False


def _list(api, **body):
    resp = api.v1("POST", "list_videos", json=body)
    out = resp.json()
    assert out["code"] == "0000", out
    return out["data"]


def test_list_paging_newest_first(api):
    nos = [api.upload(f"v{i}.mp4", unique_id="p")["videoNo"] for i in range(5)]
    page1 = _list(api, unique_id="p", page=1, size=2)
    assert (page1["current_page"], page1["page_size"], page1["total_count"]) == (1, 2, 5)
    seen = [v["video_no"] for p in (1, 2, 3) for v in _list(api, unique_id="p", page=p, size=2)["videos"]]
    assert seen == list(reversed(nos))
    assert _list(api, unique_id="p", page=4, size=2)["videos"] == []


def test_list_defaults(api):
    for i in range(21):
        api.upload(f"v{i}.mp4")
    data = _list(api)
    assert (data["current_page"], data["page_size"], data["total_count"]) == (1, 20, 21)
    assert len(data["videos"]) == 20
    assert isinstance(data["videos"][0]["size"], int)


def test_list_filters(api, memories_emulator):
    a = api.upload(
        "a.mp4",
        camera_model="A",
        tags=["x"],
        datetime_taken="2024-01-01 00:00:00",
        latitude="48.8566",
        longitude="2.3522",
    )
    b = api.upload(
        "b.mp4",
        camera_model="B",
        tags=["y"],
        datetime_taken="2024-06-01 00:00:00",
        latitude="51.5074",
        longitude="-0.1278",
    )
    c = api.upload("c.mp4")
    memories_emulator.control.set_status(c["videoNo"], "FAILED", "bad codec")

    def nos(**f):
        return {v["video_no"] for v in _list(api, **f)["videos"]}

    assert nos(video_nos=[a["videoNo"], c["videoNo"]]) == {a["videoNo"], c["videoNo"]}
    assert nos(video_no=b["videoNo"]) == {b["videoNo"]}
    assert nos(video_name=a["videoName"]) == {a["videoNo"]}
    assert nos(status="FAILED") == {c["videoNo"]}
    assert nos(status="PARSE") == {a["videoNo"], b["videoNo"]}
    assert nos(camera_model="B") == {b["videoNo"]}
    assert nos(tag="x") == {a["videoNo"]}
    assert nos(tag="api") == {a["videoNo"], b["videoNo"]}  # not the FAILED one: no metadata row
    assert nos(datetime_taken=1709251200000) == {b["videoNo"]}  # >= 2024-03-01
    assert nos(latitude=48.86, longitude=2.35) == {a["videoNo"]}  # Paris, within ~20 km
    assert nos(latitude=48.0, longitude=2.35) == set()  # ~95 km away
    failed = _list(api, status="FAILED")["videos"][0]
    assert failed["cause"] == "bad codec"


def test_list_is_scoped_by_unique_id(api):
    api.upload(unique_id="one")
    assert _list(api)["total_count"] == 0
    assert _list(api, unique_id="one")["total_count"] == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"page": 0}, ["page", ">= 1"]),
        ({"size": 0}, ["size", ">= 1"]),
        ({"page": "1"}, ["page", "integer"]),
        ({"size": True}, ["size", "integer"]),
        ({"unique_id": ""}, ["unique_id"]),
        ({"status": "DONE"}, ["status", "UNPARSE", "PARSE", "FAILED"]),
        ({"video_nos": "VI1"}, ["video_nos", "list"]),
        ({"video_nos": [1]}, ["video_nos"]),
        ({"video_nos": ["VI" + "1" * 18, "VI-bad"]}, ["video_nos", "18 digits", "VI-bad"]),
        ({"video_no": "VI1"}, ["video_no", "18 digits"]),
        ({"datetime_taken": "2024"}, ["datetime_taken", "integer"]),
        ({"latitude": 1.0}, ["latitude and longitude", "both"]),
        ({"latitude": "n", "longitude": 1}, ["latitude", "number"]),
        ({"tag": 5}, ["tag", "string"]),
        ([1, 2], ["JSON object"]),
    ],
)
def test_list_rules(api, body, words):
    status, code, msg = api.error(api.v1("POST", "list_videos", json=body))
    assert (status, code) == (200, "0001")
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("get_metadata", "video_no=VI{no}&video_no=VI000000000000000001", "video_no"),
        ("get_metadata", "video_no=VI{no}&unique_id=a&unique_id=b", "unique_id"),
        ("get_video_caption", "video_no=VI{no}&video_no=VI{no}", "video_no"),
        ("download", "bucket=b&bucket=c&blob=x.mp4", "bucket"),
        ("download", "bucket=b&blob=x.mp4&blob=y.mp4", "blob"),
    ],
)
def test_a_query_parameter_sent_twice_is_refused(api, path, query, name):
    # As form fields sent twice are: the emulator used the first value and ignored the other.
    no = api.upload()["videoNo"][2:]
    status, code, msg = api.error(api.s.get(f"{api.emu.v1_url}/{path}?{query.format(no=no)}", timeout=30))
    assert (status, code) == (200, "0001")
    assert msg == f"{name}: sent 2 times; send it once"


def test_list_null_page_and_size_are_the_defaults(api):
    # An explicit null is the field left out, as for the filters; it was an HTTP 500 (None * int).
    for i in range(3):
        api.upload(f"v{i}.mp4")
    resp = api.v1("POST", "list_videos", json={"page": None, "size": None, "datetime_taken": None})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["current_page"], data["page_size"], data["total_count"]) == (1, 20, 3)


@pytest.mark.parametrize(
    "video_no",
    [
        "VI" + "\uff11" * 18,  # full-width digits: \\d matches them
        "VI" + "1" * 18 + "\n",  # $ matched before a trailing line break
    ],
)
def test_video_no_is_vi_and_18_ascii_digits(api, video_no):
    status, code, msg = api.error(api.v1("GET", "get_metadata", params={"video_no": video_no}))
    assert (status, code) == (200, "0001")
    assert "18 digits" in msg, msg


def test_list_rejects_malformed_json(api):
    resp = api.v1("POST", "list_videos", data=b"{nope", headers={"Content-Type": "application/json"})
    assert api.error(resp)[1:] == ("0001", "body: not valid JSON")


def test_list_unique_ids(api):
    assert api.v1("GET", "list_unique_ids").json()["data"] == {"unique_ids": []}
    api.upload(unique_id="b")
    api.upload(unique_id="a")
    api.upload(unique_id="A")
    body = api.v1("GET", "list_unique_ids").json()
    assert body["code"] == "0000"
    assert body["data"]["unique_ids"] == ["A", "a", "b"]  # case-sensitive


def test_delete_videos(api, memories_emulator):
    keep = api.upload(unique_id="d")["videoNo"]
    gone = api.upload(unique_id="d")["videoNo"]
    other_scope = api.upload(unique_id="e")["videoNo"]
    path = next(v["path"] for v in memories_emulator.control.videos() if v["video_no"] == gone)
    resp = api.v1(
        "POST", "delete_videos", params={"unique_id": "d"}, json=[gone, other_scope, "VI000000000000000009"]
    )
    assert resp.json() == {"code": "0000", "msg": "success", "data": None, "success": True, "failed": False}
    left = {v["video_no"] for v in memories_emulator.control.videos()}
    assert left == {keep, other_scope}  # unknown ids and other scopes are ignored
    assert api.meta(gone, "d")["code"] == "0001"
    import os

    assert not os.path.exists(path)
    # Deleting again is idempotent (current docs).
    again = api.v1("POST", "delete_videos", params={"unique_id": "d"}, json=[gone])
    assert again.json()["code"] == "0000"


@pytest.mark.parametrize(
    ("params", "body", "words"),
    [
        ({}, [f"VI{i:018d}" for i in range(101)], ["100", "101"]),
        ({}, {"video_nos": []}, ["JSON array"]),
        ({}, [1], ["JSON array"]),
        ({"unique_id": ""}, [], ["unique_id"]),
    ],
)
def test_delete_rules(api, params, body, words):
    status, code, msg = api.error(api.v1("POST", "delete_videos", params=params, json=body))
    assert (status, code) == (200, "0001")
    assert all(w in msg for w in words), msg


def test_delete_exactly_100_is_fine(api):
    resp = api.v1("POST", "delete_videos", json=[f"VI{i:018d}" for i in range(100)])
    assert resp.json()["code"] == "0000"


def test_unknown_api_path_is_spring_style_404(api):
    resp = api.v1("GET", "no_such_endpoint")
    assert resp.status_code == 404
    assert resp.json()["status"] == 404 and resp.json()["error"] == "Not Found"

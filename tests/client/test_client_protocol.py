"""Pure protocol tests: request building, envelope parsing → data or typed error, Content-Disposition."""

from __future__ import annotations

import json

import pytest

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesAuthError,
    MemoriesClient,
    MemoriesDuplicateError,
    MemoriesError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesRouteNotFoundError,
    MemoriesServerError,
    protocol,
)

JSON = {"Content-Type": "application/json"}


def envelope(code, msg="m", data=None, **extra) -> bytes:
    return json.dumps({"code": code, "msg": msg, "data": data, **extra}).encode()


def test_success_envelope_variants_return_data():
    assert protocol.parse_envelope(
        protocol.Answer(200, JSON, envelope("0000", data={"a": 1}, success=True), endpoint="x")
    ) == {"a": 1}
    assert protocol.parse_envelope(protocol.Answer(200, JSON, envelope("0000", data=[1]), endpoint="x")) == [
        1
    ]  # no success/failed
    assert (
        protocol.parse_envelope(protocol.Answer(200, JSON, envelope(200, data="v2"), endpoint="x")) == "v2"
    )  # v2 integer code
    assert protocol.parse_envelope(protocol.Answer(200, JSON, envelope(0, data=None), endpoint="x")) is None


@pytest.mark.parametrize(
    ("code", "msg", "exc_type"),
    [
        ("0001", "Parameter error", MemoriesInvalidRequestError),
        ("0003", "missing video_no", MemoriesInvalidRequestError),
        ("0001", "video not found", MemoriesNotFoundError),
        ("0003", "Resource does not exist", MemoriesNotFoundError),
        ("0401", "key invalid", MemoriesAuthError),
        ("0403", "account disabled", MemoriesAuthError),
        ("9009", "permission denied", MemoriesAuthError),
        ("0402", "not enough credits", MemoriesInsufficientCreditsError),
        ("0409", "duplicate", MemoriesDuplicateError),
        ("0429", "Request has exceeded the limit.", MemoriesRateLimitError),
        (400, "Asset not found", MemoriesNotFoundError),
        (400, "Bucket cannot be null or empty", MemoriesInvalidRequestError),
        (401, "unauthorized", MemoriesAuthError),
        (403, "forbidden", MemoriesAuthError),
        (404, "missing", MemoriesNotFoundError),
        (429, "slow down", MemoriesRateLimitError),
        (500, "boom", MemoriesServerError),
        ("0001", "Insufficient balance to download the resource", MemoriesInsufficientCreditsError),
        ("7777", "new code", MemoriesResponseError),
    ],
)
def test_business_codes_map_to_exceptions(code, msg, exc_type):
    with pytest.raises(exc_type) as info:
        protocol.parse_envelope(
            protocol.Answer(
                200, JSON, envelope(code, msg, success=False, failed=True), endpoint="get_metadata"
            )
        )
    err = info.value
    assert type(err) is exc_type
    assert err.code == str(code)
    assert msg in err.message
    assert (err.http_status, err.endpoint) == (200, "get_metadata")


def test_rate_limit_carries_retry_after_header():
    with pytest.raises(MemoriesRateLimitError) as info:
        protocol.parse_envelope(
            protocol.Answer(200, {"retry-after": "3"}, envelope("0429"), endpoint="upload")
        )
    assert info.value.retry_after == 3.0


def test_retry_after_http_date_and_garbage():
    assert protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert protocol.parse_retry_after("soon") is None
    assert protocol.parse_retry_after(None) is None
    assert protocol.parse_retry_after("-5") == 0.0


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, MemoriesInvalidRequestError),
        (401, MemoriesAuthError),
        (403, MemoriesAuthError),
        (404, MemoriesRouteNotFoundError),  # a route missing, not a video: never "not found"
        (409, MemoriesDuplicateError),
        (429, MemoriesRateLimitError),
        (500, MemoriesServerError),
        (503, MemoriesServerError),
    ],
)
def test_http_status_with_spring_body(status, exc_type):
    body = json.dumps(
        {"timestamp": "t", "path": "/serve/api/v1/x", "status": status, "error": "Oops"}
    ).encode()
    with pytest.raises(exc_type) as info:
        protocol.parse_envelope(protocol.Answer(status, {"Retry-After": "2"}, body, endpoint="list_videos"))
    assert type(info.value) is exc_type
    assert info.value.http_status == status
    assert "Oops" in info.value.message and "/serve/api/v1/x" in info.value.message


def test_non_json_5xx_is_a_response_error_quoting_status_and_body():
    body = b"<html><body>" + b"Bad Gateway " * 100 + b"</body></html>"
    with pytest.raises(MemoriesResponseError) as info:
        protocol.parse_envelope(
            protocol.Answer(502, {"Content-Type": "text/html"}, body, endpoint="list_videos")
        )
    text = str(info.value)
    assert "HTTP 502" in text and "<html><body>Bad Gateway" in text
    assert len(info.value.message) < 400  # only the first bytes are quoted
    assert isinstance(info.value, MemoriesServerError)


def test_non_json_200_is_a_response_error_not_a_traceback():
    with pytest.raises(MemoriesResponseError) as info:
        protocol.parse_envelope(protocol.Answer(200, {}, b"\xff\xfenot json", endpoint="get_metadata"))
    assert "HTTP 200" in info.value.message
    assert info.value.http_status == 200


def test_json_without_code_is_undocumented():
    with pytest.raises(MemoriesResponseError, match="undocumented response"):
        protocol.parse_envelope(protocol.Answer(200, JSON, b'{"hello": "world"}', endpoint="x"))


def test_success_code_with_explicit_failure_flag_is_an_error():
    with pytest.raises(MemoriesResponseError):
        protocol.parse_envelope(
            protocol.Answer(200, JSON, envelope("0000", success=False, failed=True), endpoint="x")
        )


def test_error_str_has_code_status_endpoint_and_pickles():
    import pickle

    err = MemoriesRateLimitError("limited", code="0429", http_status=200, endpoint="upload", retry_after=1.5)
    assert str(err) == "limited (endpoint=upload, code=0429, http_status=200)"
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), clone.code, clone.retry_after, clone.endpoint) == (
        MemoriesRateLimitError,
        "0429",
        1.5,
        "upload",
    )
    assert isinstance(clone, MemoriesError)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="clip.mp4"', "clip.mp4"),
        ("attachment; filename=clip.mp4", "clip.mp4"),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.mp4", "€ rates.mp4"),
        ("attachment; filename=\"fallback.mp4\"; filename*=UTF-8''na%C3%AFve.mp4", "naïve.mp4"),
        ("attachment; filename*=utf-8'en'a%20b.mov; filename=\"x.mov\"", "a b.mov"),
        ('attachment; filename="a \\"quoted\\" name.mp4"', 'a "quoted" name.mp4'),
        ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),  # not sanitised here
        ('attachment; filename="Ã¼ber.mp4"', "über.mp4"),  # raw UTF-8 decoded as Latin-1 by http.client
        ("attachment", None),
        (None, None),
    ],
)
def test_content_disposition(header, expected):
    assert protocol.parse_content_disposition(header) == expected


def test_blob_query_keeps_slashes_and_encodes_the_rest():
    spec = protocol.download_blob_request("http://h/v1", "http://h/v2", "my bucket", "a/b c/d&e.mp4", "v1")
    assert spec.url == "http://h/v1/download?bucket=my%20bucket&blob=a/b%20c/d%26e.mp4"
    assert (spec.endpoint, spec.method) == ("download", "GET")
    spec2 = protocol.download_blob_request("http://h/v1", "http://h/v2", "b", "x/y", "v2")
    assert spec2.url == "http://h/v2/download?bucket=b&blob=x/y"
    assert spec2.endpoint == "v2_download"
    with pytest.raises(ValueError):
        protocol.download_blob_request("http://h/v1", "http://h/v2", "b", "x", "v3")  # type: ignore[arg-type]


def test_request_specs_for_each_endpoint():
    base = "http://h/serve/api/v1"
    assert (
        protocol.get_metadata_request(base, "VI000000000000000001", None).url
        == f"{base}/get_metadata?video_no=VI000000000000000001"
    )
    assert protocol.get_metadata_request(base, "VI000000000000000001", "my scope").url.endswith(
        "unique_id=my%20scope"
    )
    body = protocol.list_videos_request(
        base, page=2, size=10, video_nos=["VI000000000000000001", "VI000000000000000002"], status=None
    ).json_body
    assert body == {"page": 2, "size": 10, "video_nos": ["VI000000000000000001", "VI000000000000000002"]}
    delete = protocol.delete_videos_request(base, ["VI000000000000000001"], "u")
    assert (delete.url, delete.json_body, delete.idempotent) == (
        f"{base}/delete_videos?unique_id=u",
        ["VI000000000000000001"],
        True,
    )
    dl = protocol.download_video_request(base, "VI000000000000000001", "default")
    assert (dl.method, dl.json_body, dl.download) == (
        "POST",
        {"video_no": "VI000000000000000001", "unique_id": "default"},
        True,
    )
    assert protocol.download_asset_request("http://h/v2", "re_1").url == "http://h/v2/re_1/download"
    assert not protocol.upload_request(base).idempotent
    upload_url = protocol.upload_url_request(base, "http://x", [("tags", "a")])
    assert not upload_url.idempotent and upload_url.form == [("url", "http://x"), ("tags", "a")]
    with pytest.raises(ValueError, match="`url`"):
        protocol.upload_url_request(base, "", [])


def test_delete_batches_chunk_by_100():
    batches = protocol.delete_batches(f"VI{i:018d}" for i in range(250))
    assert [len(b) for b in batches] == [100, 100, 50]
    assert protocol.delete_batches([]) == []


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.mp4", "video/mp4"),
        ("B.AVI", "video/x-msvideo"),
        ("c.mkv", "video/x-matroska"),
        ("d.MoV", "video/quicktime"),
    ],
)
def test_video_content_type(name, ctype):
    assert protocol.video_content_type(name) == ctype


def test_video_content_type_rejects_other_extensions_naming_the_parameter():
    with pytest.raises(MemoriesInvalidRequestError, match=r"`filename` .*\.mp4") as info:
        protocol.video_content_type("notes.txt")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match=r"^`source` must name a video file"):
        protocol.video_content_type("notes.txt", param="source")


@pytest.mark.parametrize("url", ["api.memories.ai", "ftp://x", "", "http://"])
def test_base_url_needs_scheme_and_host(url):
    with pytest.raises(ValueError, match="base_url"):
        protocol.normalize_base_url(url)


@pytest.mark.parametrize(
    "url", ["ftp://ops:PASSWORDsecret@proxy.example", "api.memories.ai?api_key=sk-secret-1234"]
)
def test_a_refused_base_url_is_quoted_without_its_credentials(url):
    with pytest.raises(ValueError, match="base_url") as info:
        MemoriesClient("sk-test", base_url=url)
    assert "secret" not in str(info.value) and "***" in str(info.value), str(info.value)


def test_json_error_envelope_detection_for_downloads():
    assert protocol.looks_like_error_envelope(envelope("0001", "video not found"))
    assert not protocol.looks_like_error_envelope(b'{"some": "json file"}')
    assert not protocol.looks_like_error_envelope(b"\x00\x01binary")
    assert protocol.looks_like_error_envelope(b'{"code": "0001", "message": "Resource does not exist"}')


@pytest.mark.parametrize(
    ("body", "exc_type"),
    [
        (b"<html>maintenance</html>", MemoriesResponseError),
        (json.dumps({"status": 503, "error": "Service Unavailable"}).encode(), MemoriesServerError),
        (envelope(503, "busy"), MemoriesServerError),
    ],
)
def test_503_carries_retry_after(body, exc_type):
    with pytest.raises(exc_type) as info:
        protocol.parse_envelope(protocol.Answer(503, {"retry-after": "7"}, body, endpoint="list_videos"))
    assert info.value.retry_after == 7.0


def test_malformed_success_data_quotes_status_and_body():
    body = envelope("0000", "success", {"videoName": "n"})
    with pytest.raises(MemoriesResponseError) as info:
        protocol.read_response(protocol.Answer(200, JSON, body, endpoint="upload"), read=protocol.read_upload)
    assert info.value.http_status == 200
    assert "HTTP 200" in info.value.message and '"videoName": "n"' in info.value.message
    assert "may have accepted (and billed)" in info.value.message
    # a null get_metadata data means "no such video", not a malformed answer
    assert (
        protocol.read_response(
            protocol.Answer(200, JSON, envelope("0000"), endpoint="x"), read=protocol.read_video
        )
        is None
    )


@pytest.mark.parametrize("client_class", [MemoriesClient, AsyncMemoriesClient])
def test_upload_timeout_defaults_to_600s_and_never_undercuts_timeout(client_class):
    assert (client_class("k").timeout, client_class("k").upload_timeout) == (60.0, 600.0)
    assert client_class("k", timeout=900).upload_timeout == 900.0
    assert client_class("k", timeout=5, upload_timeout=30).upload_timeout == 30.0
    for name, kwargs in [("upload_timeout", {"upload_timeout": 0}), ("timeout", {"timeout": "soon"})]:
        with pytest.raises(ValueError, match=f"^{name} must be a positive number"):
            client_class("k", **kwargs)


def test_only_uploads_wait_for_a_slow_answer():
    assert protocol.upload_request("https://h").slow_answer
    assert protocol.upload_url_request("https://h", "https://h/v.mp4", []).slow_answer
    assert not protocol.list_unique_ids_request("https://h").slow_answer

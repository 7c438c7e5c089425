"""Parsing of the ``memories`` connection: defaults, every field, and errors that name the field."""

from __future__ import annotations

import json
import re

import pytest
from airflow.providers.common.compat.sdk import Connection
from leaks import leaks

from memories_provider.hooks.connection import (
    MemoriesConnectionConfigError,
    config_from_connection,
)
from memories_provider.hooks.memories import MemoriesHook

KEY = "sk-test-secret-key-123"


def parse(**kw):
    base = {"conn_id": "mem", "password": KEY, "host": None, "port": None, "extra": {}}
    base.update(kw)
    return config_from_connection(**base)


def test_defaults_point_at_the_real_service():
    c = parse()
    assert c.base_url == "https://api.memories.ai/serve/api/v1"
    assert c.v2_base_url == "https://mavi-backend.memories.ai/serve/api/v2"
    assert (c.timeout, c.max_retries, c.unique_id, c.blob_download_api) == (60.0, 5, "default", "v2")
    assert c.upload_timeout == 600.0


def test_custom_host_serves_v2_too_unless_v2_host_given():
    c = parse(host="http://127.0.0.1", port=8787)
    assert c.base_url == "http://127.0.0.1:8787/serve/api/v1"
    assert c.v2_base_url == "http://127.0.0.1:8787/serve/api/v2"
    c = parse(host="https://proxy.example/memories/", extra={"v2_host": "https://v2.example"})
    assert c.base_url == "https://proxy.example/memories/serve/api/v1"
    assert c.v2_base_url == "https://v2.example/serve/api/v2"


def test_host_that_already_has_the_api_path_is_not_doubled():
    assert (
        parse(host="https://api.memories.ai/serve/api/v1").base_url == "https://api.memories.ai/serve/api/v1"
    )


def test_extras_are_typed_and_legacy_prefixed_names_accepted():
    c = parse(
        extra={
            "timeout": "12.5",
            "upload_timeout": "900",
            "extra__memories__max_retries": "2",
            "unique_id": "team-a",
            "blob_download_api": "V1",
        }
    )
    assert (c.timeout, c.max_retries, c.unique_id, c.blob_download_api) == (12.5, 2, "team-a", "v1")
    assert c.upload_timeout == 900.0
    assert parse(extra={"extra__memories__upload_timeout": 30}).upload_timeout == 30.0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"password": None}, "'password'"),
        ({"password": "   "}, "'password'"),
        ({"host": "api.memories.ai"}, "'host'"),
        ({"host": "ftp://api.memories.ai"}, "'host'"),
        ({"extra": {"v2_host": "mavi-backend.memories.ai"}}, "'v2_host'"),
        ({"extra": {"timeout": "soon"}}, "'timeout'"),
        ({"extra": {"timeout": 0}}, "'timeout'"),
        ({"extra": {"upload_timeout": "ten minutes"}}, "'upload_timeout'"),
        ({"extra": {"upload_timeout": -5}}, "'upload_timeout'"),
        ({"extra": {"max_retries": "2.5"}}, "'max_retries'"),
        ({"extra": {"max_retries": -1}}, "'max_retries'"),
        ({"extra": {"max_retries": 10**9}}, "'max_retries' must be a whole number from 0 to 20"),
        ({"extra": {"blob_download_api": "v3"}}, "'blob_download_api'"),
    ],
)
def test_bad_fields_name_the_field_and_never_the_key(kw, field):
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(**kw)
    assert field in str(info.value)
    assert "'mem'" in str(info.value)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("name", ["max_retries", "blob_download_api", "v2_host", "timeout", "upload_timeout"])
def test_a_key_pasted_into_an_extra_is_not_quoted_in_any_case(name):
    # A copy-paste accident: the key in a setting's field. The error names the field and shows the
    # key in no letter case (blob_download_api is lower-cased before it is checked: Airflow's
    # secret masker, which registers string extras, would not recognise it).
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(extra={name: KEY.swapcase()})
    assert f"'{name}'" in str(info.value)
    assert leaks(str(info.value).lower(), KEY.lower()) == [], str(info.value)


def test_a_short_bad_setting_is_still_quoted():
    for name, value in (("max_retries", "2.5"), ("blob_download_api", "v3")):
        with pytest.raises(MemoriesConnectionConfigError, match=f"got '{value}'"):
            parse(extra={name: value})


def test_repr_hides_the_key():
    c = parse()
    assert KEY not in repr(c)
    assert KEY not in str(c)
    assert "***" in repr(c)


def test_uri_and_json_forms_parse_the_same(monkeypatch):
    uri = "memories://http://:sk-abc%2F1@127.0.0.1:8787?v2_host=http%3A%2F%2F127.0.0.1%3A8788&unique_id=u1"
    js = json.dumps(
        {
            "conn_type": "memories",
            "password": "sk-abc/1",
            "host": "http://127.0.0.1",
            "port": 8787,
            "extra": {"v2_host": "http://127.0.0.1:8788", "unique_id": "u1"},
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_MEM_URI", uri)
    monkeypatch.setenv("AIRFLOW_CONN_MEM_JSON", js)
    a = MemoriesHook("mem_uri").config
    b = MemoriesHook("mem_json").config
    assert a.api_key == b.api_key == "sk-abc/1"
    assert a.base_url == b.base_url == "http://127.0.0.1:8787/serve/api/v1"
    assert a.v2_base_url == b.v2_base_url == "http://127.0.0.1:8788/serve/api/v2"
    assert a.unique_id == b.unique_id == "u1"


def test_connection_form_round_trips_through_a_uri():
    extra = {"v2_host": "https://v2.example", "timeout": 30.0, "max_retries": 3, "unique_id": "x"}
    conn = Connection(
        conn_id="rt", conn_type="memories", host="https://api.example", password=KEY, extra=json.dumps(extra)
    )
    back = Connection(conn_id="rt", uri=conn.get_uri())
    assert (back.conn_type, back.host, back.password) == ("memories", "https://api.example", KEY)
    assert back.extra_dejson == extra
    c = parse(password=back.password, host=back.host, port=back.port, extra=back.extra_dejson)
    assert (c.base_url, c.v2_base_url, c.timeout, c.max_retries, c.unique_id) == (
        "https://api.example/serve/api/v1",
        "https://v2.example/serve/api/v2",
        30.0,
        3,
        "x",
    )


@pytest.mark.parametrize(
    "key",
    [
        "sk-SECRET\nABC123",  # a copy-paste accident: the third case
        "sk-SECRET\r\nABC123",
        "sk-SECRET ABC123",
        "sk-SECRET\tABC123",
        "sk-SECRET\x00ABC123",
        "sk-SECRET\x7fABC123",
        "sk-SECRET\u00a0ABC123",  # a no-break space from a web page
        "sk-SECRET\u200bABC123",  # a zero-width space
        "sk-SÉCRET-ABC123",  # not ASCII: cannot travel in a header
    ],
)
def test_a_key_with_whitespace_or_control_characters_is_refused_without_quoting_it(key):
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(password=key)
    message = str(info.value)
    assert "'mem'" in message and "'password'" in message and "line break" in message
    for piece in ("SECRET", "ABC123", repr(key)[1:-1]):
        assert piece not in message


def test_surrounding_whitespace_of_the_key_is_still_forgiven():
    assert parse(password=f"  {KEY}\n").api_key == KEY


@pytest.mark.parametrize("name", ["timeout", "upload_timeout"])
@pytest.mark.parametrize(
    "value", ["inf", "-inf", "nan", "NaN", "1e999", float("inf"), float("nan"), 0, -1, True]
)
def test_timeouts_must_be_finite_and_positive_and_are_not_quoted(name, value):
    # The fifth case: "inf" used to end in a raw OverflowError from urllib3.
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(extra={name: value})
    message = str(info.value)
    assert "'mem'" in message and f"'{name}'" in message and "finite number of seconds > 0" in message
    assert "got" not in message and (not isinstance(value, str) or value not in message)


@pytest.mark.parametrize("field", ["host", "v2_host"])
def test_hosts_with_credentials_are_refused_without_showing_them(field):
    url = "https://alice:HUNTER2pw@proxy.example"
    kw = {"host": url} if field == "host" else {"extra": {"v2_host": url}}
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(**kw)
    assert f"'{field}'" in str(info.value) and "HUNTER2pw" not in str(info.value)
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(host="ftp://alice:HUNTER2pw@proxy.example")  # the wrong-scheme error shows it masked
    assert "HUNTER2pw" not in str(info.value) and "ftp://***@proxy.example" in str(info.value)


@pytest.mark.parametrize("field", ["host", "v2_host"])
@pytest.mark.parametrize("password", [KEY, "sk-old-revoked-key-999"])
def test_a_key_pasted_into_a_host_field_is_not_quoted(field, password):
    # The key in the host field (the password holding it too, or an old one): the error names the
    # field and says what is wrong, but does not show a value that may be a key.
    pasted = "sk-mavi-NEW7key3Qx9Lm2Z"
    kw = {"host": pasted} if field == "host" else {"extra": {"v2_host": pasted}}
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(password=password, **kw)
    message = str(info.value)
    assert f"'{field}'" in message and "http(s) URL" in message
    assert not any(pasted[i : i + 8] in message for i in range(len(pasted) - 7)), message
    with pytest.raises(MemoriesConnectionConfigError, match=r"got 'api\.memories\.ai'"):
        parse(host="api.memories.ai")  # a host name is still quoted back


@pytest.mark.parametrize("extra", [[1, 2], "just text", 5, None], ids=["list", "string", "number", "null"])
def test_extras_that_are_not_a_json_object_name_the_field(monkeypatch, extra):
    """Airflow hands them over as they are: they used to end in "'list' object has no attribute 'get'"
    (retried by tasks, shown as such by the Test button)."""
    conn = {"conn_type": "memories", "password": KEY, "extra": json.dumps(extra)}
    monkeypatch.setenv("AIRFLOW_CONN_ODD_EXTRA", json.dumps(conn))
    if extra is None:  # JSON null: no extras at all
        assert MemoriesHook("odd_extra").config.unique_id == "default"
        return
    with pytest.raises(MemoriesConnectionConfigError, match=r"'odd_extra'.*'extra' must be a JSON object"):
        MemoriesHook("odd_extra").config  # noqa: B018
    ok, message = MemoriesHook("odd_extra").test_connection()
    assert not ok and "'extra' must be a JSON object" in message and KEY not in message


@pytest.mark.parametrize(
    ("host", "v1", "v2"),
    [
        (
            "https://api.memories.ai/serve/api/v1/",  # the v1 base URL, copied from the docs
            "https://api.memories.ai/serve/api/v1",
            "https://mavi-backend.memories.ai/serve/api/v2",
        ),
        (
            "HTTPS://API.Memories.AI/",  # host names are case-insensitive
            "https://api.memories.ai/serve/api/v1",
            "https://mavi-backend.memories.ai/serve/api/v2",
        ),
        (
            "http://127.0.0.1:8787/serve/api/v1",
            "http://127.0.0.1:8787/serve/api/v1",
            "http://127.0.0.1:8787/serve/api/v2",
        ),
        (
            "https://proxy.example/memories/serve/api/v1",
            "https://proxy.example/memories/serve/api/v1",
            "https://proxy.example/memories/serve/api/v2",
        ),
    ],
)
def test_a_host_given_as_the_v1_base_url_still_finds_the_v2_api(host, v1, v2):
    """It used to become '<host>/serve/api/v1/serve/api/v2' (or the real v1 host's own v2 path)."""
    c = parse(host=host)
    assert (c.base_url, c.v2_base_url) == (v1, v2)


@pytest.mark.parametrize("field", ["host", "v2_host"])
@pytest.mark.parametrize("suffix", ["?region=eu", "#v1", "/?", f"/?api_key={KEY}"])
def test_a_host_with_a_query_or_fragment_is_refused_without_quoting_it(field, suffix):
    """The API paths are appended to the host: a query there would end up in the middle of the URL."""
    url = "https://api.memories.ai" + suffix
    kw = {"host": url} if field == "host" else {"extra": {"v2_host": url}}
    with pytest.raises(MemoriesConnectionConfigError, match=f"(field|extra) '{field}'.*query") as info:
        parse(**kw)
    assert suffix not in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"host": "http://api.memories.ai"}, "'host'"),
        ({"host": "HTTP://API.memories.ai:80/serve/api/v1"}, "'host'"),
        ({"extra": {"v2_host": "http://mavi-backend.memories.ai"}}, "'v2_host'"),
    ],
)
def test_plain_http_to_the_real_service_is_refused(kw, field):
    """The key travels in a header: over http to memories.ai anyone on the path reads it."""
    with pytest.raises(MemoriesConnectionConfigError, match="https") as info:
        parse(**kw)
    assert field in str(info.value) and KEY not in str(info.value)
    # local hosts and proxies keep http
    parse(host="http://127.0.0.1:8787", extra={"v2_host": "http://memories.ai.example"})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"host": "http://127.0.0.1:99999"}, "'host'"),
        ({"host": "http://127.0.0.1:abc"}, "'host'"),
        ({"host": "http://[::1"}, "'host'"),  # was a bare "Invalid IPv6 URL"
        ({"host": "http://127.0.0.1", "port": 99999}, "'port'"),
        ({"host": "http://127.0.0.1", "port": -1}, "'port'"),
        ({"extra": {"v2_host": "http://127.0.0.1:70000"}}, "'v2_host'"),
    ],
)
def test_a_port_that_cannot_be_is_refused_naming_the_field(kw, field):
    """It used to be accepted and fail each request as a transport error (retried) — or raise a
    ValueError naming neither the connection nor the field."""
    with pytest.raises(MemoriesConnectionConfigError, match="port") as info:
        parse(**kw)
    assert field in str(info.value) and "'mem'" in str(info.value)


@pytest.mark.parametrize("value", ["   ", {"team": "a"}, ["a"], True])
def test_a_default_unique_id_that_is_blank_or_not_text_is_refused(value):
    """It was sent as it was ('   ', "{'team': 'a'}"): refused by the service on every call, which
    a status wait blamed on each video id in turn."""
    with pytest.raises(MemoriesConnectionConfigError, match="'unique_id'"):
        parse(extra={"unique_id": value})
    assert parse(extra={"unique_id": 7}).unique_id == "7"  # a number is a name like any other


@pytest.mark.parametrize("password", [f"Bearer {KEY}", f"bearer  {KEY}\n", f"Authorization: {KEY}"])
def test_a_key_pasted_with_its_header_says_so(password):
    """The API takes the raw key: 'Bearer sk-…' was refused only as 'contains a space'."""
    with pytest.raises(MemoriesConnectionConfigError, match="raw key") as info:
        parse(password=password)
    assert "'password'" in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        # The v2 base URL, or the real service's v2 host, in the v1 Host field ...
        ({"host": "https://mavi-backend.memories.ai/serve/api/v2"}, "field 'host'"),
        ({"host": "https://proxy.example/serve/api/v2/"}, "field 'host'"),
        ({"host": "https://mavi-backend.memories.ai"}, "field 'host'"),
        # ... and the v1 base URL, or the real service's v1 host, in extra v2_host.
        ({"extra": {"v2_host": "https://api.memories.ai/serve/api/v1"}}, "extra 'v2_host'"),
        ({"extra": {"v2_host": "http://127.0.0.1:8787/serve/api/v1/"}}, "extra 'v2_host'"),
        ({"extra": {"v2_host": "https://api.memories.ai"}}, "extra 'v2_host'"),
    ],
)
def test_the_other_api_versions_url_is_refused_naming_the_field(kw, field):
    # Before, each was accepted and built '.../serve/api/v2/serve/api/v1' (or sent v2 calls to the
    # v1 host): every call then failed with a 404 that named no field.
    with pytest.raises(MemoriesConnectionConfigError, match=f"{field} must be the v[12] API's origin") as err:
        parse(**kw)
    assert KEY not in str(err.value)


def test_each_api_versions_own_url_is_still_accepted():
    c = parse(
        host="https://api.memories.ai/serve/api/v1/",
        extra={"v2_host": "https://mavi-backend.memories.ai/serve/api/v2/"},
    )
    assert (c.base_url, c.v2_base_url) == (
        "https://api.memories.ai/serve/api/v1",
        "https://mavi-backend.memories.ai/serve/api/v2",
    )
    same = parse(host="http://127.0.0.1:8787", extra={"v2_host": "http://127.0.0.1:8787"})
    assert same.v2_base_url == "http://127.0.0.1:8787/serve/api/v2"


@pytest.mark.parametrize("password", [f'"{KEY}"', f"'{KEY}'\n", f" `{KEY}` "])
def test_a_key_pasted_with_its_quotes_says_so(password):
    # Before, accepted and sent quotes and all: every call failed with 0401, naming no field.
    with pytest.raises(MemoriesConnectionConfigError, match="wrapped in quotes") as info:
        parse(password=password)
    assert "'password'" in str(info.value) and KEY not in str(info.value)


def test_blob_download_api_forgives_surrounding_whitespace():
    # Before, ' v1 ' (a copy-paste) was refused as "must be 'v1' or 'v2', got ' v1 '".
    assert parse(extra={"blob_download_api": " v1 "}).blob_download_api == "v1"
    assert parse(extra={"blob_download_api": "V2\n"}).blob_download_api == "v2"


def test_a_bad_v2_host_is_named_as_an_extra_with_a_v2_example():
    # Before: "field 'v2_host' must be an http(s) URL with a scheme, e.g. 'https://api.memories.ai'",
    # the v1 host as the example, which the v2_host check now refuses.
    with pytest.raises(MemoriesConnectionConfigError) as info:
        parse(extra={"v2_host": "127.0.0.1:8787"})
    assert str(info.value) == (
        "Connection 'mem': extra 'v2_host' must be an http(s) URL with a scheme, "
        "e.g. 'https://mavi-backend.memories.ai', got '127.0.0.1:8787'"
    )
    with pytest.raises(
        MemoriesConnectionConfigError, match=re.escape("e.g. 'https://mavi-backend.memories.ai'")
    ):
        parse(extra={"v2_host": "https://mavi-backend.memories.ai/?x=1"})


@pytest.mark.parametrize(
    ("uri", "v1"),
    [
        # Airflow puts a URI's path in the (hidden) schema field: the prefix was dropped unseen, and
        # every call went to https://proxy.example/serve/api/v1 instead.
        (
            "memories://https://:sk-abc123@proxy.example/memories",
            "https://proxy.example/memories/serve/api/v1",
        ),
        (
            "memories://https://:sk-abc123@proxy.example:8443/a/b/",
            "https://proxy.example:8443/a/b/serve/api/v1",
        ),
        # The v1 base URL as the README allows it, in URI form: not doubled.
        (
            "memories://https://:sk-abc123@api.memories.ai/serve/api/v1",
            "https://api.memories.ai/serve/api/v1",
        ),
        ("memories://https://:sk-abc123@api.memories.ai", "https://api.memories.ai/serve/api/v1"),
    ],
)
def test_a_path_prefix_in_the_uri_form_is_kept(monkeypatch, uri, v1):
    monkeypatch.setenv("AIRFLOW_CONN_MEM_PREFIX", uri)
    assert MemoriesHook("mem_prefix").config.base_url == v1


def test_a_host_with_a_path_survives_the_uri_round_trip():
    # What `airflow connections export --format uri` (get_uri) writes and a secrets backend reads back.
    conn = Connection(conn_id="rt", conn_type="memories", host="https://proxy.example/memories", password=KEY)
    back = Connection(conn_id="rt", uri=conn.get_uri())
    c = parse(
        password=back.password, host=back.host, port=back.port, extra=back.extra_dejson, schema=back.schema
    )
    assert c.base_url == "https://proxy.example/memories/serve/api/v1"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ('{"unique_id": "team-a",}', "line 1, column 24"),  # a trailing comma
        ("{'unique_id': 'team-a'}", "line 1, column 2"),  # Python quotes
        ("unique_id=team-a", "line 1, column 1"),
        (f'{{"v2_host": "https://x.example", "note": "{KEY}"', "line 1, column"),  # cut short
    ],
)
async def test_extras_that_are_not_json_are_refused_naming_the_field(monkeypatch, caplog, extra, where):
    # Before, Airflow logged a traceback and handed over {}: the hook ran with unique_id 'default',
    # the default hosts and timeouts, and Test said "Connected".
    conn = {"conn_type": "memories", "password": KEY, "host": "http://127.0.0.1:9", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_BAD_JSON", json.dumps(conn))
    expected = "Connection 'bad_json': field 'extra' is not valid JSON ("
    with pytest.raises(MemoriesConnectionConfigError) as info:
        MemoriesHook("bad_json").config  # noqa: B018
    message = str(info.value)
    assert message.startswith(expected) and where in message and message.endswith('{"unique_id": "team-a"}')
    assert KEY not in message and "team-a'" not in message
    with pytest.raises(MemoriesConnectionConfigError) as async_info:
        await MemoriesHook("bad_json").aget_config()
    assert str(async_info.value) == message
    assert MemoriesHook("bad_json").test_connection() == (False, message)

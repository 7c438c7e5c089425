"""MemoriesHook against the emulator over real sockets: every operation, masking, test_connection."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from airflow.providers.common.compat.sdk import Connection, redact
from connections import use_emulator_conn

from memories_provider.client import (
    MemoriesAuthError,
    MemoriesNotFoundError,
    UploadMetadata,
    VideoStatus,
    VideoUpload,
)
from memories_provider.hooks import memories as hook_module
from memories_provider.hooks.memories import MemoriesHook

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64


@pytest.fixture
def hook(memories_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", memories_emulator.conn_uri)
    h = MemoriesHook()
    yield h
    h.close()


@pytest.fixture
def video_file(tmp_path):
    p = tmp_path / "clip.mp4"
    p.write_bytes(VIDEO)
    return p


def test_every_operation_round_trips(hook, memories_emulator, video_file):
    up = hook.upload_video(str(video_file), tags=["t1"], unique_id="team")
    assert up.video_no
    assert hook.get_video(up.video_no, unique_id="team").status is VideoStatus.PARSE
    page = hook.list_videos(unique_id="team", video_nos=[up.video_no])
    assert [v.video_no for v in page.videos] == [up.video_no]
    assert [v.video_no for v in hook.iter_videos(unique_id="team", tag="t1")] == [up.video_no]
    assert "team" in hook.list_unique_ids()

    with hook.download_video(up.video_no, unique_id="team") as resp:
        assert b"".join(resp.iter_chunks()) == VIDEO
        assert resp.filename is None  # Content-Disposition "may be absent on A": the emulator leaves it out

    stored = next(v for v in memories_emulator.control.videos() if v["video_no"] == up.video_no)
    with hook.download_blob(stored["bucket"], stored["blob"]) as resp:
        assert b"".join(resp.iter_chunks()) == VIDEO

    asset = memories_emulator.control.add_asset(b"asset-bytes", "a.mp4", "video/mp4")
    with hook.download_asset(asset["asset_id"]) as resp:
        assert b"".join(resp.iter_chunks()) == b"asset-bytes"

    hook.delete_videos([up.video_no], unique_id="team")
    with pytest.raises(MemoriesNotFoundError):
        hook.get_video(up.video_no, unique_id="team")


def test_a_malformed_id_is_refused_by_the_hook_as_by_the_operators(hook, memories_emulator):
    # A direct hook user got the service's refusal after a request spent (a download's on the
    # 12-a-minute limit); the format is checked once, in the client, before any request.
    from memories_provider.client import MemoriesInvalidArgumentError

    with pytest.raises(MemoriesInvalidArgumentError, match=r"`video_no` must be a video id \('VI' and 18"):
        hook.download_video("VI1")
    with pytest.raises(MemoriesInvalidArgumentError, match=r"`video_no` must be a video id \('VI' and 18"):
        hook.get_transcript("VI1", "audio")
    with pytest.raises(MemoriesInvalidArgumentError, match=r"`asset_id` must be an asset id \('re_'"):
        hook.download_asset("re_x")
    assert memories_emulator.control.request_log() == []


def test_unique_id_defaults_to_the_connection(memories_emulator, monkeypatch, video_file):
    use_emulator_conn(monkeypatch, memories_emulator, "scoped", unique_id="from-conn")
    hook = MemoriesHook("scoped")
    up = hook.upload_video(str(video_file))
    assert hook.get_video(up.video_no).video_no == up.video_no
    assert [v.video_no for v in hook.iter_videos()] == [up.video_no]
    assert hook.list_unique_ids() == ["from-conn"]
    # The same upload as a value: scoped the same way, unless it names its own folder.
    hook.upload(VideoUpload(str(video_file)))
    hook.upload(VideoUpload(str(video_file), metadata=UploadMetadata(unique_id="own")))
    assert sorted(hook.list_unique_ids()) == ["from-conn", "own"]
    assert len(list(hook.iter_videos())) == 2


def test_blob_download_api_extra_selects_v1(memories_emulator, monkeypatch, video_file):
    use_emulator_conn(monkeypatch, memories_emulator, "v1blob", blob_download_api="v1")
    hook = MemoriesHook("v1blob")
    up = hook.upload_video(str(video_file))
    stored = next(v for v in memories_emulator.control.videos() if v["video_no"] == up.video_no)
    with hook.download_blob(stored["bucket"], stored["blob"]) as resp:
        assert b"".join(resp.iter_chunks()) == VIDEO
    paths = [r["path"] for r in memories_emulator.control.request_log() if "bucket=" in r["path"]]
    assert len(paths) == 1
    assert "/serve/api/v1/" in paths[0]


async def test_async_client_from_the_hook(hook, memories_emulator, video_file):
    up = hook.upload_video(str(video_file))
    fresh = MemoriesHook()  # a trigger's hook: the connection is looked up without blocking
    async with await fresh.get_async_client() as client:
        video = await client.get_video(up.video_no)
        assert video.status is VideoStatus.PARSE
        page = await client.list_videos(video_nos=[up.video_no])
        assert [v.video_no for v in page.videos] == [up.video_no]


async def test_async_config_reads_the_extras_and_masks_the_key(memories_emulator, monkeypatch):
    secret = "sk-async-path-secret-314"
    use_emulator_conn(
        monkeypatch,
        memories_emulator,
        "async_cfg",
        password=secret,
        upload_timeout=1200,
        timeout=30,
        unique_id="trig",
    )
    hook = MemoriesHook("async_cfg")
    config = await hook.aget_config()
    assert (config.api_key, config.timeout, config.upload_timeout, config.unique_id) == (
        secret,
        30.0,
        1200.0,
        "trig",
    )
    assert redact(secret) != secret  # registered with Airflow's secret masker on the async path
    async with await hook.get_async_client() as client:
        assert (client.timeout, client.upload_timeout) == (30.0, 1200.0)
    with hook.new_client() as sync_client:
        assert sync_client.upload_timeout == 1200.0


async def test_async_config_never_masks_synchronously_on_the_event_loop(memories_emulator, monkeypatch):
    # Sync extra_dejson/mask_secret message the supervisor on Airflow 3 and deadlock on the loop.
    loop_thread = threading.get_ident()
    blocking_calls: list[str] = []
    real_extra, real_mask = Connection.extra_dejson, hook_module.mask_secret

    def extra_dejson(self):
        if threading.get_ident() == loop_thread:
            blocking_calls.append("extra_dejson")
        return real_extra.fget(self)

    def mask_secret(secret, name=None):
        if threading.get_ident() == loop_thread:
            blocking_calls.append("mask_secret")
        real_mask(secret, name)

    monkeypatch.setattr(Connection, "extra_dejson", property(extra_dejson))
    monkeypatch.setattr(hook_module, "mask_secret", mask_secret)
    monkeypatch.setenv("AIRFLOW_CONN_ASYNC_ONLY", memories_emulator.conn_json)
    config = await MemoriesHook("async_only").aget_config()
    assert config.base_url == memories_emulator.v1_url
    assert blocking_calls == []


def test_test_connection_reports_success_and_a_bad_key(hook, memories_emulator, monkeypatch):
    ok, message = hook.test_connection()
    assert ok, message
    assert "Connected" in message

    use_emulator_conn(monkeypatch, memories_emulator, "bad", password="sk-wrong-key-456")
    ok, message = MemoriesHook("bad").test_connection()
    assert not ok
    assert "Authentication failed" in message
    assert "sk-wrong-key-456" not in message
    # one cheap call each, never retried
    assert memories_emulator.control.count("list_unique_ids") == 2


def test_test_connection_names_a_broken_field(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN", json.dumps({"conn_type": "memories", "host": "no-scheme"}))
    ok, message = MemoriesHook("broken").test_connection()
    assert not ok
    assert "'password'" in message


def test_key_is_masked_and_never_in_logs_or_errors(memories_emulator, monkeypatch, caplog):
    secret = "sk-very-secret-but-wrong-789"
    use_emulator_conn(monkeypatch, memories_emulator, "leaky", password=secret)
    caplog.set_level(logging.DEBUG)
    hook = MemoriesHook("leaky")
    with pytest.raises(MemoriesAuthError) as info:
        hook.list_unique_ids()
    assert redact(secret) != secret  # registered with Airflow's secret masker
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert secret not in repr(hook)
    assert secret not in repr(hook.config)
    assert secret not in repr(hook.get_conn())
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("password", "sk-SECRET\nABC123", "'password'"),  # used to be "Invalid header value b'sk-...'"
        ("timeout", "inf", "'timeout'"),  # used to be a raw OverflowError from urllib3
        ("upload_timeout", "nan", "'upload_timeout'"),
    ],
)
def test_test_connection_refuses_a_broken_key_or_timeout_cleanly(
    memories_emulator, monkeypatch, field, value, named
):
    conn = json.loads(memories_emulator.conn_json)
    if field == "password":
        conn["password"] = value
    else:
        conn["extra"][field] = value
    monkeypatch.setenv("AIRFLOW_CONN_CARELESS", json.dumps(conn))
    ok, message = MemoriesHook("careless").test_connection()
    assert not ok
    assert "'careless'" in message and named in message
    assert "SECRET" not in message and "ABC123" not in message and "got" not in message
    assert memories_emulator.control.count("list_unique_ids") == 0  # refused before any request


def test_test_connection_never_raises_and_never_quotes_the_key(memories_emulator, monkeypatch):
    ok, message = MemoriesHook("no_such_connection").test_connection()
    assert not ok and "no_such_connection" in message
    # A server that echoes the request: the refusal quotes it, key and all; the message must not.
    key = "sk-echoed-key-9Kd7Wq2Z"
    memories_emulator.control.configure(echo_requests=True)
    use_emulator_conn(monkeypatch, memories_emulator, "echoed", password=key)
    ok, message = MemoriesHook("echoed").test_connection()
    assert not ok and "Authentication failed" in message and "Authorization: ***" in message
    assert not any(key[i : i + 8] in message for i in range(len(key) - 7))


def test_a_host_given_as_the_v1_base_url_reaches_both_apis(memories_emulator, monkeypatch):
    conn = {
        "conn_type": "memories",
        "password": memories_emulator.api_key,
        "host": memories_emulator.v1_url + "/",
    }
    monkeypatch.setenv("AIRFLOW_CONN_FROM_DOCS", json.dumps(conn))
    hook = MemoriesHook("from_docs")
    try:
        assert isinstance(hook.list_unique_ids(), list)  # v1 reached
        asset = memories_emulator.control.add_asset(b"asset-bytes", "a.mp4", "video/mp4")
        with hook.download_asset(asset["asset_id"]) as resp:  # v2: it went to '.../v1/serve/api/v2'
            assert b"".join(resp.iter_chunks()) == b"asset-bytes"
    finally:
        hook.close()


def test_a_proxy_refusing_its_credentials_is_said_by_the_hook_and_its_test(memories_emulator, monkeypatch):
    """Behind a proxy that refuses its credentials (407), the hook's call fails once, with the
    proxy's error, though the connection asks for retries; the Test button says the proxy refused
    (it said memories.ai 'answered with an error: HTTP 407'). Never the proxy's password."""
    from memories_provider.client import MemoriesProxyAuthError
    from tests.client.test_client_proxy import ForwardingProxy

    use_emulator_conn(monkeypatch, memories_emulator, "proxied", max_retries=3)
    with ForwardingProxy(credentials="corp:the-right-one") as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://corp:pr0xy-pa55@127.0.0.1:{proxy.port}")
        hook = MemoriesHook("proxied")
        with pytest.raises(MemoriesProxyAuthError) as error:
            hook.list_unique_ids()
        hook.close()
        asked = len(proxy.seen)
        ok, message = MemoriesHook("proxied").test_connection()
    assert asked == 1
    assert f"127.0.0.1:{proxy.port}" in str(error.value) and "pr0xy-pa55" not in repr(error.value)
    assert not ok and f"the proxy {proxy.url} refused authentication (HTTP 407" in message
    assert "pr0xy-pa55" not in message and memories_emulator.api_key not in message

"""Starting the emulator: fixture reset, ``run_emulator``, the CLI in a child process, connection strings."""

from __future__ import annotations

import json
import subprocess
import sys

import requests

from memories_provider.emulator import DEFAULT_API_KEY, run_emulator


def test_fixture_handle(memories_emulator):
    assert memories_emulator.url.startswith("http://127.0.0.1:")
    assert memories_emulator.v1_url == memories_emulator.url + "/serve/api/v1"
    assert memories_emulator.v2_url == memories_emulator.url + "/serve/api/v2"
    assert memories_emulator.api_key == DEFAULT_API_KEY
    assert memories_emulator.data_dir.is_dir()
    assert DEFAULT_API_KEY not in repr(memories_emulator)


def test_fixture_starts_from_test_defaults(api, memories_emulator):
    cfg = memories_emulator.control.config()
    assert cfg["rate_limits"] == {} and cfg["parse_delay"] == 0
    assert cfg["credits"] is None and cfg["indexing_cap"] is None and cfg["balance"] is None
    assert memories_emulator.control.videos() == [] and memories_emulator.control.request_log() == []
    # Leave a mess for the next test to prove reset() cleans it.
    memories_emulator.control.configure(credits=0, indexing_cap=1, rate_limits=True, parse_delay=9)
    memories_emulator.control.inject_fault("list_videos", "http_500", count=5)


def test_reset_restores_defaults_and_empties_the_store(api, memories_emulator):
    api.upload()
    memories_emulator.control.configure(credits=0, rate_limits=True, fail_pattern="x")
    memories_emulator.control.inject_fault("list_videos", "http_500", count=5)
    memories_emulator.control.reset()
    cfg = memories_emulator.control.config()
    assert (cfg["credits"], cfg["rate_limits"], cfg["fail_pattern"]) == (None, {}, None)
    assert memories_emulator.control.videos() == []
    assert memories_emulator.control.pending_faults() == {}
    assert list((memories_emulator.data_dir / "files").iterdir()) == []
    assert api.v1("POST", "list_videos", json={}).json()["code"] == "0000"


def test_run_emulator_has_spec_limits_on(tmp_path):
    with run_emulator(data_dir=tmp_path, parse_delay=5, api_keys=["sk-a"]) as emu:
        cfg = emu.control.config()
        assert cfg["parse_delay"] == 5 and cfg["rate_limits"]["upload"] == [1, 60.0]
        assert emu.api_key == "sk-a"
        s = requests.Session()
        s.trust_env = False
        r = s.get(f"{emu.v1_url}/list_unique_ids", headers={"Authorization": "sk-a"}, timeout=5)
        assert r.json()["code"] == "0000"
        url = emu.url
    # Stopped: the port no longer answers.
    try:
        requests.get(f"{url}/_emulator/health", timeout=2)
        raise AssertionError("emulator still answering after the with block")
    except requests.ConnectionError:
        pass


def test_run_emulator_without_limits(tmp_path):
    with run_emulator(rate_limits=False) as emu:
        assert emu.control.config()["rate_limits"] == {}


def test_cli_in_a_child_process(memories_emulator_process):
    emu = memories_emulator_process(extra_args=["--api-key", "sk-cli", "--indexing-cap", "3"])
    health = emu.control.health()
    assert health["pid"] == emu.pid
    cfg = emu.control.config()
    assert cfg["api_keys"] == ["sk-cli"] and cfg["indexing_cap"] == 3 and cfg["rate_limits"] == {}


def test_cli_prints_the_connection(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "memories_provider.emulator", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url_line = proc.stdout.readline().strip()
        conn_line = proc.stdout.readline().strip()
        assert url_line.startswith("MEMORIES_EMULATOR_URL=http://127.0.0.1:")
        url = url_line.split("=", 1)[1]
        assert conn_line.startswith("AIRFLOW_CONN_MEMORIES_DEFAULT='memories://http://:")
        assert requests.get(f"{url}/_emulator/config", timeout=5).json()["rate_limits"]["upload"] == [1, 60.0]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean shutdown
        proc.stdout.close()


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "memories_provider.emulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--host", "--port", "--data-dir", "--api-key", "--parse-delay", "--no-rate-limits"):
        assert flag in out


def test_connection_strings_parse_in_airflow(memories_emulator):
    from airflow.models.connection import Connection

    conn = Connection(conn_id="memories_default", uri=memories_emulator.conn_uri)
    assert conn.conn_type == "memories"
    assert conn.password == memories_emulator.api_key
    host, port = memories_emulator.url.rsplit(":", 1)
    assert conn.host == host and conn.port == int(port)
    assert conn.extra_dejson["v2_host"] == memories_emulator.url

    data = json.loads(memories_emulator.conn_json)
    assert data == {
        "conn_type": "memories",
        "password": memories_emulator.api_key,
        "host": memories_emulator.url,
        "extra": {"v2_host": memories_emulator.url},
    }


def test_conn_fixture_sets_the_airflow_connection(memories_emulator_conn):
    import os

    assert os.environ["AIRFLOW_CONN_MEMORIES_DEFAULT"] == memories_emulator_conn.conn_uri

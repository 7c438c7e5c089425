"""The status wait (sensor poke on the worker, trigger in the triggerer) against a server echoing the
request: its warnings and its events quote errors, never a piece of the key (the issue's first case)."""

from __future__ import annotations

import json
import logging

import pytest
from connections import use_emulator_conn
from leaks import error_leaks, leaks

from memories_provider.client import MemoriesAuthError
from memories_provider.client.protocol import ERROR_BODY_QUOTE
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor
from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

CANARY = "sk-canary-status-5Hn2Qw8Z"


@pytest.fixture
def echo(emu, monkeypatch):
    emu.control.configure(api_keys=[CANARY], echo_requests=True)
    use_emulator_conn(monkeypatch, emu, password=CANARY, max_retries=0)
    return emu


@pytest.fixture
def video(echo, new_video):
    echo.control.configure(api_keys=[echo.api_key, CANARY])  # new_video uploads with the default key
    return new_video(hold=True)


def test_the_sensors_status_check_warning_and_error_are_clean(echo, video, caplog, capsys):
    caplog.set_level(logging.INFO)
    sensor = MemoriesVideoStatusSensor(task_id="wait", video_no=video, poke_interval=1)
    echo.control.inject_fault("list_videos", "http_500", auth_at=ERROR_BODY_QUOTE - 10)
    assert sensor.poke({}) is False
    echo.control.inject_fault("list_videos", "http_401", auth_at=100)
    with pytest.raises(MemoriesAuthError) as info:
        sensor.poke({})
    assert error_leaks(info.value, CANARY) == []
    logs = caplog.text + "".join(capsys.readouterr())  # Airflow 3 logs operators through structlog
    assert "status check failed (http 500" in logs.lower() and "Authorization: ***" in logs
    assert leaks(logs, CANARY) == []


async def test_the_triggers_warnings_and_event_are_clean(echo, video, caplog):
    caplog.set_level(logging.DEBUG)
    echo.control.inject_fault("list_videos", "http_500", auth_at=ERROR_BODY_QUOTE - 3)
    echo.control.inject_fault("list_videos", "code_0429", retry_after=0.01, auth_at=ERROR_BODY_QUOTE - 5)
    echo.control.inject_fault("list_videos", "http_401", auth_at=ERROR_BODY_QUOTE - 8)
    trigger = MemoriesVideoStatusTrigger([video], poll_interval=0.05)
    async for event in trigger.run():
        payload = event.payload
        break
    assert payload["status"] == "failed" and "API key invalid" in payload["message"]
    assert leaks(json.dumps(payload), CANARY) == [] and leaks(payload["message"], CANARY) == []
    assert echo.control.count("list_videos") == 3  # the 500 and the 0429 were retried, the 401 ended it
    assert "Authorization: ***" in caplog.text and leaks(caplog.text, CANARY) == []

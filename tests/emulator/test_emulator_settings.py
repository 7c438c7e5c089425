"""Settings are checked where they are given (CLI, run_emulator, control API), and a refused
``configure`` changes nothing; control calls with a body that is not a JSON object are a 400."""

from __future__ import annotations

import pytest
import requests

from memories_provider.emulator.__main__ import main
from memories_provider.emulator.server import build_config


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"parse_delay": "abc"}, "parse_delay"),
        ({"parse_delay": -1}, "parse_delay"),
        ({"max_upload_bytes": "x"}, "max_upload_bytes"),
        ({"max_upload_bytes": None}, "max_upload_bytes"),
        ({"indexing_cap": -3}, "indexing_cap"),
        ({"credits": -1}, "credits"),
        ({"retry_after": "soon"}, "retry_after"),
        ({"chunked_downloads": "yes"}, "chunked_downloads"),
        ({"fail_pattern": "("}, "fail_pattern"),
        ({"api_keys": []}, "api_keys"),
        ({"index_edition": "newest"}, "index_edition"),
    ],
)
def test_configure_refuses_a_bad_value_naming_it_and_changes_nothing(memories_emulator, settings, named):
    control = memories_emulator.control
    before = control.config()
    with pytest.raises(ValueError, match=f"HTTP 400.*{named}"):
        control.configure(
            **{"parse_delay" if "parse_delay" not in settings else "indexing_cap": 2}, **settings
        )
    assert control.config() == before  # the valid setting sent alongside was not applied either


def test_a_refused_configure_applies_none_of_its_settings(memories_emulator):
    control = memories_emulator.control
    with pytest.raises(ValueError, match="unknown setting 'bogus'"):
        control.configure(parse_delay=7, credits=5, rate_limits=True, bogus=1)
    config = control.config()
    assert (config["parse_delay"], config["credits"], config["balance"], config["rate_limits"]) == (
        0.0,
        None,
        None,
        {},
    )


@pytest.mark.parametrize("route", ["config", "faults", "statuses"])
@pytest.mark.parametrize("body", [b"[1, 2]", b'"x"', b"{not json", b"null"])
def test_control_calls_refuse_a_body_that_is_not_an_object_with_400(memories_emulator, route, body):
    resp = requests.post(
        f"{memories_emulator.url}/_emulator/{route}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert "body" in resp.json()["error"]


def test_inject_fault_refuses_bad_arguments_with_400(memories_emulator):
    control = memories_emulator.control
    with pytest.raises(ValueError, match=r"HTTP 400.*count"):
        control.inject_fault("upload", "http_500", count=0)
    resp = requests.post(f"{memories_emulator.url}/_emulator/faults", json={"kind": "http_500"}, timeout=30)
    assert resp.status_code == 400 and "endpoint" in resp.json()["error"]
    resp = requests.post(
        f"{memories_emulator.url}/_emulator/faults",
        json={"endpoint": "upload", "kind": "http_500", "params": [1]},
        timeout=30,
    )
    assert resp.status_code == 400
    assert control.pending_faults() == {}


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--parse-delay", "-5"], "--parse-delay must be a finite number >= 0"),
        (["--parse-delay", "inf"], "--parse-delay"),
        (["--indexing-cap", "-1"], "--indexing-cap must be an integer >= 0"),
        (["--credits", "nan"], "--credits"),
        (["--fail-pattern", "("], "--fail-pattern: not a valid regular expression"),
        (["--api-key", " "], "--api-keys"),
        (["--port", "70000"], "--port must be 0-65535"),
        (["--log-level", "bogus"], "--log-level"),
    ],
)
def test_cli_refuses_bad_values_before_serving(argv, said, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--port", "0", *argv])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err


def test_run_emulator_settings_are_checked_too():
    with pytest.raises(ValueError, match="parse_delay"):
        build_config(parse_delay=-1)

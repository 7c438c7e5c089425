"""The status machine (UNPARSE -> PARSE / FAILED), fail_pattern, forced statuses and callbacks."""

from __future__ import annotations

import logging
import time

import pytest


def test_parse_delay_zero_reads_parse_right_after_upload(api):
    d = api.upload()
    assert d["videoStatus"] == "UNPARSE"
    assert api.meta(d["videoNo"])["data"]["status"] == "PARSE"


def test_parse_delay_moves_to_parse_and_fires_callback(api, memories_emulator, receiver):
    memories_emulator.control.configure(parse_delay=0.3)
    d = api.upload(callback=receiver.url)
    assert api.meta(d["videoNo"])["data"]["status"] == "UNPARSE"
    post = receiver.next()  # the timer fires the callback without anyone polling
    assert post["json"] == {"videoNo": d["videoNo"], "status": "PARSE"}
    assert post["content_type"].startswith("application/json")
    assert api.meta(d["videoNo"])["data"]["status"] == "PARSE"
    (record,) = memories_emulator.control.callbacks()
    assert record["http_status"] == 200 and record["error"] is None


def test_fail_pattern_gives_failed_with_cause(api, memories_emulator, receiver):
    memories_emulator.control.configure(fail_pattern=r"corrupt")
    bad = api.upload("corrupt-1.mp4", callback=receiver.url)
    good = api.upload("fine.mp4")
    assert receiver.next()["json"] == {"videoNo": bad["videoNo"], "status": "FAILED"}
    m = api.meta(bad["videoNo"])["data"]
    assert m["status"] == "FAILED" and "could not be parsed" in m["cause"]
    assert api.meta(good["videoNo"])["data"]["status"] == "PARSE"


def test_invalid_fail_pattern_is_refused(memories_emulator):
    with pytest.raises(ValueError, match="HTTP 400"):
        memories_emulator.control.configure(fail_pattern="(")


def test_set_status_forces_and_holds(api, memories_emulator, receiver):
    memories_emulator.control.configure(parse_delay=3600)
    d = api.upload(callback=receiver.url)
    no = d["videoNo"]
    v = memories_emulator.control.set_status(no, "FAILED", "no audio track")
    assert (v["status"], v["cause"]) == ("FAILED", "no audio track")
    assert receiver.next()["json"] == {"videoNo": no, "status": "FAILED"}
    m = api.meta(no)["data"]
    assert (m["status"], m["cause"]) == ("FAILED", "no audio track")
    memories_emulator.control.set_status(no, "UNPARSE")
    assert receiver.next()["json"]["status"] == "UNPARSE"
    assert api.meta(no)["data"]["status"] == "UNPARSE"
    assert api.meta(no)["data"]["cause"] is None
    memories_emulator.control.set_status(no, "PARSE")
    assert receiver.next()["json"]["status"] == "PARSE"


def test_forced_unparse_stays_unparse_even_with_zero_delay(api, memories_emulator):
    d = api.upload()
    memories_emulator.control.set_status(d["videoNo"], "UNPARSE")
    assert api.meta(d["videoNo"])["data"]["status"] == "UNPARSE"


def test_set_status_rejects_unknown_video_and_status(api, memories_emulator):
    with pytest.raises(ValueError, match="404"):
        memories_emulator.control.set_status("VI000000000000000001", "PARSE")
    d = api.upload()
    with pytest.raises(ValueError, match="400"):
        memories_emulator.control.set_status(d["videoNo"], "DONE")


def test_set_statuses_changes_many_at_once(api, memories_emulator):
    memories_emulator.control.configure(parse_delay=3600)
    nos = [api.upload()["videoNo"] for _ in range(3)]
    assert memories_emulator.control.set_statuses(nos[:2], "PARSE") == 2
    assert [api.meta(n)["data"]["status"] for n in nos] == ["PARSE", "PARSE", "UNPARSE"]
    with pytest.raises(ValueError, match="404"):
        memories_emulator.control.set_statuses([nos[2], "VI000000000000000001"], "PARSE")
    assert api.meta(nos[2])["data"]["status"] == "UNPARSE"  # all or nothing


def test_unchanged_status_fires_no_callback(api, memories_emulator, receiver):
    memories_emulator.control.configure(parse_delay=3600)
    d = api.upload(callback=receiver.url)
    memories_emulator.control.set_status(d["videoNo"], "UNPARSE")
    memories_emulator.control.set_status(d["videoNo"], "PARSE")
    assert receiver.next()["json"]["status"] == "PARSE"
    # The emulator records a callback when it decides to send it, inside set_status: by now its log
    # holds every callback these two changes will ever fire, however late a POST would arrive.
    fired = [record["payload"] for record in memories_emulator.control.callbacks()]
    assert fired == [{"videoNo": d["videoNo"], "status": "PARSE"}]


def settled_callbacks(emu, count: int, timeout: float = 30.0) -> list[dict]:
    """The emulator's callback log once ``count`` callbacks have an outcome (an HTTP status or an error)."""
    deadline = time.monotonic() + timeout
    while True:
        records = emu.control.callbacks()
        done = [r for r in records if r["http_status"] is not None or r["error"] is not None]
        if len(done) >= count:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"callbacks not settled in time: {records}")
        time.sleep(0.02)


def test_dead_callback_receiver_is_logged_not_fatal(api, memories_emulator, receiver, caplog):
    receiver.status = 500
    d = api.upload(callback=receiver.url)
    assert receiver.next()["json"]["status"] == "PARSE"
    unreachable_url = "http://127.0.0.1:9/nothing-here"
    with caplog.at_level(logging.WARNING, logger="memories_provider.emulator"):
        unreachable = api.upload(callback=unreachable_url)
        answered, refused = settled_callbacks(memories_emulator, 2)
        assert (answered["http_status"], answered["error"]) == (500, None)  # recorded, not fatal
        assert refused["url"] == unreachable_url and refused["http_status"] is None
        assert "Connect" in refused["error"]  # the connection error is recorded ...
        logged = [r.getMessage() for r in caplog.records if "callback to" in r.getMessage()]
        assert logged == [f"callback to {unreachable_url} failed: {refused['error']}"]  # ... and logged
    assert api.meta(unreachable["videoNo"])["data"]["status"] == "PARSE"
    assert api.meta(d["videoNo"])["data"]["status"] == "PARSE"


def test_callback_on_upload_sends_unparse_first(api, memories_emulator, receiver):
    memories_emulator.control.configure(callback_on_upload=True, parse_delay=0.05)
    d = api.upload(callback=receiver.url)
    assert receiver.next()["json"] == {"videoNo": d["videoNo"], "status": "UNPARSE"}
    assert receiver.next()["json"] == {"videoNo": d["videoNo"], "status": "PARSE"}


def test_a_dead_callback_receivers_credentials_are_not_logged(api, memories_emulator, caplog):
    # The emulator's own log, shown to whoever runs it: a receiver's password and token masked.
    url = "http://ops:PASSWORDsecret@127.0.0.1:9/hook?token=TOKENsecret&run=7"
    with caplog.at_level(logging.WARNING, logger="memories_provider.emulator"):
        api.upload(callback=url)
        (refused,) = settled_callbacks(memories_emulator, 1)
    assert refused["url"] == url and "Connect" in refused["error"]  # the control API keeps it whole
    logged = [r.getMessage() for r in caplog.records if "callback to" in r.getMessage()]
    assert logged == [f"callback to http://***@127.0.0.1:9/hook?token=***&run=7 failed: {refused['error']}"]
    assert "secret" not in caplog.text

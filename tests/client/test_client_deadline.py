"""A caller's deadline (``client.deadline.within``) bounds retries, Retry-After sleeps and requests."""

from __future__ import annotations

import time

import pytest

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesRateLimitError,
    MemoriesTimeoutError,
    RetryPolicy,
)
from memories_provider.client.deadline import time_left, within

#: The connection default: five retries, honouring Retry-After.
DEFAULT = RetryPolicy()


def _sync(emu) -> MemoriesClient:
    return MemoriesClient(emu.api_key, base_url=emu.v1_url, v2_base_url=emu.v2_url, timeout=30, retry=DEFAULT)


def _async(emu) -> AsyncMemoriesClient:
    return AsyncMemoriesClient(
        emu.api_key, base_url=emu.v1_url, v2_base_url=emu.v2_url, timeout=30, retry=DEFAULT
    )


def test_nested_deadlines_keep_the_earliest():
    assert time_left() is None
    with within(100):
        outer = time_left()
        with within(1000):
            assert time_left() <= outer
        with within(1):
            assert time_left() <= 1
        assert time_left() > 1
    assert time_left() is None


def test_no_retry_whose_retry_after_ends_past_the_deadline(memories_emulator):
    emu = memories_emulator
    emu.control.inject_fault("list_videos", "code_0429", count=100, retry_after=4)
    with _sync(emu) as client, within(2.0), pytest.raises(MemoriesRateLimitError):
        client.list_videos()
    # Five retries allowed, but each would sleep 4 s past a 2 s deadline: one attempt, no sleep.
    assert emu.control.count("list_videos") == 1


def test_retries_that_fit_are_made_and_stop_at_the_deadline(memories_emulator):
    emu = memories_emulator
    emu.control.inject_fault("list_videos", "code_0429", count=100, retry_after=0.3)
    policy = RetryPolicy(max_retries=50)
    with (
        MemoriesClient(emu.api_key, base_url=emu.v1_url, retry=policy) as client,
        within(2.0),
        # The last 0429 when the next wait would not fit; a timeout when a slow (loaded) machine
        # reaches the deadline first, mid-request: either way the retries stopped at it.
        pytest.raises((MemoriesRateLimitError, MemoriesTimeoutError)),
    ):
        client.list_videos()
    log = emu.control.request_log("list_videos")
    # Attempts are >= 0.3 s apart and none starts after the 2 s deadline: at most 7 (0, .3, ... 1.8).
    assert 2 <= len(log) <= 7


def test_an_expired_deadline_sends_nothing(memories_emulator):
    with _sync(memories_emulator) as client, within(0), pytest.raises(MemoriesTimeoutError) as info:
        client.list_videos()
    assert info.value.request_sent is False and "deadline" in str(info.value)
    assert memories_emulator.control.count("list_videos") == 0


def test_sync_read_timeout_shrinks_to_the_deadline(memories_emulator):
    emu = memories_emulator
    emu.control.inject_fault("list_videos", "slow_body", count=100, delay=5.0)
    start = time.monotonic()
    # (requests reports a read timeout mid-body as a connection error, hence the parent class.)
    with _sync(emu) as client, within(0.5), pytest.raises(MemoriesConnectionError):
        client.list_videos()
    # The connection's read timeout is 30 s; the 0.5 s deadline cut the stalled body short.
    assert time.monotonic() - start < 5.0
    assert emu.control.count("list_videos") == 1  # and no retry was started after it


async def test_async_deadline_bounds_retries_and_the_stalled_request(memories_emulator):
    emu = memories_emulator
    emu.control.inject_fault("list_videos", "code_0429", retry_after=0.2)
    emu.control.inject_fault("list_videos", "slow_body", count=100, delay=5.0)
    start = time.monotonic()
    async with _async(emu) as client:
        with within(1.0), pytest.raises(MemoriesTimeoutError):
            await client.list_videos()
    assert time.monotonic() - start < 5.0
    first, second = emu.control.request_log("list_videos")  # the 0429, then the stalled retry
    assert (first.get("fault"), second.get("fault")) == ("code_0429", "slow_body")


def test_a_trickling_answer_is_cut_at_the_deadline():
    # A proxy (or a struggling service) sending a status answer a byte at a time: every socket
    # read returns well within the read timeout, so only the deadline can end it.
    from local_http import LocalServer, QuietHandler

    body = b'{"code":"0000","msg":"success","data":{"videos":[]}}' + b" " * 2000

    class Trickle(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.02)  # the whole answer: 40 s
            except OSError:
                pass  # the client gave up

    with LocalServer(Trickle) as server:
        client = MemoriesClient("sk-mavi-" + "a" * 32, base_url=f"{server.url}/serve/api/v1", retry=DEFAULT)
        start = time.monotonic()
        with client, within(0.5), pytest.raises(MemoriesTimeoutError):
            client.list_videos()
        assert time.monotonic() - start < 15.0  # not the 40 s the whole answer takes


def _trickling(seconds_per_byte: float, size: int) -> type:
    """A handler answering any POST with a JSON status answer of ``size`` bytes, one byte at a time."""
    from local_http import QuietHandler

    body = b'{"code":"0000","msg":"success","data":{"videos":[]}}'
    body += b" " * (size - len(body))

    class Trickle(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(seconds_per_byte)
            except OSError:
                pass  # the client gave up

    return Trickle


#: 0.02 s a byte, 300 bytes: every socket read comes well within the 1 s read timeout, the whole
#: answer takes 6 s. Without a caller's deadline, only the read timeout can bound it.
_TRICKLE = (0.02, 300)


def test_a_trickling_answer_is_cut_at_the_read_timeout_without_a_deadline():
    """A hook call from a plain task (no deadline): the read timeout bounds the whole answer, not
    each socket read; at 32 MiB a JSON answer a byte a second would otherwise run for a year."""
    from local_http import LocalServer

    with LocalServer(_trickling(*_TRICKLE)) as server:
        client = MemoriesClient(
            "sk-mavi-" + "a" * 32,
            base_url=f"{server.url}/serve/api/v1",
            timeout=1,
            retry=RetryPolicy(max_retries=0),
        )
        with client, pytest.raises(MemoriesTimeoutError) as info:
            client.list_videos()
    assert info.value.request_sent
    assert "did not arrive whole in time" in str(info.value)


async def test_async_trickling_answer_is_cut_at_the_read_timeout_without_a_deadline():
    from local_http import LocalServer

    with LocalServer(_trickling(*_TRICKLE)) as server:
        client = AsyncMemoriesClient(
            "sk-mavi-" + "a" * 32,
            base_url=f"{server.url}/serve/api/v1",
            timeout=1,
            retry=RetryPolicy(max_retries=0),
        )
        async with client:
            with pytest.raises(MemoriesTimeoutError) as info:
                await client.list_videos()
    assert info.value.request_sent
    assert "did not arrive whole in time" in str(info.value)


def _trickling_headers() -> type:
    """A handler whose answer's headers come a byte every 0.02 s (6 s in all), then a JSON body."""
    from local_http import QuietHandler

    body = b'{"code":"0000","msg":"success","data":{"videos":[]}}'

    class TrickleHeaders(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 300 + b"\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: %d\r\n\r\n" % len(body)
            try:
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.02)
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up

    return TrickleHeaders


def test_trickling_headers_are_cut_at_the_read_timeout():
    from local_http import LocalServer

    with LocalServer(_trickling_headers()) as server:
        client = MemoriesClient(
            "sk-mavi-" + "a" * 32,
            base_url=f"{server.url}/serve/api/v1",
            timeout=1,
            retry=RetryPolicy(max_retries=0),
        )
        with client, pytest.raises(MemoriesTimeoutError) as info:
            client.list_videos()
    assert info.value.request_sent


async def test_async_trickling_headers_are_cut_at_the_read_timeout():
    from local_http import LocalServer

    with LocalServer(_trickling_headers()) as server:
        client = AsyncMemoriesClient(
            "sk-mavi-" + "a" * 32,
            base_url=f"{server.url}/serve/api/v1",
            timeout=1,
            retry=RetryPolicy(max_retries=0),
        )
        async with client:
            with pytest.raises(MemoriesTimeoutError) as info:
                await client.list_videos()
    assert info.value.request_sent


def test_an_upload_whose_answer_is_cut_at_the_deadline_is_not_said_unsent(memories_emulator, make_video):
    # The deadline passes while the upload's body goes out: the service accepts (and bills) the
    # video, then the client stops before reading its answer. The error must not say the request
    # never reached the server (request_sent=False): that is what callers, and the upload
    # operator's own bookkeeping, read as "certainly not accepted, safe to send again".
    emu = memories_emulator
    path, data = make_video(size=300_000)
    seconds = 2.0  # also the read timeout of the answer's status line: room for a loaded machine
    passed: list[float] = []  # a moment at or after the deadline

    def last_bytes_after_the_deadline(done: int) -> None:
        while done == len(data) and time.monotonic() <= passed[0]:  # a condition, not a guess
            time.sleep(0.01)

    with _sync(emu) as client, within(seconds), pytest.raises(MemoriesTimeoutError) as info:
        passed.append(time.monotonic() + seconds)  # taken after within() took its own
        client.upload_video(path, progress=last_bytes_after_the_deadline)
    assert len(emu.control.videos()) == 1  # it arrived, and was billed
    assert info.value.request_sent


#: Clients of one account turned away together by a storm, each told ``Retry-After: 0.05``.
HERD = 8


def _sleeps(caplog) -> list[float]:
    """The sleeps the retry loop announced ("retrying in 0.06s")."""
    return [
        r.args[-1] for r in caplog.records if r.name == "memories_provider.client" and "retrying in" in r.msg
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_clients_told_the_same_retry_after_do_not_come_back_together(memories_emulator, caplog, kind):
    """A storm of 0429 on a shared account tells every client the same Retry-After: each waits at
    least that long, but not all exactly that long (they would be turned away together again)."""
    emu = memories_emulator
    caplog.set_level("WARNING", logger="memories_provider.client")
    policy = RetryPolicy(max_retries=1, initial_delay=0.01)  # jittered, as the connection's is
    for _ in range(HERD):  # one 0429 then an answer for each client
        emu.control.inject_fault("list_videos", "code_0429", retry_after=0.05)
        emu.control.inject_fault("list_videos", "none")
        if kind == "sync":
            with MemoriesClient(emu.api_key, base_url=emu.v1_url, retry=policy) as client:
                client.list_videos()
        else:
            async with AsyncMemoriesClient(emu.api_key, base_url=emu.v1_url, retry=policy) as aclient:
                await aclient.list_videos()
    sleeps = _sleeps(caplog)
    assert len(sleeps) == HERD
    assert all(s >= 0.05 for s in sleeps)  # Retry-After honoured
    assert len(set(sleeps)) > 1  # spread above it


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_spread_above_retry_after_does_not_give_up_a_retry_the_deadline_allows(
    memories_emulator, kind
):
    """Told Retry-After: 0.05 with 3 s left, the retry fits: its spread must not push the sleep past
    the deadline, where the retry loop gives up and raises the 0429. A policy whose own delay is
    long (100 s) spread it over up to 100 s, so nearly every call gave up."""
    emu = memories_emulator
    policy = RetryPolicy(max_retries=1, initial_delay=100.0, max_delay=100.0)  # jittered
    for _ in range(3):
        emu.control.inject_fault("list_videos", "code_0429", retry_after=0.05)
        emu.control.inject_fault("list_videos", "none")
        if kind == "sync":
            with MemoriesClient(emu.api_key, base_url=emu.v1_url, retry=policy) as client, within(3):
                client.list_videos()
        else:
            async with AsyncMemoriesClient(emu.api_key, base_url=emu.v1_url, retry=policy) as aclient:
                with within(3):
                    await aclient.list_videos()
    assert emu.control.count("list_videos") == 6  # each call retried once, and answered

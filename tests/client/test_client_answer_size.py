"""An answer larger than any documented one is refused by name, not parsed as a cut-off body."""

from __future__ import annotations

import pytest

from memories_provider.client import MemoriesResponseError
from memories_provider.client.aio import AsyncMemoriesClient
from memories_provider.client.protocol import MAX_JSON_BYTES
from memories_provider.client.retry import RetryPolicy
from memories_provider.client.sync import MemoriesClient
from tests.local_http import LocalServer, QuietHandler

KEY = "sk-answer-size-test-key"


class _Huge(QuietHandler):
    """A success envelope whose ``data`` is padded past the clients' bound (a misrouted host)."""

    size = MAX_JSON_BYTES + 1024

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        head = b'{"code": "0000", "msg": "success", "data": {"videos": [], "pad": "'
        body = head + b"x" * (self.size - len(head) - 3) + b'"}}'
        self.send_body(200, {"Content-Type": "application/json"}, body)


class _JustUnder(_Huge):
    size = MAX_JSON_BYTES


def test_sync_client_names_an_oversized_answer() -> None:
    with (
        LocalServer(_Huge) as server,
        MemoriesClient(KEY, base_url=server.url, retry=RetryPolicy(max_retries=0)) as client,
        pytest.raises(MemoriesResponseError, match="larger than 32 MiB") as info,
    ):
        client.list_videos()
    assert KEY not in str(info.value)


async def test_async_client_names_an_oversized_answer() -> None:
    with LocalServer(_Huge) as server:
        async with AsyncMemoriesClient(KEY, base_url=server.url, retry=RetryPolicy(max_retries=0)) as client:
            with pytest.raises(MemoriesResponseError, match="larger than 32 MiB"):
                await client.list_videos()


def test_an_answer_of_exactly_the_bound_is_still_read() -> None:
    with (
        LocalServer(_JustUnder) as server,
        MemoriesClient(KEY, base_url=server.url, retry=RetryPolicy(max_retries=0)) as client,
    ):
        assert client.list_videos().videos == []

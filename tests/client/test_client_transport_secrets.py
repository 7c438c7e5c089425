"""The key never travels into a transport error's chain, with servers that misbehave.

Both clients map the HTTP library's errors to their own (redacted) ones and chain the original as
``__cause__``; a traceback, a debugger or an error tracker shows that one too, ``args`` included.
Over real sockets: a server answering with a malformed response (aiohttp's error then carries the
request, ``Authorization`` header included).
"""

from __future__ import annotations

from typing import Any

import pytest
from leaks import chain_leaks
from local_http import LocalServer, QuietHandler

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesConnectionError,
    RetryPolicy,
)

CANARY = "sk-canary-wire-3Vb7Nq1Xk"
NO_RETRY = RetryPolicy(max_retries=0)


async def _list_unique_ids(kind: str, url: str) -> Any:
    settings = {"base_url": f"{url}/serve/api/v1", "v2_base_url": f"{url}/serve/api/v2"}
    if kind == "sync":
        with MemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as client:
            return client.list_unique_ids()
    async with AsyncMemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as aclient:
        return await aclient.list_unique_ids()


class _Malformed(QuietHandler):
    """Answers every request with a status line no HTTP parser accepts."""

    def do_GET(self) -> None:
        self.close_connection = True
        self.wfile.write(b"GARBAGE\r\n\r\n")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_malformed_answer_leaves_no_key_in_the_chained_library_error(kind: str) -> None:
    # aiohttp's ClientResponseError holds the request's headers (the key) in its request_info.
    with LocalServer(_Malformed) as server, pytest.raises(MemoriesConnectionError) as info:
        await _list_unique_ids(kind, server.url)
    assert info.value.__cause__ is not None  # the library's error is still there to debug with
    assert chain_leaks(info.value, CANARY) == []

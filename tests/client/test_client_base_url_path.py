"""A host with a path prefix that is not plain ASCII (a gateway mounted at '/video api' or
'/café') reaches the same URL from both clients."""

from __future__ import annotations

import json

import pytest

from memories_provider.client import AsyncMemoriesClient, MemoriesClient, RetryPolicy
from tests.local_http import LocalServer, QuietHandler

KEY = "sk-path-test-key-0123456789"


def _recording(paths: list[str]) -> LocalServer:
    class Recorder(QuietHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = json.dumps({"code": "0000", "msg": "success", "data": {"unique_ids": ["p"]}}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

    return LocalServer(Recorder, poll_interval=0.05)


@pytest.mark.parametrize(
    ("prefix", "sent"),
    [("/video api", "/video%20api"), ("/café", "/caf%C3%A9"), ("/already%20quoted", "/already%20quoted")],
)
async def test_both_clients_send_a_prefix_percent_encoded(prefix, sent):
    paths: list[str] = []
    with _recording(paths) as server:
        base_url = f"{server.url}{prefix}/serve/api/v1"
        with MemoriesClient(KEY, base_url=base_url, retry=RetryPolicy(max_retries=0)) as client:
            assert client.list_unique_ids() == ["p"]
        async with AsyncMemoriesClient(KEY, base_url=base_url, retry=RetryPolicy(max_retries=0)) as aclient:
            assert await aclient.list_unique_ids() == ["p"]
    assert paths == [f"{sent}/serve/api/v1/list_unique_ids"] * 2

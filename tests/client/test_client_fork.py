"""A sync client made before a fork (multiprocessing's default start method on Linux, Celery's
prefork pool, a task that forks workers) used in the child.

Its pooled keep-alive connections are the parent's sockets too: two processes writing requests
on one connection read each other's answers. The child must open connections of its own.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from memories_provider.client import MemoriesClient, RetryPolicy
from tests.local_http import LocalServer, QuietHandler

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _recording_server(ports: list[int]) -> LocalServer:
    class UniqueIds(QuietHandler):
        def do_GET(self) -> None:
            ports.append(self.client_address[1])  # one source port per TCP connection
            body = json.dumps({"code": "0000", "msg": "success", "data": {"unique_ids": ["a"]}}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

    return LocalServer(UniqueIds, poll_interval=0.05)


def test_a_forked_child_opens_its_own_connections():
    ports: list[int] = []
    with _recording_server(ports) as server:
        client = MemoriesClient(
            "sk-fork-test-key-0123456789",
            base_url=f"{server.url}/serve/api/v1",
            retry=RetryPolicy(max_retries=0),
        )
        with client:
            assert client.list_unique_ids() == ["a"]  # the parent's connection, kept alive in the pool
            pid = os.fork()
            if pid == 0:  # the child: report through the exit status only
                code = 1
                try:
                    code = 0 if client.list_unique_ids() == ["a"] else 2
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert client.list_unique_ids() == ["a"]  # the parent still has its own
    parent, child, parent_again = ports
    assert child != parent, "the child wrote its request on the parent's connection"
    assert parent_again == parent


def test_a_forked_childs_threads_never_use_a_session_half_made():
    """Two threads of a forked child calling at once: one makes the child's session while the other
    sends. The session was this process's (its pid noted) before its adapter and the key were set:
    the other thread sent its request on requests' own adapter, without the API key (a 0401, an
    account refusal that fails a task at once)."""
    import threading

    from memories_provider.client import sync

    keys: list[str | None] = []

    class UniqueIds(QuietHandler):
        def do_GET(self) -> None:
            keys.append(self.headers.get("Authorization"))
            body = json.dumps({"code": "0000", "msg": "success", "data": {"unique_ids": ["a"]}}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

    key = "sk-fork-test-key-0123456789"
    with LocalServer(UniqueIds, poll_interval=0.05) as server:
        client = MemoriesClient(key, base_url=f"{server.url}/serve/api/v1", retry=RetryPolicy(max_retries=0))
        with client:
            assert client.list_unique_ids() == ["a"]
            pid = os.fork()
            if pid == 0:  # the child: report through the exit status only
                code = 1
                try:
                    entered, release = threading.Event(), threading.Event()
                    made = sync._LargeBlockAdapter.__init__

                    def paused(self, *args, **kwargs):
                        entered.set()
                        release.wait(30)
                        made(self, *args, **kwargs)

                    sync._LargeBlockAdapter.__init__ = paused  # the first thread pauses making its session
                    results: list[object] = []
                    first = threading.Thread(target=lambda: results.append(client.list_unique_ids()))
                    first.start()
                    entered.wait(30)
                    sync._LargeBlockAdapter.__init__ = made
                    second = threading.Thread(target=lambda: results.append(client.list_unique_ids()))
                    second.start()
                    second.join(2)  # done by now unless it waits for the first thread's session
                    release.set()
                    first.join(30)
                    second.join(30)
                    code = 0 if results == [["a"], ["a"]] else 2
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    assert keys == [key] * 3, "a request of the child went without the API key"

"""TLS as a corporate network meets it: a server whose certificate no public store trusts (a
TLS-inspecting proxy, an internal gateway), trusted through a CA bundle.

Both clients must refuse it by default, and both must trust it the same way when told to: the
connection's ``ca_bundle`` extra, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (what Python users set
for requests) and ``SSL_CERT_FILE`` (OpenSSL's, what the system store and aiohttp follow).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesInvalidArgumentError,
    MemoriesTimeoutError,
    RetryPolicy,
)
from tests.connections import point_memories_default_at
from tests.tls import LocalCA, TLSServer, UniqueIds

KEY = "sk-tls-test-key-0123456789"
NO_RETRY = RetryPolicy(max_retries=0)
_CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture
def ca(tmp_path):
    return LocalCA(tmp_path / "ca")


@pytest.fixture
def tls_server(ca):
    with TLSServer(UniqueIds, ca) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ca_env(monkeypatch):
    for name in _CA_ENV:
        monkeypatch.delenv(name, raising=False)


def _sync(url: str, **kwargs) -> list[str]:
    with MemoriesClient(KEY, base_url=f"{url}/serve/api/v1", timeout=10, retry=NO_RETRY, **kwargs) as client:
        return client.list_unique_ids()


async def _async(url: str, **kwargs) -> list[str]:
    async with AsyncMemoriesClient(
        KEY, base_url=f"{url}/serve/api/v1", timeout=10, retry=NO_RETRY, **kwargs
    ) as client:
        return await client.list_unique_ids()


def test_sync_client_refuses_an_untrusted_certificate(tls_server):
    with pytest.raises(MemoriesConnectionError) as sync_error:
        _sync(tls_server.url)
    # Refused in the handshake: no byte of the request left, so an upload may be retried.
    assert sync_error.value.request_sent is False
    assert "certificate" in str(sync_error.value).lower()
    assert KEY not in str(sync_error.value)


async def test_async_client_refuses_an_untrusted_certificate(tls_server):
    with pytest.raises(MemoriesConnectionError) as async_error:
        await _async(tls_server.url)
    assert async_error.value.request_sent is False
    assert "certificate" in str(async_error.value).lower()
    assert "object at 0x" not in str(async_error.value)  # not aiohttp's repr of the TLS context
    assert KEY not in str(async_error.value)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_sync_client_trusts_the_environment_ca_bundle(tls_server, ca, monkeypatch, variable):
    monkeypatch.setenv(variable, str(ca.ca_pem))
    assert _sync(tls_server.url) == ["tls"]


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
async def test_async_client_trusts_the_environment_ca_bundle(tls_server, ca, monkeypatch, variable):
    monkeypatch.setenv(variable, str(ca.ca_pem))
    assert await _async(tls_server.url) == ["tls"]


def test_sync_client_trusts_its_ca_bundle(tls_server, ca):
    assert _sync(tls_server.url, ca_bundle=str(ca.ca_pem)) == ["tls"]


async def test_async_client_trusts_its_ca_bundle(tls_server, ca):
    assert await _async(tls_server.url, ca_bundle=str(ca.ca_pem)) == ["tls"]


def test_a_ca_bundle_that_cannot_be_read_is_named_before_any_request(tls_server, tmp_path, monkeypatch):
    missing = str(tmp_path / "corp-ca.pem")
    with pytest.raises(MemoriesInvalidArgumentError, match=r"`ca_bundle` '.*corp-ca.pem' cannot be used"):
        _sync(tls_server.url, ca_bundle=missing)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(empty))
    with pytest.raises(MemoriesInvalidArgumentError, match="the CA bundle in REQUESTS_CA_BUNDLE"):
        _sync(tls_server.url)


async def test_async_client_names_a_ca_bundle_that_cannot_be_read(tls_server, tmp_path):
    with pytest.raises(MemoriesInvalidArgumentError, match="`ca_bundle`"):
        await _async(tls_server.url, ca_bundle=str(tmp_path / "corp-ca.pem"))


def test_the_bundle_replaces_the_default_store(tls_server, tmp_path):
    """A bundle of another CA does not trust the server (nothing is added to a default store)."""
    other = LocalCA(tmp_path / "other", name="another CA")
    with pytest.raises(MemoriesConnectionError, match="certificate"):
        _sync(tls_server.url, ca_bundle=str(other.ca_pem))


# ---------------------------------------------------------------------------- the connection's extra


def test_hook_test_button_and_async_client_trust_the_connection_ca_bundle(tls_server, ca, monkeypatch):
    from memories_provider.hooks.memories import MemoriesHook

    point_memories_default_at(monkeypatch, tls_server.url, key=KEY, ca_bundle=str(ca.ca_pem))
    hook = MemoriesHook()
    assert hook.test_connection()[0] is True
    assert hook.list_unique_ids() == ["tls"]

    async def from_the_trigger() -> list[str]:
        async with await MemoriesHook().get_async_client() as client:
            return await client.list_unique_ids()

    assert asyncio.run(from_the_trigger()) == ["tls"]


def test_test_button_without_the_ca_says_the_handshake_failed(tls_server, monkeypatch):
    from memories_provider.hooks.memories import MemoriesHook

    point_memories_default_at(monkeypatch, tls_server.url, key=KEY)
    ok, message = MemoriesHook().test_connection()
    assert not ok
    assert "TLS handshake failed" in message and KEY not in message


def test_a_ca_bundle_extra_naming_no_file_is_refused_naming_the_field(tmp_path, monkeypatch):
    from memories_provider.hooks.memories import MemoriesHook

    missing = str(tmp_path / "corp-ca.pem")
    point_memories_default_at(monkeypatch, "https://127.0.0.1:9", key=KEY, ca_bundle=missing)
    ok, message = MemoriesHook().test_connection()
    assert not ok
    assert message == (
        f"Connection 'memories_default': extra 'ca_bundle' names no file or folder on this machine: "
        f"{missing!r} (it must be readable wherever tasks, triggers and the Test button run)"
    )


# ---------------------------------------------------------------------------- a handshake that never ends


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections and never says a word (a TLS handshake never ends)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


def test_sync_handshake_that_never_ends_is_a_request_never_sent(silent_listener):
    """No byte of the request left: an upload may be sent again (the async client says so too)."""
    with pytest.raises(MemoriesTimeoutError) as info:
        _sync(silent_listener, connect_timeout=0.5)
    assert info.value.request_sent is False
    assert "timed out connecting" in str(info.value)


async def test_async_handshake_that_never_ends_is_a_request_never_sent(silent_listener):
    with pytest.raises(MemoriesTimeoutError) as info:
        await _async(silent_listener, connect_timeout=0.5)
    assert info.value.request_sent is False
    assert "timed out connecting" in str(info.value)


def test_a_broken_environment_bundle_does_not_break_the_import(tmp_path):
    """A worker whose REQUESTS_CA_BUNDLE names no file still imports the provider (its DAGs parse);
    the first https request names the variable."""
    import subprocess
    import sys

    code = (
        "from memories_provider.client import MemoriesClient\n"
        "from memories_provider.client.errors import MemoriesInvalidArgumentError\n"
        "c = MemoriesClient('sk-import-test-key-0123456789', base_url='https://127.0.0.1:9/serve/api/v1')\n"
        "try:\n    c.list_unique_ids()\nexcept MemoriesInvalidArgumentError as e:\n    print(e)\n"
    )
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(tmp_path / "gone.pem")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the CA bundle in REQUESTS_CA_BUNDLE" in done.stdout


def test_test_button_names_an_unreadable_environment_bundle(tmp_path, monkeypatch):
    from memories_provider.hooks.memories import MemoriesHook

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    point_memories_default_at(monkeypatch, "https://127.0.0.1:9", key=KEY)
    ok, message = MemoriesHook().test_connection()
    assert not ok
    assert message.startswith("Connection 'memories_default': the CA bundle in REQUESTS_CA_BUNDLE")
    assert "answered" not in message  # nothing was sent: the service said nothing


def test_a_ca_bundle_replaced_on_disk_is_read_again(tls_server, ca, tmp_path):
    """A CA rotated in place (the same path, new certificates: what configuration management does)
    is trusted by the next client of the process, as requests re-reads its bundle for each new
    connection; a context kept for the process's life refused the new CA until a restart (a
    triggerer, a worker running task after task)."""
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_bytes(LocalCA(tmp_path / "old", name="retired CA").ca_pem.read_bytes())
    with pytest.raises(MemoriesConnectionError, match="certificate"):
        _sync(tls_server.url, ca_bundle=str(bundle))
    bundle.write_bytes(ca.ca_pem.read_bytes())
    assert _sync(tls_server.url, ca_bundle=str(bundle)) == ["tls"]
    assert asyncio.run(_async(tls_server.url, ca_bundle=str(bundle))) == ["tls"]


async def test_a_long_lived_async_client_reads_a_rotated_ca_bundle_and_shares_one_context(
    tls_server, ca, tmp_path, monkeypatch
):
    """A client kept open (the triggerer's poller keeps one for as long as waits are deferred, a
    busy triggerer for ever) trusts a CA rotated in place from its next request, as the sync client
    does (it looks the bundle up for each request); it kept the context it was opened with and
    refused the new CA until a restart. The context is still built once per bundle version, shared
    by every client (a triggerer runs thousands of triggers), not once per client or request."""
    from memories_provider.client import tls

    built: list[tls.TrustKey] = []
    build = tls._build

    def counted(key: tls.TrustKey):
        built.append(key)
        return build(key)

    monkeypatch.setattr(tls, "_build", counted)
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_bytes(LocalCA(tmp_path / "old", name="retired CA").ca_pem.read_bytes())
    settings = {"base_url": f"{tls_server.url}/serve/api/v1", "timeout": 10, "retry": NO_RETRY}
    clients = [AsyncMemoriesClient(KEY, ca_bundle=str(bundle), **settings) for _ in range(50)]
    kept, others = clients[0], clients[1:]
    try:
        for client in clients:
            await client.__aenter__()
        with pytest.raises(MemoriesConnectionError, match="certificate"):
            await kept.list_unique_ids()
        bundle.write_bytes(ca.ca_pem.read_bytes())
        assert await kept.list_unique_ids() == ["tls"]
        assert await kept.list_unique_ids() == ["tls"]
        for client in others:
            assert await client.list_unique_ids() == ["tls"]
    finally:
        for client in clients:
            await client.close()
    assert len(built) == 2  # the retired CA's, then the new one's


async def test_a_ca_bundle_written_again_unchanged_keeps_its_context_and_sessions(
    tls_server, ca, tmp_path, monkeypatch
):
    """Configuration management writes the bundle again as it was (a new file, a new mtime): the
    context is not built again, so the async client keeps its session (its connections) and the
    sync client its pool; another content gives another context."""
    from memories_provider.client import tls

    built: list[tls.TrustKey] = []
    build = tls._build
    monkeypatch.setattr(tls, "_build", lambda key: built.append(key) or build(key))
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_bytes(ca.ca_pem.read_bytes())
    key = tls.trust_key(str(bundle))
    settings = {"base_url": f"{tls_server.url}/serve/api/v1", "timeout": 10, "retry": NO_RETRY}
    async with AsyncMemoriesClient(KEY, ca_bundle=str(bundle), **settings) as client:
        assert await client.list_unique_ids() == ["tls"]
        first = tls.ssl_context(key)
        for _ in range(3):
            rewritten = tmp_path / "corp-ca.pem.new"
            rewritten.write_bytes(ca.ca_pem.read_bytes())
            os.replace(rewritten, bundle)
            assert await client.list_unique_ids() == ["tls"]
        assert tls.ssl_context(key) is first
        assert client._retired == []
        bundle.write_bytes(
            ca.ca_pem.read_bytes() + LocalCA(tmp_path / "other", name="other CA").ca_pem.read_bytes()
        )
        assert await client.list_unique_ids() == ["tls"]
        assert tls.ssl_context(key) is not first
    assert len(built) == 2


async def test_a_ca_bundle_caught_mid_rewrite_keeps_the_context_read_before(tls_server, ca, tmp_path):
    """Written again in place (``cp``, a shell ``>``: truncated, then filled), the bundle is for a
    moment empty or cut. A long-lived client (the triggerer's poller) looks it up before each
    request since it follows rotations, and a request at that moment raised the bundle's
    MemoriesInvalidArgumentError: not transient, so the poller ended every deferred wait of the
    connection with 'error'. A client loaded it once before. It now keeps verifying with the
    certificates it read before until the file holds certificates again, and a new client (or a
    bundle never read) still says what is wrong with it."""
    bundle = tmp_path / "corp-ca.pem"
    pem = ca.ca_pem.read_bytes()
    bundle.write_bytes(pem)
    settings = {"base_url": f"{tls_server.url}/serve/api/v1", "timeout": 10, "retry": NO_RETRY}
    async with AsyncMemoriesClient(KEY, ca_bundle=str(bundle), **settings) as client:
        assert await client.list_unique_ids() == ["tls"]
        for caught in (b"", pem[: len(pem) // 2]):  # truncated, then half written
            bundle.write_bytes(caught)
            assert await client.list_unique_ids() == ["tls"]
            assert _sync(tls_server.url, ca_bundle=str(bundle)) == ["tls"]
        bundle.unlink()  # replaced by a remove and a write
        assert await client.list_unique_ids() == ["tls"]
        # Written whole again, with another CA: read at once (the rotation is not held up).
        bundle.write_bytes(LocalCA(tmp_path / "other", name="other CA").ca_pem.read_bytes())
        with pytest.raises(MemoriesConnectionError, match="certificate"):
            await client.list_unique_ids()
    # A bundle no context was ever read from is still refused by name.
    cut = tmp_path / "cut.pem"
    cut.write_bytes(pem[: len(pem) // 2])
    with pytest.raises(MemoriesInvalidArgumentError, match=r"cut\.pem"):
        _sync(tls_server.url, ca_bundle=str(cut))

"""Proxies as a corporate network sets them: ``HTTP(S)_PROXY``/``NO_PROXY`` (either case), honoured
alike by the sync client (tasks) and the async one (triggers), a proxy that requires credentials,
and those credentials never shown.

The proxy is a small forwarding proxy on 127.0.0.1 in front of the emulator; it records what it
was asked to forward and the ``Proxy-Authorization`` it was given.
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
from urllib.parse import quote, urlsplit

import pytest

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesError,
    MemoriesProxyAuthError,
    MemoriesProxyError,
    MemoriesTimeoutError,
    RetryPolicy,
)
from tests.local_http import LocalServer, QuietHandler

NO_RETRY = RetryPolicy(max_retries=0)
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PROXY_PASSWORD = "pr0xy-s3cret-pa55"


class ForwardingProxy(LocalServer):
    """An HTTP proxy (absolute-form requests) forwarding to the origin the request names.

    :param credentials: ``user:password`` the proxy requires (``407`` without them), or ``None``.
    :param refusals: statuses the proxy answers its first requests with (one each, in order, a
        ``CONNECT`` or a request to forward), before it serves them.
    :param drop_tunnels: answer a ``CONNECT`` "200 Connection established", then close the connection.
    """

    def __init__(
        self, credentials: str | None = None, refusals: list[int] | None = None, *, drop_tunnels: bool = False
    ) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        pending = list(refusals or [])
        #: The headers of every request the proxy was sent (a CONNECT's included).
        self.headers_seen: list[dict[str, str]] = []
        proxy = self
        expected = None if credentials is None else "Basic " + base64.b64encode(credentials.encode()).decode()

        class Handler(QuietHandler):
            def _forward(self) -> None:
                auth = self.headers.get("Proxy-Authorization")
                proxy.seen.append((self.command, self.path, auth))
                proxy.headers_seen.append(dict(self.headers))
                # Read whole, refused or not: left unread, it would be taken for the next request.
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if expected is not None and auth != expected:
                    self.send_body(407, {"Proxy-Authenticate": 'Basic realm="corp"'}, b"proxy auth required")
                    return
                if pending:
                    self.send_body(pending.pop(0), {}, b"refused by the proxy")
                    return
                target = urlsplit(self.path)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "host")
                }
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    upstream.connect()
                except OSError:
                    self.send_body(502, {}, b"bad gateway: cannot reach the host")
                    return
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    kept = {
                        k: v
                        for k, v in answer.getheaders()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection")
                    }
                    self.send_body(answer.status, kept, data)
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def do_CONNECT(self) -> None:
                """A tunnel to ``host:port`` (https through the proxy), bytes relayed both ways."""
                auth = self.headers.get("Proxy-Authorization")
                proxy.seen.append((self.command, self.path, auth))
                proxy.headers_seen.append(dict(self.headers))
                if expected is not None and auth != expected:
                    self.send_body(407, {"Proxy-Authenticate": 'Basic realm="corp"'}, b"proxy auth required")
                    return
                if pending:
                    self.send_body(pending.pop(0), {}, b"refused by the proxy")
                    return
                if drop_tunnels:
                    self.send_response(200, "Connection established")
                    self.end_headers()
                    self.close_connection = True
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                sockets = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 30)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()

        super().__init__(Handler, poll_interval=0.05)

    def url_with(self, credentials: str | None = None) -> str:
        return f"http://{credentials}@127.0.0.1:{self.port}" if credentials else self.url


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    for name in _PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _settings(emulator) -> dict:
    return {"base_url": emulator.v1_url, "v2_base_url": emulator.v2_url, "timeout": 10, "retry": NO_RETRY}


def _sync_ids(emulator) -> list[str]:
    with MemoriesClient(emulator.api_key, **_settings(emulator)) as client:
        return client.list_unique_ids()


async def _async_ids(emulator) -> list[str]:
    async with AsyncMemoriesClient(emulator.api_key, **_settings(emulator)) as client:
        return await client.list_unique_ids()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
async def test_both_clients_go_through_the_proxy_with_its_credentials(
    memories_emulator, monkeypatch, variable
):
    with ForwardingProxy(credentials=f"corp:{PROXY_PASSWORD}") as proxy:
        monkeypatch.setenv(variable, proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        sync_ids = _sync_ids(memories_emulator)
        async_ids = await _async_ids(memories_emulator)
    assert sync_ids == async_ids
    assert [(method, path) for method, path, _ in proxy.seen] == [
        ("GET", f"{memories_emulator.v1_url}/list_unique_ids")
    ] * 2
    assert all(auth is not None for *_, auth in proxy.seen)


@pytest.mark.parametrize(
    "no_proxy",
    [
        "127.0.0.1",
        "localhost,127.0.0.1",
        "127.0.0.0/8",  # a network, as corporate NO_PROXY lists often give internal ranges
        "10.0.0.0/8, 127.0.0.0/8",
        "*",
    ],
)
async def test_no_proxy_is_read_alike_by_both_clients(memories_emulator, monkeypatch, no_proxy):
    """A host NO_PROXY names goes direct from both clients (the proxy is never asked)."""
    host_port = urlsplit(memories_emulator.url).netloc
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy.format(host_port=host_port))
        _sync_ids(memories_emulator)
        sync_seen = len(proxy.seen)
        await _async_ids(memories_emulator)
        async_seen = len(proxy.seen) - sync_seen
    assert (sync_seen, async_seen) == (0, 0)


@pytest.mark.parametrize(("variable", "scheme"), [("ALL_PROXY", "http://"), ("HTTP_PROXY", "")])
async def test_all_proxy_and_a_proxy_without_scheme_are_honoured_by_both_clients(
    memories_emulator, monkeypatch, variable, scheme
):
    with ForwardingProxy() as proxy:
        monkeypatch.setenv(variable, f"{scheme}127.0.0.1:{proxy.port}")
        _sync_ids(memories_emulator)
        await _async_ids(memories_emulator)
    assert len(proxy.seen) == 2


async def test_proxy_refusing_the_credentials_is_an_error_without_them(memories_emulator, monkeypatch):
    with ForwardingProxy(credentials="corp:the-right-one") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        with pytest.raises(MemoriesError) as sync_error:
            _sync_ids(memories_emulator)
        with pytest.raises(MemoriesError) as async_error:
            await _async_ids(memories_emulator)
    errors = [sync_error.value, async_error.value]
    for error in errors:
        assert "407" in str(error)
        assert PROXY_PASSWORD not in repr(error) and PROXY_PASSWORD not in str(error)
        assert memories_emulator.api_key not in str(error)


async def test_unreachable_proxy_is_a_connection_error_without_its_password(
    memories_emulator, monkeypatch, unused_port
):
    monkeypatch.setenv("HTTP_PROXY", f"http://corp:{PROXY_PASSWORD}@127.0.0.1:{unused_port}")
    with pytest.raises(MemoriesConnectionError) as sync_error:
        _sync_ids(memories_emulator)
    with pytest.raises(MemoriesConnectionError) as async_error:
        await _async_ids(memories_emulator)
    for error in (sync_error.value, async_error.value):
        text = f"{error}\n{error!r}\n{error.__cause__!r}"
        assert PROXY_PASSWORD not in text
        assert error.request_sent is False


async def test_https_through_the_proxy_tunnel_with_the_corporate_ca(tmp_path, monkeypatch):
    """A TLS-inspecting proxy as the clients meet it: CONNECT through the proxy, then a certificate
    signed by the corporate CA, trusted through the connection's CA bundle by both clients."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    ca = LocalCA(tmp_path / "ca")
    with TLSServer(UniqueIds, ca) as server, ForwardingProxy(credentials=f"corp:{PROXY_PASSWORD}") as proxy:
        monkeypatch.setenv("https_proxy", proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        settings = {"base_url": f"{server.url}/serve/api/v1", "retry": NO_RETRY, "ca_bundle": str(ca.ca_pem)}
        with MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client:
            sync_ids = client.list_unique_ids()
        async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
            async_ids = await aclient.list_unique_ids()
        # Without the CA, the tunnel is made and the certificate refused, by both.
        del settings["ca_bundle"]
        with (
            MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client,
            pytest.raises(MemoriesConnectionError, match="certif"),
        ):
            client.list_unique_ids()
        async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
            with pytest.raises(MemoriesConnectionError, match=r"(?i)certif"):
                await aclient.list_unique_ids()
    assert sync_ids == async_ids == ["tls"]
    assert [(method, auth is not None) for method, _, auth in proxy.seen] == [("CONNECT", True)] * 4


@pytest.mark.parametrize(
    "no_proxy",
    [
        "",
        "*",
        "internal.corp",
        ".internal.corp",
        "gw.internal.corp:8443",
        "10.0.0.0/8",
        "10.1.2.3",
        "10.0.0.0/33,10.1.0.0/16",
        "corp, 192.168.0.0/16 ,localhost",
        "[::1]",
    ],
)
@pytest.mark.parametrize(
    "url",
    [
        "https://gw.internal.corp:8443/serve/api/v1/x",
        "https://api.memories.ai/serve/api/v1/x",
        "http://10.1.2.3:8080/x",
        "http://192.168.7.7/x",
        "http://localhost:9/x",
        "http://[::1]:9/x",
        "https://notinternal.corp/x",
    ],
)
def test_the_async_clients_proxy_choice_is_requests_choice(monkeypatch, url, no_proxy):
    """The async client's reading of the environment (proxies.env_proxy) against requests' own,
    over the NO_PROXY spellings corporate machines carry."""
    import requests.utils

    from memories_provider.client.proxies import env_proxy

    monkeypatch.setenv("https_proxy", "proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://corp:pw@proxy.corp:3128")
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:1080")
    monkeypatch.setenv("no_proxy", no_proxy)
    chosen = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    expected = None if not chosen else requests.utils.prepend_scheme_if_needed(chosen, "http")
    assert env_proxy(url) == expected


@pytest.mark.parametrize("credentials", [None, f"corp:{PROXY_PASSWORD}"])
async def test_the_api_key_never_reaches_the_proxy_of_an_https_host(tmp_path, monkeypatch, credentials):
    """Through a proxy, an https request's key travels inside the tunnel only. aiohttp merges a
    session's default headers into the proxy's, and took the key (session header Authorization)
    for the proxy's credentials: every CONNECT carried 'Proxy-Authorization: <API key>', in clear
    text to a plain http proxy and into its logs, whenever the proxy URL named no credentials."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    key = "sk-proxy-leak-canary-0123456789"
    ca = LocalCA(tmp_path / "ca")
    with TLSServer(UniqueIds, ca) as server, ForwardingProxy(credentials=credentials) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(credentials))
        settings = {"base_url": f"{server.url}/serve/api/v1", "retry": NO_RETRY, "ca_bundle": str(ca.ca_pem)}
        with MemoriesClient(key, **settings) as client:
            assert client.list_unique_ids() == ["tls"]
        async with AsyncMemoriesClient(key, **settings) as aclient:
            assert await aclient.list_unique_ids() == ["tls"]
    assert [method for method, *_ in proxy.seen] == ["CONNECT", "CONNECT"]
    for headers in proxy.headers_seen:
        assert key not in repr(headers)
        assert base64.b64encode(key.encode()).decode() not in repr(headers)


async def test_a_redirect_to_another_origin_does_not_carry_the_key(monkeypatch):
    """The key set on each request (not the async session) is still dropped by both clients when
    an answer redirects to another origin (a presigned storage URL, another host)."""
    import json

    key = "sk-redirect-canary-0123456789"
    headers_seen: list[dict[str, str]] = []

    class Target(QuietHandler):
        def do_GET(self) -> None:
            headers_seen.append(dict(self.headers))
            body = json.dumps({"code": "0000", "msg": "success", "data": {"unique_ids": ["b"]}}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

    with LocalServer(Target, poll_interval=0.05) as target:
        elsewhere = target.url.replace("127.0.0.1", "localhost")

        class Redirect(QuietHandler):
            def do_GET(self) -> None:
                self.send_body(302, {"Location": elsewhere + self.path}, b"")

        with LocalServer(Redirect, poll_interval=0.05) as origin:
            settings = {"base_url": f"{origin.url}/serve/api/v1", "retry": NO_RETRY}
            with MemoriesClient(key, **settings) as client:
                assert client.list_unique_ids() == ["b"]
            async with AsyncMemoriesClient(key, **settings) as aclient:
                assert await aclient.list_unique_ids() == ["b"]
    assert len(headers_seen) == 2
    assert all(key not in repr(headers) for headers in headers_seen)


async def test_a_tunnel_the_proxy_refuses_is_a_request_never_sent(tmp_path, monkeypatch):
    """A CONNECT answered 407 never reached the host: both clients say the request was not sent
    (the sync client did; the async one said it may have been, so an upload was not retried)."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    ca = LocalCA(tmp_path / "ca")
    with TLSServer(UniqueIds, ca) as server, ForwardingProxy(credentials="corp:the-right-one") as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        settings = {"base_url": f"{server.url}/serve/api/v1", "retry": NO_RETRY, "ca_bundle": str(ca.ca_pem)}
        with (
            MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client,
            pytest.raises(MemoriesConnectionError) as sync_error,
        ):
            client.list_unique_ids()
        async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
            with pytest.raises(MemoriesConnectionError) as async_error:
                await aclient.list_unique_ids()
    assert (sync_error.value.request_sent, async_error.value.request_sent) == (False, False)
    assert "407" in str(async_error.value) and PROXY_PASSWORD not in str(async_error.value)


async def test_a_non_ascii_host_name_is_sent_as_its_ascii_form_by_both(monkeypatch):
    """An internationalised host name goes out IDNA-encoded from both clients (requests encodes
    it; the async client sent the raw UTF-8 name, which no proxy or virtual host knows)."""
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        settings = {"base_url": "http://Bücher.example/serve/api/v1", "retry": NO_RETRY}
        with (
            MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client,
            pytest.raises(MemoriesError),
        ):
            client.list_unique_ids()
        async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
            with pytest.raises(MemoriesError):
                await aclient.list_unique_ids()
    assert [path for _, path, _ in proxy.seen] == [
        "http://xn--bcher-kva.example/serve/api/v1/list_unique_ids"
    ] * 2


@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
def test_trickling_headers_through_a_proxy_tunnel_are_a_read_timeout(tmp_path, monkeypatch, proxy_scheme):
    """Headers trickling through a proxy's tunnel are cut at the read timeout, as without a proxy.

    Through an https proxy (TLS in TLS) the connection's socket is urllib3's SSLTransport, not a
    socket: the header bound's timer shut it with socket.socket.shutdown, a TypeError in the timer
    thread (a traceback on stderr), and the headers were waited for at the trickle's pace. Through
    either proxy, http.client closed the connection on the cut, which made urllib3 call it 'Unable
    to connect to proxy': a connection error, not the read timeout it was."""
    import threading

    from tests.client.test_client_deadline import _trickling_headers
    from tests.tls import LocalCA, TLSServer

    ca = LocalCA(tmp_path / "ca")
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    # The proxy's certificate: urllib3 checks it with the default store, which SSL_CERT_FILE names.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_pem))
    with TLSServer(_trickling_headers(), ca) as server, ForwardingProxy() as proxy:
        if proxy_scheme == "https":
            proxy._httpd.socket = ca.server_context().wrap_socket(proxy._httpd.socket, server_side=True)
        monkeypatch.setenv("https_proxy", f"{proxy_scheme}://localhost:{proxy.port}")
        with (
            MemoriesClient(
                "sk-proxy-test-key-0123456789",
                base_url=f"{server.url}/serve/api/v1",
                timeout=1,
                retry=NO_RETRY,
                ca_bundle=str(ca.ca_pem),
            ) as client,
            pytest.raises(MemoriesError) as info,
        ):
            client.list_videos()
    assert isinstance(info.value, MemoriesTimeoutError), info.value
    assert info.value.request_sent
    assert "proxy" not in str(info.value).lower()
    assert thread_errors == []


#: Retries that would be made at once (a test counts them, it never waits for them).
PROMPT_RETRIES = RetryPolicy(max_retries=3, initial_delay=0, jitter=False)


def _proxy_error_text(error: BaseException) -> str:
    """Everything an error shows: its text, its repr and its causes' (a proxy URL quoted anywhere)."""
    texts, item = [], error
    while item is not None:
        texts += [str(item), repr(item), repr(item.args)]
        item = item.__cause__ or item.__context__
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("credentials", "refusals", "error_class"),
    [
        (f"corp:{PROXY_PASSWORD}", [], MemoriesProxyAuthError),  # the wrong password
        (None, [], MemoriesProxyAuthError),  # none given
        (None, [403] * 8, MemoriesProxyError),  # the proxy's policy forbids the host
        (None, [405] * 8, MemoriesProxyError),  # CONNECT not allowed at all
    ],
    ids=["407-wrong-password", "407-no-credentials", "403", "405"],
)
async def test_a_tunnel_the_proxy_refuses_for_good_fails_at_once(
    tmp_path, monkeypatch, credentials, refusals, error_class
):
    """A CONNECT answered 407 or 403 is not retried by either client (it was, as a dropped
    connection: the proxy's credentials do not change between tries) and is an error of its own,
    naming the proxy's host and never its password or the API key."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    key = "sk-proxy-test-key-0123456789"
    ca = LocalCA(tmp_path / "ca")
    required = "corp:the-right-one" if refusals == [] else None
    with TLSServer(UniqueIds, ca) as server, ForwardingProxy(required, refusals) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(credentials))
        settings = {
            "base_url": f"{server.url}/serve/api/v1",
            "retry": PROMPT_RETRIES,
            "ca_bundle": str(ca.ca_pem),
        }
        with MemoriesClient(key, **settings) as client, pytest.raises(MemoriesConnectionError) as sync_error:
            client.list_unique_ids()
        sync_tries = len(proxy.seen)
        async with AsyncMemoriesClient(key, **settings) as aclient:
            with pytest.raises(MemoriesConnectionError) as async_error:
                await aclient.list_unique_ids()
        async_tries = len(proxy.seen) - sync_tries
    assert (sync_tries, async_tries) == (1, 1)
    status = refusals[0] if refusals else 407
    for error in (sync_error.value, async_error.value):
        assert type(error) is error_class
        assert (error.request_sent, error.http_status, error.proxy) == (False, status, proxy.url)
        assert f"the proxy {proxy.url} refused" in str(error)
        assert not PROMPT_RETRIES.should_retry(error, idempotent=True)
        shown = _proxy_error_text(error)
        assert PROXY_PASSWORD not in shown and key not in shown
    if credentials is None and status == 407:
        assert "gives no credentials" in str(sync_error.value)


async def test_a_tunnel_refused_for_now_is_retried(tmp_path, monkeypatch):
    """A CONNECT answered 503 or 404 (the proxy overloaded, or the host out of its reach) is
    transient: both clients try again through it, and get their answer."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    ca = LocalCA(tmp_path / "ca")
    settings = {"retry": PROMPT_RETRIES, "ca_bundle": str(ca.ca_pem)}
    with TLSServer(UniqueIds, ca) as server:
        settings["base_url"] = f"{server.url}/serve/api/v1"
        with ForwardingProxy(refusals=[503, 404]) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            with MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client:
                assert client.list_unique_ids() == ["tls"]
        with ForwardingProxy(refusals=[503, 404]) as aproxy:
            monkeypatch.setenv("HTTPS_PROXY", aproxy.url)
            async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
                assert await aclient.list_unique_ids() == ["tls"]
    assert [len(proxy.seen), len(aproxy.seen)] == [3, 3]


async def test_a_forwarding_proxy_refusing_its_credentials_fails_at_once(memories_emulator, monkeypatch):
    """A plain http proxy answers the request itself with 407: the proxy's refusal (it was an
    'undocumented HTTP 407' of memories.ai's), from both clients, asked once."""
    with ForwardingProxy(credentials="corp:the-right-one") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        settings = {**_settings(memories_emulator), "retry": PROMPT_RETRIES}
        with (
            MemoriesClient(memories_emulator.api_key, **settings) as client,
            pytest.raises(MemoriesProxyAuthError) as sync_error,
        ):
            client.list_unique_ids()
        async with AsyncMemoriesClient(memories_emulator.api_key, **settings) as aclient:
            with pytest.raises(MemoriesProxyAuthError) as async_error:
                await aclient.list_unique_ids()
    assert len(proxy.seen) == 2
    for error in (sync_error.value, async_error.value):
        assert (error.request_sent, error.http_status, error.proxy) == (False, 407, proxy.url)
        assert "the user and password in its URL were refused" in str(error)
        shown = _proxy_error_text(error)
        assert PROXY_PASSWORD not in shown and memories_emulator.api_key not in shown


async def test_a_proxy_that_drops_the_tunnel_it_opened_is_a_request_never_sent_without_its_password(
    monkeypatch,
):
    """CONNECT answered 200, then the connection closed before the TLS handshake: a request never
    sent, from both clients, and no error in the chain holds the proxy's password. aiohttp's
    connection error kept the request's connection key, proxy credentials included, in its args:
    its repr showed 'proxy_auth=BasicAuth(login='corp', password='<the password>')'."""
    key = "sk-proxy-test-key-0123456789"
    with ForwardingProxy(drop_tunnels=True) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(f"corp:{PROXY_PASSWORD}"))
        settings = {"base_url": "https://127.0.0.1:9/serve/api/v1", "retry": NO_RETRY}
        with MemoriesClient(key, **settings) as client, pytest.raises(MemoriesConnectionError) as sync_error:
            client.list_unique_ids()
        async with AsyncMemoriesClient(key, **settings) as aclient:
            with pytest.raises(MemoriesConnectionError) as async_error:
                await aclient.list_unique_ids()
    assert [method for method, *_ in proxy.seen] == ["CONNECT", "CONNECT"]
    for error in (sync_error.value, async_error.value):
        assert error.request_sent is False
        shown = _proxy_error_text(error)
        assert PROXY_PASSWORD not in shown and key not in shown


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4"])
async def test_the_async_client_sends_nothing_to_a_socks_proxy(memories_emulator, monkeypatch, scheme):
    """ALL_PROXY=socks5://… (as curl users set it): aiohttp spoke HTTP to it, the request with the
    API key and the proxy's Basic credentials in clear text, then waited out the read timeout. Now
    nothing reaches it: a MemoriesProxyError naming the proxy's host (never its password), at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    monkeypatch.setenv("ALL_PROXY", f"{scheme}://corp:{PROXY_PASSWORD}@127.0.0.1:{port}")
    settings = {**_settings(memories_emulator), "retry": PROMPT_RETRIES}
    try:
        async with AsyncMemoriesClient(memories_emulator.api_key, **settings) as client:
            with pytest.raises(MemoriesProxyError) as error:
                await client.list_unique_ids()
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert error.value.request_sent is False and error.value.proxy == f"{scheme}://127.0.0.1:{port}"
    assert f"is a {scheme} proxy" in str(error.value)
    shown = _proxy_error_text(error.value)
    assert PROXY_PASSWORD not in shown and memories_emulator.api_key not in shown


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_the_sync_client_without_pysocks_says_so_at_once(memories_emulator, monkeypatch, scheme):
    """requests reaches a SOCKS proxy only with PySocks: without it, its 'Missing dependencies for
    SOCKS support' was a connection error retried max_retries times with back-off. Now the proxy's
    error, at once, saying what to install; never the proxy's password."""
    try:
        import socks  # noqa: F401  (PySocks)
    except ImportError:
        pass
    else:
        pytest.skip("PySocks is installed: requests reaches SOCKS proxies")
    monkeypatch.setenv("ALL_PROXY", f"{scheme}://corp:{PROXY_PASSWORD}@127.0.0.1:1080")
    settings = {**_settings(memories_emulator), "retry": RetryPolicy(max_retries=3)}
    with (
        MemoriesClient(memories_emulator.api_key, **settings) as client,
        pytest.raises(MemoriesProxyError) as error,
    ):
        client.list_unique_ids()
    assert error.value.request_sent is False and error.value.proxy == f"{scheme}://127.0.0.1:1080"
    assert "requests[socks]" in str(error.value)
    shown = _proxy_error_text(error.value)
    assert PROXY_PASSWORD not in shown and memories_emulator.api_key not in shown


class _Socks5Relay:
    """A SOCKS5 proxy (no authentication, CONNECT only) relaying to the host each request names;
    ``seen`` lists the (host, port) it was asked for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _Socks5Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        self._listener.close()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            _, methods = client.recv(2)
            client.recv(methods)
            client.sendall(b"\x05\x00")
            _, _, _, kind = client.recv(4)
            ipv4 = kind == 1  # else a name (socks5h)
            host = socket.inet_ntoa(client.recv(4)) if ipv4 else client.recv(client.recv(1)[0]).decode()
            port = int.from_bytes(client.recv(2), "big")
            self.seen.append((host, port))
            with socket.create_connection((host, port)) as upstream:
                client.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
                ends = [client, upstream]
                while True:
                    readable, _, _ = select.select(ends, [], [])
                    for end in readable:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is client else client).sendall(data)


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_the_sync_client_with_pysocks_goes_through_a_socks_proxy(memories_emulator, monkeypatch, scheme):
    """With PySocks (requests[socks], as the README says), the sync client reaches memories.ai
    through a SOCKS proxy. The adapter replaced every proxy manager's pool classes with its quiet
    plain ones, so requests' SOCKSProxyManager handed its `_socks_options` to a plain connection:
    a bare TypeError ('unexpected keyword argument _socks_options'), no MemoriesError, every call."""
    pytest.importorskip("socks", reason="PySocks is not installed")
    with _Socks5Relay() as relay:
        monkeypatch.setenv("ALL_PROXY", f"{scheme}://127.0.0.1:{relay.port}")
        assert _sync_ids(memories_emulator) == []
    emulator_port = urlsplit(memories_emulator.v1_url).port
    assert [port for _, port in relay.seen] == [emulator_port]


async def test_proxy_credentials_basic_auth_cannot_carry_are_said_without_them(
    memories_emulator, monkeypatch
):
    """A proxy password with characters outside Latin-1 (percent-encoded in its URL): both clients
    raised a bare UnicodeEncodeError while encoding the Basic credentials, whose repr quoted the
    password. Now the proxy's error, before anything is sent, without it."""
    password = "пароль-" + PROXY_PASSWORD
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with(f"corp:{quote(password)}"))
        settings = {**_settings(memories_emulator), "retry": PROMPT_RETRIES}
        with (
            MemoriesClient(memories_emulator.api_key, **settings) as client,
            pytest.raises(MemoriesProxyError) as sync_error,
        ):
            client.list_unique_ids()
        async with AsyncMemoriesClient(memories_emulator.api_key, **settings) as aclient:
            with pytest.raises(MemoriesProxyError) as async_error:
                await aclient.list_unique_ids()
    assert proxy.seen == []
    for error in (sync_error.value, async_error.value):
        assert error.request_sent is False and "outside Latin-1" in str(error)
        shown = _proxy_error_text(error)
        assert PROXY_PASSWORD not in shown and quote(password) not in shown


@pytest.mark.parametrize("trust", ["ca_bundle", "REQUESTS_CA_BUNDLE"])
async def test_an_https_proxy_is_verified_with_the_same_certificates_by_both_clients(
    tmp_path, monkeypatch, trust
):
    """An https proxy (TLS to the proxy, then the tunnel) whose certificate a corporate CA signed,
    given as the connection's ca_bundle or REQUESTS_CA_BUNDLE: the async client trusted it, the sync
    client checked the proxy against the system store alone (urllib3's default, as the client
    cleared requests' bundle for its own context) and refused it, so tasks failed where triggers
    went through."""
    from tests.tls import LocalCA, TLSServer, UniqueIds

    ca = LocalCA(tmp_path / "ca")
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    settings: dict = {"retry": NO_RETRY, "timeout": 10}
    if trust == "ca_bundle":
        settings["ca_bundle"] = str(ca.ca_pem)
    else:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_pem))
    with TLSServer(UniqueIds, ca) as server, ForwardingProxy() as proxy:
        proxy._httpd.socket = ca.server_context().wrap_socket(proxy._httpd.socket, server_side=True)
        monkeypatch.setenv("HTTPS_PROXY", f"https://localhost:{proxy.port}")
        settings["base_url"] = f"{server.url}/serve/api/v1"
        with MemoriesClient("sk-proxy-test-key-0123456789", **settings) as client:
            sync_ids = client.list_unique_ids()
        async with AsyncMemoriesClient("sk-proxy-test-key-0123456789", **settings) as aclient:
            async_ids = await aclient.list_unique_ids()
    assert sync_ids == async_ids == ["tls"]
    assert [method for method, *_ in proxy.seen] == ["CONNECT", "CONNECT"]


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("http://corp:{password}@127.0.0.1:99999", "Port out of range"),
        ("http://corp:{password}@127.0.0.1:31x8", "port"),
        ("http://corp:{password}@[::1:3128", "Invalid IPv6 URL"),
        ("http://corp:{password}@127.0.0.1:3128\n", "white space"),
        # A '/', '?' or '#' left unencoded in the password ends the host there: urlsplit reads
        # the password as the port, and its 'Port could not be cast' quoted it.
        ("http://corp:{password}/x@127.0.0.1:3128", "percent-encoded"),
        ("http://corp:{password}#x@127.0.0.1:3128", "percent-encoded"),
        ("http://corp:x[{password}]/y@127.0.0.1:3128", "Invalid IPv6 URL"),
        # An '@' and then a '/' in the password: the host read is the password's middle part.
        ("http://corp:x@{password}/y@127.0.0.1:3128", "percent-encoded"),
    ],
    ids=[
        "port-out-of-range",
        "port-not-a-number",
        "bad-ipv6",
        "trailing-newline",
        "slash-in-password",
        "hash-in-password",
        "bracket-in-password",
        "at-and-slash-in-password",
    ],
)
async def test_a_proxy_url_that_cannot_be_read_is_said_at_once_by_both(
    memories_emulator, monkeypatch, written, reason
):
    """A proxy URL mistyped in the environment: the sync client retried requests' 'Failed to
    parse' as a connection error (or raised a bare ValueError), the async one raised a bare
    ValueError, or ignored a trailing newline the other refused. Both now raise the proxy's
    error, at once, saying why and never quoting the URL (its password)."""
    monkeypatch.setenv("HTTP_PROXY", written.format(password=PROXY_PASSWORD))
    settings = {**_settings(memories_emulator), "retry": PROMPT_RETRIES}
    with (
        MemoriesClient(memories_emulator.api_key, **settings) as client,
        pytest.raises(MemoriesProxyError) as sync_error,
    ):
        client.list_unique_ids()
    async with AsyncMemoriesClient(memories_emulator.api_key, **settings) as aclient:
        with pytest.raises(MemoriesProxyError) as async_error:
            await aclient.list_unique_ids()
    for error in (sync_error.value, async_error.value):
        assert error.request_sent is False and reason in str(error)
        shown = _proxy_error_text(error)
        assert PROXY_PASSWORD not in shown and memories_emulator.api_key not in shown
    assert memories_emulator.control.count("list_unique_ids") == 0
